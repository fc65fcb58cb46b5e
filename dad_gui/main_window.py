"""Main window: a thin shell that builds the mode controllers, the menus and the tabs, and routes the few
events that cross modes (a finished training job registers a model version; inspection leaves the GPU
while a job trains; a newly loaded model inspects the open folder again, or starts a station that waited
for it).

No computation happens here or in the controllers: workers run ``core`` off the GUI thread and their
results come back as queued signals tagged with a generation number, so stale results are dropped.

``MainWindow(line=True)`` is the line application's window (``dad_gui.line``): the Inspect and Station views with
exported models only, and no training at all: no Training tab, no fine-tuning controls, the training code never
imported, and a note saying where models are trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QWidget,
)

from . import APP_NAME, __version__
from .app import apply_theme, show_error
from .controllers import Context
from .controllers.inspection import InspectionController
from .controllers.models import WHERE_TO_TRAIN, ModelsController
from .controllers.station import StationController
from .model_files import is_model_file
from .paths import data_dir
from .registry import Registry
from .state import AppState
from .widgets.status_line import StatusLine
from .workers import TaskRunner

if TYPE_CHECKING:
    from .controllers.training import TrainingController

LINE_TITLE = f"{APP_NAME} (line)"
LINE_NOTE = "Inspection only. Training runs in the full DiffusionAD Inspector; export a model there with `dad export`."

SHORTCUTS = (
    ("Ctrl+O", "Open a folder of images"), ("Up / Down", "Previous / next image"),
    ("Space", "Show or hide the heatmap overlay"), ("F", "Fit images to the window"),
    ("1", "Zoom to one image pixel per screen pixel"), ("+ / -", "Zoom in / out"),
    ("Ctrl+E", "Export results as CSV"), ("Ctrl+G", "Mark selected images as good"),
    ("F1", "This list"),
)


class MainWindow(QMainWindow):
    def __init__(self, registry_root: str | Path | None = None, line: bool = False, open_current: bool = True):
        """``line``: the line application's window (exported models only, no training); ``open_current``: load the
        registry's current model (not when the command line names the model: its load would come first)."""
        super().__init__()
        self.line = line
        self.line_note: QLabel | None = None  # the line application's note on where models are trained
        self.setWindowTitle(LINE_TITLE if line else APP_NAME)
        self.setAcceptDrops(True)
        self.settings = QSettings()
        self.state = AppState()
        self.registry = Registry(registry_root or data_dir(), exported_only=line)
        self.runner = TaskRunner()
        self.status = StatusLine(self)
        ctx = Context(self, self.state, self.registry, self.runner, self.settings, self.status, exported_only=line)
        self.models = ModelsController(ctx)
        self.inspection = InspectionController(ctx, self.models)
        self.training: TrainingController | None = None
        if not line:
            from .controllers.training import TrainingController  # the training code: the full application's

            self.training = TrainingController(ctx)
        self.station = StationController(ctx, self.models, self.inspection)
        self._build_widgets()
        self._build_actions()
        self._route()
        self._restore_settings()
        if self.registry.warning:
            QTimer.singleShot(0, lambda: show_error("Model registry", self.registry.warning or ""))
        if open_current and self.registry.usable(self.registry.current):
            self.models.use_version(self.registry.current or "")

    # ---- construction -------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.addTab(self.inspection.threshold_panel, "Thresholds")
        if self.training is not None:
            self.tabs.addTab(self.training.panel, "Training")
        else:
            self.inspection.mark_good_btn.hide()  # marked images feed a fine-tuning job
        self.tabs.addTab(self.models.panel, "Models")
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.inspection.table_pane)
        self.splitter.addWidget(self.inspection.compare)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([400, 720, 420])
        self.modes = QTabWidget()  # inspecting a folder, and the station
        self.modes.addTab(self.splitter, "Inspect")
        self.modes.addTab(self.station.view, "Station")
        self.setCentralWidget(self.modes)
        sb = self.statusBar()
        sb.addWidget(self.status.message, 1)  # runs and jobs
        sb.addWidget(self.inspection.image_text, 1)
        sb.addPermanentWidget(self.status.progress)
        sb.addPermanentWidget(self.status.cancel_btn)
        sb.addPermanentWidget(self.models.model_label)
        sb.addPermanentWidget(self.models.device_label)
        self.resize(1500, 900)

    def _action(self, text: str, slot, shortcut: str | None = None) -> QAction:  # noqa: ANN001
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        ins, compare = self.inspection, self.inspection.compare
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        fm.addAction(self._action("Open folder…", ins.open_folder_dialog, "Ctrl+O"))
        fm.addMenu(ins.recent_menu)
        fm.addAction(self._action("Open model file…", self.models.open_dialog))
        fm.addMenu(self.models.recent_menu)
        fm.addAction(self._action("Watch folder (station)…", self.station.watch_dialog))
        fm.addSeparator()
        fm.addAction(self._action("Export results (CSV)…", ins.export_csv_dialog, "Ctrl+E"))
        fm.addAction(self._action("Export overlays (PNG)…", ins.export_overlays_dialog))
        fm.addAction(self._action("Save session…", ins.save_session_dialog))
        fm.addAction(self._action("Open session…", ins.open_session_dialog))
        fm.addSeparator()
        fm.addAction(self._action("Quit", self.close, "Ctrl+Q"))
        vm = mb.addMenu("&View")
        vm.addAction(self._action("Toggle overlay", compare.toggle_overlay, "Space"))
        vm.addAction(self._action("Fit to window", compare.fit, "F"))
        vm.addAction(self._action("Zoom 1:1", compare.one_to_one, "1"))
        vm.addAction(self._action("Zoom in", lambda: compare.zoom(1.25), "+"))
        vm.addAction(self._action("Zoom out", lambda: compare.zoom(0.8), "-"))
        vm.addSeparator()
        vm.addAction(self._action("Dark theme", lambda: self.set_theme("dark")))
        vm.addAction(self._action("Light theme", lambda: self.set_theme("light")))
        im = mb.addMenu("&Inspect")
        im.addAction(self._action("Run inspection again", ins.start_inspection, "F5"))
        im.addAction(self._action("Cancel", ins.cancel_inspection, "Esc"))
        if self.training is not None:
            im.addAction(self._action("Mark selected as good", ins.mark_selected_good, "Ctrl+G"))
        hm = mb.addMenu("&Help")
        hm.addAction(self._action("Keyboard shortcuts", self.show_shortcuts, "F1"))
        hm.addAction(self._action("About", self.show_about))
        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.addAction(self._action("Open folder", ins.open_folder_dialog))
        tb.addSeparator()
        tb.addWidget(QLabel(" Model "))
        tb.addWidget(self.models.combo)
        tb.addAction(self._action("Open model file", self.models.open_dialog))
        if self.line:
            spacer = QWidget()
            spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            tb.addWidget(spacer)
            self.line_note = QLabel(f" {LINE_NOTE} ")
            self.line_note.setObjectName("line_note")
            self.line_note.setToolTip(WHERE_TO_TRAIN)
            tb.addWidget(self.line_note)

    def _route(self) -> None:
        """The events that cross modes."""
        self.models.model_ready.connect(self.inspection.model_ready)
        self.models.registry_edited.connect(self.registry_changed)
        self.models.model_ready.connect(self.station.model_ready)
        self.station.show_requested.connect(self.show_widget)
        if self.training is not None:
            self.training.device_changed.connect(self.models.set_job_device)
            self.training.device_changed.connect(self.station.set_job_device)
            self.training.show_requested.connect(self.tabs.setCurrentWidget)
            self.training.registry_edited.connect(self.registry_changed)
            self.training.may_start = self.station.may_train

    def show_widget(self, widget: QWidget) -> None:
        """Bring the mode tab (and side tab) that holds ``widget`` to the front."""
        for tabs in (self.modes, self.tabs):
            w: QWidget | None = widget
            while w is not None and tabs.indexOf(w) < 0:
                w = w.parentWidget()
            if w is not None:
                tabs.setCurrentWidget(w)

    def registry_changed(self) -> None:
        """A model version was added, renamed or deleted."""
        self.models.refresh()
        if self.training is not None:
            self.training.refresh()

    # ---- entry points (command line, drops) -------------------------------------------------------
    def open_folder(self, path: str | Path) -> bool:
        return self.inspection.open_folder(path)

    def open_model_file(self, path: str | Path) -> bool:
        return self.models.open_model_file(path)

    def open_session(self, path: str | Path) -> bool:
        return self.inspection.open_session(path)

    def watch_folder(self, path: str | Path, log: str | Path | None = None) -> bool:
        return self.station.watch(path, log)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            p = Path(url.toLocalFile())
            if p.is_dir():
                self.open_folder(p)
            elif is_model_file(p):  # the line application says why it does not open a checkpoint
                self.open_model_file(p)
            elif p.is_file():
                self.open_folder(p.parent)
            return

    # ---- comfort ----------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        self.settings.setValue("theme", theme)
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS
                       if not (self.training is None and k == "Ctrl+G"))
        QMessageBox.information(self, "Keyboard shortcuts", f"<table cellpadding='4'>{rows}</table>")

    def show_about(self) -> None:
        title = LINE_TITLE if self.line else APP_NAME
        QMessageBox.about(self, f"About {title}",
                          f"<b>{title}</b> {__version__}<br>Visual inspection with DiffusionAD (Zhang et al., "
                          "TPAMI 2025): anomaly score, reconstruction and heatmap for every image."
                          + (f"<br><br>{WHERE_TO_TRAIN}" if self.line else ""))

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
        self.inspection.restore_settings(self.settings)

    def closeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        if self.training is not None and not self.training.may_close():
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("splitter", self.splitter.saveState())
        self.inspection.save_settings(self.settings)
        self.station.close()
        self.models.close()
        if self.training is not None:
            self.training.jobs.wait()
        self.runner.wait()
        event.accept()
