import cv2
import numpy as np
import pytest
import torch

from core.common.presets import get_preset
from core.inference.inspector import Inspector
from core.model.network import DiffusionAD


@pytest.fixture
def inspector():
    torch.manual_seed(0)
    model = DiffusionAD(get_preset("tiny")[0])
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return Inspector(model, torch.device("cpu"))


def test_same_image_same_score_whatever_the_batch(inspector):
    rng = np.random.default_rng(0)
    imgs = [rng.random((50, 40, 3), dtype=np.float32) for _ in range(4)]
    alone = inspector.predict(imgs[:1])[0].score
    again = inspector.predict(imgs[:1])[0].score
    in_batch = inspector.predict(imgs)[0].score
    assert alone == again
    assert alone == pytest.approx(in_batch, abs=1e-5)


def test_predict_many_matches_one_batch_in_order(inspector):
    rng = np.random.default_rng(2)
    imgs = [rng.random((40, 40, 3), dtype=np.float32) * (i + 1) / 5 for i in range(5)]
    whole = inspector.predict(imgs)
    chunked = inspector.predict_many(imgs, batch_size=2)  # chunks of 2, 2 and 1
    assert len(chunked) == 5
    assert [r.score for r in chunked] == pytest.approx([r.score for r in whole], abs=1e-5)
    assert len({round(r.score, 6) for r in chunked}) > 1  # the images differ, so order is checked
    assert inspector.predict_many([]) == []
    with pytest.raises(ValueError, match="batch_size"):
        inspector.predict_many(imgs, batch_size=0)


def test_any_size_and_maps_back_to_input_size(inspector):
    rng = np.random.default_rng(1)
    imgs = [rng.random((17, 91, 3), dtype=np.float32), rng.random((300, 120, 3), dtype=np.float32)]
    res = inspector.predict(imgs)
    for img, r in zip(imgs, res):
        assert r.anomaly_map.shape == (32, 32) and r.reconstruction.shape == (32, 32, 3)
        assert r.anomaly_map_full().shape == img.shape[:2]
        assert r.reconstruction_full().shape == img.shape
        assert np.isfinite(r.score) and 0 <= r.score <= 1


def test_inspect_files_reports_bad_files_and_goes_on(inspector, tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.full((20, 20, 3), 40 * i, np.uint8))
        paths.append(p)
    paths[2].write_bytes(b"broken")
    paths.insert(3, tmp_path / "missing.png")
    results = list(inspector.inspect_files(paths, batch_size=2))
    assert [r.path for r in results] == paths  # same order as asked
    errors = {r.path.name: r.error for r in results if r.error}
    assert set(errors) == {"2.png", "missing.png"}
    assert "not a readable image" in errors["2.png"] and "not found" in errors["missing.png"]
    assert sum(r.result is not None for r in results) == 4


def test_inspect_files_can_be_cancelled(inspector, tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.zeros((8, 8, 3), np.uint8))
        paths.append(p)
    seen = []
    for r in inspector.inspect_files(paths, batch_size=1, cancel=lambda: len(seen) >= 2):
        seen.append(r)
    assert len(seen) == 2


def test_overlay_leaves_normal_areas_untouched_on_a_fixed_scale():
    import numpy as np

    from core.common.overlay import heat_overlay, overlay_alpha

    a = overlay_alpha(np.linspace(0, 1, 101))
    assert a[:26].max() == 0.0 and a[75:].min() == 1.0 and np.all(np.diff(a) >= 0)
    image = np.full((4, 8, 3), 0.5, np.float32)
    amap = np.zeros((4, 8), np.float32)
    amap[:, 4:] = 0.9  # right half anomalous, left half the background response of a good surface
    amap[:, :4] = 0.2
    out = heat_overlay(image, amap)
    assert np.all(out[:, :4] == 127) and np.abs(out[:, 4:].astype(int) - 127).max() > 40


def test_threshold_contours_outline_regions_and_holes():
    from core.common.overlay import threshold_contours

    m = np.zeros((40, 50), np.float32)
    m[10:30, 5:25] = 0.9  # a square with a hole
    m[18:22, 13:17] = 0.1
    m[2:4, 40:45] = 0.6  # a small second region
    m[0, 0] = np.nan
    found = threshold_contours(m, 0.5)
    assert len(found) == 3  # outer square, its hole, the small region
    for c in found:
        assert c.shape[1] == 2 and np.array_equal(c[0], c[-1])  # closed (x, y) polylines
    outer = max(found, key=lambda c: np.ptp(c[:, 0]) * np.ptp(c[:, 1]))
    assert (outer[:, 0].min(), outer[:, 0].max(), outer[:, 1].min(), outer[:, 1].max()) == (5.5, 24.5, 10.5, 29.5)
    assert len(threshold_contours(m, 0.7)) == 2  # the small region is below 0.7
    assert threshold_contours(m, 2.0) == [] and threshold_contours(np.full((4, 4), np.nan), 0.5) == []
