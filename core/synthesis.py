"""Anomaly synthesis for training: Perlin-shaped masks filled with foreign texture.

Follows DiffusionAD's ``perlin_synthetic`` (itself DRAEM's scheme): a thresholded, rotated
Perlin mask restricted to a foreground, filled with an augmented source image blended with
beta ~ U[0.2, 0.8). Sources are an optional texture folder (DTD-like) and built-in ones that
need no external images: the 8x8 self-shuffle of the spec and procedural textures.
The imgaug augmenters of the original are re-implemented with numpy/OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .config import SynthesisConfig

Image = np.ndarray  # float32 [H, W, 3] in [0, 1]


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
    return np.clip(x * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30) / 255, 0, 1)


def _sharpness(x: Image, rng: np.random.Generator) -> Image:
    blur = cv2.GaussianBlur(x, (3, 3), 0)
    factor = rng.uniform(0.0, 2.0)
    return np.clip(blur + factor * (x - blur), 0, 1)


def _hue_saturation(x: Image, rng: np.random.Generator) -> Image:
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
    q = np.floor(x * 255).astype(np.uint8) & np.uint8((0xFF << (8 - bits)) & 0xFF)
    return q.astype(np.float32) / 255


def _invert(x: Image, rng: np.random.Generator) -> Image:
    return 1 - x


def _autocontrast(x: Image, rng: np.random.Generator) -> Image:
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    return ((x - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def _equalize(x: Image, rng: np.random.Generator) -> Image:
    u8 = (x * 255).astype(np.uint8)
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(u8[..., c])) for c in range(3)], -1).astype(np.float32) / 255


def _affine(x: Image, rng: np.random.Generator) -> Image:
    return rotate(x, float(rng.uniform(-45, 45)), cv2.BORDER_REFLECT)


AUGMENTERS: tuple[Callable[[Image, np.random.Generator], Image], ...] = (
    _gamma, _brightness, _sharpness, _hue_saturation, _solarize,
    _posterize, _invert, _autocontrast, _equalize, _affine,
)


def augment_source(x: Image, rng: np.random.Generator) -> Image:
    """Apply 3 distinct augmenters chosen at random from the 10.

    Each augmenter gets its input clipped to [0, 1]: float rounding leaves values like 1.0000001 (a resized
    texture), which solarize turns into -1e-7, gamma into NaN and autocontrast into a whole NaN image.
    """
    for idx in rng.choice(len(AUGMENTERS), 3, replace=False):
        x = AUGMENTERS[idx](np.clip(x, 0, 1).astype(np.float32), rng)
    return np.clip(x, 0, 1).astype(np.float32)


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


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> Image:
    """A random synthetic texture: coloured noise, stripes, checkers, blobs or scratches."""
    h, w = shape
    kind = int(rng.integers(0, 5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colours = rng.random((2, 3)).astype(np.float32)
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
        if rng.random() >= self.config.anomaly_prob:
            return image, empty
        mask = self._mask(image, rng)
        if not mask.any():
            return image, empty
        cfg = self.config
        if cfg.intensity_prob > 0 and rng.random() < cfg.intensity_prob:  # no extra draw on the official recipe
            source = intensity_shift(image, rng)
        else:
            source = augment_source(self._source(image, rng), rng)
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

    def _source(self, image: Image, rng: np.random.Generator) -> Image:
        h, w = image.shape[:2]
        if self.textures and rng.random() < self.config.texture_prob:
            tex = self.textures[int(rng.integers(len(self.textures)))]
            return cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < self.config.shuffle_prob:
            return self_shuffle(augment_source(image, rng), rng)
        return procedural_texture((h, w), rng)


def load_textures(folder: str | Path, size: int, limit: int = 500) -> list[Image]:
    """Read every image below ``folder`` (recursively) at ``size`` x ``size``; skips unreadable files."""
    from .data import ImageReadError, list_images, read_image

    out = []
    for path in list_images(folder, recursive=True)[:limit]:
        try:
            out.append(cv2.resize(read_image(path), (size, size), interpolation=cv2.INTER_AREA))
        except ImageReadError:
            continue
    return out
