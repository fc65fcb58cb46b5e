"""Typed, frozen configuration of a DiffusionAD model and its training.

Numbers default to the official implementation (see ``docs/algorithm.md``); presets in
:mod:`core.presets` override what they need. Configs round-trip through plain dicts
(``to_dict`` / ``from_dict``) so checkpoints can describe themselves as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DiffusionConfig:
    num_timesteps: int = 1000  # T
    beta_start: float = 1e-4  # linear schedule, scaled by 1000 / T
    beta_end: float = 0.02
    t_small: int = 200  # inference small scale t_s
    t_big: int = 400  # inference large scale t_b (the "norm")
    guidance_w: float = 1.0  # norm-guidance weight w
    train_t_split: int = 300  # training: t_s ~ U{0..split-1}, t_b ~ U{split..T-1}
    # "unit": images enter the diffusion in [0, 1] and x0 estimates are clamped to [-1, 1],
    # exactly as the official code does. "symmetric": images are mapped to [-1, 1].
    data_range: str = "unit"


@dataclass(frozen=True)
class DenoiserConfig:
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sizes in pixels
    num_heads: int = 4
    dropout: float = 0.0


@dataclass(frozen=True)
class SegmenterConfig:
    base_width: int = 64  # DRAEM discriminative U-Net; widths b, 2b, 4b, 8b, 8b, 8b


@dataclass(frozen=True)
class SynthesisConfig:
    anomaly_prob: float = 0.5  # probability that a training sample gets an anomaly
    beta_min: float = 0.2  # blend factor beta ~ U[beta_min, beta_max)
    beta_max: float = 0.8
    perlin_max_exp: int = 5  # Perlin resolution 2^a per axis, a ~ U{0..max_exp}
    perlin_threshold: float = 0.5
    foreground: str = "none"  # "none" | "region" | "auto"
    texture_prob: float = 0.5  # share of texture sources when a texture folder is given
    shuffle_prob: float = 0.5  # among built-in sources: 8x8 self-shuffle vs procedural texture
    # share of anomalies whose source is the image itself made brighter or darker (same texture, other grey
    # level); 0 in the official recipe
    intensity_prob: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 256  # working resolution (square); inputs of any size are resized
    channels: int = 3  # grey inputs are replicated to 3 channels
    score_top_k: int = 50  # image score = mean of top-k pixels, k given at 256^2, scaled
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    steps: int = 1000
    lr_denoiser: float = 1e-4
    lr_segmenter: float = 1e-5
    focal_weight: float = 5.0
    checkpoint_every: int = 200
    validate_every: int = 200
    val_fraction: float = 0.1  # held-out share of the good images (never the test split)
    seed: int = 0
    # bf16 autocast on CUDA (opt-in, ``dad train --bf16``); off: fp32, as the official code trains. Older
    # checkpoints stored true (then the default) and resume with it
    amp: bool = False
    # > 0: each step runs the batch in chunks of this many images and accumulates their gradients: the same
    # optimizer step as the whole batch (BatchNorm statistics aside) in a fraction of the memory
    micro_batch: int = 0
    # > 0: before each optimizer step, the gradients of each network are scaled down so that their global L2
    # norm is at most this (0 = off, as in the official code). Guards a high learning rate against the rare
    # step that blows up the weights.
    grad_clip: float = 0.0
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    def with_synthesis(self, **changes: Any) -> TrainConfig:
        """This config with some synthesis settings changed, e.g. ``cfg.with_synthesis(intensity_prob=0.25)``."""
        return dataclasses.replace(self, synthesis=dataclasses.replace(self.synthesis, **changes))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dataclass -> plain JSON-able dict (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a (nested) frozen dataclass from a dict; unknown keys raise ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{cls.__name__}.{name}: expected a list")
            kwargs[name] = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{cls.__name__}.{name}: expected true/false")
            kwargs[name] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{cls.__name__}.{name}: expected a number")
            kwargs[name] = type(default)(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{cls.__name__}.{name}: expected a string")
            kwargs[name] = value
        else:
            kwargs[name] = value
    return cls(**kwargs)


def replace(cfg: T, **changes: Any) -> T:
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
