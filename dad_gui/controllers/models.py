"""The model in use: loading it off the GUI thread, its device while a training job holds the GPU, the
toolbar's model list, the Models tab and the thresholds saved with each model version."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel

from core.common.geometry import describe
from core.common.metrics import threshold_warning
from core.inference.inspector import Inspector
from core.model.devices import device_name, inference_device

from ..app import log, show_error
from ..qt_util import Throttle
from ..registry import RegistryError
from ..state import ModelInfo
from ..widgets.models_panel import ModelsPanel
from . import Context

Thresholds = tuple[float, float]  # image, pixel


def torch_type(device: str) -> str:
    """'cuda:0' -> 'cuda' (no torch import in the GUI)."""
    return device.split(":", 1)[0]


class ModelsController(QObject):
    model_ready = Signal()  # a newly loaded model is in use (:attr:`inspector`)
    registry_edited = Signal()  # a version was renamed or deleted in the Models tab
    load_failed = Signal()  # a model did not load (the previous one stays in use)

    def __init__(self, ctx: Context):
        super().__init__(ctx.window)
        self.ctx = ctx
        self.state, self.registry, self.runner = ctx.state, ctx.registry, ctx.runner
        self.inspector: Inspector | None = None
        # the load in flight: path, version, its token, and the thresholds to use instead of the model's
        self._pending: tuple[str, str | None, int, Thresholds | None] | None = None
        self._load_token = 0
        self._job_device: str | None = None  # the device a running training job holds
        self.combo = QComboBox()
        self.combo.setMinimumWidth(260)
        self.model_label = QLabel("No model")
        self.device_label = QLabel("")
        self.panel = ModelsPanel(self.registry)
        self._save_thresholds_later = Throttle(600, self._save_thresholds, self)
        self.combo.activated.connect(self._combo_activated)
        self.panel.use_requested.connect(self.use_version)
        self.panel.changed.connect(self.registry_edited)
        self.state.thresholds_changed.connect(self._thresholds_changed)
        rs = self.runner.signals
        rs.loaded.connect(self._loaded)
        rs.moved.connect(self._moved)
        rs.failed.connect(self._failed)
        self._refresh_combo()

    # ---- choosing a model ------------------------------------------------------------------------
    def use_version(self, version_id: str, thresholds: Thresholds | None = None) -> None:
        if version_id not in self.registry.versions:
            show_error("Model not found", f"Model version {version_id} is no longer in the registry.")
            return
        self._load(str(self.registry.path(version_id)), version_id, thresholds)

    def open_model_file(self, path: str | Path, thresholds: Thresholds | None = None) -> None:
        self._load(str(path), None, thresholds)

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.ctx.window, "Open a model", "", "Model checkpoints (*.safetensors)")
        if path:
            self.open_model_file(path)

    def loading(self) -> bool:
        """A model load is in flight (tests and the self-test wait on it)."""
        return self._pending is not None

    def _combo_activated(self, index: int) -> None:
        vid = self.combo.itemData(index)
        if vid:
            self.use_version(vid)

    def _load(self, path: str, version_id: str | None, thresholds: Thresholds | None) -> None:
        # each request has its own token: a load that another request superseded never becomes the model,
        # and its thresholds (a restored session's) go with it
        self._load_token += 1
        self._pending = (path, version_id, self._load_token, thresholds)
        self.runner.cancel()  # the running inspection is for the model being replaced
        self.ctx.status.busy(f"Loading model {Path(path).name}…")
        self.runner.load_model(self._load_token, path, device=str(inference_device("auto", self._job_device)))

    def _take_pending(self, token: int) -> tuple[str, str | None, Thresholds | None] | None:
        if self._pending is None or self._pending[2] != token:
            return None
        path, vid, _, thresholds = self._pending
        self._pending = None
        return path, vid, thresholds

    def _loaded(self, token: int, inspector: Inspector, label: str) -> None:
        pending = self._take_pending(token)
        if pending is None:
            return
        path, vid, thresholds = pending
        self.inspector = inspector
        ckpt = inspector.checkpoint
        version = self.registry.versions.get(vid) if vid else None
        name = version.name if version else Path(path).name
        preset = (ckpt.info.get("preset", "") if ckpt else "") or (version.preset if version else "")
        warning = threshold_warning(ckpt.metrics) if ckpt else None
        info = ModelInfo(path, name, preset, device_name(inspector.device), inspector.config.image_size, vid,
                         inspector.threshold, warning, label,
                         describe(inspector.config.image_size, inspector.config.geometry))
        threshold = version.threshold if version and version.threshold is not None else inspector.threshold
        pixel = version.pixel_threshold if version else 0.5
        if thresholds is not None:
            threshold, pixel = thresholds
        self.state.set_model(info, threshold, pixel)
        if vid:
            try:
                self.registry.set_current(vid)
            except RegistryError as exc:
                log.warning("%s", exc)
        self._render_model_label()
        self._render_device()
        self._refresh_combo()
        self.panel.refresh()
        self.ctx.status.idle(f"Model {name} loaded on {info.device}." + (f" Warning: {warning}." if warning else ""))
        self._place()  # a training job may have taken the GPU during the load
        self.model_ready.emit()

    def _load_failed(self, token: int, message: str) -> None:
        pending = self._take_pending(token)
        if pending is None:
            log.warning("a superseded model load failed: %s", message.splitlines()[0] if message else "")
            return
        path, _, thresholds = pending
        if thresholds is not None:
            self.state.set_threshold(thresholds[0])
            self.state.set_pixel_threshold(thresholds[1])
        self.ctx.status.idle("Model not loaded; the previous model stays in use.")
        self.load_failed.emit()
        self._refresh_combo()
        show_error("Cannot load model", f"{message.split(chr(10))[0]}\n\nThe previous model stays in use.",
                   f"{path}\n\n{message}")

    def _failed(self, kind: str, token: int, message: str) -> None:
        if kind == "load":
            self._load_failed(token, message)
        elif kind == "move":
            self._render_device()
            where = device_name(self.inspector.device) if self.inspector else "its device"
            show_error("Model not moved", f"The model stays on {where}: {message.split(chr(10))[0]}", message)

    # ---- device -----------------------------------------------------------------------------------
    def set_job_device(self, device: str | None) -> None:
        """A training job holds ``device`` (None: no job): one GPU job at a time, so inspection moves to the
        CPU while training holds the GPU, and back."""
        self._job_device = device
        self._place()

    def _place(self) -> None:
        if self.inspector is None:
            return
        target = inference_device("auto", self._job_device)
        if target != self.inspector.device:
            self.runner.move(self.state.generation, self.inspector, str(target))
        self._render_device()

    def _moved(self, _generation: int, inspector: Inspector) -> None:
        if self.inspector is None or inspector.checkpoint is not self.inspector.checkpoint:
            return  # another model was loaded meanwhile
        self.inspector = inspector
        if self.state.model is not None:
            self.state.model.device = device_name(inspector.device)
        self._place()  # a job may have started or ended while the copy was made

    def _render_device(self) -> None:
        if self.inspector is None:
            self.device_label.setText("")
            return
        text = device_name(self.inspector.device)
        job = self._job_device
        if job and torch_type(job) != "cpu" and self.inspector.device.type == "cpu":
            text += f" · {torch_type(job).upper()} busy with training"
        self.device_label.setText(text)

    # ---- registry and thresholds ----------------------------------------------------------------------
    def refresh(self) -> None:
        """The registry changed (a job registered a version, one was renamed or deleted)."""
        self._refresh_combo()
        self.panel.refresh()
        m = self.state.model
        if m and m.version_id and m.version_id not in self.registry.versions:
            self.model_label.setText(f"Model: {m.name} (deleted from the registry; still loaded)")

    def _refresh_combo(self) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        for v in self.registry.list():
            self.combo.addItem(f"{v.name} · {v.preset}", v.id)
        if self.state.model and self.state.model.version_id is None:
            self.combo.addItem(f"{self.state.model.name} (file)", "")
        current = self.state.model.version_id if self.state.model else None
        idx = self.combo.findData(current if current else "")
        self.combo.setCurrentIndex(max(idx, 0) if self.combo.count() else -1)
        self.combo.blockSignals(False)

    def _thresholds_changed(self) -> None:
        self._render_model_label()
        if self.state.model and self.state.model.version_id:
            self._save_thresholds_later.restart()

    def _render_model_label(self) -> None:
        m = self.state.model
        if m:
            whose = {True: " (model's own)", False: " (set by a person)"}.get(self.state.threshold_is_own(), "")
            seen = m.geometry or f"{m.image_size} px"
            self.model_label.setText(f"Model: {m.name} · {m.preset or 'custom'} · {seen} · "
                                     f"threshold {self.state.threshold:.4f}{whose}")

    def _save_thresholds(self) -> None:
        m = self.state.model
        if m and m.version_id and m.version_id in self.registry.versions:
            try:
                self.registry.set_thresholds(m.version_id, self.state.threshold, self.state.pixel_threshold)
            except RegistryError as exc:
                show_error("Threshold not saved", str(exc))

    def close(self) -> None:
        """On quit: save thresholds still waiting to be saved."""
        self._save_thresholds_later.flush()
