"""Anomaly synthesis for training: Perlin-shaped masks filled with foreign texture.

Follows DiffusionAD's ``perlin_synthetic`` (itself DRAEM's scheme): a thresholded, rotated
Perlin mask restricted to a foreground, filled with an augmented source image blended with
beta ~ U[0.2, 0.8). Sources: with a texture folder (DTD-like), half folder textures and half the
8x8 self-shuffle of the augmented image, as the official code; without one, built-in procedural
textures stand in for DTD. The imgaug augmenters of the original are re-implemented with
numpy/OpenCV. Grey images get grey sources, so their synthetic defects are grey too.
Options beyond the official recipe: brightness-shifted copies of the image through the Perlin
mask, and large, feathered, low-contrast brightness changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from core.common.config import SynthesisConfig
from core.common.images import Image, is_grey, luminance, to_grey

# the large brightness defects: area share of the image, luminance shift either way, feather half-width
# (share of the shorter side)
LARGE_AREA = (0.20, 0.45)
LARGE_SHIFT = (0.02, 0.08)
LARGE_FEATHER = (0.03, 0.08)


# ---- Perlin noise (DRAEM's generator) ---------------------------------------------------------
def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2D gradient noise of ``shape`` with ``res`` lattice cells per axis, scaled by sqrt(2)."""
    # work on a size divisible by res, then crop
    h = int(np.ceil(shape[0] / res[0]) * res[0])
    w = int(np.ceil(shape[1] / res[1]) * res[1])
    dy, dx = h // res[0], w // res[1]
    angles = 2 * np.pi * rng.random((res[0] + 1, res[1] + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    yy = (np.arange(h) % dy) / dy
    xx = (np.arange(w) % dx) / dx
    fy, fx = np.meshgrid(yy, xx, indexing="ij")
    iy = np.arange(h) // dy
    ix = np.arange(w) // dx

    def corner(oy: int, ox: int) -> np.ndarray:
        g = grads[iy[:, None] + oy, ix[None, :] + ox]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    uy, ux = _fade(fy), _fade(fx)
    n0 = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    n1 = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (np.sqrt(2) * (n0 * (1 - uy) + n1 * uy))[: shape[0], : shape[1]].astype(np.float32)


def rotate(img: np.ndarray, angle: float, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


def perlin_mask(shape: tuple[int, int], cfg: SynthesisConfig, rng: np.random.Generator) -> np.ndarray:
    """Binary mask: Perlin noise at 2^a x 2^b cells, rotated by U(-90, 90), thresholded."""
    res = (2 ** int(rng.integers(0, cfg.perlin_max_exp + 1)), 2 ** int(rng.integers(0, cfg.perlin_max_exp + 1)))
    noise = rotate(perlin_noise(shape, res, rng), float(rng.uniform(-90, 90)))
    return (noise > cfg.perlin_threshold).astype(np.float32)


# ---- foreground ------------------------------------------------------------------------------
def auto_foreground(image: Image) -> np.ndarray:
    """Object mask by Otsu on a blurred grey image; the class touching the border less is object."""
    grey = cv2.cvtColor((image * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    grey = cv2.GaussianBlur(grey, (0, 0), max(1.0, grey.shape[0] / 64))
    _, fg = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
    if border.mean() > 0.5:
        fg = 1 - fg
    if fg.mean() < 0.02:  # nothing sensible found: whole image
        return np.ones(fg.shape, np.float32)
    return fg.astype(np.float32)


def random_region(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random partial region (low-frequency Perlin blob), like the official texture masks."""
    while True:
        noise = perlin_noise(shape, (2, 2), rng)
        region = (noise > rng.uniform(-0.3, 0.1)).astype(np.float32)
        if region.mean() > 0.1:
            return region


# ---- source augmentations (the 10 augmenters of the spec) ------------------------------------
def _gamma(x: Image, rng: np.random.Generator) -> Image:
    return np.power(x, rng.uniform(0.5, 2.0, size=3)).astype(np.float32)


def _brightness(x: Image, rng: np.random.Generator) -> Image:
    """MultiplyAndAddToBrightness(mul 0.8-1.2, add -30..30, in random order) on the luminance Y of YCrCb:
    every channel moves by the change of Y, so chroma is kept."""
    y = luminance(x)
    mul, add = rng.uniform(0.8, 1.2), rng.uniform(-30, 30) / 255
    if rng.random() < 0.5:
        y2 = np.clip(np.clip(y * mul, 0, 1) + add, 0, 1)
    else:
        y2 = np.clip(np.clip(y + add, 0, 1) * mul, 0, 1)
    return np.clip(x + (y2 - y)[..., None], 0, 1).astype(np.float32)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13  # PIL's ImageFilter.SMOOTH


def _sharpness(x: Image, rng: np.random.Generator) -> Image:
    """pillike.EnhanceSharpness(0-2): blend with PIL's SMOOTH filter (border pixels unfiltered, as PIL)."""
    smooth = x.copy()
    smooth[1:-1, 1:-1] = cv2.filter2D(x, -1, _SMOOTH)[1:-1, 1:-1]
    return np.clip(smooth + rng.uniform(0.0, 2.0) * (x - smooth), 0, 1).astype(np.float32)


def _hue_saturation(x: Image, rng: np.random.Generator) -> Image:
    if is_grey(x):  # no hue to turn; imgaug would tint a grey image
        return x
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-50, 50) * 360 / 255) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] + rng.uniform(-50, 50) / 255, 0, 1)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)


def _solarize(x: Image, rng: np.random.Generator) -> Image:
    if rng.random() >= 0.5:
        return x
    thr = rng.uniform(32, 128) / 255
    return np.where(x >= thr, 1 - x, x).astype(np.float32)


def _posterize(x: Image, rng: np.random.Generator) -> Image:
    bits = int(rng.integers(1, 9))
    q = np.rint(x * 255).astype(np.uint8) & np.uint8((0xFF << (8 - bits)) & 0xFF)
    return q.astype(np.float32) / 255


def _invert(x: Image, rng: np.random.Generator) -> Image:
    return 1 - x


def autocontrast(x: Image, cutoff: int = 0) -> Image:
    """PIL's ImageOps.autocontrast per channel: drop ``cutoff`` percent of the darkest and of the lightest
    pixels from the 8-bit histogram, then stretch what is left to [0, 1] (values beyond it clip). A channel
    with a single level is left as is."""
    out = np.empty_like(x)
    u8 = np.rint(x * 255).astype(np.int64)
    cut = u8[..., 0].size * cutoff // 100
    for c in range(x.shape[-1]):
        hist = np.bincount(u8[..., c].ravel(), minlength=256)
        lo = int(np.searchsorted(np.cumsum(hist), cut, side="right"))
        hi = 255 - int(np.searchsorted(np.cumsum(hist[::-1]), cut, side="right"))
        out[..., c] = x[..., c] if hi <= lo else np.clip((x[..., c] * 255 - lo) / (hi - lo), 0, 1)
    return out


def _autocontrast(x: Image, rng: np.random.Generator) -> Image:
    """pillike.Autocontrast(): a cutoff of 0 to 20 % (whole percent), the same for every channel."""
    return autocontrast(x, int(rng.integers(0, 21)))


def _equalize(x: Image, rng: np.random.Generator) -> Image:
    """pillike.Equalize(): PIL's ImageOps.equalize per channel."""
    u8 = np.rint(x * 255).astype(np.int64)
    out = x.copy()
    for c in range(x.shape[-1]):
        hist = np.bincount(u8[..., c].ravel(), minlength=256)
        used = hist[hist > 0]
        step = (int(used.sum()) - int(used[-1])) // 255
        if step:
            lut = np.minimum((np.cumsum(hist) - hist + step // 2) // step, 255)
            out[..., c] = lut[u8[..., c]] / 255
    return out.astype(np.float32)


def _affine(x: Image, rng: np.random.Generator) -> Image:
    """Affine(rotate -45..45): bilinear, the corners padded with black (imgaug's constant 0)."""
    return rotate(x, float(rng.uniform(-45, 45)))


AUGMENTERS: tuple[Callable[[Image, np.random.Generator], Image], ...] = (
    _gamma, _brightness, _sharpness, _hue_saturation, _solarize,
    _posterize, _invert, _autocontrast, _equalize, _affine,
)


def augment_source(x: Image, rng: np.random.Generator, grey: bool = False) -> Image:
    """Apply 3 distinct augmenters chosen at random from the 10; with ``grey`` the source goes in and comes
    out as its luminance (per-channel gamma would tint it).

    Each augmenter gets its input clipped to [0, 1]: float rounding leaves values like 1.0000001 (a resized
    texture), which solarize turns into -1e-7, gamma into NaN and autocontrast into a whole NaN image.
    """
    if grey:
        x = to_grey(x)
    for idx in rng.choice(len(AUGMENTERS), 3, replace=False):
        x = AUGMENTERS[idx](np.clip(x, 0, 1).astype(np.float32), rng)
    x = np.clip(x, 0, 1).astype(np.float32)
    return to_grey(x) if grey else x


# ---- built-in sources --------------------------------------------------------------------------
def self_shuffle(image: Image, rng: np.random.Generator, grid: int = 8) -> Image:
    """Scramble the image on a grid x grid lattice (strips of evens then odds, shuffled)."""
    h, w = image.shape[:2]

    def order() -> list[int]:
        idx = list(range(grid))
        evens, odds = idx[0::2], idx[1::2]
        rng.shuffle(evens)
        rng.shuffle(odds)
        return evens + odds

    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    cols = np.concatenate([np.arange(xs[i], xs[i + 1]) for i in order()])
    row_order = order()
    rng.shuffle(row_order)
    rows = np.concatenate([np.arange(ys[i], ys[i + 1]) for i in row_order])
    return image[rows][:, cols]


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator, grey: bool = False) -> Image:
    """A random synthetic texture between two colours (their luminance with ``grey``): Perlin octaves,
    stripes, checkers, speckle or scratches."""
    h, w = shape
    kind = int(rng.integers(0, 5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colours = rng.random((2, 3)).astype(np.float32)
    if grey:
        colours = to_grey(colours)
    if kind == 0:  # multi-octave Perlin noise
        t = sum(perlin_noise(shape, (2**o, 2**o), rng) / 2**o for o in range(1, 6))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # stripes at a random angle and period
        a = rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / rng.uniform(4, 32))
    elif kind == 2:  # checkerboard
        p = int(rng.integers(4, 33))
        t = ((yy // p + xx // p) % 2).astype(np.float32)
    elif kind == 3:  # speckle
        t = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), rng.uniform(0.5, 3))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:  # random scratches
        t = np.zeros(shape, np.float32)
        for _ in range(int(rng.integers(5, 40))):
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(t, p0, p1, 1.0, int(rng.integers(1, 4)))
    return (colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]).astype(np.float32)


def intensity_shift(image: Image, rng: np.random.Generator) -> Image:
    """The image itself, brighter or darker by a gain of 1.1 to 1.65 (or its inverse): pasted through a mask,
    a stain, a discoloured or unevenly ground patch that keeps the surface's own texture."""
    gain = float(np.exp(rng.choice((-1.0, 1.0)) * rng.uniform(0.1, 0.5)))
    return np.clip(image * gain, 0, 1).astype(np.float32)


def feathered_region(region: np.ndarray, width: float) -> np.ndarray:
    """Soft version of a binary ``region``: 0.5 on its edge, rising to 1 inside and falling to 0 outside over
    ``width`` pixels either side (smoothstep of the signed distance to the edge)."""
    inside = region.astype(np.uint8)
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
    signed = np.where(inside > 0, d_in - 0.5, 0.5 - d_out)
    return _fade(np.clip(0.5 + signed / (2 * max(width, 1e-3)), 0, 1)).astype(np.float32)


def large_brightness_defect(
    image: Image, rng: np.random.Generator, fg: np.ndarray | None = None,
) -> tuple[Image, np.ndarray]:
    """A large, low-contrast brightness change: a low-frequency Perlin blob covering 20-45 % of the image,
    its edge feathered, every channel shifted by the same 0.02-0.08 up or down (luminance only).

    Returns the image and the binary target: the pixels shifted by at least half the full amount (the
    feather's midline), like a drawn annotation of an uneven region. Pixels just outside it change by less.
    """
    h, w = image.shape[:2]
    area = rng.uniform(*LARGE_AREA)
    res = (2 ** int(rng.integers(0, 2)), 2 ** int(rng.integers(0, 2)))
    noise = perlin_noise((h, w), res, rng)
    region = noise > np.quantile(noise, 1 - area)
    alpha = feathered_region(region, rng.uniform(*LARGE_FEATHER) * min(h, w))
    if fg is not None:
        alpha = alpha * fg
    shift = float(rng.choice((-1.0, 1.0)) * rng.uniform(*LARGE_SHIFT))
    mask = (alpha >= 0.5).astype(np.float32)
    if not mask.any():
        return image, np.zeros((h, w), np.float32)
    return np.clip(image + shift * alpha[..., None], 0, 1).astype(np.float32), mask


# ---- the synthesiser ----------------------------------------------------------------------------
class AnomalySynthesizer:
    """Seedable callable ``image -> (augmented, mask)``.

    ``image`` is float32 [H, W, 3] in [0, 1]; ``mask`` is float32 [H, W] with values in {0, 1}
    (all zero when the sample stays normal). ``textures`` are optional source images
    (float32 [H, W, 3]); without them only the built-in sources are used.
    """

    def __init__(self, config: SynthesisConfig, textures: Sequence[Image] = (), seed: int | None = None):
        self.config = config
        self.textures = list(textures)
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: Image, rng: np.random.Generator | None = None) -> tuple[Image, np.ndarray]:
        rng = self.rng if rng is None else rng
        h, w = image.shape[:2]
        empty = np.zeros((h, w), np.float32)
        cfg = self.config
        if rng.random() >= cfg.anomaly_prob:
            return image, empty
        # options beyond the official recipe make no extra draw when off
        if cfg.large_brightness_prob > 0 and rng.random() < cfg.large_brightness_prob:
            fg = auto_foreground(image) if cfg.foreground == "auto" else None
            return large_brightness_defect(image, rng, fg)
        mask = self._mask(image, rng)
        if not mask.any():
            return image, empty
        if cfg.intensity_prob > 0 and rng.random() < cfg.intensity_prob:
            source = intensity_shift(image, rng)
        else:
            source = self._source(image, rng)
        beta = rng.uniform(self.config.beta_min, self.config.beta_max)
        m = mask[..., None]
        augmented = image * (1 - m) + (1 - beta) * source * m + beta * image * m
        return augmented.astype(np.float32), mask

    def _mask(self, image: Image, rng: np.random.Generator) -> np.ndarray:
        shape = image.shape[:2]
        fg = None
        if self.config.foreground == "auto":
            fg = auto_foreground(image)
        elif self.config.foreground == "region":
            fg = random_region(shape, rng)
        for _ in range(50):  # retry until the Perlin mask meets the foreground
            mask = perlin_mask(shape, self.config, rng)
            if fg is not None:
                mask = mask * fg
            if mask.any():
                return mask
        return np.zeros(shape, np.float32)

    def _grey(self, image: Image) -> bool:
        mode = self.config.grey_sources
        return mode == "always" or (mode == "auto" and is_grey(image))

    def _source(self, image: Image, rng: np.random.Generator) -> Image:
        """The augmented source: with textures, a folder texture (``texture_prob``) or else the self-shuffle;
        without, the self-shuffle (``shuffle_prob``) or else a procedural texture standing in for DTD.
        Every source goes through exactly one ``augment_source``."""
        h, w = image.shape[:2]
        cfg, grey = self.config, self._grey(image)
        if self.textures:
            if rng.random() < cfg.texture_prob:
                tex = self.textures[int(rng.integers(len(self.textures)))]
                return augment_source(cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR), rng, grey)
        elif rng.random() >= cfg.shuffle_prob:
            return augment_source(procedural_texture((h, w), rng, grey), rng, grey)
        return self_shuffle(augment_source(image, rng, grey), rng)


def load_textures(folder: str | Path, size: int, limit: int = 500) -> list[Image]:
    """Read every image below ``folder`` (recursively) at ``size`` x ``size``; skips unreadable files."""
    from core.common.datasets import list_images
    from core.common.images import ImageReadError, read_image

    out = []
    for path in list_images(folder, recursive=True)[:limit]:
        try:
            out.append(cv2.resize(read_image(path), (size, size), interpolation=cv2.INTER_AREA))
        except ImageReadError:
            continue
    return out
