"""The station: a folder a camera writes into, judged image by image into an audit log (:mod:`core.station`),
with the Station view showing the last verdict, counters, a rolling score chart and an alarm. The station
runs in a :class:`~dad_gui.workers.StationWorker` thread; its events are gathered and drawn at most every
:data:`REDRAW_MS`, so a burst of images does not flood the GUI thread."""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QFileDialog, QListWidgetItem, QWidget

from core.station import Judgement, StationStatus

from ..app import log, show_error
from ..paths import data_dir
from ..qt_util import Throttle
from ..widgets.station_view import StationView
from ..workers import StationWorker
from . import Context
from .inspection import InspectionController
from .models import ModelsController

LAST_RESULTS = 50  # results kept in the list (with their images, to open in the compare view)
REDRAW_MS = 100
ALARM_STREAK_KEY = "station_alarm_streak"
STOP_WAIT_MS = 30_000  # the longest a stop waits for the batch being judged


def default_log(folder: Path) -> Path:
    """``FOLDER-station.csv`` next to the watched folder, or in the app's data folder when that is not writable."""
    beside = folder.parent / f"{folder.name}-station.csv"
    if os.access(folder.parent, os.W_OK):
        return beside
    return data_dir() / "station" / f"{folder.name}-station.csv"


@dataclass
class Tally:
    """The counters of one station session."""

    ok: int = 0
    ng: int = 0
    error: int = 0
    streak: int = 0  # NG in a row (an ERROR neither adds to it nor ends it)

    @property
    def inspected(self) -> int:
        return self.ok + self.ng + self.error

    def add(self, verdict: str) -> None:
        if verdict == "OK":
            self.ok += 1
            self.streak = 0
        elif verdict == "NG":
            self.ng += 1
            self.streak += 1
        else:
            self.error += 1


class StationController(QObject):
    show_requested = Signal(QWidget)  # the window shows this widget (its tab)

    def __init__(self, ctx: Context, models: ModelsController, inspection: InspectionController):
        super().__init__(ctx.window)
        self.ctx, self.models, self.inspection = ctx, models, inspection
        self.view = StationView()
        self.worker: StationWorker | None = None
        self.folder: Path | None = None
        self.log_path: Path | None = None
        self.threshold: float | None = None
        self.tally = Tally()
        self.statuses: list[StationStatus] = []
        self.last: deque[Judgement] = deque(maxlen=LAST_RESULTS)
        self._scores: deque[tuple[float, str]] = deque(maxlen=200)
        self._index = 0  # judged images this session (x of the chart)
        self._incoming: list[Judgement] = []
        self._pending_watch: tuple[Path, Path | None] | None = None  # a watch waiting for its model to load
        self._redraw = Throttle(REDRAW_MS, self._draw, self)
        v = self.view
        v.pause_btn.toggled.connect(self.set_paused)
        v.stop_btn.clicked.connect(self.stop)
        v.results.itemActivated.connect(self._open_item)
        try:
            v.alarm_streak.setValue(int(ctx.settings.value(ALARM_STREAK_KEY, 3)))
        except (TypeError, ValueError):
            pass
        v.alarm_streak.valueChanged.connect(lambda n: ctx.settings.setValue(ALARM_STREAK_KEY, n))
        self._buttons()

    # ---- start and stop -----------------------------------------------------------------------------
    def watch_dialog(self) -> None:
        start = str(self.ctx.settings.value("last_watch_folder", ""))
        path = QFileDialog.getExistingDirectory(self.ctx.window, "Watch a folder (station)", start)
        if path:
            self.watch(path)

    def watch(self, folder: str | Path, log_path: str | Path | None = None) -> bool:
        """Start a station on ``folder`` with the model in use (once it has loaded) and the threshold in force."""
        folder = Path(os.path.abspath(folder))
        if not folder.is_dir():
            show_error("Cannot watch folder", f"{folder}: not a folder (or not readable).")
            return False
        log_file = Path(log_path) if log_path is not None else None
        if self.models.inspector is None or self.models.loading():
            if not self.models.loading():
                show_error("Cannot watch folder", "Choose a model first (the toolbar's model list, or File > "
                                                  "Open model file…).")
                return False
            self._pending_watch = (folder, log_file)  # started by model_ready()
            self.view.state_text.setText(f"Waiting for the model to load, then watching {folder}.")
            self.show_requested.emit(self.view)
            return True
        self.stop()
        inspector, model = self.models.inspector, self.state_model_path()
        if model is None:
            show_error("Cannot watch folder", "The model in use has no file to name it by in the log.")
            return False
        self.folder, self.log_path = folder, log_file or default_log(folder)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.threshold = float(self.ctx.state.threshold)
        own = inspector.threshold
        whose = "the model's own" if own is not None and math.isclose(own, self.threshold, abs_tol=1e-9) \
            else "set on the Thresholds tab"
        self.tally, self._index = Tally(), 0
        self.last.clear()
        self._scores.clear()
        self._incoming.clear()
        self.statuses.clear()
        self.view.reset()
        self.view.set_threshold(self.threshold)
        self.view.session_text.setText(
            f"Folder: {folder}\nLog: {self.log_path}\nModel: {Path(model).name}\n"
            f"Threshold: {self.threshold:.4f} ({whose}; fixed for this session)")
        self.view.compare.set_pixel_threshold(self.ctx.state.pixel_threshold)
        self.view.state_text.setText(f"Starting the station on {folder}…")
        self.ctx.settings.setValue("last_watch_folder", str(folder))
        worker = StationWorker(inspector, folder, self.log_path, model, self.threshold)
        worker.event.connect(self._on_event)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        self._buttons()
        self.show_requested.emit(self.view)
        return True

    def state_model_path(self) -> str | None:
        model = self.ctx.state.model
        return model.path if model is not None else None

    def model_ready(self) -> None:
        """A model has loaded: start the watch that waited for it."""
        if self._pending_watch is not None:
            folder, log_file = self._pending_watch
            self._pending_watch = None
            self.watch(folder, log_file)

    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def set_paused(self, paused: bool) -> None:
        if self.worker is None:
            return
        if paused:
            self.worker.pause()
            self.view.state_text.setText(f"Paused: images arriving in {self.folder} wait for Resume.")
        else:
            self.worker.resume()
            self.view.state_text.setText(f"Watching {self.folder}.")
        self._buttons()

    def stop(self) -> None:
        """End the station: the batch being judged is logged, then the log is closed (waits for that)."""
        self._pending_watch = None
        worker = self.worker
        if worker is None:
            return
        worker.stop()
        worker.resume()
        if not worker.wait(STOP_WAIT_MS):
            log.warning("the station did not stop within %d s", STOP_WAIT_MS // 1000)
        self._on_finished()

    def close(self) -> None:
        """The window closes: stop cleanly (the log stays intact)."""
        self.stop()
        self._redraw.cancel()

    def _on_finished(self) -> None:
        worker = self.worker
        if worker is None or worker.isRunning():
            return
        self.worker = None
        QCoreApplication.sendPostedEvents(self)  # the last events it sent
        self._draw()
        worker.deleteLater()
        self.view.state_text.setText(f"Stopped. {self.tally.inspected} images judged; log {self.log_path}.")
        self._buttons()

    def _buttons(self) -> None:
        on = self.worker is not None
        v = self.view
        v.stop_btn.setEnabled(on)
        v.pause_btn.setEnabled(on)
        v.pause_btn.blockSignals(True)
        v.pause_btn.setChecked(on and self.worker is not None and self.worker.paused())
        v.pause_btn.blockSignals(False)
        v.pause_btn.setText("Resume" if v.pause_btn.isChecked() else "Pause")

    # ---- events --------------------------------------------------------------------------------------
    def _on_event(self, ev: object) -> None:
        if isinstance(ev, Judgement):
            self._incoming.append(ev)
            self._redraw.request()
        elif isinstance(ev, StationStatus):
            self.statuses.append(ev)
            if ev.kind in ("waiting", "log", "warning"):
                self.view.state_text.setText(ev.message)
            elif ev.kind in ("start", "back"):
                self.view.state_text.setText(f"Watching {self.folder}.")
            self.ctx.status.say(f"Station: {ev.message}")

    def _on_failed(self, message: str) -> None:
        self.view.state_text.setText(f"Station stopped: {message.splitlines()[0]}")
        show_error("Station", message.splitlines()[0], message)

    def _draw(self) -> None:
        new, self._incoming = self._incoming, []
        if not new:
            return
        alarm_at = self.view.alarm_streak.value()
        ng_seen, streak_alarm = False, False
        for j in new:
            self.tally.add(j.verdict)
            self._index += 1
            ng_seen |= j.verdict == "NG"
            streak_alarm |= j.verdict == "NG" and self.tally.streak >= alarm_at
            if j.score is not None:
                self._scores.append((j.score, j.verdict))
            self.last.appendleft(j)
            item = QListWidgetItem(self._line(j))
            item.setData(Qt.ItemDataRole.UserRole, j)
            item.setToolTip(f"{j.path}\n{j.reason}" if j.reason else str(j.path))
            self.view.results.insertItem(0, item)
        while self.view.results.count() > LAST_RESULTS:
            self.view.results.takeItem(self.view.results.count() - 1)
        t = self.tally
        self.view.set_counters(t.inspected, t.ng, t.ok, t.streak)
        first = self._index - len(self._scores) + 1
        self.view.set_scores(first, [s for s, _ in self._scores], [v for _, v in self._scores])
        self.show_judgement(new[-1])
        if streak_alarm:
            self.view.flash(6)
            QApplication.beep()
            QApplication.alert(self.ctx.window)
        elif ng_seen:
            self.view.flash(2)
            QApplication.beep()

    @staticmethod
    def _line(j: Judgement) -> str:
        score = f"{j.score:.4f}" if j.score is not None else "—"
        extra = f"  ({j.reason})" if j.verdict == "ERROR" and j.reason else ""
        return f"{j.time:%H:%M:%S}  {j.verdict:<5}  {score}  {j.path.name}{extra}"

    def show_judgement(self, j: Judgement) -> None:
        """Show one judged image large in the Station view."""
        score = f"score {j.score:.4f}" if j.score is not None else j.reason
        self.view.show_verdict(j.verdict, f"{j.path.name}: {score}")
        if j.image is not None and j.result is not None:
            self.view.compare.set_images(*_panels(j))
        else:
            self.view.compare.clear()

    def _open_item(self, item: QListWidgetItem) -> None:
        j = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(j, Judgement):
            self.open_in_compare(j)

    def open_in_compare(self, j: Judgement) -> None:
        """Open a result in the inspection's compare view (and show it large here too)."""
        self.show_judgement(j)
        if j.image is None or j.result is None:
            self.inspection.image_text.setText(f"{j.path.name}: ERROR, {j.reason}")
            return
        self.inspection.compare.set_images(*_panels(j))
        score = f"score {j.score:.4f}, " if j.score is not None else ""
        self.inspection.image_text.setText(f"{j.path.name} (station): {score}{j.verdict}")
        self.show_requested.emit(self.inspection.compare)


def _panels(j: Judgement) -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
    """The compare view's inputs from a judgement: the input, the reconstruction as 8 bits, the anomaly map."""
    assert j.image is not None and j.result is not None
    rec = (np.clip(j.result.reconstruction, 0, 1) * 255).astype(np.uint8)
    return j.image, rec, j.result.anomaly_map, None
