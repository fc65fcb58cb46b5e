"""Fine-tuning jobs in a child process (no Qt), so a crash cannot take the GUI down.

The parent starts :func:`run_job` with a spawn context, sends nothing but a cancel event, and
reads plain-dict messages from a queue: ``progress``, ``preview``, ``done``, ``error``.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any

from core.common.presets import DEFAULT_PRESET


@dataclass
class JobSpec:
    folders: list[str]  # good-image folders (MVTec roots use train/good)
    out_dir: str
    preset: str = DEFAULT_PRESET
    steps: int = 200
    base_checkpoint: str | None = None  # fine-tune from this model version
    resume_checkpoint: str | None = None
    extra_images: list[str] = field(default_factory=list)  # "marked as good" files
    textures: str | None = None
    brightness_defects: float | None = None  # share of brightness-change defects; None: the preset's
    large_brightness: float | None = None  # share of large, faint brightness-change defects; None: the preset's
    batch_size: int | None = None  # None: the preset's
    micro_batch: int = 0  # > 0: run each batch in chunks of this size (same step, less memory)
    preview_every: int = 10
    checkpoint_every: int = 50
    device: str = "auto"
    threads: int = 0  # torch threads in the child (0: torch's default)
    workers: int | None = None  # processes making the training batches (None: none on a CPU, a few beside a GPU)


def run_job(spec: JobSpec, queue: Any, cancel: Any) -> None:
    """Child-process entry point; never raises (errors become an ``error`` message)."""
    try:
        _run(spec, queue, cancel)
    except BaseException as exc:  # noqa: BLE001 - report anything to the GUI
        queue.put({"type": "error", "message": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


def _run(spec: JobSpec, queue: Any, cancel: Any) -> None:
    import torch

    from core.common.config import replace
    from core.common.cpu import lower_thread_priority, tune_cpu
    from core.common.datasets import list_images, train_folder
    from core.common.presets import get_preset
    from core.train.data import TrainData, working_size
    from core.train.synthesis import load_textures
    from core.train.trainer import Trainer

    lower_thread_priority()  # before torch starts its threads (they inherit it): the window stays fluid
    tune_cpu()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    model_cfg, train_cfg = get_preset(spec.preset)
    batch = {"batch_size": spec.batch_size} if spec.batch_size else {}
    train_cfg = replace(train_cfg, steps=spec.steps, checkpoint_every=spec.checkpoint_every,
                        validate_every=max(spec.steps, 1), micro_batch=spec.micro_batch, **batch)
    if spec.brightness_defects is not None:
        train_cfg = train_cfg.with_synthesis(intensity_prob=spec.brightness_defects)
    if spec.large_brightness is not None:
        train_cfg = train_cfg.with_synthesis(large_brightness_prob=spec.large_brightness)
    paths = [str(p) for folder in spec.folders for p in list_images(train_folder(folder))] + list(spec.extra_images)
    size = working_size(model_cfg.image_size, spec.resume_checkpoint or spec.base_checkpoint)
    data = TrainData.from_paths(paths, size, train_cfg.val_fraction, train_cfg.seed)
    textures = load_textures(spec.textures, size) if spec.textures else []
    trainer = Trainer(model_cfg, train_cfg, data, spec.out_dir, device=spec.device, textures=textures,
                      init_from=spec.base_checkpoint, resume_from=spec.resume_checkpoint,
                      preview_every=spec.preview_every, info={"preset": spec.preset}, workers=spec.workers)
    queue.put({"type": "started", "device": str(trainer.device), "train_images": len(data.train),
               "skipped": data.errors, "textures": len(textures), "step": trainer.step,
               "total": trainer.train_config.steps, "channels": trainer.model_config.channels})
    parent = os.getppid()  # the job is not a daemon (its batch workers are its children): it ends with the app

    def stop() -> bool:
        return cancel.is_set() or os.getppid() != parent

    for rec in trainer.run(cancel=stop):
        if rec.done:
            queue.put({"type": "done", "checkpoint": rec.checkpoint, "cancelled": rec.cancelled,
                       "step": rec.step, "message": rec.message})
            return
        queue.put({"type": "progress", "step": rec.step, "total": rec.total, "losses": rec.losses,
                   "eta_s": rec.eta_s, "images_per_s": rec.images_per_s, "checkpoint": rec.checkpoint,
                   "message": rec.message})  # a setup record (feature memory) has a message and no losses
        if rec.preview is not None:
            queue.put({"type": "preview", "step": rec.step, **rec.preview})
