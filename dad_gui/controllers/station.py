"""The station: a folder a camera writes into, judged image by image into an audit log (:mod:`core.station`),
with the Station view showing the last verdict, counters, a rolling score chart and an alarm. The station
runs in a :class:`~dad_gui.workers.StationWorker` thread; its events are gathered and drawn at most every
:data:`REDRAW_MS`, so a burst of images does not flood the GUI thread."""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QListWidgetItem, QMessageBox, QWidget

from core.model.devices import inference_device
from core.station.log import AuditLog
from core.station.station import Judgement, StationOptions, StationStatus

from ..app import log, show_error
from ..paths import data_dir
from ..qt_util import Throttle
from ..widgets.station_view import CHART_POINTS, StationView
from ..widgets.watch_dialog import WatchDialog, WatchSetup, check_setup
from ..workers import StationWorker
from . import Context
from .inspection import InspectionController
from .models import ModelsController

LAST_RESULTS = 50  # results kept in the list (with their images, to open in the compare view)
REDRAW_MS = 100
ALARM_STREAK_KEY = "station_alarm_streak"
SETUP_KEY = "station_setup"  # the last station's set-up (JSON), proposed by the next Watch folder…
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
        self._scores: deque[tuple[int, float, str]] = deque(maxlen=CHART_POINTS)  # image number, score, verdict
        self._index = 0  # judged images this session (x of the chart)
        self._incoming: list[Judgement] = []
        self._pending_watch: WatchSetup | None = None  # a watch waiting for its model to load
        self.setup: WatchSetup | None = None
        self.model_path: str | None = None  # the station's model (fixed for its session)
        self._job_device: str | None = None  # the device a training job holds
        self._redraw = Throttle(REDRAW_MS, self._draw, self)
        v = self.view
        v.pause_btn.toggled.connect(self.set_paused)
        v.stop_btn.clicked.connect(self.stop)
        v.restart_btn.clicked.connect(self.restart)
        ctx.state.thresholds_changed.connect(self._check_drift)
        ctx.state.model_changed.connect(self._check_drift)
        models.load_failed.connect(self._load_failed)
        v.results.itemActivated.connect(self._open_item)
        try:
            v.alarm_streak.setValue(int(ctx.settings.value(ALARM_STREAK_KEY, 3)))
        except (TypeError, ValueError):
            pass
        v.alarm_streak.valueChanged.connect(lambda n: ctx.settings.setValue(ALARM_STREAK_KEY, n))
        self._buttons()

    # ---- start and stop -----------------------------------------------------------------------------
    def watch_dialog(self) -> None:
        """File > Watch folder…: the set-up (remembered from the last station), then the station."""
        setup = self._last_setup()
        dialog = WatchDialog(setup, default_log, self._model_text(), self.ctx.window)
        if setup is None:
            start = str(self.ctx.settings.value("last_watch_folder", ""))
            if start:
                dialog.set_folder(start)
        accepted = dialog.exec() == WatchDialog.DialogCode.Accepted
        chosen = dialog.setup()
        dialog.deleteLater()
        if accepted and chosen is not None:
            self.start(chosen)

    def _model_text(self) -> str:
        m = self.ctx.state.model
        if m is None:
            return "No model is loaded: choose one before starting."
        return (f"Model {m.name}, threshold {self.ctx.state.threshold:.4f} ({self._whose()}): the station keeps "
                "both for its whole session, and the log records a change of either.")

    def _whose(self) -> str:
        return "the model's own" if self.ctx.state.threshold_is_own() else "set on the Thresholds tab"

    def _last_setup(self) -> WatchSetup | None:
        raw = self.ctx.settings.value(SETUP_KEY, "")
        try:
            d = json.loads(str(raw)) if raw else None
            if not isinstance(d, dict):
                return None
            return WatchSetup(Path(d["folder"]), Path(d["log"]), bool(d.get("recursive")),
                              bool(d.get("rotate_daily")), Path(d["ng_dir"]) if d.get("ng_dir") else None,
                              bool(d.get("copy_ng")))
        except (ValueError, KeyError, TypeError):
            return None

    def _remember(self, setup: WatchSetup) -> None:
        self.ctx.settings.setValue(SETUP_KEY, json.dumps({
            "folder": str(setup.folder), "log": str(setup.log), "recursive": setup.recursive,
            "rotate_daily": setup.rotate_daily, "ng_dir": str(setup.ng_dir) if setup.ng_dir else "",
            "copy_ng": setup.copy_ng}))
        self.ctx.settings.setValue("last_watch_folder", str(setup.folder))

    def watch(self, folder: str | Path, log_path: str | Path | None = None) -> bool:
        """Start a station on ``folder`` (the command line, scripts): the log beside it unless given, no other
        option."""
        folder = Path(os.path.abspath(folder))
        log_file = Path(os.path.abspath(log_path)) if log_path is not None else default_log(folder)
        return self.start(WatchSetup(folder, log_file))

    def start(self, setup: WatchSetup) -> bool:
        """Start a station with ``setup``, the model in use (once it has loaded) and the threshold in force."""
        problem = check_setup(setup)
        if problem:
            show_error("Cannot watch folder", problem)
            return False
        if self.models.inspector is None or self.models.loading():
            if not self.models.loading():
                show_error("Cannot watch folder", "Choose a model first (the toolbar's model list, or File > "
                                                  "Open model file…).")
                return False
            self._pending_watch = setup  # started by model_ready()
            self.view.state_text.setText(f"Waiting for the model to load, then watching {setup.folder}.")
            self.show_requested.emit(self.view)
            return True
        inspector, model = self.models.inspector, self.state_model_path()
        if model is None:
            show_error("Cannot watch folder", "The model in use has no file to name it by in the log.")
            return False
        try:
            setup.log.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            show_error("Cannot watch folder", f"{setup.log.parent}: cannot create the log's folder "
                                              f"({exc.strerror or exc}).")
            return False
        self.stop()  # the station before, if any (a restart)
        if self.worker is not None:  # it did not stop in time: it still holds its log
            show_error("Cannot watch folder", f"The station on {self.folder} is still finishing its last image "
                                              f"(it did not stop within {STOP_WAIT_MS // 1000} s); start again "
                                              "once it has stopped.")
            return False
        self.setup, self.folder, self.log_path = setup, setup.folder, setup.log
        self.model_path = model
        self.threshold = float(self.ctx.state.threshold)
        self.tally, self._index = Tally(), 0
        self.last.clear()
        self._scores.clear()
        self._incoming.clear()
        self.statuses.clear()
        self.view.reset()
        self.view.set_threshold(self.threshold)
        options = StationOptions(recursive=setup.recursive, ng_dir=setup.ng_dir, copy_ng=setup.copy_ng,
                                 rotate="daily" if setup.rotate_daily else None)
        logs = AuditLog(setup.log, options.rotate).shown_path
        ng = (f"\nNG and ERROR images {'copied' if setup.copy_ng else 'moved'} to {setup.ng_dir}"
              if setup.ng_dir else "")
        self.view.session_text.setText(
            f"Folder: {setup.folder}{' and its sub-folders' if setup.recursive else ''}\nLog: {logs}{ng}\n"
            f"Model: {Path(model).name}\nThreshold: {self.threshold:.4f} ({self._whose()}; fixed for this session)")
        self.view.compare.set_pixel_threshold(self.ctx.state.pixel_threshold)
        self.view.state_text.setText(f"Starting the station on {setup.folder}…")
        self._remember(setup)
        worker = StationWorker(inspector, setup.folder, setup.log, model, self.threshold, options)
        worker.event.connect(self._on_event)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        if self._job_device is not None:  # a job holds a device: judge where inference may run meanwhile
            worker.move_to(str(inference_device("auto", self._job_device)))
        worker.start()
        self._buttons()
        self._check_drift()
        self.show_requested.emit(self.view)
        return True

    def state_model_path(self) -> str | None:
        model = self.ctx.state.model
        return model.path if model is not None else None

    def model_ready(self) -> None:
        """A model has loaded: start the watch that waited for it."""
        if self._pending_watch is not None:
            setup, self._pending_watch = self._pending_watch, None
            self.start(setup)
        else:
            self._check_drift()

    # ---- the model and threshold in use against the station's --------------------------------------
    def drift(self) -> str:
        """What in use differs from the running station's model and threshold ('' when nothing does)."""
        model = self.ctx.state.model
        if self.worker is None or model is None or self.threshold is None:
            return ""
        changes = []
        if model.path != self.model_path:
            changes.append(f"model {model.name} (the station's: {Path(self.model_path or '').name})")
        if self.ctx.state.threshold != self.threshold:  # the station's is a copy: any change is one
            changes.append(f"threshold {self.ctx.state.threshold:.4f} (the station's: {self.threshold:.4f})")
        return " and ".join(changes)

    def _check_drift(self) -> None:
        changes = self.drift()
        self.view.show_notice(
            f"In use now: {changes}. The station keeps its own for this session; Restart takes the ones in use, "
            "and the log records the change." if changes else "")

    def restart(self) -> None:
        """Stop the station and start it again on the same set-up with the model and threshold in use."""
        if self.setup is not None:
            self.start(self.setup)

    def set_job_device(self, device: str | None) -> None:
        """A training job holds ``device`` (None: no job): the station judges on the CPU while the job holds the
        GPU, with a copy of its own model, and moves back when the job ends (paused or not)."""
        self._job_device = device
        if self.worker is not None:
            self.worker.move_to(str(inference_device("auto", device)))

    def _load_failed(self) -> None:
        if self._pending_watch is not None:  # the station that waited for that model does not start
            self._pending_watch = None
            self.view.state_text.setText("The model did not load: the station was not started.")

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
        if not worker.wait(STOP_WAIT_MS):  # it ends after its image; _on_finished() runs then
            log.warning("the station did not stop within %d s", STOP_WAIT_MS // 1000)
            self.view.state_text.setText(f"Stopping: the station on {self.folder} is finishing its last image.")
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
        self._check_drift()

    def may_train(self) -> bool:
        """Before a training job starts: while a station runs, ask (the job slows the station's verdicts)."""
        if not self.running():
            return True
        answer = QMessageBox.question(
            self.ctx.window, "Station running",
            f"A station is watching {self.folder}. A training job on this computer takes processor (and GPU) "
            "time from it, so its verdicts come slower while the job runs; if the job takes the GPU, the station "
            "goes on on the CPU.\n\nStart the training job anyway?")
        return answer == QMessageBox.StandardButton.Yes

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
                self._scores.append((self._index, j.score, j.verdict))
            self.last.appendleft(j)
            item = QListWidgetItem(self._line(j))
            item.setData(Qt.ItemDataRole.UserRole, j)
            item.setToolTip(f"{j.path}\n{j.reason}" if j.reason else str(j.path))
            self.view.results.insertItem(0, item)
        while self.view.results.count() > LAST_RESULTS:
            self.view.results.takeItem(self.view.results.count() - 1)
        t = self.tally
        self.view.set_counters(t.inspected, t.ng, t.ok, t.streak)
        self.view.set_scores([i for i, _, _ in self._scores], [s for _, s, _ in self._scores],
                             [v for _, _, v in self._scores])
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
