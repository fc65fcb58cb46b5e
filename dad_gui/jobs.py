"""Fine-tuning jobs in a child process (no Qt), so a crash cannot take the GUI down.

The parent starts :func:`run_job` with a spawn context, sends nothing but a cancel event, and
reads plain-dict messages from a queue: ``progress``, ``preview``, ``done``, ``error``.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the training code is imported where a job is made or run: the line application has none
    from core.train.run import RunSpec


@dataclass(frozen=True)
class JobSpec:
    """A training job: the run (:class:`core.train.run.RunSpec`, the same description ``dad train`` builds) and
    how the job's process runs it."""

    run: RunSpec
    threads: int = 0  # torch threads in the child (0: torch's default)

    def changed(self, **changes: Any) -> JobSpec:
        """This job with some options changed: ``threads``, or any of its run's (checked again: a bad value
        raises :class:`~core.train.run.RunSpecError`)."""
        from core.train.run import check_whole_number

        threads = changes.pop("threads", self.threads)
        check_whole_number("threads", threads, 0)
        return JobSpec(self.run.changed(**changes) if changes else self.run, threads)


def run_job(spec: JobSpec, queue: Any, cancel: Any) -> None:
    """Child-process entry point; never raises (errors become an ``error`` message)."""
    try:
        _run(spec, queue, cancel)
    except BaseException as exc:  # noqa: BLE001 - report anything to the GUI
        queue.put({"type": "error", "message": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


def _run(spec: JobSpec, queue: Any, cancel: Any) -> None:
    import torch

    from core.common.cpu import lower_thread_priority, tune_cpu
    from core.train.run import build_trainer

    lower_thread_priority()  # before torch starts its threads (they inherit it): the window stays fluid
    tune_cpu()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    prepared = build_trainer(spec.run)
    trainer = prepared.trainer
    queue.put({"type": "started", "device": str(trainer.device), "train_images": len(trainer.data.train),
               "skipped": prepared.skipped, "textures": prepared.textures, "step": trainer.step,
               "total": trainer.train_config.steps, "channels": trainer.model_config.channels})
    parent = os.getppid()  # the job is not a daemon (its batch workers are its children): it ends with the app

    def stop() -> bool:
        return cancel.is_set() or os.getppid() != parent

    for rec in trainer.run(cancel=spec.run.stopper(stop)):
        if rec.done:
            queue.put({"type": "done", "checkpoint": rec.checkpoint, "cancelled": rec.cancelled,
                       "step": rec.step, "message": rec.message})
            return
        queue.put({"type": "progress", "step": rec.step, "total": rec.total, "losses": rec.losses,
                   "eta_s": rec.eta_s, "images_per_s": rec.images_per_s, "checkpoint": rec.checkpoint,
                   "message": rec.message})  # a setup record (feature memory) has a message and no losses
        if rec.preview is not None:
            queue.put({"type": "preview", "step": rec.step, **rec.preview})
