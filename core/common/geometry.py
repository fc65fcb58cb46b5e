"""How an image of any size becomes the model's squares, and how their maps become one map of the image.

A model works on squares of ``image_size`` pixels. Its ``GeometryConfig`` says how an image gets there:

- ``stretch``: the whole image resized to one square (its aspect ratio is lost; models saved before geometry
  existed);
- ``tiles``: the image scaled by ``scale`` with its aspect ratio kept (the *working image*), padded by reflection
  where a side is shorter than a square, and cut into overlapping squares, the last one flush with the border
  (``core.common.tiling``); by default they overlap by a quarter of a square. The squares' maps are blended back
  into one map of the working image; the padding is cut off again, so a map always covers exactly the image.

Training sees the same working images (random squares of them), so inspection never meets a scale or a padding that
training did not show. numpy and OpenCV only: every backend shares it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.common.config import GeometryConfig
from core.common.images import resize
from core.common.tiling import Stitcher, TilePlan, cut, plan_tiles


def describe(size: int, geometry: GeometryConfig) -> str:
    """How a model sees an image, in a few words: "128 px" (stretched) or "tiles of 256 px at x1" (tiles)."""
    if geometry.mode == "stretch":
        return f"{size} px"
    return f"tiles of {size} px at x{geometry.scale:g}"


def overlap_px(size: int, geometry: GeometryConfig) -> int:
    """The working pixels neighbouring squares share: the geometry's ``overlap``, or with 0 a quarter of ``size``."""
    return geometry.overlap or size // 4


def working_shape(height: int, width: int, size: int, geometry: GeometryConfig) -> tuple[int, int]:
    """The working image's (height, width) for an image of ``height`` x ``width``: ``size`` x ``size`` when
    stretched, else the image scaled by ``geometry.scale`` (at least 1 pixel a side)."""
    if geometry.mode == "stretch":
        return size, size
    if not geometry.scale:
        raise ValueError("geometry: a tiling model without its scale (0 is set by training, never inspected with)")
    return max(1, round(height * geometry.scale)), max(1, round(width * geometry.scale))


def to_working(image: np.ndarray, size: int, geometry: GeometryConfig) -> np.ndarray:
    """``image`` ([H, W] or [H, W, C], any dtype OpenCV resizes) as the working image (area when shrinking)."""
    if geometry.mode == "stretch":
        return image if image.shape[:2] == (size, size) else resize(image, size)
    h, w = working_shape(image.shape[0], image.shape[1], size, geometry)
    if (h, w) == image.shape[:2]:
        return image
    interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` padded by reflection (edge pixels repeated once) at the bottom and right to at least ``size`` a
    side; unchanged when it is already that large."""
    ph, pw = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if not ph and not pw:
        return image
    pads = ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pads, mode="symmetric")


@dataclass(frozen=True)
class Layout:
    """Where the squares of one working image lie: ``plan`` over the padded working image, whose top-left
    ``height`` x ``width`` pixels are the image itself."""

    height: int
    width: int
    plan: TilePlan

    def __len__(self) -> int:
        return len(self.plan)


def layout(height: int, width: int, size: int, overlap: int) -> Layout:
    """The squares of a ``height`` x ``width`` working image (``size`` px, at least ``overlap`` px shared)."""
    return Layout(height, width, plan_tiles(max(height, size), max(width, size), size, overlap))


def squares(work: np.ndarray, size: int, overlap: int) -> tuple[np.ndarray, Layout]:
    """A working image's squares [N, size, size(, C)] and their layout."""
    where = layout(work.shape[0], work.shape[1], size, overlap)
    return cut(pad_to(work, size), where.plan), where


def stitch(maps: np.ndarray, where: Layout, scale: float = 1.0) -> np.ndarray:
    """The squares' maps [N, s, s(, C)] (s = size x ``scale``) blended into one map of the working image (padding
    cut off): [height x scale, width x scale(, C)]. In each overlap the outer third of either square is left to its
    neighbour (``core.common.tiling.blend_weights``' margin): the encoder's features are least like the training
    squares' middle near a square's border, which would otherwise show as a grid of seams."""
    channels = None if maps.ndim == 3 else maps.shape[-1]
    stitcher = Stitcher(where.plan, channels, scale, margin=where.plan.overlap // 3)
    for i, m in enumerate(maps):
        stitcher.add(i, m)
    out = stitcher.result()
    return out[:max(1, round(where.height * scale)), :max(1, round(where.width * scale))]


def random_square(work: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` x ``size`` square of a working image (padded first where it is smaller); a working image
    of exactly one square is returned as it is, without drawing from ``rng``."""
    if work.shape[:2] == (size, size):
        return work
    padded = pad_to(work, size)
    y = int(rng.integers(0, padded.shape[0] - size + 1))
    x = int(rng.integers(0, padded.shape[1] - size + 1))
    return padded[y:y + size, x:x + size]
