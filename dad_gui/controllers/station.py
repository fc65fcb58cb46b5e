"""The station: a folder a camera writes into, judged image by image into an audit log (:mod:`core.station`),
with the Station view showing the last verdict, counters, a rolling score chart and an alarm. The station
runs in a :class:`~dad_gui.workers.StationWorker` thread; its events are gathered and drawn at most every
:data:`REDRAW_MS`, so a burst of images does not flood the GUI thread. A stop never waits on the GUI thread: the
view says "stopping" until the thread reports that it has finished (a restart starts the new station then); only
closing the window waits for it, so that the log is closed before the app exits."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QListWidgetItem, QMessageBox, QWidget

from core.station.log import AuditLog
from core.station.station import Judgement, StationOptions, StationStatus

from ..app import log, show_error
from ..qt_util import Throttle
from ..widgets.station_view import CHART_POINTS, LAST_RESULTS, StationView, compare_panels
from ..widgets.watch_dialog import WatchDialog, WatchSetup, check_setup, default_log
from ..workers import StationWorker
from . import Context
from .inspection import InspectionController
from .models import ModelsController, inference_device, movable

REDRAW_MS = 100
ALARM_STREAK_KEY = "station_alarm_streak"
SETUP_KEY = "station_setup"  # the last station's set-up (JSON), proposed by the next Watch folder…
CLOSE_WAIT_MS = 30_000  # closing the window: the longest it waits for the station to log its batch and stop
STATUSES_KEPT = 500  # the station's last status messages kept (a shift can tell many)


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
        self.statuses: deque[StationStatus] = deque(maxlen=STATUSES_KEPT)
        self.last: deque[Judgement] = deque(maxlen=LAST_RESULTS)
        self._scores: deque[tuple[int, float, str]] = deque(maxlen=CHART_POINTS)  # image number, score, verdict
        self._index = 0  # judged images this session (x of the chart)
        self._incoming: list[Judgement] = []
        self._pending_watch: WatchSetup | None = None  # a watch waiting for its model to load
        self._stopping = False  # the worker was told to stop and has not finished yet
        self._next: WatchSetup | None = None  # a station to start once the stopping one has finished (a restart)
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
        return WatchSetup.from_json(self.ctx.settings.value(SETUP_KEY, ""))

    def _remember(self, setup: WatchSetup) -> None:
        self.ctx.settings.setValue(SETUP_KEY, setup.to_json())
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
        inspector, in_use = self.models.inspector, self.ctx.state.model
        model = in_use.path if in_use is not None else None
        if model is None:
            show_error("Cannot watch folder", "The model in use has no file to name it by in the log.")
            return False
        try:
            setup.log.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            show_error("Cannot watch folder", f"{setup.log.parent}: cannot create the log's folder "
                                              f"({exc.strerror or exc}).")
            return False
        if self.worker is not None:  # a restart: the station before stops first (it holds its log)
            self._next = setup  # started by _on_finished()
            self._stop_worker()
            self.view.state_text.setText(f"Stopping the station on {self.folder} (it finishes the image it is "
                                         f"judging and closes its log), then starting it on {setup.folder}.")
            return True
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
        if self._job_device is not None and movable(inspector):  # a job holds a device: judge elsewhere meanwhile
            worker.move_to(str(inference_device("auto", self._job_device)))
        worker.start()
        self._buttons()
        self._check_drift()
        self.show_requested.emit(self.view)
        return True

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
        if self.worker is not None and movable(self.worker.inspector):  # an exported model stays on the CPU
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

    def stopping(self) -> bool:
        """The station was told to stop and its thread has not finished yet."""
        return self._stopping

    def stop(self) -> None:
        """End the station without waiting for it: the batch being judged is logged, then the log is closed; the
        view says "stopping" until the thread has finished (:meth:`_on_finished`)."""
        self._pending_watch = self._next = None
        if self._stop_worker():
            self.view.state_text.setText(f"Stopping: the station on {self.folder} finishes the image it is judging "
                                         "and closes its log.")

    def _stop_worker(self) -> bool:
        """Tell the worker to stop (once); False when there is none."""
        if self.worker is None:
            return False
        if not self._stopping:
            self._stopping = True
            self.worker.stop()
            self.worker.resume()
            self._buttons()
        return True

    def close(self) -> None:
        """The window closes: stop the station and wait for it to close its log (the one wait on the GUI thread:
        the app is exiting)."""
        self._pending_watch = self._next = None
        worker = self.worker
        if self._stop_worker() and worker is not None and not worker.wait(CLOSE_WAIT_MS):
            log.warning("the station did not stop within %d s", CLOSE_WAIT_MS // 1000)
        self._on_finished()
        self._redraw.cancel()

    def _on_finished(self) -> None:
        """The worker thread has finished (its ``finished`` signal): the station is stopped, and a restart asked
        for meanwhile starts now."""
        worker = self.worker
        if worker is None or worker.isRunning():
            return
        self.worker, self._stopping = None, False
        QCoreApplication.sendPostedEvents(self)  # the last events it sent
        self._draw()
        worker.deleteLater()
        self.view.state_text.setText(f"Stopped. {self.tally.inspected} images judged; log {self.log_path}.")
        self._buttons()
        self._check_drift()
        setup, self._next = self._next, None
        if setup is not None:
            self.start(setup)

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
        on = self.worker is not None and not self._stopping
        v = self.view
        v.stop_btn.setEnabled(on)
        v.pause_btn.setEnabled(on)
        v.restart_btn.setEnabled(not self._stopping)
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
            if self._stopping:  # the view says "stopping" until the thread has finished
                pass
            elif ev.kind in ("waiting", "log", "warning"):
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
        self.view.add_results(new)
        t = self.tally
        self.view.set_counters(t.inspected, t.ng, t.ok, t.streak)
        self.view.set_scores([i for i, _, _ in self._scores], [s for _, s, _ in self._scores],
                             [v for _, _, v in self._scores])
        self.view.show_judgement(new[-1])
        if streak_alarm:
            self.view.flash(6)
            QApplication.beep()
            QApplication.alert(self.ctx.window)
        elif ng_seen:
            self.view.flash(2)
            QApplication.beep()

    def _open_item(self, item: QListWidgetItem) -> None:
        j = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(j, Judgement):
            self.open_in_compare(j)

    def open_in_compare(self, j: Judgement) -> None:
        """Open a result in the inspection's compare view (and show it large here too)."""
        self.view.show_judgement(j)
        if j.image is None or j.result is None:
            self.inspection.image_text.setText(f"{j.path.name}: ERROR, {j.reason}")
            return
        self.inspection.compare.set_images(*compare_panels(j))
        score = f"score {j.score:.4f}, " if j.score is not None else ""
        self.inspection.image_text.setText(f"{j.path.name} (station): {score}{j.verdict}")
        self.show_requested.emit(self.inspection.compare)
