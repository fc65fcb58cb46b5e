"""The model in use: loading it off the GUI thread, its device while a training job holds the GPU, the
toolbar's model list, the Models tab, the recent model files and the thresholds saved with each model version.

A model is a checkpoint (torch) or an exported model (``.onnx``, OpenVINO ``.xml``: its runtime, on the CPU); both
open through ``core.runtime.open.open_inspector``. Torch is imported only to place a checkpoint on a device, so the
line application (exported models only) never imports it."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QMenu

from core.common.geometry import describe
from core.common.metrics import threshold_warning
from core.common.modelfile import is_exported
from core.runtime.base import InspectorBase
from core.runtime.exported import ExportedInspector

from ..app import log, show_error
from ..model_files import ALL_MODELS_FILTER, EXPORTED_FILTER, is_model_file
from ..qt_util import Throttle, recent_paths, remember_path
from ..registry import ModelVersion, RegistryError
from ..state import ModelInfo
from ..widgets.models_panel import ModelsPanel
from . import Context

Thresholds = tuple[float, float]  # image, pixel
MAX_RECENT_MODELS = 8
RECENT_MODELS_KEY = "recent_models"
WHERE_TO_TRAIN = ("Training runs in the full DiffusionAD Inspector: train or fine-tune a model there, export it with "
                  "`dad export MODEL.safetensors MODEL.onnx`, and open the .onnx (or OpenVINO .xml) here.")


def inference_device(preference: str = "auto", busy: str | None = None) -> Any:
    """Where a checkpoint should run while a training job holds ``busy`` (``core.model.devices``: imports torch,
    called for checkpoints only)."""
    from core.model.devices import inference_device as where

    return where(preference, busy)


def movable(inspector: InspectorBase) -> bool:
    """Whether the inspector runs on torch and can change device; an exported model runs on its runtime's CPU."""
    return not isinstance(inspector, ExportedInspector)


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
        self.exported_only = ctx.exported_only  # the line application
        self.inspector: InspectorBase | None = None
        # the load in flight: path, version, its token, and the thresholds to use instead of the model's
        self._pending: tuple[str, str | None, int, Thresholds | None] | None = None
        self._load_token = 0
        self._job_device: str | None = None  # the device a running training job holds
        self.combo = QComboBox()
        self.combo.setMinimumWidth(260)
        self.model_label = QLabel("No model")
        self.device_label = QLabel("")
        self.panel = ModelsPanel(self.registry, empty_text=(
            "No model versions yet: add an exported model (.onnx, .xml). " + WHERE_TO_TRAIN if self.exported_only
            else "No model versions yet: train one in the Training tab, or add a model file."))
        self.recent_menu = QMenu("Recent models")
        self._store_token = 0
        self._save_thresholds_later = Throttle(600, self._save_thresholds, self)
        self.combo.activated.connect(self._combo_activated)
        self.panel.use_requested.connect(self.use_version)
        self.panel.changed.connect(self.registry_edited)
        self.panel.add_requested.connect(self.add_dialog)
        self.state.thresholds_changed.connect(self._thresholds_changed)
        rs = self.runner.signals
        rs.loaded.connect(self._loaded)
        rs.moved.connect(self._moved)
        rs.failed.connect(self._failed)
        rs.stored.connect(self._stored)
        self._refresh_combo()
        self._fill_recent_menu()

    # ---- choosing a model ------------------------------------------------------------------------
    def use_version(self, version_id: str, thresholds: Thresholds | None = None) -> None:
        if version_id not in self.registry.versions:
            show_error("Model not found", f"Model version {version_id} is no longer in the registry.")
            return
        if not self.registry.usable(version_id):
            show_error("Cannot load model", f"{self.registry.versions[version_id].name} is a training checkpoint. "
                       + WHERE_TO_TRAIN)
            return
        self._load(str(self.registry.path(version_id)), version_id, thresholds)

    def open_model_file(self, path: str | Path, thresholds: Thresholds | None = None) -> bool:
        """Load a model file (False, with a message, when this application does not open its kind)."""
        if self.exported_only and not is_exported(path):
            show_error("Cannot load model", f"{path}: this application opens exported models (.onnx, OpenVINO "
                       ".xml) only. " + WHERE_TO_TRAIN)
            return False
        self._load(str(path), None, thresholds)
        return True

    def file_filter(self) -> str:
        return EXPORTED_FILTER if self.exported_only else ALL_MODELS_FILTER

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.ctx.window, "Open a model", "", self.file_filter())
        if path:
            self.open_model_file(path)

    def add_dialog(self) -> None:
        """The Models tab's Add: a model file copied into the registry as a new version (off the GUI thread)."""
        path, _ = QFileDialog.getOpenFileName(self.ctx.window, "Add a model to the list", "", self.file_filter())
        if path:
            self.add_model_file(path)

    def add_model_file(self, path: str | Path) -> bool:
        if not is_model_file(path, self.exported_only):
            show_error("Model not added", f"{path}: not a model file this application opens ("
                       + ("exported models: .onnx, .xml)" if self.exported_only else ".safetensors, .onnx, .xml)"))
            return False
        self._store_token += 1
        self.ctx.status.busy(f"Adding {Path(path).name} to the model list…")
        self.runner.store_model(self._store_token, self.registry, str(path))
        return True

    def _stored(self, _token: int, version: ModelVersion) -> None:
        try:
            self.registry.commit(version, make_current=False)
        except RegistryError as exc:
            show_error("Model not added", str(exc))
            return
        self.ctx.status.idle(f"{version.name} added to the model list.")
        self.registry_edited.emit()

    # ---- recent model files --------------------------------------------------------------------------
    def recent_models(self) -> list[str]:
        """Model files opened by path, newest first (the ones this application opens)."""
        return [p for p in recent_paths(self.ctx.settings, RECENT_MODELS_KEY) if is_model_file(p, self.exported_only)]

    def _remember_recent(self, path: str) -> None:
        remember_path(self.ctx.settings, RECENT_MODELS_KEY, path, MAX_RECENT_MODELS)
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_models():
            self.recent_menu.addAction(p, partial(self.open_model_file, p))
        self.recent_menu.setEnabled(bool(self.recent_models()))

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
        # an exported model runs on its runtime's CPU; a checkpoint where no training job holds the device
        device = "cpu" if is_exported(path) else str(inference_device("auto", self._job_device))
        self.runner.load_model(self._load_token, path, device=device)

    def _take_pending(self, token: int) -> tuple[str, str | None, Thresholds | None] | None:
        if self._pending is None or self._pending[2] != token:
            return None
        path, vid, _, thresholds = self._pending
        self._pending = None
        return path, vid, thresholds

    def _loaded(self, token: int, inspector: InspectorBase, label: str) -> None:
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
        info = ModelInfo(path, name, preset, inspector.device_text, inspector.config.image_size, vid,
                         inspector.threshold, warning, label,
                         describe(inspector.config.image_size, inspector.config.geometry),
                         int(getattr(ckpt, "step", 0) or 0), not movable(inspector))
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
        else:
            self._remember_recent(path)
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
        elif kind == "store":
            self.ctx.status.idle("Model not added to the list.")
            show_error("Model not added", message.split("\n")[0], message)
        elif kind == "move":
            self._render_device()
            where = self.inspector.device_text if self.inspector else "its device"
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
        if not movable(self.inspector):  # an exported model stays on its runtime's CPU, job or not
            self._render_device()
            return
        target = inference_device("auto", self._job_device)
        if target != self.inspector.device:
            self.runner.move(self.state.generation, self.inspector, str(target))
        self._render_device()

    def _moved(self, _generation: int, inspector: InspectorBase) -> None:
        if self.inspector is None or inspector.checkpoint is not self.inspector.checkpoint:
            return  # another model was loaded meanwhile
        self.inspector = inspector
        if self.state.model is not None:
            self.state.model.device = inspector.device_text
        self._place()  # a job may have started or ended while the copy was made

    def _render_device(self) -> None:
        if self.inspector is None:
            self.device_label.setText("")
            return
        text = self.inspector.device_text
        job = self._job_device
        if job and torch_type(job) != "cpu" and movable(self.inspector) and self.inspector.device.type == "cpu":
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
            self.combo.addItem(f"{v.name} · {v.preset}" + (" · exported" if v.exported else ""), v.id)
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
            kind = " (exported)" if m.exported else ""
            self.model_label.setText(f"Model: {m.name}{kind} · {m.preset or 'custom'} · step {m.step} · {seen} · "
                                     f"threshold {self.state.threshold:.4f}{whose}")
            self.model_label.setToolTip(f"{m.path}\n{m.label}\nruns on {m.device}")

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
