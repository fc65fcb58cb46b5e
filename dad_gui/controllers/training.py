"""The Training tab: a fine-tuning job in a child process (:class:`JobController`); a finished job's model
is registered as a new version."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from core.train.run import RunSpecError

from ..app import show_error
from ..paths import data_dir
from ..widgets.training_panel import TrainingPanel
from ..workers import JobController
from . import Context


class TrainingController(QObject):
    device_changed = Signal(object)  # the device a running job holds (str), or None when no job runs
    registry_edited = Signal()  # a finished job registered a model version
    show_requested = Signal(QWidget)  # bring this tab forward

    def __init__(self, ctx: Context):
        super().__init__(ctx.window)
        self.ctx = ctx
        self.state, self.registry = ctx.state, ctx.registry
        self.panel = TrainingPanel(self.state, self.registry)
        self.jobs = JobController()
        self.may_start: Callable[[], bool] = lambda: True  # asked before a job starts (a running station asks)
        self.panel.start_requested.connect(self.start_job)
        self.panel.cancel_requested.connect(self.jobs.cancel)
        self.jobs.started.connect(self._job_started)
        self.jobs.progressed.connect(self.panel.on_progress)
        self.jobs.preview.connect(self.panel.on_preview)
        self.jobs.finished.connect(self._job_finished)
        self.jobs.failed.connect(self._job_failed)

    def start_job(self, resume: bool = False) -> None:
        self.start_job_with(resume=resume)

    def start_job_with(self, resume: bool = False, **overrides: object) -> None:
        """Start a job from the form; ``overrides`` change options of its :class:`JobSpec` (the self-test, scripts)."""
        if self.jobs.running():
            show_error("Training", "A training job is already running; cancel it first.")
            return
        if not self.may_start():
            return
        out_dir = data_dir() / "jobs" / time.strftime("%Y%m%d-%H%M%S")
        spec = self.panel.build_spec(str(out_dir), resume=resume)
        if spec is None:
            return
        try:
            spec = spec.changed(**overrides)
        except RunSpecError as exc:
            self.panel.status.setText(f"Cannot start: {exc}")
            return
        self.jobs.start(spec)
        self.panel.job_started(spec)
        self.show_requested.emit(self.panel)

    def _job_started(self, msg: dict) -> None:
        self.panel.on_started(msg)
        self.device_changed.emit(str(msg.get("device") or "cpu"))

    def _job_done(self) -> None:
        self.device_changed.emit(None)

    def _job_finished(self, msg: dict) -> None:
        self._job_done()
        name = None
        if not msg.get("cancelled") and msg.get("checkpoint"):
            try:
                version = self.registry.add(msg["checkpoint"])
                name = version.name
                self.state.clear_marked()  # they are in this model now
            except Exception as exc:  # noqa: BLE001 - report, keep running
                show_error("Model not registered", f"{msg['checkpoint']}: {exc}")
        self.panel.on_finished(msg, name)
        self.registry_edited.emit()

    def _job_failed(self, message: str) -> None:
        self._job_done()
        self.panel.on_failed(message)
        show_error("Training failed", message.split("\n")[0], message)

    def refresh(self) -> None:
        """The registry changed: the models a job can start from."""
        self.panel.refresh_models()

    def may_close(self) -> bool:
        """Ask before quitting during a job (its last checkpoint is kept); True: go ahead."""
        if not self.jobs.running():
            return True
        answer = QMessageBox.question(
            self.ctx.window, "Training in progress",
            "A training job is running. Cancel it (its last checkpoint is kept) and quit?")
        return answer == QMessageBox.StandardButton.Yes
