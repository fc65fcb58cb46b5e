"""Tiles of a large image and the stitching of their maps (core.common.tiling): coverage, flush borders, seamless
blending, maps at a model's scale, and refused arguments."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.common.tiling import Stitcher, blend_weights, cut, plan_tiles


def coverage(plan) -> np.ndarray:
    count = np.zeros((plan.height, plan.width), int)
    for y, x in plan.boxes:
        count[y:y + plan.tile, x:x + plan.tile] += 1
    return count


def starts_along(plan, axis: int) -> list[int]:
    return sorted({box[axis] for box in plan.boxes})


def check_plan(h: int, w: int, tile: int, overlap: int) -> None:
    plan = plan_tiles(h, w, tile, overlap)
    assert (coverage(plan) >= 1).all()  # every pixel is in some tile
    for y, x in plan.boxes:  # no tile goes past the border
        assert 0 <= y <= h - tile and 0 <= x <= w - tile
    ys, xs = starts_along(plan, 0), starts_along(plan, 1)
    assert ys[0] == 0 and xs[0] == 0 and ys[-1] == h - tile and xs[-1] == w - tile  # flush with every border
    step = tile - overlap
    assert all(b - a == step for a, b in zip(ys[:-1], ys[1:-1]))  # regular steps, only the last one shorter
    assert all(0 < b - a <= step for a, b in zip(ys, ys[1:])) and all(0 < b - a <= step for a, b in zip(xs, xs[1:]))
    n = lambda size: math.ceil((size - tile) / step) + 1  # noqa: E731
    assert len(ys) == n(h) and len(xs) == n(w) and len(plan) == n(h) * n(w)
    assert len(set(plan.boxes)) == len(plan)


@pytest.mark.parametrize("h, w, tile, overlap", [(2448, 2048, 256, 32), (290, 119, 64, 16), (256, 256, 256, 0),
                                                 (257, 256, 256, 255), (600, 244, 244, 0), (5, 7, 1, 0)])
def test_the_plan_covers_the_image_with_flush_tiles(h, w, tile, overlap):
    check_plan(h, w, tile, overlap)


def test_the_plan_of_a_line_camera_image():
    plan = plan_tiles(2448, 2048, 256, 32)
    assert starts_along(plan, 0) == [*range(0, 2192, 224), 2192]  # 2448 - 256 = 2192: the flush last row
    assert starts_along(plan, 1) == [*range(0, 1792, 224), 1792]
    assert len(plan) == 11 * 9
    assert plan_tiles(256, 256, 256, 32).boxes == ((0, 0),)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 64), st.data())
def test_any_plan_covers_the_image_with_flush_tiles(tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    h, w = data.draw(st.integers(tile, 4 * tile + 9)), data.draw(st.integers(tile, 4 * tile + 9))
    check_plan(h, w, tile, overlap)


@pytest.mark.parametrize("args, message", [
    ((100, 50, 64, 16), r"image \(100x50\) is smaller than one tile \(64x64\); resize or pad it first"),
    ((100, 100, 0, 0), "tile must be at least 1"),
    ((100, 100, 64, 64), r"overlap must be in \[0, tile\)"),
    ((100, 100, 64, -1), r"overlap must be in \[0, tile\)"),
    ((100, 100, 64.0, 8), "tile must be an integer"),
    ((100.5, 100, 64, 8), "height must be an integer"),
    ((100, True, 64, 8), "width must be an integer"),
])
def test_bad_plans_are_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)


def test_blend_weights_ramp_over_the_overlap_and_are_never_zero():
    w = blend_weights(16, 4)
    assert w.shape == (16, 16) and w.dtype == np.float32
    assert w.min() > 0 and w.max() == 1 and np.allclose(w, w.T)
    assert np.allclose(w[8, :5], [0.2, 0.4, 0.6, 0.8, 1.0]) and np.allclose(w[8, -4:], [0.8, 0.6, 0.4, 0.2])
    assert (w[4:12, 4:12] == 1).all()
    assert np.allclose(w[8, :4] + w[8, -4:], 1)  # two tiles overlapping by exactly `overlap` sum to 1
    assert (blend_weights(16, 0) == 1).all()
    border = blend_weights(16, 4, (False, True, False, True))  # a top-left tile: full weight on the image border
    assert (border[:12, :12] == 1).all() and border[-1, -1] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="overlap < tile"):
        blend_weights(16, 16)


def stitch(plan, maps, **kw) -> np.ndarray:
    stitcher = Stitcher(plan, **kw)
    for i, m in enumerate(maps):
        stitcher.add(i, m)
    return stitcher.result()


@pytest.mark.parametrize("h, w, tile, overlap", [(2448, 2048, 256, 32), (290, 119, 64, 16), (260, 300, 256, 64)])
def test_a_constant_map_stitches_back_to_the_constant(h, w, tile, overlap):
    plan = plan_tiles(h, w, tile, overlap)
    out = stitch(plan, [np.full((tile, tile), 0.7, np.float32)] * len(plan))
    assert out.shape == (h, w) and out.dtype == np.float32
    assert np.abs(out - 0.7).max() < 1e-6  # no seam, no dip at the border


@pytest.mark.parametrize("h, w, tile, overlap", [(290, 119, 64, 16), (600, 244, 100, 30), (97, 97, 32, 16)])
def test_a_ramp_image_cut_and_stitched_is_itself(h, w, tile, overlap):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([yy / h, xx / w, (yy + xx) / (h + w)], axis=-1)
    plan = plan_tiles(h, w, tile, overlap)
    tiles = cut(image, plan)
    assert tiles.shape == (len(plan), tile, tile, 3)
    y, x = plan.boxes[-1]
    assert np.array_equal(tiles[-1], image[y:y + tile, x:x + tile])
    assert np.abs(stitch(plan, tiles, channels=3) - image).max() < 1e-6
    assert np.abs(stitch(plan, tiles[..., 0]) - image[..., 0]).max() < 1e-6


def max_step(out: np.ndarray) -> float:
    return max(np.abs(np.diff(out, axis=0)).max(initial=0), np.abs(np.diff(out, axis=1)).max(initial=0))


@pytest.mark.parametrize("h, w, tile, overlap", [(64 + 2 * 48, 64 + 3 * 48, 64, 16), (2448 // 4, 2048 // 4, 64, 8)])
def test_maps_that_differ_per_tile_blend_without_a_jump(h, w, tile, overlap):
    """Each tile's map is one random value: the stitched map moves between neighbours over the overlap in steps
    of at most spread / (overlap + 1) where neighbours overlap by exactly `overlap`, and at most twice that where
    the flush tile overlaps more. An unweighted average (no ramp) jumps by half the difference at every seam."""
    plan = plan_tiles(h, w, tile, overlap)
    values = np.random.default_rng(0).uniform(size=len(plan))
    out = stitch(plan, [np.full((tile, tile), v) for v in values])
    regular = (h - tile) % (tile - overlap) == 0 and (w - tile) % (tile - overlap) == 0
    bound = (values.max() - values.min()) / (overlap + 1) * (1 if regular else 2)
    assert max_step(out) <= bound + 1e-6
    assert out.min() >= values.min() - 1e-6 and out.max() <= values.max() + 1e-6


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 40), st.data())
def test_any_tiling_blends_within_twice_the_even_step(tile, data):
    overlap = data.draw(st.integers(1, tile // 2))
    h, w = data.draw(st.integers(tile, 3 * tile + 9)), data.draw(st.integers(tile, 3 * tile + 9))
    plan = plan_tiles(h, w, tile, overlap)
    values = np.random.default_rng(len(plan)).uniform(size=len(plan))
    out = stitch(plan, [np.full((tile, tile), v) for v in values])
    assert max_step(out) <= 2 * (values.max() - values.min()) / (overlap + 1) + 1e-6


@pytest.mark.parametrize("h, w, tile, overlap, scale", [(2448, 2048, 256, 32, 1 / 8), (290, 119, 64, 16, 1 / 8),
                                                        (290, 119, 64, 16, 0.25), (300, 200, 64, 0, 1 / 16),
                                                        (130, 70, 32, 8, 2.0)])
def test_maps_at_a_model_scale_stitch_into_a_map_of_the_image_at_that_scale(h, w, tile, overlap, scale):
    plan = plan_tiles(h, w, tile, overlap)
    s = round(tile * scale)
    stitcher = Stitcher(plan, scale=scale)
    assert stitcher.shape == (round(h * scale), round(w * scale))
    ys, xs = zip(*stitcher.boxes)
    assert min(ys) == 0 and max(ys) == stitcher.shape[0] - s and max(xs) == stitcher.shape[1] - s  # flush
    out = stitch(plan, [np.full((s, s), 0.25, np.float32)] * len(plan), scale=scale)
    assert out.shape == stitcher.shape and np.abs(out - 0.25).max() < 1e-6  # every map pixel covered, no seam


def test_the_stitcher_refuses_bad_maps_and_missing_tiles():
    plan = plan_tiles(100, 80, 32, 8)
    with pytest.raises(ValueError, match=r"tile 32 x scale 0.1 must be a whole number"):
        Stitcher(plan, scale=0.1)
    with pytest.raises(ValueError, match="channels must be None"):
        Stitcher(plan, channels=0)
    stitcher = Stitcher(plan, channels=3)
    with pytest.raises(ValueError, match=r"tile 0 map is \(32, 32\), expected \(32, 32, 3\)"):
        stitcher.add(0, np.zeros((32, 32)))
    with pytest.raises(IndexError, match=r"tile 12 is not in the plan \(12 tiles\)"):
        stitcher.add(12, np.zeros((32, 32, 3)))
    stitcher.add(0, np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="tile 0 was already added"):
        stitcher.add(0, np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="11 of 12 tiles not added"):
        stitcher.result()
    with pytest.raises(ValueError, match=r"the image has shape \(90, 80\) but the plan is for 100x80"):
        cut(np.zeros((90, 80)), plan)


def test_a_margin_leaves_each_tiles_border_ring_to_its_neighbour():
    plan = plan_tiles(100, 164, 64, 24)
    clean = np.random.default_rng(0).random((100, 164)).astype(np.float32)
    for margin, leaks in ((0, True), (8, False)):
        st = Stitcher(plan, margin=margin)
        for i, (y, x) in enumerate(plan.boxes):
            m = clean[y:y + 64, x:x + 64].copy()
            ring = np.zeros_like(m, bool)
            ring[:8], ring[-8:], ring[:, :8], ring[:, -8:] = True, True, True, True
            m[ring] += 5.0  # what a network does near its input's border
            st.add(i, m)
        out = st.result()
        inner = np.zeros_like(out, bool)
        inner[8:-8, 8:-8] = True  # away from the image's own border, which no neighbour covers
        assert (np.abs(out - clean)[inner].max() > 0.5) == leaks
    w = blend_weights(64, 24, (False, False, True, True), 8)
    assert w[0, :8].max() < 1e-3 and np.allclose(w[0, 16:48], 1.0)
    np.testing.assert_allclose(w[0, -24:] + w[0, :24], 1.0, atol=1e-3)  # two neighbours' weights still sum to 1
    with pytest.raises(ValueError, match="margin"):
        blend_weights(64, 24, margin=12)
