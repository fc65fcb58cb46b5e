"""Overlapping tiles of a large image and the stitching of their maps back into one map (numpy only).

An image larger than the model's working size is cut into tiles of exactly that size, each tile is inspected as a
training image would be, and the per-tile maps are blended into one map of the whole image. The plan is stateless
(a frozen value), so one plan serves the image, its reconstruction and its anomaly map, in any backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _starts(size: int, tile: int, step: int) -> tuple[int, ...]:
    # Every `step` from 0 while the tile ends inside the image, then one tile flush with the border (size - tile).
    # Flush instead of padding: a good-only model sees no border pad in training, so a pad would look like a defect;
    # the last tile simply overlaps its neighbour more than `overlap`.
    return (*range(0, size - tile, step), size - tile)


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image lie: ``boxes`` holds each tile's top-left (y0, x0), row by row; every tile is
    ``tile`` x ``tile`` pixels and lies inside the ``height`` x ``width`` image."""

    height: int
    width: int
    tile: int
    overlap: int
    boxes: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.boxes)


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> TilePlan:
    """Tiles of ``tile`` px covering a ``height`` x ``width`` image, neighbours overlapping by at least ``overlap``.

    Along each axis there are ``ceil((size - tile) / (tile - overlap)) + 1`` tiles. A side shorter than the tile
    is refused (ValueError): tiling never pads, so the caller resizes or pads such an image itself (or does not
    tile it at all, since it already fits the working size)."""
    for name, value in (("height", height), ("width", width), ("tile", tile), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"tiling: {name} must be an integer, got {value!r}")
    if tile < 1:
        raise ValueError(f"tiling: tile must be at least 1 pixel, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tiling: overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    if height < tile or width < tile:
        raise ValueError(f"tiling: the image ({height}x{width}) is smaller than one tile ({tile}x{tile}); "
                         "resize or pad it first")
    step = tile - overlap
    boxes = tuple((y, x) for y in _starts(height, tile, step) for x in _starts(width, tile, step))
    return TilePlan(int(height), int(width), int(tile), int(overlap), boxes)


def blend_weights(tile: int, overlap: int, sides: tuple[bool, bool, bool, bool] = (True, True, True, True),
                  margin: int = 0) -> np.ndarray:
    """[tile, tile] float32 weights: 1 inside, a linear ramp over the ``overlap`` pixels at each of the ``sides``
    (top, bottom, left, right) that ramp; the Stitcher ramps only the sides that face a neighbouring tile.

    The ramp is (i + 1) / (overlap + 1) at i pixels from the edge, so in an overlap of exactly ``overlap`` pixels
    the two tiles' weights sum to 1 and the blended value moves from one tile to the other in equal steps (no
    seam). It is never zero, so every pixel a tile covers gets a share of it and no weight sum is 0 (0/0). A side
    on the image border keeps weight 1: no other tile is there to blend with, and a ramp there would let a flush
    tile that starts a few pixels further in (with its own low ramp) take a large share at once, a visible step.

    ``margin`` (< overlap / 2): the ``margin`` pixels at a side that ramps get almost no weight (1e-3 of the ramp's
    first step), and the ramp runs over the ``overlap - 2 margin`` pixels between the two tiles' margins, where the
    weights again sum to 1. A network's map is least like the rest near its input's border (the padding of its
    convolutions): each overlap then shows the neighbour's interior instead."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"blend weights: need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if not 0 <= 2 * margin <= max(overlap - 1, 0):
        raise ValueError(f"blend weights: need 0 <= 2 margin < overlap, got margin={margin}, overlap={overlap}")
    i = np.arange(tile, dtype=np.float64)
    span = overlap - 2 * margin + 1
    up, down = (i - margin + 1) / span, (tile - margin - i) / span  # rising from the start, falling to the end
    floor = 1e-3 / span
    up, down = np.maximum(up, floor), np.maximum(down, floor)

    def ramp(first: bool, last: bool) -> np.ndarray:
        r = np.ones(tile)
        if first:
            r = np.minimum(r, up)
        if last:
            r = np.minimum(r, down)
        return r

    return np.outer(ramp(*sides[:2]), ramp(*sides[2:])).astype(np.float32)


def cut(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The plan's tiles of ``image`` ([H, W] or [H, W, C]) as one array [N, tile, tile(, C)] (a copy)."""
    if image.ndim not in (2, 3) or image.shape[:2] != (plan.height, plan.width):
        raise ValueError(f"tiling: the image has shape {image.shape} but the plan is for "
                         f"{plan.height}x{plan.width}")
    t = plan.tile
    return np.stack([image[y:y + t, x:x + t] for y, x in plan.boxes])


class Stitcher:
    """Blends per-tile maps into one map of the whole image: a weighted sum and a weight sum, both float32.

    A tile map may be at another resolution than the tile (a model's map at ``scale`` = map px / image px, e.g.
    1/8 for a stride-8 feature map): it must then be ``tile * scale`` px a side, and the result is
    ``round(H * scale)`` x ``round(W * scale)``. Scaled tile positions are rounded to the nearest map pixel and the
    last tile stays flush with the border; the overlap is scaled likewise."""

    def __init__(self, plan: TilePlan, channels: int | None = None, scale: float = 1.0, margin: int = 0):
        size = plan.tile * scale
        if not scale > 0 or abs(size - round(size)) > 1e-6 or round(size) < 1:
            raise ValueError(f"stitching: tile {plan.tile} x scale {scale} must be a whole number of pixels (>= 1)")
        if channels is not None and channels < 1:
            raise ValueError(f"stitching: channels must be None (a 2-D map) or >= 1, got {channels}")
        self.plan, self.channels, self.size = plan, channels, int(round(size))
        self.shape = (int(round(plan.height * scale)), int(round(plan.width * scale)))
        h, w, s = self.shape[0], self.shape[1], self.size
        # Rounding is monotone and round(a + s) = round(a) + s, so rounded neighbours still meet (no gap); the clamp
        # keeps the last tile flush with the map's border.
        self.boxes = [(min(int(round(y * scale)), h - s), min(int(round(x * scale)), w - s)) for y, x in plan.boxes]
        self.overlap = min(int(round(plan.overlap * scale)), s - 1)
        self.margin = min(int(round(margin * scale)), max(self.overlap - 1, 0) // 2)  # blend_weights' margin
        self._windows: dict[tuple[bool, ...], np.ndarray] = {}
        extra = () if channels is None else (channels,)
        self._sum = np.zeros(self.shape + extra, np.float32)
        self._weight = np.zeros(self.shape, np.float32)
        self._added = np.zeros(len(plan), bool)

    def add(self, index: int, tile_map: np.ndarray) -> None:
        """Add the map of tile ``index`` (the plan's order): [size, size], or [size, size, channels]."""
        if not 0 <= index < len(self.plan):
            raise IndexError(f"stitching: tile {index} is not in the plan ({len(self.plan)} tiles)")
        if self._added[index]:
            raise ValueError(f"stitching: tile {index} was already added")
        s, tile_map = self.size, np.asarray(tile_map, np.float32)
        want = (s, s) if self.channels is None else (s, s, self.channels)
        if tuple(tile_map.shape) != want:
            raise ValueError(f"stitching: tile {index} map is {tuple(tile_map.shape)}, expected {want}")
        y, x = self.boxes[index]
        sides = (y > 0, y + s < self.shape[0], x > 0, x + s < self.shape[1])  # the sides that face another tile
        if sides not in self._windows:  # at most 16 kinds of tile (corner, edge, inner...)
            self._windows[sides] = blend_weights(s, self.overlap, sides, self.margin)
        window = self._windows[sides]
        w = window if self.channels is None else window[..., None]
        self._sum[y:y + s, x:x + s] += w * tile_map
        self._weight[y:y + s, x:x + s] += window
        self._added[index] = True

    def result(self) -> np.ndarray:
        """The stitched map, sum / weight (float32); every tile must have been added."""
        missing = np.flatnonzero(~self._added)
        if missing.size:
            raise ValueError(f"stitching: {missing.size} of {len(self.plan)} tiles not added "
                             f"(first: {int(missing[0])})")
        weight = self._weight if self.channels is None else self._weight[..., None]
        return self._sum / weight
