"""One description of a training run, and the one function that builds its trainer.

``dad train``, the app's training jobs, the demo script and the benchmarks all describe a run as a
:class:`RunSpec` and get their :class:`~core.train.trainer.Trainer` from :func:`build_trainer`: the same options
give the same trainer, whoever starts it. A spec checks its values when it is made and refuses a bad one with a
:class:`RunSpecError` whose one-line message names the option.

This module imports no torch until :func:`build_trainer` runs, so the app can build a spec on its GUI thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.config import FOREGROUNDS, GEOMETRIES, ModelConfig, SynthesisConfig, TrainConfig
from core.common.presets import DEFAULT_PRESET, PRESETS, get_preset

if TYPE_CHECKING:
    import numpy as np

    from core.model.distributed import World
    from core.train.data import TrainData
    from core.train.trainer import Trainer


SYNTHESIS_SETTINGS = frozenset(f.name for f in fields(SynthesisConfig))


class RunSpecError(ValueError):
    """A run's option has a value it cannot take; the message names the option and the value."""


@dataclass(frozen=True)
class RunSpec:
    """Every option of a training run. ``None`` leaves a setting at the preset's."""

    data_dirs: Sequence[str | Path]  # folders of good images (an MVTec-layout folder trains on its train/good)
    out_dir: str | Path  # the run folder; the checkpoint is out_dir/last.safetensors
    extra_images: Sequence[str | Path] = ()  # single good image files besides the folders (the app's "marked")
    preset: str = DEFAULT_PRESET
    steps: int | None = None  # total optimizer steps
    minutes: float | None = None  # stop (and checkpoint) after this much wall-clock time
    batch_size: int | None = None
    micro_batch: int | None = None  # > 0: each batch in chunks of this many images (same step, less memory)
    seed: int | None = None
    grad_clip: float | None = None  # each network's gradient norm at most this (0: off)
    checkpoint_every: int | None = None  # steps between checkpoints (0: only at the end)
    validate_every: int | None = None  # steps between held-out validations (the last step always validates)
    bf16: bool = False  # bf16 autocast on CUDA; False: the preset's (fp32)
    textures: str | Path | None = None  # folder of texture images, anomaly sources of the synthetic defects
    foreground: str | None = None  # where synthetic defects may go: none, region, auto
    brightness_defects: float | None = None  # share (0-1) of defects that are brightness changes of the surface
    large_brightness: float | None = None  # share (0-1) of large, faint brightness-change defects
    channels: int | None = None  # 1 (grey) or 3 (colour); None: 1 when every training image is grey
    init: str | Path | None = None  # fine-tune from this checkpoint
    resume: str | Path | None = None  # resume this checkpoint (its step, optimizer state and recipe)
    device: str = "auto"  # auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...
    workers: int | None = None  # processes making the batches; None: none on a CPU, a few beside a GPU
    preview_every: int = 0  # steps between previews of one held-out image (0: none)
    image_size: int | None = None  # the model's input size instead of the preset's (see :func:`at_image_size`)
    val_fraction: float | None = None  # held-out share of the good images
    learning_rate: float | None = None  # Adam's rate for both networks
    geometry: str | None = None  # stretch or tiles (core.common.geometry); None: the preset's
    scale: float | None = None  # tiles: working pixels per image pixel; 0: by rule from the images (working_scale)
    # further ModelConfig settings: top-level values, or for "features" / "geometry" a mapping of their settings
    model: Mapping[str, Any] = field(default_factory=dict)
    synthesis: Mapping[str, Any] = field(default_factory=dict)  # further SynthesisConfig settings
    info: Mapping[str, Any] = field(default_factory=dict)  # entries for the checkpoint header (name, benchmark)

    def __post_init__(self) -> None:
        for name in ("data_dirs", "extra_images"):
            value = getattr(self, name)
            if isinstance(value, (str, Path)) or not all(isinstance(p, (str, Path)) for p in value):
                _refuse(name, value, "a list of paths")
            object.__setattr__(self, name, tuple(str(p) for p in value))
        if not isinstance(self.out_dir, (str, Path)) or not str(self.out_dir):
            _refuse("out_dir", self.out_dir, "a folder")
        if self.preset not in PRESETS:
            _refuse("preset", self.preset, "one of " + ", ".join(PRESETS))
        for name, lo in (("steps", 1), ("batch_size", 1), ("micro_batch", 0), ("seed", 0), ("checkpoint_every", 0),
                         ("validate_every", 0), ("workers", 0), ("image_size", 8), ("channels", 1)):
            check_whole_number(name, getattr(self, name), lo, optional=True)
        check_whole_number("preview_every", self.preview_every, 0)
        if self.channels not in (None, 1, 3):
            _refuse("channels", self.channels, "1, 3 or auto")
        if self.minutes is not None and not (_is_number(self.minutes) and self.minutes > 0):
            _refuse("minutes", self.minutes, "a finite number above 0")
        if self.learning_rate is not None and not (_is_number(self.learning_rate) and self.learning_rate > 0):
            _refuse("learning_rate", self.learning_rate, "a finite number above 0")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and self.grad_clip >= 0):
            _refuse("grad_clip", self.grad_clip, "a finite number, 0 or more")
        for name in ("brightness_defects", "large_brightness"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 <= value <= 1):
                _refuse(name, value, "a share from 0 to 1")
        if self.val_fraction is not None and not (_is_number(self.val_fraction) and 0 <= self.val_fraction < 1):
            _refuse("val_fraction", self.val_fraction, "a share from 0 to below 1")
        if self.foreground is not None and self.foreground not in FOREGROUNDS:
            _refuse("foreground", self.foreground, "one of " + ", ".join(FOREGROUNDS))
        if not isinstance(self.bf16, bool):
            _refuse("bf16", self.bf16, "true or false")
        if not isinstance(self.device, str) or not self.device:
            _refuse("device", self.device, "auto, cpu, cuda, cuda:1, ...")
        for name in ("textures", "init", "resume"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, Path)):
                _refuse(name, getattr(self, name), "a path")
        if not isinstance(self.synthesis, Mapping) or not set(self.synthesis) <= SYNTHESIS_SETTINGS:
            _refuse("synthesis", self.synthesis, "SynthesisConfig settings: " + ", ".join(sorted(SYNTHESIS_SETTINGS)))
        if self.geometry is not None and self.geometry not in GEOMETRIES:
            _refuse("geometry", self.geometry, "one of " + ", ".join(GEOMETRIES))
        if self.scale is not None and not (_is_number(self.scale) and 0 <= self.scale <= 8):
            _refuse("scale", self.scale, "a number from 0 (by rule) to 8")
        if not isinstance(self.model, Mapping):
            _refuse("model", self.model, "a mapping of ModelConfig settings")
        if not isinstance(self.info, Mapping):
            _refuse("info", self.info, "a mapping")
        if self.init and self.resume:
            raise RunSpecError("init and resume: a run either fine-tunes a model or resumes one, not both")
        self.configs()  # the combination (an unknown synthesis setting, a size the model cannot take)

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        """The model and training configurations of the run: the preset's, with this spec's settings."""
        model_cfg, train_cfg = get_preset(self.preset)
        lr = self.learning_rate
        changes = {"steps": self.steps, "batch_size": self.batch_size, "micro_batch": self.micro_batch,
                   "seed": self.seed, "grad_clip": self.grad_clip, "checkpoint_every": self.checkpoint_every,
                   "validate_every": self.validate_every, "val_fraction": self.val_fraction,
                   "amp": True if self.bf16 else None, "lr_denoiser": lr, "lr_segmenter": lr}
        synthesis = {**self.synthesis, "foreground": self.foreground, "intensity_prob": self.brightness_defects,
                     "large_brightness_prob": self.large_brightness}
        try:
            if self.image_size is not None:
                model_cfg = at_image_size(model_cfg, self.image_size)
            model_cfg = with_model_settings(model_cfg, self.model, self.geometry, self.scale)
            train_cfg = replace(train_cfg, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
            synthesis = {k: v for k, v in synthesis.items() if v is not None}
            if synthesis:
                train_cfg = train_cfg.with_synthesis(**synthesis)
        except (TypeError, ValueError) as exc:
            raise RunSpecError(str(exc).splitlines()[0]) from None
        return model_cfg, train_cfg

    def changed(self, **changes: Any) -> RunSpec:
        """This spec with some options changed (checked again)."""
        return replace(self, **changes)

    def stopper(self, cancel: Callable[[], bool] | None = None) -> Callable[[], bool] | None:
        """The ``cancel`` of :meth:`Trainer.run`: true once ``cancel()`` is, or ``minutes`` from now have passed."""
        if self.minutes is None:
            return cancel
        deadline = time.monotonic() + 60 * self.minutes
        return lambda: time.monotonic() > deadline or (cancel is not None and cancel())

    def image_paths(self) -> list[str]:
        """The run's good images: each folder's (an MVTec-layout folder's train/good), then the extra files."""
        from core.common.datasets import list_images, train_folder

        folders = [str(p) for d in self.data_dirs for p in list_images(train_folder(d))]
        return folders + [str(p) for p in self.extra_images]


def with_model_settings(model_cfg: ModelConfig, settings: Mapping[str, Any], geometry: str | None = None,
                        scale: float | None = None) -> ModelConfig:
    """``model_cfg`` with further settings (``RunSpec.model``) and the geometry options."""
    changes = dict(settings)
    for name in ("features", "geometry"):
        if isinstance(changes.get(name), Mapping):
            changes[name] = replace(getattr(model_cfg, name), **changes[name])
    geo = changes.get("geometry", model_cfg.geometry)
    if geometry is not None or scale is not None:
        geo = replace(geo, **{k: v for k, v in (("mode", geometry), ("scale", scale)) if v is not None})
    changes["geometry"] = geo
    return replace(model_cfg, **changes)


def at_image_size(model_cfg: ModelConfig, size: int) -> ModelConfig:
    """``model_cfg`` at input size ``size``. A model whose denoiser has a resolution of its own keeps it; otherwise
    the denoiser's attention stays on its deepest level."""
    if size == model_cfg.image_size or model_cfg.denoiser_size:
        return replace(model_cfg, image_size=size)
    deepest = size // 2 ** (len(model_cfg.denoiser.channel_mults) - 1)
    return replace(model_cfg, image_size=size, denoiser=replace(model_cfg.denoiser, attention_resolutions=(deepest,)))


@dataclass
class PreparedRun:
    """A trainer ready to run, and what its caller reports before the first step."""

    trainer: Trainer
    skipped: list[str]  # unreadable image files, each with its reason
    textures: int  # texture images read as anomaly sources


def build_trainer(spec: RunSpec, *, world: World | None = None, device: str | None = None,
                  data: TrainData | None = None, textures: Sequence[np.ndarray] | None = None,
                  on_save: Callable[[Path, int], None] | Sequence[Callable[[Path, int], None]] = (),
                  checkpoint_info: Callable[[int], dict[str, Any]] | None = None) -> PreparedRun:
    """The trainer of ``spec``: its configurations, its images read at the working size (a base model's own when
    fine-tuning or resuming), held-out images split off, textures read, and the base checkpoint loaded.

    ``world`` and ``device``: this process's rank and device in a torchrun launch (``device`` replaces the spec's).
    ``data`` and ``textures``: images already loaded at the working size (a benchmark that reuses them across
    runs), instead of the spec's folders. ``on_save`` and ``checkpoint_info``: the trainer's save hooks.
    Raises :class:`~core.train.data.TrainingError` (no readable image, a missing folder, a checkpoint that cannot
    be trained further), :class:`~core.model.checkpoint.CheckpointError` or ``ValueError``, each naming the cause.
    """
    from core.model.distributed import SINGLE
    from core.train.data import TrainData, TrainingError, working_geometry, working_size

    model_cfg, train_cfg = spec.configs()
    size = working_size(model_cfg.image_size, spec.resume or spec.init)
    if data is None:
        try:
            paths = spec.image_paths()
        except FileNotFoundError as exc:
            raise TrainingError(str(exc)) from None
        model_cfg, geometry = working_geometry(model_cfg, paths, spec.resume or spec.init)
        data = TrainData.from_paths(paths, size, train_cfg.val_fraction, train_cfg.seed, geometry=geometry)
    elif model_cfg.geometry.mode == "tiles" and not model_cfg.geometry.scale:
        raise TrainingError("a tiling run on images already loaded needs its scale (the rule reads the image files)")
    from core.train.synthesis import load_textures
    from core.train.trainer import Trainer

    if textures is None:
        try:
            textures = load_textures(spec.textures, size) if spec.textures else []
        except FileNotFoundError as exc:
            raise TrainingError(f"textures: {exc}") from None
    trainer = Trainer(model_cfg, train_cfg, data, spec.out_dir, device=device or spec.device, textures=textures,
                      init_from=spec.init, resume_from=spec.resume, preview_every=spec.preview_every,
                      info={"preset": spec.preset, **spec.info}, channels=spec.channels, workers=spec.workers,
                      world=world or SINGLE, on_save=on_save, checkpoint_info=checkpoint_info)
    return PreparedRun(trainer, list(data.errors), len(textures))


def _refuse(name: str, value: Any, expected: str) -> None:
    raise RunSpecError(f"{name.replace('_', ' ')}: {value!r} is not allowed; expected {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_whole_number(name: str, value: Any, lo: int, optional: bool = False) -> None:
    """Refuse (:class:`RunSpecError`) a value that is not a whole number of at least ``lo`` (None too, unless
    ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        _refuse(name, value, f"a whole number, {lo} or more")

