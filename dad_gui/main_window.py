"""Main window: wires panels to the state, the task runner, the job controller and the registry.

No computation happens here: workers run ``core`` off the GUI thread and their results come
back as queued signals tagged with a generation number, so stale results are dropped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QItemSelectionModel, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.checkpoint import atomic_write_text
from core.devices import device_name, inference_device
from core.inference import Inspector

from . import APP_NAME, __version__
from .app import apply_theme, log, show_error
from .paths import data_dir
from .registry import Registry, RegistryError
from .results_model import FILTERS, ResultsFilter, ResultsTableModel
from .state import AppState, FolderListing, ModelInfo
from .widgets.compare_view import CompareView
from .widgets.models_panel import ModelsPanel
from .widgets.threshold_panel import ThresholdPanel
from .widgets.training_panel import TrainingPanel
from .workers import JobController, TaskRunner

SHORTCUTS = (
    ("Ctrl+O", "Open a folder of images"), ("Up / Down", "Previous / next image"),
    ("Space", "Show or hide the heatmap overlay"), ("F", "Fit images to the window"),
    ("1", "Zoom to one image pixel per screen pixel"), ("+ / -", "Zoom in / out"),
    ("Ctrl+E", "Export results as CSV"), ("Ctrl+G", "Mark selected images as good"),
    ("F1", "This list"),
)
MAX_RECENT = 8


def torch_type(device: str) -> str:
    """'cuda:0' -> 'cuda' (no torch import in the GUI module)."""
    return device.split(":", 1)[0]


class MainWindow(QMainWindow):
    def __init__(self, registry_root: str | Path | None = None):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.settings = QSettings()
        self.state = AppState()
        self.registry = Registry(registry_root or data_dir())
        self.runner = TaskRunner()
        self.jobs = JobController()
        self.inspector: Inspector | None = None
        self._pending_model: tuple[str, str | None, int] | None = None  # path, version, load token
        self._load_token = 0
        # a restored session's thresholds, for the model load (token) it asked for
        self._session_thresholds: tuple[float, float, int] | None = None
        self._job_device: str | None = None  # the device a running training job holds
        self._inspecting = False
        self._folder_token = self._listed_token = 0  # folder listing requests (newest wins)
        self._view_token = 0  # image-on-screen read requests (newest wins)
        self._view: tuple | None = None  # (Sample, image, mask) on screen
        self._build_widgets()
        self._build_actions()
        self._connect()
        self._restore_settings()
        if self.registry.warning:
            QTimer.singleShot(0, lambda: show_error("Model registry", self.registry.warning or ""))
        if self.registry.current:
            self.use_version(self.registry.current)

    # ---- construction -------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        st = self.state
        self.table_model = ResultsTableModel(st)
        self.proxy = ResultsFilter(st)
        self.proxy.setSourceModel(self.table_model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # fixed widths: ResizeToContents would read every one of 10,000 rows on each streamed batch
        for c, width in ((1, 70), (2, 80), (3, 100)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(c, width)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.filter_combo = QComboBox()
        self.filter_combo.addItems(FILTERS)
        self.mark_good_btn = QPushButton("Mark as good")
        self.mark_good_btn.setToolTip("Add the selected images to the next fine-tuning job (Ctrl+G)")
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        top.addWidget(self.filter_combo, 1)
        top.addWidget(self.mark_good_btn)
        ll.addLayout(top)
        ll.addWidget(self.table, 1)

        self.compare = CompareView()
        self.threshold_panel = ThresholdPanel(st)
        self.training_panel = TrainingPanel(st, self.registry)
        self.models_panel = ModelsPanel(self.registry)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.threshold_panel, "Thresholds")
        self.tabs.addTab(self.training_panel, "Training")
        self.tabs.addTab(self.models_panel, "Models")

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.compare)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([400, 720, 420])
        self.setCentralWidget(self.splitter)

        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(260)
        self.model_label = QLabel("No model")
        self.device_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setVisible(False)
        self.status_text = QLabel("Open a folder of images (Ctrl+O) or drop one here.")  # runs and jobs
        self.image_text = QLabel("")  # the image on show: its score and verdict, or why it cannot be shown
        sb = self.statusBar()
        sb.addWidget(self.status_text, 1)
        sb.addWidget(self.image_text, 1)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_btn)
        sb.addPermanentWidget(self.model_label)
        sb.addPermanentWidget(self.device_label)
        self.resize(1500, 900)

    def _action(self, text: str, slot, shortcut: str | None = None) -> QAction:  # noqa: ANN001
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        fm.addAction(self._action("Open folder…", self._open_folder_dialog, "Ctrl+O"))
        self.recent_menu = fm.addMenu("Recent folders")
        fm.addAction(self._action("Open model file…", self._open_model_dialog))
        fm.addSeparator()
        fm.addAction(self._action("Export results (CSV)…", self._export_csv_dialog, "Ctrl+E"))
        fm.addAction(self._action("Export overlays (PNG)…", self._export_overlays_dialog))
        fm.addAction(self._action("Save session…", self._save_session_dialog))
        fm.addAction(self._action("Open session…", self._open_session_dialog))
        fm.addSeparator()
        fm.addAction(self._action("Quit", self.close, "Ctrl+Q"))
        vm = mb.addMenu("&View")
        vm.addAction(self._action("Toggle overlay", self.compare.toggle_overlay, "Space"))
        vm.addAction(self._action("Fit to window", self.compare.fit, "F"))
        vm.addAction(self._action("Zoom 1:1", self.compare.one_to_one, "1"))
        vm.addAction(self._action("Zoom in", lambda: self.compare.zoom(1.25), "+"))
        vm.addAction(self._action("Zoom out", lambda: self.compare.zoom(0.8), "-"))
        vm.addSeparator()
        vm.addAction(self._action("Dark theme", lambda: self.set_theme("dark")))
        vm.addAction(self._action("Light theme", lambda: self.set_theme("light")))
        im = mb.addMenu("&Inspect")
        im.addAction(self._action("Run inspection again", self.start_inspection, "F5"))
        im.addAction(self._action("Cancel", self.cancel_inspection, "Esc"))
        im.addAction(self._action("Mark selected as good", self.mark_selected_good, "Ctrl+G"))
        hm = mb.addMenu("&Help")
        hm.addAction(self._action("Keyboard shortcuts", self.show_shortcuts, "F1"))
        hm.addAction(self._action("About", self.show_about))
        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.addAction(self._action("Open folder", self._open_folder_dialog))
        tb.addSeparator()
        tb.addWidget(QLabel(" Model "))
        tb.addWidget(self.model_combo)
        tb.addAction(self._action("Open model file", self._open_model_dialog))

    def _connect(self) -> None:
        st = self.state
        self.filter_combo.currentTextChanged.connect(self.proxy.set_mode)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        st.current_changed.connect(self._show_current)
        st.results_updated.connect(self._results_updated)
        st.thresholds_changed.connect(self._thresholds_changed)
        self.mark_good_btn.clicked.connect(self.mark_selected_good)
        self.cancel_btn.clicked.connect(self.cancel_inspection)
        self.model_combo.activated.connect(self._model_combo_activated)
        self.models_panel.use_requested.connect(self.use_version)
        self.models_panel.changed.connect(self._registry_changed)
        self.training_panel.start_requested.connect(self.start_job)
        self.training_panel.cancel_requested.connect(self.jobs.cancel)
        self.jobs.started.connect(self._job_started)
        self.jobs.progressed.connect(self.training_panel.on_progress)
        self.jobs.preview.connect(self.training_panel.on_preview)
        self.jobs.finished.connect(self._job_finished)
        self.jobs.failed.connect(self._job_failed)
        rs = self.runner.signals
        rs.loaded.connect(self._model_loaded)
        rs.listed.connect(self._folder_listed)
        rs.moved.connect(self._inspector_moved)
        rs.viewed.connect(self._image_viewed)
        rs.results.connect(self._on_results)
        rs.progressed.connect(self._on_progress)
        rs.finished.connect(self._on_finished)
        rs.failed.connect(self._on_failed)
        self._progress_value: tuple[int, int] | None = None
        self._progress_timer = QTimer(self, singleShot=True, interval=100)
        self._progress_timer.timeout.connect(self._apply_progress)
        self._save_thr_timer = QTimer(self, singleShot=True, interval=600)
        self._save_thr_timer.timeout.connect(self._save_thresholds)
        self._refresh_model_combo()

    # ---- folders ----------------------------------------------------------------------------
    def _open_folder_dialog(self) -> None:
        start = str(self.settings.value("last_folder", ""))
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images", start)
        if path:
            self.open_folder(path)

    def open_folder(self, path: str | Path) -> bool:
        """List the folder in the background; inspection starts when the listing arrives."""
        folder = Path(path)
        if not folder.is_dir():
            show_error("Cannot open folder", f"{folder}: not a folder (or not readable).")
            return False
        self._folder_token += 1
        self.cancel_inspection()
        self._busy(f"Listing {folder}…")
        self.runner.list_folder(self._folder_token, folder)
        return True

    def _folder_listed(self, token: int, folder_text: str, listing: FolderListing) -> None:
        if token != self._folder_token:
            return  # another folder was opened meanwhile
        self._listed_token = token
        folder = Path(folder_text)
        self._view = None
        samples = listing.samples
        self.state.set_samples(folder, samples, listing)
        self.settings.setValue("last_folder", str(folder))
        self._remember_recent(str(folder))
        if not samples:
            self._idle(f"{folder}: no images found.")
        else:
            layout = "MVTec layout, ground truth shown" if any(s.label >= 0 for s in samples) else "plain folder"
            self._idle(f"{folder}: {len(samples)} images ({layout}).")
        self.start_inspection()

    def folder_pending(self) -> bool:
        """A folder listing is still running (tests and the self-test wait on it)."""
        return self._folder_token != self._listed_token

    def _remember_recent(self, folder: str) -> None:
        recent = [f for f in self._recent() if f != folder]
        self.settings.setValue("recent_folders", [folder, *recent][:MAX_RECENT])
        self._fill_recent_menu()

    def _recent(self) -> list[str]:
        value = self.settings.value("recent_folders", [])
        return [value] if isinstance(value, str) else [str(v) for v in (value or [])]  # type: ignore[attr-defined]

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for f in self._recent():
            self.recent_menu.addAction(f, partial(self.open_folder, f))
        self.recent_menu.setEnabled(bool(self._recent()))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            p = Path(url.toLocalFile())
            if p.is_dir():
                self.open_folder(p)
            elif p.suffix == ".safetensors":
                self.open_model_file(p)
            elif p.is_file():
                self.open_folder(p.parent)
            return

    # ---- models -----------------------------------------------------------------------------
    def _refresh_model_combo(self) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for v in self.registry.list():
            self.model_combo.addItem(f"{v.name} · {v.preset}", v.id)
        if self.state.model and self.state.model.version_id is None:
            self.model_combo.addItem(f"{self.state.model.name} (file)", "")
        current = self.state.model.version_id if self.state.model else None
        idx = self.model_combo.findData(current if current else "")
        self.model_combo.setCurrentIndex(max(idx, 0) if self.model_combo.count() else -1)
        self.model_combo.blockSignals(False)

    def _model_combo_activated(self, index: int) -> None:
        vid = self.model_combo.itemData(index)
        if vid:
            self.use_version(vid)

    def _open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", "", "Model checkpoints (*.safetensors)")
        if path:
            self.open_model_file(path)

    def use_version(self, version_id: str) -> None:
        if version_id not in self.registry.versions:
            show_error("Model not found", f"Model version {version_id} is no longer in the registry.")
            return
        self._load_model(str(self.registry.path(version_id)), version_id)

    def open_model_file(self, path: str | Path) -> None:
        self._load_model(str(path), None)

    def _load_model(self, path: str, version_id: str | None) -> None:
        # each request has its own token: a load that another request superseded never becomes the model
        self._load_token += 1
        self._pending_model = (path, version_id, self._load_token)
        self.cancel_inspection()
        self._busy(f"Loading model {Path(path).name}…")
        self.runner.load_model(self._load_token, path, device=str(inference_device("auto", self._job_device)))

    def _is_pending_load(self, token: int) -> bool:
        return self._pending_model is not None and self._pending_model[2] == token

    def _take_session_thresholds(self, token: int) -> tuple[float, float] | None:
        """A restored session's thresholds if they were asked for with this load, else None; cleared either
        way (once another model was opened, it keeps its own)."""
        session, self._session_thresholds = self._session_thresholds, None
        return session[:2] if session is not None and session[2] == token else None

    def _model_loaded(self, token: int, inspector: Inspector) -> None:
        if not self._is_pending_load(token):
            return
        assert self._pending_model is not None
        path, vid, _ = self._pending_model
        self._pending_model = None
        if self.inspector is None or self.inspector.config.input_max != inspector.config.input_max:
            self._view = None  # images are shown on the model's input range: read the current one again
        self.inspector = inspector
        ckpt = inspector.checkpoint
        version = self.registry.versions.get(vid) if vid else None
        name = version.name if version else Path(path).name
        preset = (ckpt.info.get("preset", "") if ckpt else "") or (version.preset if version else "")
        info = ModelInfo(path, name, preset, device_name(inspector.device), inspector.config.image_size, vid)
        threshold = version.threshold if version and version.threshold is not None else inspector.threshold
        pixel = version.pixel_threshold if version else 0.5
        session = self._take_session_thresholds(token)
        if session is not None:
            threshold, pixel = session
        self.state.set_model(info, threshold, pixel)
        if vid:
            try:
                self.registry.set_current(vid)
            except RegistryError as exc:
                log.warning("%s", exc)
        self._render_model_label()
        self._render_device()
        self._refresh_model_combo()
        self.models_panel.refresh()
        self._idle(f"Model {name} loaded on {info.device}.")
        self._place_inspector()  # a training job may have taken the GPU during the load
        self.start_inspection()

    def _model_failed(self, token: int, message: str) -> None:
        if not self._is_pending_load(token):
            log.warning("a superseded model load failed: %s", message.splitlines()[0] if message else "")
            return
        assert self._pending_model is not None
        path = self._pending_model[0]
        self._pending_model = None
        session = self._take_session_thresholds(token)
        if session is not None:
            self.state.set_threshold(session[0])
            self.state.set_pixel_threshold(session[1])
        self._idle("Model not loaded; the previous model stays in use.")
        self._refresh_model_combo()
        show_error("Cannot load model", f"{message.split(chr(10))[0]}\n\nThe previous model stays in use.",
                   f"{path}\n\n{message}")

    # ---- inspection --------------------------------------------------------------------------
    def start_inspection(self) -> None:
        if self.inspector is None or not self.state.samples:
            return
        if self.state.has_results():
            self.state.clear_results()
        else:  # a fresh folder is clear already: one table reset, not two (a new run all the same)
            self.state.new_run()
        gen = self.state.generation
        self._inspecting = True
        self._busy(f"Inspecting {len(self.state.samples)} images…", len(self.state.samples))
        self.runner.inspect(gen, self.inspector, [s.path for s in self.state.samples])

    def cancel_inspection(self) -> None:
        self.runner.cancel()

    def _on_results(self, generation: int, rows: list) -> None:
        self.state.add_results(generation, rows)

    def _on_progress(self, _kind: str, generation: int, done: int, total: int) -> None:
        # QProgressBar.setValue repaints at once: apply the newest value at most 10 times a second
        if generation == self.state.generation and not self.folder_pending():
            self._progress_value = (done, total)
            if not self._progress_timer.isActive():
                self._progress_timer.start()

    def _apply_progress(self) -> None:
        if self._progress_value is not None:
            done, total = self._progress_value
            self._progress_value = None
            self.progress.setMaximum(total)
            self.progress.setValue(done)

    def _on_finished(self, kind: str, generation: int, cancelled: bool) -> None:
        if generation != self.state.generation:
            return
        if self.folder_pending():  # the run was cancelled for a folder still being listed: keep "Listing…"
            self._inspecting = False
            return
        if kind == "export":
            self._idle("Overlay export " + ("cancelled." if cancelled else "finished."))
            return
        self._inspecting = False
        c = self.state.counts()
        what = "Inspection cancelled" if cancelled else "Inspection finished"
        self._idle(f"{what}: {c['OK']} OK, {c['NG']} NG, {c['error']} errors.")

    def _on_failed(self, kind: str, generation: int, message: str) -> None:
        if kind == "load":
            self._model_failed(generation, message)
        elif kind == "view":
            if generation == self._view_token:
                self._view = None
                self.compare.clear()
                self.image_text.setText(f"Cannot show this image: {message.splitlines()[0]}")
        elif kind == "move":
            self._render_device()
            where = device_name(self.inspector.device) if self.inspector else "its device"
            show_error("Model not moved", f"The model stays on {where}: {message.split(chr(10))[0]}", message)
        elif kind == "list":
            if generation == self._folder_token:
                self._listed_token = generation
                self._idle("Folder not opened.")
                show_error("Cannot open folder", message)
        elif kind == "detail":
            log.warning("detail view failed: %s", message)
        elif generation == self.state.generation:
            self._inspecting = False
            self._idle("Inspection failed.")
            show_error("Inspection failed", message.split("\n")[0], message)

    def _results_updated(self, first: int, last: int) -> None:
        if self.state.current < 0 and self.proxy.rowCount() > 0:
            self.table.selectRow(0)
            self.table.selectionModel().setCurrentIndex(self.proxy.index(0, 0),
                                                        QItemSelectionModel.SelectionFlag.NoUpdate)
            self.state.set_current(self.proxy.mapToSource(self.proxy.index(0, 0)).row())
        elif first <= self.state.current <= last:
            self._show_current(self.state.current)

    # ---- current image -------------------------------------------------------------------------
    def _row_changed(self, current, _previous) -> None:  # noqa: ANN001
        if current.isValid():
            self.state.set_current(self.proxy.mapToSource(current).row())

    def _show_current(self, idx: int) -> None:
        """Render image idx: the image is read off the GUI thread, then :meth:`_image_viewed` draws it."""
        if not (0 <= idx < len(self.state.samples)):
            self.compare.clear()
            self.image_text.clear()
            return
        sample = self.state.samples[idx]
        if self._view is not None and self._view[0] is sample:
            self._render_current(idx, *self._view[1:])
            return
        self._view_token += 1
        self.runner.view_image(self._view_token, sample, lambda: self._view_token,
                               self.inspector.config.input_max if self.inspector else None)

    def _image_viewed(self, token: int, sample, image, mask, error: str) -> None:  # noqa: ANN001
        idx = self.state.current
        if token != self._view_token or not (0 <= idx < len(self.state.samples)) \
                or self.state.samples[idx] is not sample:
            return
        if image is None:
            self._view = None
            self.compare.clear()
            self.image_text.setText(error)
            return
        self._view = (sample, image, mask)
        self._render_current(idx, image, mask)
        if error:
            self.image_text.setText(error)

    def _render_current(self, idx: int, image: np.ndarray, mask: np.ndarray | None) -> None:
        sample = self.state.samples[idx]
        detail = self.state.detail(idx)
        if detail is None and self.inspector is not None and idx not in self.state.errors \
                and not np.isnan(self.state.scores[idx]):
            self.runner.detail(self.state.generation, self.inspector, idx, sample.path)
        gt = mask if sample.label == 1 else (np.zeros(image.shape[:2], bool) if sample.label == 0 else None)
        self.compare.set_images(image, detail.reconstruction if detail else None,
                                detail.anomaly_map if detail else None, gt)
        self.compare.set_pixel_threshold(self.state.pixel_threshold)
        score = self.state.scores[idx]
        verdict = self.state.verdict(idx) or "pending"
        self.image_text.setText(f"{self.state.names[idx]}: " + (f"score {score:.4f}, {verdict}"
                                                                  if not np.isnan(score) else verdict))

    # ---- thresholds ------------------------------------------------------------------------------
    def _thresholds_changed(self) -> None:
        self.compare.set_pixel_threshold(self.state.pixel_threshold)
        self._render_model_label()
        if self.state.model and self.state.model.version_id:
            self._save_thr_timer.start()

    def _render_model_label(self) -> None:
        m = self.state.model
        if m:
            self.model_label.setText(f"Model: {m.name} · {m.preset or 'custom'} · {m.image_size} px · "
                                     f"threshold {self.state.threshold:.4f}")

    def _save_thresholds(self) -> None:
        m = self.state.model
        if m and m.version_id and m.version_id in self.registry.versions:
            try:
                self.registry.set_thresholds(m.version_id, self.state.threshold, self.state.pixel_threshold)
            except RegistryError as exc:
                show_error("Threshold not saved", str(exc))

    # ---- learn from mistakes -----------------------------------------------------------------
    def mark_selected_good(self) -> None:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        for r in rows:
            self.state.marked_good.add(str(self.state.samples[r].path))
        self.training_panel.refresh_marked()
        if rows:
            self.status_text.setText(f"{len(rows)} image(s) marked as good; they join the next fine-tuning job "
                                     f"({len(self.state.marked_good)} in all).")

    # ---- training jobs ---------------------------------------------------------------------------
    def start_job(self, resume: bool = False) -> None:
        self._start_job_with(resume=resume)

    def _start_job_with(self, resume: bool = False, **overrides: object) -> None:
        if self.jobs.running():
            show_error("Training", "A training job is already running; cancel it first.")
            return
        out_dir = data_dir() / "jobs" / time.strftime("%Y%m%d-%H%M%S")
        spec = self.training_panel.build_spec(str(out_dir), resume=resume)
        if spec is None:
            return
        for key, value in overrides.items():
            setattr(spec, key, value)
        self.jobs.start(spec)
        self.training_panel.job_started(spec)
        self.tabs.setCurrentWidget(self.training_panel)

    def _job_started(self, msg: dict) -> None:
        self.training_panel.on_started(msg)
        self._job_device = str(msg.get("device") or "cpu")
        self._place_inspector()

    def _place_inspector(self) -> None:
        """One GPU job at a time: inspection moves to the CPU while training holds the GPU, and back."""
        if self.inspector is None:
            return
        target = inference_device("auto", self._job_device)
        if target != self.inspector.device:
            self.runner.move(self.state.generation, self.inspector, str(target))
        self._render_device()

    def _inspector_moved(self, _generation: int, inspector: Inspector) -> None:
        if self.inspector is None or inspector.checkpoint is not self.inspector.checkpoint:
            return  # another model was loaded meanwhile
        self.inspector = inspector
        if self.state.model is not None:
            self.state.model.device = device_name(inspector.device)
        self._place_inspector()  # a job may have started or ended while the copy was made

    def _render_device(self) -> None:
        if self.inspector is None:
            self.device_label.setText("")
            return
        text = device_name(self.inspector.device)
        job = self._job_device
        if job and torch_type(job) != "cpu" and self.inspector.device.type == "cpu":
            text += f" · {torch_type(job).upper()} busy with training"
        self.device_label.setText(text)

    def _job_done(self) -> None:
        self._job_device = None
        self._place_inspector()

    def _job_finished(self, msg: dict) -> None:
        self._job_done()
        name = None
        if not msg.get("cancelled") and msg.get("checkpoint"):
            try:
                version = self.registry.add(msg["checkpoint"])
                name = version.name
                self.state.marked_good.clear()
                self.training_panel.refresh_marked()
            except Exception as exc:  # noqa: BLE001 - report, keep running
                show_error("Model not registered", f"{msg['checkpoint']}: {exc}")
        self.training_panel.on_finished(msg, name)
        self._registry_changed()

    def _job_failed(self, message: str) -> None:
        self._job_done()
        self.training_panel.on_failed(message)
        show_error("Training failed", message.split("\n")[0], message)

    def _registry_changed(self) -> None:
        self._refresh_model_combo()
        self.training_panel.refresh_models()
        self.models_panel.refresh()
        m = self.state.model
        if m and m.version_id and m.version_id not in self.registry.versions:
            self.model_label.setText(f"Model: {m.name} (deleted from the registry; still loaded)")

    # ---- export and sessions --------------------------------------------------------------------
    def results_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["file", "score", "verdict", "threshold", "model_version", "time"])
        model = self.state.model
        version = (model.version_id or model.path) if model else ""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        for i, s in enumerate(self.state.samples):
            score = self.state.scores[i]
            verdict = self.state.verdict(i)
            if verdict == "error":
                verdict = f"error: {self.state.errors[i]}"
            w.writerow([str(s.path), "" if np.isnan(score) else f"{score:.6f}", verdict,
                        f"{self.state.threshold:.6f}", version, stamp])
        return buf.getvalue()

    def export_csv(self, path: str | Path) -> bool:
        try:
            atomic_write_text(path, self.results_csv())
        except OSError as exc:
            show_error("Export failed", f"{path}: {exc.strerror or exc}")
            return False
        self.status_text.setText(f"Results written to {path}.")
        return True

    def _export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export results", "results.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def _export_overlays_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for overlay PNGs")
        if folder and self.inspector is not None:
            from core.overlay import overlay_png

            paths = [s.path for i, s in enumerate(self.state.samples) if not np.isnan(self.state.scores[i])]
            self._busy(f"Writing {len(paths)} overlays…", len(paths))
            self.runner.export_overlays(self.state.generation, self.inspector, paths, folder,
                                        partial(overlay_png, input_max=self.inspector.config.input_max))

    def session_dict(self) -> dict:
        m = self.state.model
        return {"format": 1, "folder": str(self.state.folder) if self.state.folder else None,
                "model_version": m.version_id if m else None, "model_path": m.path if m else None,
                "threshold": self.state.threshold, "pixel_threshold": self.state.pixel_threshold}

    def save_session(self, path: str | Path) -> bool:
        try:
            atomic_write_text(path, json.dumps(self.session_dict(), indent=2))
        except OSError as exc:
            show_error("Session not saved", f"{path}: {exc.strerror or exc}")
            return False
        return True

    def open_session(self, path: str | Path) -> bool:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a session object")
            thr = float(data.get("threshold", self.state.threshold))
            pix = float(data.get("pixel_threshold", self.state.pixel_threshold))
            if not (math.isfinite(thr) and math.isfinite(pix)):
                raise ValueError("thresholds must be finite numbers")
        except (OSError, ValueError, TypeError) as exc:
            show_error("Cannot open session", f"{path}: {exc}")
            return False
        thresholds = (min(max(thr, 0.0), 1.0), min(max(pix, 0.0), 1.0))
        vid, mpath = data.get("model_version"), data.get("model_path")
        if isinstance(vid, str) and vid in self.registry.versions:
            self.use_version(vid)
        elif isinstance(mpath, str) and mpath:
            self.open_model_file(mpath)
        if self._pending_model is not None:  # the session's, not the model's, once it has loaded
            self._session_thresholds = (*thresholds, self._pending_model[2])
        if isinstance(data.get("folder"), str):
            self.open_folder(data["folder"])
        self.state.set_threshold(thresholds[0])
        self.state.set_pixel_threshold(thresholds[1])
        return True

    def _save_session_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save session", "inspection.dadsession",
                                              "Sessions (*.dadsession)")
        if path:
            self.save_session(path)

    def _open_session_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open session", "", "Sessions (*.dadsession)")
        if path:
            self.open_session(path)

    # ---- status, comfort ----------------------------------------------------------------------------
    def _busy(self, text: str, total: int = 0) -> None:
        self.status_text.setText(text)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_btn.setVisible(total > 0)

    def _idle(self, text: str) -> None:
        self._progress_timer.stop()
        self._progress_value = None
        self.status_text.setText(text)
        self.progress.setVisible(False)
        self.cancel_btn.setVisible(False)

    def set_theme(self, theme: str) -> None:
        self.settings.setValue("theme", theme)
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
        QMessageBox.information(self, "Keyboard shortcuts", f"<table cellpadding='4'>{rows}</table>")

    def show_about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<b>{APP_NAME}</b> {__version__}<br>Visual inspection with DiffusionAD (Zhang et al., "
                          "TPAMI 2025): anomaly score, reconstruction and heatmap for every image.")

    def _restore_settings(self) -> None:
        geom = self.settings.value("geometry")
        if isinstance(geom, QByteArray):
            self.restoreGeometry(geom)
        st = self.settings.value("window_state")
        if isinstance(st, QByteArray):
            self.restoreState(st)
        sp = self.settings.value("splitter")
        if isinstance(sp, QByteArray):
            self.splitter.restoreState(sp)
        self._fill_recent_menu()

    def closeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        if self.jobs.running():
            answer = QMessageBox.question(
                self, "Training in progress",
                "A training job is running. Cancel it (its last checkpoint is kept) and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("splitter", self.splitter.saveState())
        self._save_thr_timer.stop()
        self._save_thresholds()
        self.jobs.wait()
        self.runner.wait()
        event.accept()
