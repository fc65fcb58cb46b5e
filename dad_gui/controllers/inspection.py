"""Inspecting a folder: listing it, the results table, the compare view, the Thresholds tab, export and
sessions. Reading and inference run in the task runner; results come back tagged with a generation (or a
request token), so stale ones are dropped."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
from PySide6.QtCore import QItemSelectionModel, QObject, QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.common.fileio import atomic_write_text

from ..app import log, show_error
from ..export import overlay_writer, results_csv
from ..qt_util import recent_paths, remember_path
from ..results_model import FILTERS, ResultsFilter, ResultsTableModel
from ..state import FolderListing
from ..widgets.compare_view import CompareView
from ..widgets.threshold_panel import ThresholdPanel
from . import Context
from .models import ModelsController

MAX_RECENT = 8
# default widths of the columns a person can resize (file, score, ground truth); the verdict (or an error's
# reason) takes the rest
COLUMN_WIDTHS = {0: 108, 1: 68, 3: 100}
VERDICT_COLUMN = 2
COLUMN_WIDTHS_KEY = "results_column_widths"


class InspectionController(QObject):
    def __init__(self, ctx: Context, models: ModelsController):
        super().__init__(ctx.window)
        self.ctx, self.models = ctx, models
        self.state, self.registry, self.runner, self.settings = ctx.state, ctx.registry, ctx.runner, ctx.settings
        self.inspecting = False
        self._folder_token = self._listed_token = 0  # folder listing requests (newest wins)
        self._view_token = 0  # image-on-screen read requests (newest wins)
        self._view: tuple | None = None  # (Sample, image, mask, input range it was read with) on screen
        self._build()
        self._connect()

    # ---- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        st = self.state
        self.table_model = ResultsTableModel(st)
        self.proxy = ResultsFilter(st)
        self.proxy.setSourceModel(self.table_model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a path's start and its file name show
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header = self.table.horizontalHeader()
        # set widths (a person may change them; they are remembered): ResizeToContents would read every one of
        # 10,000 rows on each streamed batch
        for c, width in COLUMN_WIDTHS.items():
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(c, width)
        header.setSectionResizeMode(VERDICT_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.filter_combo = QComboBox()
        self.filter_combo.addItems(FILTERS)
        self.mark_good_btn = QPushButton("Mark as good")
        self.mark_good_btn.setToolTip("Add the selected images to the next fine-tuning job (Ctrl+G)")
        self.table_pane = QWidget()
        ll = QVBoxLayout(self.table_pane)
        ll.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        top.addWidget(self.filter_combo, 1)
        top.addWidget(self.mark_good_btn)
        ll.addLayout(top)
        ll.addWidget(self.table, 1)
        self.compare = CompareView()
        self.threshold_panel = ThresholdPanel(st)
        self.image_text = QLabel("")  # the image on show: its score and verdict, or why it cannot be shown
        self.recent_menu = QMenu("Recent folders")

    def _connect(self) -> None:
        st = self.state
        self.filter_combo.currentTextChanged.connect(self.proxy.set_mode)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        st.current_changed.connect(self._show_current)
        st.results_updated.connect(self._results_updated)
        st.thresholds_changed.connect(lambda: self.compare.set_pixel_threshold(self.state.pixel_threshold))
        self.mark_good_btn.clicked.connect(self.mark_selected_good)
        self.ctx.status.cancel_btn.clicked.connect(self.cancel_inspection)
        rs = self.runner.signals
        rs.listed.connect(self._folder_listed)
        rs.viewed.connect(self._image_viewed)
        rs.results.connect(self._on_results)
        rs.progressed.connect(self._on_progress)
        rs.finished.connect(self._on_finished)
        rs.failed.connect(self._on_failed)

    def restore_settings(self, settings: QSettings) -> None:
        widths = settings.value(COLUMN_WIDTHS_KEY)
        if isinstance(widths, list) and len(widths) == len(COLUMN_WIDTHS):
            try:
                for c, width in zip(COLUMN_WIDTHS, widths):
                    self.table.horizontalHeader().resizeSection(c, max(int(width), 20))
            except (TypeError, ValueError):
                log.warning("ignored unreadable column widths: %r", widths)
        self._fill_recent_menu()

    def save_settings(self, settings: QSettings) -> None:
        header = self.table.horizontalHeader()
        settings.setValue(COLUMN_WIDTHS_KEY, [header.sectionSize(c) for c in COLUMN_WIDTHS])

    # ---- folders ----------------------------------------------------------------------------
    def open_folder_dialog(self) -> None:
        start = str(self.settings.value("last_folder", ""))
        path = QFileDialog.getExistingDirectory(self.ctx.window, "Open a folder of images", start)
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
        self.ctx.status.busy(f"Listing {folder}…")
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
            self.ctx.status.idle(f"{folder}: no images found.")
        else:
            layout = "MVTec layout, ground truth shown" if any(s.label >= 0 for s in samples) else "plain folder"
            self.ctx.status.idle(f"{folder}: {len(samples)} images ({layout}).")
        self.start_inspection()

    def folder_pending(self) -> bool:
        """A folder listing is still running (tests and the self-test wait on it)."""
        return self._folder_token != self._listed_token

    def _remember_recent(self, folder: str) -> None:
        remember_path(self.settings, "recent_folders", folder, MAX_RECENT)
        self._fill_recent_menu()

    def _recent(self) -> list[str]:
        return recent_paths(self.settings, "recent_folders")

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for f in self._recent():
            self.recent_menu.addAction(f, partial(self.open_folder, f))
        self.recent_menu.setEnabled(bool(self._recent()))

    # ---- inspection --------------------------------------------------------------------------
    def model_ready(self) -> None:
        """A new model is in use: inspect the folder again with it."""
        inspector = self.models.inspector
        if self._view is not None and (inspector is None or self._view[3] != inspector.config.input_max):
            self._view = None  # images are shown on the model's input range: read the current one again
        self.start_inspection()

    def start_inspection(self) -> None:
        inspector = self.models.inspector
        if inspector is None or not self.state.samples:
            return
        if self.state.has_results():
            self.state.clear_results()
        else:  # a fresh folder is clear already: one table reset, not two (a new run all the same)
            self.state.new_run()
        self.inspecting = True
        self.ctx.status.busy(f"Inspecting {len(self.state.samples)} images…", len(self.state.samples))
        self.runner.inspect(self.state.generation, inspector, [s.path for s in self.state.samples])

    def cancel_inspection(self) -> None:
        self.runner.cancel()

    def _on_results(self, generation: int, rows: list) -> None:
        self.state.add_results(generation, rows)

    def _on_progress(self, _kind: str, generation: int, done: int, total: int) -> None:
        if generation == self.state.generation and not self.folder_pending():
            self.ctx.status.set_progress(done, total)

    def _on_finished(self, kind: str, generation: int, cancelled: bool) -> None:
        if generation != self.state.generation:
            return
        if self.folder_pending():  # the run was cancelled for a folder still being listed: keep "Listing…"
            self.inspecting = False
            return
        if kind == "export":
            self.ctx.status.idle("Overlay export " + ("cancelled." if cancelled else "finished."))
            return
        self.inspecting = False
        c = self.state.counts()
        what = "Inspection cancelled" if cancelled else "Inspection finished"
        self.ctx.status.idle(f"{what}: {c['OK']} OK, {c['NG']} NG, {c['error']} errors.")

    def _on_failed(self, kind: str, generation: int, message: str) -> None:
        if kind in ("load", "move", "store"):
            return  # the models controller's
        if kind == "view":
            if generation == self._view_token:
                self._view = None
                self.compare.clear()
                self.image_text.setText(f"Cannot show this image: {message.splitlines()[0]}")
        elif kind == "list":
            if generation == self._folder_token:
                self._listed_token = generation
                self.ctx.status.idle("Folder not opened.")
                show_error("Cannot open folder", message)
        elif kind == "detail":
            log.warning("detail view failed: %s", message)
        elif generation == self.state.generation:
            self.inspecting = False
            self.ctx.status.idle("Inspection failed.")
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

    def _input_max(self) -> float | None:
        return self.models.inspector.config.input_max if self.models.inspector else None

    def _show_current(self, idx: int) -> None:
        """Render image idx: the image is read off the GUI thread, then :meth:`_image_viewed` draws it."""
        if not (0 <= idx < len(self.state.samples)):
            self.compare.clear()
            self.image_text.clear()
            return
        sample = self.state.samples[idx]
        if self._view is not None and self._view[0] is sample:
            self._render_current(idx, *self._view[1:3])
            return
        self._view_token += 1
        self.runner.view_image(self._view_token, sample, lambda: self._view_token, self._input_max())

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
        self._view = (sample, image, mask, self._input_max())
        self._render_current(idx, image, mask)
        if error:
            self.image_text.setText(error)

    def _render_current(self, idx: int, image: np.ndarray, mask: np.ndarray | None) -> None:
        sample = self.state.samples[idx]
        detail = self.state.detail(idx)
        inspector = self.models.inspector
        if (detail is None or detail.reconstruction is None) and inspector is not None \
                and idx not in self.state.errors and not np.isnan(self.state.scores[idx]):
            self.runner.detail(self.state.generation, inspector, idx, sample.path)
        gt = mask if sample.label == 1 else (np.zeros(image.shape[:2], bool) if sample.label == 0 else None)
        self.compare.set_images(image, detail.reconstruction if detail else None,
                                detail.anomaly_map if detail else None, gt)
        self.compare.set_pixel_threshold(self.state.pixel_threshold)
        score = self.state.scores[idx]
        verdict = self.state.verdict(idx) or "pending"
        self.image_text.setText(f"{self.state.names[idx]}: " + (f"score {score:.4f}, {verdict}"
                                                                  if not np.isnan(score) else verdict))

    # ---- learn from mistakes -----------------------------------------------------------------
    def mark_selected_good(self) -> None:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        self.state.mark_good([str(self.state.samples[r].path) for r in rows])
        if rows:
            self.ctx.status.say(f"{len(rows)} image(s) marked as good; they join the next fine-tuning job "
                                f"({len(self.state.marked_good)} in all).")

    # ---- export and sessions --------------------------------------------------------------------
    def export_csv(self, path: str | Path) -> bool:
        try:
            atomic_write_text(path, results_csv(self.state))
        except OSError as exc:
            show_error("Export failed", f"{path}: {exc.strerror or exc}")
            return False
        self.ctx.status.say(f"Results written to {path}.")
        return True

    def export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.ctx.window, "Export results", "results.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_overlays(self, out: str | Path) -> None:
        """Write the overlay PNGs of the images with a score into ``out``, the folder's sub-folders mirrored."""
        inspector = self.models.inspector
        if inspector is None or self.state.folder is None:
            return
        paths = [s.path for i, s in enumerate(self.state.samples) if not np.isnan(self.state.scores[i])]
        self.ctx.status.busy(f"Writing {len(paths)} overlays…", len(paths))
        self.runner.export_overlays(self.state.generation, inspector, paths,
                                    overlay_writer(self.state.folder, out, inspector.config.input_max))

    def export_overlays_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.ctx.window, "Folder for overlay PNGs")
        if folder:
            self.export_overlays(folder)

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
        # the session's thresholds, not the model's, once its model has loaded
        if isinstance(vid, str) and vid in self.registry.versions:
            self.models.use_version(vid, thresholds)
        elif isinstance(mpath, str) and mpath:
            self.models.open_model_file(mpath, thresholds)
        if isinstance(data.get("folder"), str):
            self.open_folder(data["folder"])
        self.state.set_threshold(thresholds[0])
        self.state.set_pixel_threshold(thresholds[1])
        return True

    def save_session_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.ctx.window, "Save session", "inspection.dadsession",
                                              "Sessions (*.dadsession)")
        if path:
            self.save_session(path)

    def open_session_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.ctx.window, "Open session", "", "Sessions (*.dadsession)")
        if path:
            self.open_session(path)
