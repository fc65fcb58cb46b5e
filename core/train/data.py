"""Training images, the progress records of a run and the working size and channels it trains at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import numpy as np

from core.common.config import GeometryConfig, ModelConfig, TrainConfig, from_dict
from core.common.datasets import load_images, split_train_val
from core.common.geometry import overlap_px
from core.common.images import header_size, is_grey
from core.model.checkpoint import (
    CheckpointError,
    read_header,
)
from core.model.segmenter import DOWNSAMPLING


class TrainingError(Exception):
    """Training stopped; the message says why and which checkpoint is kept."""


@dataclass(frozen=True)
class TrainProgress:
    """One record per optimizer step (and a final one with ``done=True``)."""

    step: int
    total: int
    losses: dict[str, float]
    images_per_s: float
    eta_s: float
    checkpoint: str | None = None  # path written at this step
    validation: dict[str, float] | None = None
    preview: dict[str, np.ndarray] | None = None  # input / reconstruction / anomaly_map, numpy
    done: bool = False
    cancelled: bool = False
    message: str = ""
    setup: bool = False  # a record of the preparation before the first step (``message`` says what); no losses


@dataclass
class TrainData:
    """Good images (uint8 [S, S, 3]) split into training and held-out validation sets.

    ``input_max`` is the pixel value of the files that became 255 here: the input range a model trained on
    these images keeps (``ModelConfig.input_max``).
    """

    train: list[np.ndarray]
    val: list[np.ndarray]
    errors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    input_max: float = 255.0

    @classmethod
    def from_paths(cls, paths: Sequence[str | Path], size: int, val_fraction: float, seed: int,
                   input_max: float | None = None, geometry: GeometryConfig | None = None) -> TrainData:
        """Images read with the range ``input_max``, or without one the range of the images themselves; with a
        ``geometry``, as its working images (a tiling model's: scaled, aspect ratio kept)."""
        if not paths:
            raise TrainingError("no image files found in the training folder(s)")
        report = load_images(paths, size, input_max, geometry if geometry and geometry.mode == "tiles" else None)
        if not report.images:
            raise TrainingError("no readable training image: " + "; ".join(str(e) for e in report.errors[:5]))
        tr, va = split_train_val(len(report.images), val_fraction, seed)
        return cls([report.images[i] for i in tr], [report.images[i] for i in va],
                   [str(e) for e in report.errors], sorted({str(Path(p).parent) for p in report.paths}),
                   report.input_max)

    def on_range(self, input_max: float) -> TrainData:
        """The same images as a model with input range ``input_max`` sees them (fine-tuning or resuming a model
        trained on images of another range): brighter or darker, clipped at white."""
        if input_max == self.input_max:
            return self
        gain = np.float32(self.input_max / input_max)

        def rescale(images: list[np.ndarray]) -> list[np.ndarray]:
            return [np.clip(im * gain + 0.5, 0, 255).astype(np.uint8) for im in images]

        return TrainData(rescale(self.train), rescale(self.val), self.errors, self.sources, input_max)

    def colour_images(self) -> int:
        """How many of the images are in colour: channels differing by more than 1/255 (the synthesis' grey test)."""
        return sum(not is_grey(im.astype(np.float32) / 255) for im in self.train + self.val)


def working_size(preset_size: int, base: str | Path | None) -> int:
    """The image size to load training images at: a base model's own (fine-tuning or resuming keeps its
    architecture, whatever preset is named), else the preset's. An unreadable base is left to the trainer,
    which names the file and the reason."""
    if base is None:
        return preset_size
    try:
        size = read_header(base)["model_config"]["image_size"]
    except (CheckpointError, KeyError, TypeError):
        return preset_size
    return size if isinstance(size, int) and size > 0 else preset_size


def working_scale(paths: Sequence[str | Path], size: int) -> float:
    """The rule for a tiling model's scale: the median shorter side of the training images becomes one square
    (``size``), and images are never magnified (at most 1, the camera's own pixels). Sides come from the file
    headers; files whose header gives none are left out (1 when none gives one)."""
    sides = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                dims = header_size(f.read(65536))
        except OSError:
            continue
        if dims and min(dims) > 0:
            sides.append(min(dims))
    return round(min(1.0, size / float(np.median(sides))), 4) if sides else 1.0


def working_geometry(model_cfg: ModelConfig, paths: Sequence[str | Path], base: str | Path | None,
                     ) -> tuple[ModelConfig, GeometryConfig]:
    """The model config with its scale set by rule where it says 0 (:func:`working_scale`) and its overlap in pixels
    where it says 0 (``core.common.geometry.overlap_px``), and the geometry to
    load the training images with: a base model's own when fine-tuning or resuming."""
    if base is not None:
        try:
            return model_cfg, from_dict(GeometryConfig, read_header(base)["model_config"].get("geometry", {}))
        except (CheckpointError, KeyError, TypeError, ValueError, AttributeError):
            return model_cfg, model_cfg.geometry  # an unreadable base is left to the trainer
    geometry = model_cfg.geometry
    if geometry.mode == "tiles" and not (geometry.scale and geometry.overlap):  # a saved model holds its numbers
        geometry = replace(geometry, scale=geometry.scale or working_scale(paths, model_cfg.image_size),
                           overlap=overlap_px(model_cfg.image_size, geometry))
        model_cfg = replace(model_cfg, geometry=geometry)
    return model_cfg, geometry


def model_channels(data: TrainData, forced: int | None = None, base: ModelConfig | None = None,
                   base_path: str | Path = "") -> int:
    """The channels of the model to train. A base model (fine-tuning, resuming) keeps its own, and a grey one
    refuses colour images: it would see only their luminance. A new model takes ``forced``, else 1 (a grey
    model) when every training image is grey, else 3."""
    if base is None:
        return forced or (3 if data.colour_images() else 1)
    if forced not in (None, base.channels):
        raise TrainingError(f"{base_path}: the model has {base.channels} channel(s) and keeps them when it is "
                            f"trained further; {forced} channel(s) need a new model")
    colour = data.colour_images() if base.channels == 1 else 0
    if colour:
        raise TrainingError(
            f"{base_path}: a grey model (trained on grey images) cannot learn from colour images: {colour} of the "
            f"{len(data.train) + len(data.val)} training images are in colour, and it would see only their "
            "luminance. Train a new model on them, or convert them to grey first")
    return base.channels


def chunk_bounds(n: int, micro: int) -> list[int]:
    """Where a batch of ``n`` splits into micro-batches of at most ``micro`` images (0: the whole batch), with
    sizes that differ by one at most: 8 in chunks of 3 gives 2 + 3 + 3, not 3 + 3 + 2."""
    chunks = -(-n // micro) if 0 < micro < n else 1
    return [n * i // chunks for i in range(chunks + 1)]


def check_trainable(data: TrainData, model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Refuse images loaded at another size than the model's (:class:`TrainingError`), a denoiser crop off the
    denoiser's grid and batches too small for BatchNorm (``ValueError``): it needs two values per channel, so at a
    size where the segmenter's deepest level is 1 x 1 each batch or micro-batch needs 2 images at least."""
    size = model_config.image_size
    if model_config.geometry.mode == "stretch" and any(im.shape[:2] != (size, size)
                                                      for im in data.train[:1] + data.val[:1]):
        h, w = (data.train or data.val)[0].shape[:2]
        raise TrainingError(f"the training images were loaded at {w} x {h} px, but the model works at {size} px "
                            "(load them at the base model's size: core.train.data.working_size)")
    crop, step = train_config.denoiser_crop, 2 ** (len(model_config.denoiser.channel_mults) - 1)
    if 0 < crop < model_config.denoiser_resolution and crop % step:
        raise ValueError(f"TrainConfig.denoiser_crop: {crop} is not a multiple of {step} (the denoiser's "
                         f"{len(model_config.denoiser.channel_mults)} levels)")
    deepest = model_config.image_size // DOWNSAMPLING
    smallest = min(b - a for a, b in pairwise(chunk_bounds(train_config.batch_size, train_config.micro_batch)))
    if deepest < 2 and smallest < 2:
        raise ValueError(f"at {model_config.image_size} px the segmenter's deepest level is 1 x 1, so each batch or "
                         "micro-batch needs at least 2 images; raise the batch size or the micro-batch")


def resumed_recipe(saved: TrainConfig | None, requested: TrainConfig) -> TrainConfig:
    """The recipe a resumed run goes on with: the checkpoint's, with the caller's length and (when set) its
    micro-batch; the caller's own when the checkpoint has none."""
    if saved is None:
        return requested
    return replace(saved, steps=requested.steps, micro_batch=requested.micro_batch or saved.micro_batch)


def out_of_memory_message(cfg: TrainConfig) -> str:
    """What to say, and to try, when a step ran out of memory."""
    chunk = min(cfg.micro_batch or cfg.batch_size, cfg.batch_size)
    return (f"out of memory at batch size {cfg.batch_size}"
            + (f" in micro-batches of {chunk}" if chunk < cfg.batch_size else "")
            + (f"; retry with micro-batches of {chunk // 2} (same batch, less memory) or a smaller batch"
               if chunk > 1 else "; retry with a smaller image size or preset"))
