"""Fine-tuning panel: data, base model, preset, budget; progress, ETA, live loss curve and preview."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.common.presets import DEFAULT_PRESET, PRESETS
from core.train.run import RunSpec, RunSpecError

from ..jobs import JobSpec
from ..registry import Registry
from ..state import AppState

NO_TEXTURES_TIP = "Optional folder of texture images that synthetic defects are cut from."
RAW_LOSS_COLOUR, SMOOTH_LOSS_COLOUR = "#58a6ff88", "#ffa657"
CHECKPOINT_EVERY, PREVIEW_EVERY = 50, 10  # a job's checkpoints and previews (validation: the preset's)


def smoothing_factor(total_steps: int) -> float:
    """Weight of the past in the loss curve's moving average: it spans about 1/20 of the job (5 to 200 steps)."""
    span = min(max(total_steps / 20, 5), 200)
    return 1 - 2 / (span + 1)


def format_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainingPanel(QWidget):
    """Builds a :class:`JobSpec` from the form and renders job messages; it runs nothing itself."""

    start_requested = Signal(object)  # JobSpec
    cancel_requested = Signal()

    def __init__(self, state: AppState, registry: Registry, parent: QWidget | None = None):
        super().__init__(parent)
        self.state, self.registry = state, registry
        self.folders = QListWidget()
        self.folders.setTextElideMode(Qt.TextElideMode.ElideLeft)  # the end of a path says most
        self.folders.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.folders.setMaximumHeight(70)
        self.add_folder = QPushButton("Add folder…")
        self.add_folder.clicked.connect(self._pick_folder)
        self.clear_folders = QPushButton("Clear")
        self.clear_folders.clicked.connect(self.folders.clear)
        self.base = QComboBox()
        self.preset = QComboBox()
        self.preset.addItems(sorted(PRESETS, key=lambda p: p.startswith("tiny")))  # the test-only ones last
        self.preset.setCurrentText(DEFAULT_PRESET)
        self.steps = QSpinBox(minimum=1, maximum=1_000_000, value=200, singleStep=50)
        self.batch = QSpinBox(minimum=1, maximum=256)
        self.batch.setToolTip("Images per optimizer step. The preset's value is the tested one.")
        self.micro_batch = QSpinBox(minimum=0, maximum=256)
        self.micro_batch.setSpecialValueText("whole batch")
        self.micro_batch.setToolTip(
            "Runs each batch in chunks of this many images and adds up their gradients: the same training "
            "in less memory, a little slower. Use it when a job runs out of memory."
        )
        self.channels = QComboBox()
        for text, value in (("auto (grey when every image is)", None), ("grey (1 channel)", 1),
                            ("colour (3 channels)", 3)):
            self.channels.addItem(text, value)
        self.channels.setToolTip("The new model's input: grey models see colour images as their luminance. "
                                 "A model trained further keeps its own.")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.seed.setToolTip("Seed of the training's random draws: the same seed and options train the same model.")
        self.grad_clip = QDoubleSpinBox(minimum=0.0, maximum=1000.0, decimals=2, singleStep=0.5)
        self.grad_clip.setSpecialValueText("off")
        self.grad_clip.setToolTip("Scales each network's gradient down to at most this norm before its step; guards "
                                  "against the rare step that blows up the weights. Off is the published recipe.")
        self.textures = QLabel()
        self.pick_textures = QPushButton("Choose…")
        self.pick_textures.clicked.connect(self._pick_textures)
        self.clear_textures = QPushButton("None")
        self.clear_textures.clicked.connect(lambda: self.set_textures(None))
        self.texture_folder: str | None = None
        self.set_textures(None)
        self.brightness = QSpinBox(minimum=0, maximum=100, value=0, singleStep=5, suffix=" %")
        self.brightness.setToolTip(
            "Share of the synthetic training defects that are patches of the surface itself made brighter or "
            "darker. Raise it when real defects are stains, discolouration or uneven brightness that keep the "
            "surface's texture. 0 % is the published recipe."
        )
        self.large_brightness = QSpinBox(minimum=0, maximum=100, value=0, singleStep=5, suffix=" %")
        self.large_brightness.setToolTip(
            "Share of the synthetic training defects that are large (20-45 % of the image), soft-edged, faint "
            "brightness changes. Raise it when real defects are wide areas of uneven brightness with no sharp "
            "edge. 0 % is the published recipe."
        )
        self.marked = QLabel()
        self.start_btn = QPushButton("Start")
        self.resume_btn = QPushButton("Resume")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.resume_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("No job running.")
        self.status.setWordWrap(True)
        self.loss_plot = pg.PlotWidget(background="#19232d")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLabel("left", "loss")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.getAxis("left").enableAutoSIPrefix(False)
        self.loss_plot.setMinimumHeight(150)
        # the raw per-step loss, faint, and over it its exponential moving average (on the log scale shown)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen(RAW_LOSS_COLOUR, width=1))
        self.loss_smooth = self.loss_plot.plot(pen=pg.mkPen(SMOOTH_LOSS_COLOUR, width=2.5))
        self.loss_smooth.setZValue(self.loss_curve.zValue() + 1)
        self.preview_widget = pg.GraphicsLayoutWidget()
        self.preview_widget.setBackground("#19232d")
        self.preview_widget.setMinimumHeight(130)
        self.preview_items = []
        for i, title in enumerate(("input", "reconstruction", "anomaly map")):
            self.preview_widget.addLabel(title, row=0, col=i)
            vb = self.preview_widget.addViewBox(row=1, col=i, lockAspect=True, invertY=True, enableMenu=False)
            vb.setMouseEnabled(False, False)
            item = pg.ImageItem()
            vb.addItem(item)
            self.preview_items.append(item)
        self.preview_items[2].setColorMap(pg.colormap.get("inferno"))
        self.preview_step = QLabel("")
        self._losses: list[tuple[int, float]] = []
        self._smoothed: list[float] = []  # the moving average at each of ``_losses``
        self._ema = (0.0, 0.0)  # running sums: weighted log-loss, weights (no bias towards the start)
        self.last_checkpoint: str | None = None
        self._last_spec: JobSpec | None = None
        self._started_at = 0.0

        form = QFormLayout()
        frow = QHBoxLayout()
        frow.addWidget(self.add_folder)
        frow.addWidget(self.clear_folders)
        form.addRow("Good images", self.folders)
        form.addRow("", frow)
        form.addRow("Marked as good", self.marked)
        form.addRow("Start from", self.base)
        form.addRow("Preset", self.preset)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch)
        form.addRow("Micro-batch", self.micro_batch)
        form.addRow("Channels", self.channels)
        srow = QHBoxLayout()
        srow.addWidget(self.seed, 1)
        srow.addWidget(QLabel("Gradient clip"))
        srow.addWidget(self.grad_clip, 1)
        form.addRow("Seed", srow)
        trow = QHBoxLayout()
        trow.addWidget(self.textures, 1)
        trow.addWidget(self.pick_textures)
        trow.addWidget(self.clear_textures)
        form.addRow("Defect textures", trow)
        form.addRow("Brightness defects", self.brightness)
        form.addRow("Large brightness defects", self.large_brightness)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.resume_btn, self.cancel_btn):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.loss_plot, 1)
        lay.addWidget(self.preview_step)
        lay.addWidget(self.preview_widget, 1)
        self.start_btn.clicked.connect(lambda: self._request(resume=False))
        self.resume_btn.clicked.connect(lambda: self._request(resume=True))
        self.cancel_btn.clicked.connect(self.cancel_requested)
        self.base.currentIndexChanged.connect(self._base_changed)
        self.preset.currentTextChanged.connect(self._preset_changed)
        self._preset_changed(self.preset.currentText())
        self.refresh_models()
        self.refresh_marked()
        state.marked_changed.connect(self.refresh_marked)

    # ---- form ------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        current = self.base.currentData()
        self.base.blockSignals(True)
        self.base.clear()
        self.base.addItem("New model (from scratch)", None)
        for v in self.registry.list(exported=False):
            self.base.addItem(f"{v.name} ({v.preset}, {v.steps} steps)", v.id)
        idx = self.base.findData(current if current is not None else self.registry.current)
        self.base.setCurrentIndex(max(idx, 0))
        self.base.blockSignals(False)
        self._base_changed()

    def _base_changed(self) -> None:
        vid = self.base.currentData()
        version = self.registry.versions.get(vid) if vid else None
        self.preset.setEnabled(version is None)  # fine-tuning keeps the base model's architecture
        self.channels.setEnabled(version is None)  # and its channels
        if version is not None and version.preset:
            self.preset.setCurrentText(version.preset)

    def _preset_changed(self, name: str) -> None:
        if name in PRESETS:
            train_cfg = PRESETS[name][1]
            self.batch.setValue(train_cfg.batch_size)
            self.seed.setValue(train_cfg.seed)
            self.grad_clip.setValue(train_cfg.grad_clip)

    def set_textures(self, folder: str | None) -> None:
        self.texture_folder = folder or None
        self.textures.setText(folder or "built-in sources only")
        self.textures.setToolTip(folder or NO_TEXTURES_TIP)

    def _pick_textures(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of texture images (defect sources)")
        if path:
            self.set_textures(path)

    def refresh_marked(self) -> None:
        self.marked.setText(f"{len(self.state.marked_good)} image(s) from the results table")

    def add_folder_path(self, path: str) -> None:
        if path and not self.folders.findItems(path, Qt.MatchFlag.MatchExactly):
            self.folders.addItem(path)
            self.folders.item(self.folders.count() - 1).setToolTip(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of good images")
        self.add_folder_path(path)

    def build_spec(self, out_dir: str, resume: bool = False) -> JobSpec | None:
        """The job the form describes (None, with the reason in the status line, when it cannot start)."""
        try:
            return self._spec(out_dir, resume)
        except RunSpecError as exc:
            self.status.setText(f"Cannot start: {exc}")
            return None

    def _spec(self, out_dir: str, resume: bool) -> JobSpec | None:
        if resume and self._last_spec is not None and self.last_checkpoint:
            last = self._last_spec
            # memory only: a resumed job keeps its batch and recipe
            return last.changed(resume=self.last_checkpoint, init=None, micro_batch=self.micro_batch.value(),
                                steps=max(last.run.steps or 0, self.steps.value()))
        folders = [self.folders.item(i).text() for i in range(self.folders.count())]
        if not folders and not self.state.marked_good:
            self.status.setText("Add at least one folder of good images (or mark images as good).")
            return None
        vid = self.base.currentData()
        return JobSpec(RunSpec(
            data_dirs=folders, out_dir=out_dir, preset=self.preset.currentText(), steps=self.steps.value(),
            init=str(self.registry.path(vid)) if vid else None, extra_images=sorted(self.state.marked_good),
            textures=self.texture_folder, batch_size=self.batch.value(), micro_batch=self.micro_batch.value(),
            seed=self.seed.value(), grad_clip=self.grad_clip.value(),
            channels=None if vid else self.channels.currentData(),
            brightness_defects=self.brightness.value() / 100, large_brightness=self.large_brightness.value() / 100,
            checkpoint_every=CHECKPOINT_EVERY, preview_every=PREVIEW_EVERY))

    def _request(self, resume: bool) -> None:
        self.start_requested.emit(resume)

    # ---- job messages ----------------------------------------------------------------------
    def job_started(self, spec: JobSpec) -> None:
        self._last_spec = spec
        if not spec.run.resume:  # a resumed job continues its curve
            self._losses, self._smoothed, self._ema = [], [], (0.0, 0.0)
        self._started_at = time.monotonic()
        self.start_btn.setEnabled(False)
        self.resume_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText("Starting the training process…")

    def on_started(self, msg: dict) -> None:
        self.progress.setRange(0, msg["total"])
        self.progress.setValue(msg["step"])
        skipped = f", {len(msg['skipped'])} unreadable file(s) skipped" if msg.get("skipped") else ""
        textures = ""
        if self._last_spec is not None and self._last_spec.run.textures:
            n = msg.get("textures", 0)
            textures = (f", {n} defect texture(s)" if n
                        else ", no readable texture in the folder (built-in sources used)")
        model = {1: "a grey model ", 3: "a colour model "}.get(msg.get("channels", 0), "")
        self.status.setText(f"Training {model}on {msg['train_images']} images on {msg['device']}{skipped}{textures}.")

    def on_progress(self, msg: dict) -> None:
        self.progress.setMaximum(msg["total"])
        self.progress.setValue(msg["step"])
        if "loss" not in msg["losses"]:  # preparation before the first step (the feature memory): say what it does
            self.status.setText(msg.get("message") or "Preparing…")
            return
        loss = max(msg["losses"]["loss"], 1e-6)
        self._losses.append((msg["step"], loss))
        beta = smoothing_factor(msg["total"])
        value, weight = self._ema
        self._ema = (beta * value + (1 - beta) * float(np.log(loss)), beta * weight + (1 - beta))
        self._smoothed.append(float(np.exp(self._ema[0] / self._ema[1])))
        steps, losses = zip(*self._losses)
        x = np.array(steps)
        self.loss_curve.setData(x, np.array(losses))
        self.loss_smooth.setData(x, np.array(self._smoothed))
        self.status.setText(f"Step {msg['step']} / {msg['total']} · loss {msg['losses']['loss']:.4f} · "
                            f"{msg['images_per_s']:.1f} images/s · ETA {format_eta(msg['eta_s'])}")

    def on_preview(self, msg: dict) -> None:
        self.preview_items[0].setImage((np.clip(msg["input"], 0, 1) * 255).astype(np.uint8), levels=(0, 255))
        self.preview_items[1].setImage((np.clip(msg["reconstruction"], 0, 1) * 255).astype(np.uint8),
                                       levels=(0, 255))
        self.preview_items[2].setImage(msg["anomaly_map"].astype(np.float32), levels=(0.0, 1.0))
        self.preview_step.setText(f"Preview of a held-out good image at step {msg['step']}")

    def on_finished(self, msg: dict, version_name: str | None) -> None:
        self.last_checkpoint = msg.get("checkpoint")
        self._idle()
        self.resume_btn.setEnabled(bool(msg.get("cancelled")) and bool(self.last_checkpoint))
        what = "Cancelled" if msg.get("cancelled") else "Finished"
        saved = f"; registered as model version “{version_name}”" if version_name else ""
        self.status.setText(f"{what} at step {msg.get('step')}{saved}.")

    def on_failed(self, message: str) -> None:
        self._idle()
        self.resume_btn.setEnabled(bool(self.last_checkpoint))
        self.status.setText(f"Training failed: {message}")

    def _idle(self) -> None:
        self.start_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
