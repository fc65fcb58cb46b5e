"""Typed, frozen configuration of a DiffusionAD model and its training.

Numbers default to the official implementation (see ``docs/algorithm.md``); presets in
:mod:`core.common.presets` override what they need. Configs round-trip through plain dicts
(``to_dict`` / ``from_dict``) so checkpoints can describe themselves as JSON.
Every value is checked when a config is built (``__post_init__``): a typo in a choice or a value out
of range raises ``ValueError`` naming the field, so a hand-edited or damaged checkpoint header is
refused before a model is built from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


# ---- value checks (each raises ValueError naming ``Class.field``) ------------------------------------------
def _refuse(cfg: Any, name: str, expected: str) -> None:
    raise ValueError(f"{type(cfg).__name__}.{name}: {getattr(cfg, name)!r} is not allowed; expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(cfg: Any, name: str, lo: int, hi: int) -> None:
    value = getattr(cfg, name)
    if not _is_int(value) or not lo <= value <= hi:
        _refuse(cfg, name, f"an integer from {lo} to {hi}")


def _check_number(cfg: Any, name: str, lo: float, hi: float = math.inf, hi_open: bool = False) -> None:
    """A finite number in [lo, hi] (or [lo, hi) with ``hi_open``)."""
    value = getattr(cfg, name)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and lo <= value and (value < hi if hi_open else value <= hi))
    if not ok:
        _refuse(cfg, name, f"a finite number from {lo:g} to {hi:g}" + (" (exclusive)" if hi_open else ""))


def _check_choice(cfg: Any, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in allowed:
        _refuse(cfg, name, "one of " + ", ".join(repr(a) for a in allowed))


def _check_int_tuple(cfg: Any, name: str, lo: int, hi: int, min_len: int, max_len: int) -> None:
    value = getattr(cfg, name)
    if (not isinstance(value, tuple) or not min_len <= len(value) <= max_len
            or not all(_is_int(v) and lo <= v <= hi for v in value)):
        _refuse(cfg, name, f"{min_len} to {max_len} integers from {lo} to {hi}")


DATA_RANGES = ("unit", "symmetric")
FOREGROUNDS = ("none", "region", "auto")
GREY_SOURCES = ("auto", "always", "never")
CHANNELS = (1, 3)  # grey, colour
FUSIONS = ("none", "mean", "or", "distance")  # core.model.features.fuse
BLOCK_WEIGHTINGS = ("none", "equal")  # how the encoder blocks' features weigh in the memory distance
GEOMETRIES = ("stretch", "tiles")  # core.common.geometry


@dataclass(frozen=True)
class DiffusionConfig:
    num_timesteps: int = 1000  # T
    beta_start: float = 1e-4  # linear schedule, scaled by 1000 / T
    beta_end: float = 0.02
    t_small: int = 200  # inference small scale t_s
    t_big: int = 400  # inference large scale t_b (the "norm")
    guidance_w: float = 1.0  # norm-guidance weight w
    train_t_split: int = 300  # training: t_s ~ U{0..split-1}, t_b ~ U{split..T-1}
    # training draws nearer the inference scales: t_s ~ U{train_t_small_from..split-1} and t_b ~ U{split..
    # train_t_big_to - 1}; 0 and 0 (the official draws; checkpoints without the fields): from 0 and up to T
    train_t_small_from: int = 0
    train_t_big_to: int = 0
    # "unit": images enter the diffusion in [0, 1] and x0 estimates are clamped to [-1, 1],
    # exactly as the official code does. "symmetric": images are mapped to [-1, 1].
    data_range: str = "unit"

    def __post_init__(self) -> None:
        _check_int(self, "num_timesteps", 2, 100_000)
        _check_number(self, "beta_end", 0.0)
        _check_number(self, "beta_start", 1e-12, self.beta_end)  # beta_0 = 0 would make the posterior 0 / 0
        if self.beta_end * 1000.0 / self.num_timesteps >= 1.0:  # betas are scaled by 1000 / T; 1 - beta must stay > 0
            _refuse(self, "beta_end", f"below {self.num_timesteps / 1000:g} (num_timesteps / 1000)")
        if not _is_int(self.t_small) or not _is_int(self.t_big) or not 0 <= self.t_small < self.t_big:
            _refuse(self, "t_small", f"an integer from 0 to below t_big ({self.t_big!r})")
        _check_int(self, "t_big", self.t_small + 1, self.num_timesteps - 1)
        _check_int(self, "train_t_split", 1, self.num_timesteps - 1)
        _check_int(self, "train_t_small_from", 0, self.train_t_split - 1)
        if self.train_t_big_to:
            _check_int(self, "train_t_big_to", self.train_t_split + 1, self.num_timesteps)
        _check_number(self, "guidance_w", 0.0)
        _check_choice(self, "data_range", DATA_RANGES)

    def train_ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The training draws' half-open ranges: (t_s from, to), (t_b from, to)."""
        return ((self.train_t_small_from, self.train_t_split),
                (self.train_t_split, self.train_t_big_to or self.num_timesteps))


@dataclass(frozen=True)
class DenoiserConfig:
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sizes in pixels
    num_heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_int(self, "base_channels", 1, 4096)
        _check_int_tuple(self, "channel_mults", 1, 64, 1, 8)
        _check_int(self, "num_res_blocks", 1, 16)
        _check_int_tuple(self, "attention_resolutions", 1, 4096, 0, 16)
        _check_int(self, "num_heads", 1, 64)
        _check_number(self, "dropout", 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class SegmenterConfig:
    base_width: int = 64  # DRAEM discriminative U-Net; widths b, 2b, 4b, 8b, 8b, 8b

    def __post_init__(self) -> None:
        _check_int(self, "base_width", 1, 1024)


@dataclass(frozen=True)
class SynthesisConfig:
    anomaly_prob: float = 0.5  # probability that a training sample gets an anomaly
    beta_min: float = 0.2  # blend factor beta ~ U[beta_min, beta_max)
    beta_max: float = 0.8
    perlin_max_exp: int = 5  # Perlin resolution 2^a per axis, a ~ U{0..max_exp}
    perlin_threshold: float = 0.5
    foreground: str = "none"  # "none" | "region" | "auto"
    texture_prob: float = 0.5  # share of texture sources when a texture folder is given
    shuffle_prob: float = 0.5  # without a texture folder: 8x8 self-shuffle vs procedural texture (stand-in for DTD)
    # share of anomalies whose source is the image itself made brighter or darker (same texture, other grey
    # level); 0 in the official recipe
    intensity_prob: float = 0.0
    # grey sources for grey images: "auto" (per image: grey when its channels are equal within 1/255),
    # "always" or "never" (the sources keep their colour)
    grey_sources: str = "auto"
    # share of anomalies that are a large (20-45 % of the image), feathered, low-contrast brightness change
    # (+-0.02..0.08); 0 in the official recipe
    large_brightness_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("anomaly_prob", "texture_prob", "shuffle_prob", "intensity_prob", "large_brightness_prob",
                     "beta_max"):
            _check_number(self, name, 0.0, 1.0)
        _check_number(self, "beta_min", 0.0, self.beta_max)
        _check_int(self, "perlin_max_exp", 0, 10)
        _check_number(self, "perlin_threshold", -math.inf)
        _check_choice(self, "foreground", FOREGROUNDS)
        _check_choice(self, "grey_sources", GREY_SOURCES)


# the pretrained encoder's variants (core.model.encoder.VARIANTS) and their numbers of blocks
ENCODER_BLOCKS = {"lite0": 16, "lite1": 21, "lite2": 21}
INPUT_SCALINGS = ("imagenet", "lite")  # core.model.encoder.SCALINGS


@dataclass(frozen=True)
class FeatureConfig:
    """The pretrained feature encoder and memory of normal features (``pretrained`` preset).

    Empty ``blocks`` (the default): no encoder; the segmenter is the official image U-Net (``paper``, ``fast``).
    """

    blocks: tuple[int, ...] = ()  # the encoder's blocks whose outputs are used, e.g. Lite0's (4, 10): stride 8, 16
    memory_size: int = 6000  # normal patch features kept from the training images (greedy coreset)
    head_width: int = 64  # width of the segmentation head over the features
    recon_features: bool = True  # the head also compares the input's features with the reconstruction's
    # the head sees the reconstruction (its pixels; with ``recon_features`` its features too): true in checkpoints
    # without the field. False: the head sees the input, its features and their memory distance only; the
    # reconstruction is made for what is shown (the panel, --reconstructions), not for the score
    head_reconstruction: bool = True
    # how the shown map joins the head's probability with the calibrated memory distance (core.model.features.fuse):
    # "none" (the head's map alone; checkpoints without the field), "mean", "or" or "distance" (the memory distance's
    # alone: a model whose memory is all it needs, e.g. to compare memories without training a head)
    fusion: str = "none"
    # the EfficientNet-Lite variant ("lite0", "lite1", "lite2") and how its input is scaled: "imagenet" (ImageNet
    # mean / std) or "lite" ((x * 255 - 127) / 128, as its weights were trained). Checkpoints without them: lite0,
    # imagenet
    encoder: str = "lite0"
    input_scaling: str = "imagenet"
    # "none": the blocks' features enter the memory distance as they are (the wider, deeper block dominates it;
    # checkpoints without the field); "equal": each block's features are scaled so that every block has the same
    # total variance over the training patches (the model's ``feature_weight``), as PatchCore pools each to one size
    block_weighting: str = "none"
    # the memory also holds the training squares' flips and 90-degree turns (for a product with no orientation:
    # a part may lie turned on the line); off in checkpoints without the field
    memory_turns: bool = False

    def __post_init__(self) -> None:
        _check_choice(self, "encoder", tuple(ENCODER_BLOCKS))
        _check_choice(self, "input_scaling", INPUT_SCALINGS)
        _check_choice(self, "block_weighting", BLOCK_WEIGHTINGS)
        if not isinstance(self.memory_turns, bool):
            _refuse(self, "memory_turns", "true or false")
        _check_int_tuple(self, "blocks", 0, ENCODER_BLOCKS[self.encoder] - 1, 0, 4)
        if len(set(self.blocks)) != len(self.blocks):
            _refuse(self, "blocks", "distinct encoder blocks")
        _check_int(self, "memory_size", 16, 1_000_000)
        _check_int(self, "head_width", 4, 1024)
        if not isinstance(self.recon_features, bool):
            _refuse(self, "recon_features", "true or false")
        if not isinstance(self.head_reconstruction, bool):
            _refuse(self, "head_reconstruction", "true or false")
        if self.recon_features and not self.head_reconstruction:
            _refuse(self, "recon_features", "false when the head does not see the reconstruction (head_reconstruction)")
        if self.fusion not in FUSIONS:
            _refuse(self, "fusion", " or ".join(repr(f) for f in FUSIONS))
        if not self.blocks and (self.encoder, self.input_scaling) != ("lite0", "imagenet"):
            _refuse(self, "encoder" if self.encoder != "lite0" else "input_scaling",
                    "the default without encoder blocks (no encoder is built)")

    @property
    def enabled(self) -> bool:
        return bool(self.blocks)


@dataclass(frozen=True)
class GeometryConfig:
    """How an image of any size becomes the model's ``image_size`` squares (``core.common.geometry``).

    ``stretch`` (checkpoints without the field): the whole image resized to one square, its aspect ratio lost.
    ``tiles``: the image scaled by ``scale`` with its aspect ratio kept, then cut into squares of ``image_size``
    that overlap by at least ``overlap`` working pixels, the last one flush with the border; a side shorter than a
    square is padded by reflection. Maps are stitched back into one map of the whole image. ``overlap`` 0 is a
    quarter of ``image_size`` (``core.common.geometry.overlap_px``).
    """

    mode: str = "stretch"
    # tiles: working pixels per image pixel (1: the camera's own pixels); 0 in a preset: training sets it by rule
    # from the training images (core.train.data.working_scale), and a saved model always holds its number
    scale: float = 1.0
    # tiles: at least this many working pixels shared by neighbouring squares; 0: a quarter of the square (the
    # default: the outer third of each overlap is left to the neighbour when maps are stitched, and the encoder's
    # features stay unlike the middle's for about 3 patches in from a square's border)
    overlap: int = 0

    def __post_init__(self) -> None:
        _check_choice(self, "mode", GEOMETRIES)
        _check_number(self, "scale", 0.0, 8.0)
        if 0 < self.scale < 1e-3:
            _refuse(self, "scale", "0 (by rule) or from 0.001 to 8")
        _check_int(self, "overlap", 0, 1024)


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 256  # working resolution (square); inputs of any size are resized
    # 3: colour; 1: a grey model (trained on grey images): every input enters as its luminance and the
    # reconstruction is grey. Training chooses it from the images; checkpoints without it are colour models
    channels: int = 3
    score_top_k: int = 50  # image score = mean of top-k pixels, k given at 256^2, scaled
    # > 0: the image score is the mean of that top-k mean (small spots) and the mean of the highest ``score_area``
    # share of the map (large faint areas); 0 (checkpoints without it): the top-k mean alone
    score_area: float = 0.0
    # the pixel value that becomes 1.0, for every image the model sees: taken from the training images (255 for
    # 8-bit ones; 1023, 4095 or 65535 for deeper ones, e.g. 4095 for a 12-bit camera; the largest pixel of float
    # ones). Checkpoints without it are 8-bit models
    input_max: float = 255.0
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # the denoiser's resolution; 0: image_size. A smaller one reconstructs a downscaled input (cheaper), and the
    # reconstruction is resized back to image_size
    denoiser_size: int = 0
    geometry: GeometryConfig = field(default_factory=GeometryConfig)

    @property
    def denoiser_resolution(self) -> int:
        return self.denoiser_size or self.image_size

    def __post_init__(self) -> None:
        for name, cls in (("diffusion", DiffusionConfig), ("denoiser", DenoiserConfig),
                          ("segmenter", SegmenterConfig), ("features", FeatureConfig),
                          ("geometry", GeometryConfig)):
            if not isinstance(getattr(self, name), cls):
                _refuse(self, name, f"a {cls.__name__}")
        if not _is_int(self.image_size) or not 32 <= self.image_size <= 2048 or self.image_size % 32:
            _refuse(self, "image_size", "a multiple of 32 from 32 to 2048 (the segmenter halves it five times)")
        if not _is_int(self.denoiser_size) or not (self.denoiser_size == 0 or (
                32 <= self.denoiser_size <= self.image_size and self.denoiser_size % 32 == 0)):
            _refuse(self, "denoiser_size", "0 (the image size) or a multiple of 32 up to image_size")
        if self.denoiser_size not in (0, self.image_size) and not self.features.enabled:
            _refuse(self, "denoiser_size", "0 without encoder features (the image U-Net segmenter works at one size)")
        levels = len(self.denoiser.channel_mults)
        if self.denoiser_resolution % 2 ** (levels - 1):
            _refuse(self, "image_size", f"a multiple of {2 ** (levels - 1)} for the denoiser's {levels} levels")
        if not _is_int(self.channels) or self.channels not in CHANNELS:
            _refuse(self, "channels", "1 (grey) or 3 (colour)")
        _check_int(self, "score_top_k", 1, 256 * 256)
        _check_number(self, "score_area", 0.0, 0.5)
        if self.geometry.mode == "tiles" and self.geometry.overlap >= self.image_size:
            _refuse(self, "geometry", f"an overlap under the image size ({self.image_size})")
        _check_number(self, "input_max", 1e-12)


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
    # > 0: the denoiser's noise loss is taken on a random square of this many pixels of each working image (the
    # same network reconstructs whole images: it is convolutional), a fraction of the whole image's cost per step;
    # 0: on the whole image, as the official code. A head that sees the reconstruction then gets the whole image's,
    # made without gradient
    denoiser_crop: int = 0
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    def __post_init__(self) -> None:
        _check_int(self, "batch_size", 1, 65_536)
        _check_int(self, "steps", 0, 10**9)
        for name in ("lr_denoiser", "lr_segmenter", "focal_weight", "grad_clip"):
            _check_number(self, name, 0.0)
        for name in ("checkpoint_every", "validate_every", "micro_batch", "denoiser_crop"):
            _check_int(self, name, 0, 10**9)
        _check_number(self, "val_fraction", 0.0, 1.0, hi_open=True)
        _check_int(self, "seed", 0, 2**63 - 1)
        if not isinstance(self.amp, bool):
            _refuse(self, "amp", "true or false")
        if not isinstance(self.synthesis, SynthesisConfig):
            _refuse(self, "synthesis", "a SynthesisConfig")

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
            if isinstance(default, int) and not (math.isfinite(value) and value == int(value)):
                raise ValueError(f"{cls.__name__}.{name}: expected an integer, not {value!r}")
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
