"""Geometry: working images, their squares and stitched maps; tiling models from training to inspection; per-block
feature weighting and the area part of the image score."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.cli.main import main
from core.common.config import FeatureConfig, GeometryConfig, ModelConfig, replace
from core.common.geometry import describe, layout, pad_to, random_square, squares, stitch, to_working, working_shape
from core.common.prepare import top_k_for
from core.common.presets import get_preset
from core.inference.inspector import Inspector
from core.inference.predict import _stitched_parts, predict_batch, predict_working
from core.model.checkpoint import Checkpoint, load_checkpoint, read_header, save_checkpoint
from core.model.devices import to_tensor
from core.model.encoder import block_channels
from core.model.network import DiffusionAD, image_score, score_of
from core.train.data import working_geometry, working_scale
from core.train.feature_memory import block_weights, training_squares
from core.train.pipeline import make_sample
from core.train.run import RunSpec, RunSpecError
from core.train.synthesis import AnomalySynthesizer

CPU = torch.device("cpu")
SIZES = [(70, 130), (96, 150), (80, 200), (110, 140), (64, 180), (90, 120)]  # (h, w) of the training images


def tiles_config(scale: float = 1.0, overlap: int = 16, **features) -> ModelConfig:
    cfg = get_preset("tiny-pretrained")[0]
    return replace(cfg, geometry=GeometryConfig("tiles", scale, overlap),
                   features=replace(cfg.features, **features))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """`dad train --geometry tiles --scale 0` on six small non-square images: the saved model."""
    root = tmp_path_factory.mktemp("tiles")
    good = root / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        cv2.imwrite(str(good / f"{i}.png"), (rng.random((h, w, 3)) * 60 + 90).astype(np.uint8))
    assert main(["train", str(good), "--preset", "tiny-pretrained", "--steps", "2", "--geometry", "tiles",
                 "--scale", "0", "--device", "cpu", "--out", str(root / "run")]) == 0
    return root / "run" / "last.safetensors"


def test_working_shape_and_to_working():
    stretch, half = GeometryConfig(), GeometryConfig("tiles", 0.5)
    assert working_shape(300, 200, 64, stretch) == (64, 64)
    assert working_shape(300, 201, 64, half) == (150, 100)
    assert working_shape(3, 1, 64, GeometryConfig("tiles", 0.01)) == (1, 1)  # at least a pixel a side
    with pytest.raises(ValueError, match="scale"):
        working_shape(300, 200, 64, GeometryConfig("tiles", 0.0))
    image = np.random.default_rng(0).random((301, 199, 3)).astype(np.float32)
    assert to_working(image, 64, stretch).shape == (64, 64, 3)
    assert to_working(image, 64, half).shape == working_shape(301, 199, 64, half) + (3,)
    assert to_working(image, 64, GeometryConfig("tiles", 1.0)) is image  # the camera's own pixels: unchanged


def test_pad_to_reflects_at_the_bottom_and_right():
    image = np.arange(30, dtype=np.float32).reshape(5, 6)
    padded = pad_to(image, 8)
    assert padded.shape == (8, 8) and np.array_equal(padded[:5, :6], image)
    assert np.array_equal(padded[5, :6], image[4]) and np.array_equal(padded[:5, 6], image[:, 5])  # edge repeated once
    assert np.array_equal(padded[7, :6], image[2])
    assert pad_to(image, 4) is image


@pytest.mark.parametrize("shape", [(100, 150, 3), (40, 90), (64, 64, 3), (200, 70)])
def test_stitch_of_the_squares_is_the_image(shape):
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    cut, where = squares(image, 64, 16)
    assert cut.shape[1:3] == (64, 64) and len(cut) == len(where) == len(layout(shape[0], shape[1], 64, 16))
    assert (where.height, where.width) == shape[:2]
    np.testing.assert_allclose(stitch(cut, where), image, rtol=0, atol=1e-6)  # the blend weights sum to 1
    constant = np.full(shape, 0.3, np.float32)
    np.testing.assert_allclose(stitch(squares(constant, 64, 16)[0], where), constant, rtol=0, atol=1e-7)
    # maps at 1/8 of the squares' resolution stitch into a map at 1/8 of the working image
    small = stitch(np.stack([cv2.resize(c, (8, 8), interpolation=cv2.INTER_AREA) for c in cut]), where, 1 / 8)
    assert small.shape[:2] == (max(1, round(shape[0] / 8)), max(1, round(shape[1] / 8)))


def test_random_square_lies_in_the_padded_image():
    work = np.random.default_rng(2).random((50, 120, 3)).astype(np.float32)
    padded, rng = pad_to(work, 64), np.random.default_rng(3)
    corners = set()
    for _ in range(20):
        sq = random_square(work, 64, rng)
        assert sq.shape == (64, 64, 3)
        hits = [(y, x) for y in range(padded.shape[0] - 63) for x in range(padded.shape[1] - 63)
                if np.array_equal(padded[y:y + 64, x:x + 64], sq)]
        assert hits
        corners.add(hits[0])
    assert len(corners) > 1  # random places, not always the same
    exact, rng = work[:50, :50], np.random.default_rng(4)
    assert random_square(exact, 50, rng) is exact and rng.random() == np.random.default_rng(4).random()


def test_config_checks():
    for bad in ({"mode": "crop"}, {"scale": -1.0}, {"scale": 1e-4}, {"scale": 9.0}, {"overlap": -1}):
        with pytest.raises(ValueError):
            GeometryConfig(**bad)
    assert GeometryConfig("tiles", 0.0).scale == 0  # by rule
    with pytest.raises(ValueError, match="overlap"):
        ModelConfig(image_size=64, geometry=GeometryConfig("tiles", 1.0, 64))
    for bad in (-0.1, 0.6):
        with pytest.raises(ValueError, match="score_area"):
            ModelConfig(score_area=bad)
    with pytest.raises(ValueError, match="block_weighting"):
        FeatureConfig(blocks=(2, 4), block_weighting="some")
    assert FeatureConfig(blocks=(2, 4), fusion="distance", block_weighting="equal").fusion == "distance"


def test_score_area_mixes_the_top_k_mean_with_the_area_mean():
    maps = torch.rand(3, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    plain = ModelConfig(score_top_k=400)
    k = top_k_for(plain, 32, 48)
    flat = maps.flatten(1).sort(1, descending=True).values
    top_k = flat[:, :k].mean(1)
    torch.testing.assert_close(score_of(plain, maps), top_k)
    torch.testing.assert_close(image_score(maps, k), top_k)
    area = replace(plain, score_area=0.3)
    area_k = round(0.3 * 32 * 48)
    area_mean = flat[:, :area_k].mean(1)
    mixed = score_of(area, maps)
    torch.testing.assert_close(mixed, 0.5 * (top_k + area_mean))
    assert area_k > k and torch.all(area_mean < mixed) and torch.all(mixed < top_k)
    torch.testing.assert_close(image_score(maps, 10**6), maps.flatten(1).mean(1))  # k beyond the map: all of it


def test_block_weights_give_each_block_the_same_variance():
    fc = FeatureConfig(blocks=(2, 4))
    widths = [block_channels(b, fc.encoder) for b in fc.blocks]
    g = torch.Generator().manual_seed(0)
    patches = torch.cat([torch.randn(500, widths[0], generator=g), 30 * torch.randn(500, widths[1], generator=g)], 1)
    weight = block_weights(patches, fc)
    assert weight.shape == (sum(widths),)
    per_block = (patches * weight).var(0).split(widths)
    assert [float(v.sum()) for v in per_block] == pytest.approx([1.0, 1.0], rel=1e-4)
    assert float(weight[0]) > 10 * float(weight[-1])  # the larger block is weighed down


def test_feature_weight_buffer_and_weigh():
    plain = DiffusionAD(get_preset("tiny-pretrained")[0])
    patches = torch.randn(5, plain.memory.shape[1])
    assert not hasattr(plain, "feature_weight") and plain.weigh(patches) is patches
    equal = DiffusionAD(tiles_config(block_weighting="equal"))
    assert "feature_weight" in equal.state_dict() and torch.equal(equal.weigh(patches), patches)  # ones at first
    equal.feature_weight.copy_(torch.linspace(0.5, 2, patches.shape[1]))
    torch.testing.assert_close(equal.weigh(patches), patches * equal.feature_weight)


def test_training_squares_tags_each_square_with_its_image():
    shapes = [(64, 100), (40, 150), (64, 400), (64, 64)]  # 2, 3, 8 and 1 squares: batches of 8 and 6
    works = [np.full(s + (3,), 100 + 10 * i, np.uint8) for i, s in enumerate(shapes)]
    counts = [len(layout(w.shape[0], w.shape[1], 64, 16)) for w in works]
    model = DiffusionAD(tiles_config()).eval()
    with torch.no_grad():
        out = list(training_squares(model, works, CPU))
    owners = torch.cat([o for *_, o in out]).tolist()
    assert owners == [i for i, c in enumerate(counts) for _ in range(c)] and sum(counts) > len(works)
    assert [len(o) for *_, o in out] == [8, 6]
    every = np.concatenate([squares(w, 64, 16)[0] for w in works]).astype(np.float32) / 255
    with torch.no_grad():  # the features are those of every square of every image, in order
        expected = model.embed(to_tensor(list(every), CPU, 3))
    torch.testing.assert_close(torch.cat([f for _, _, f, _ in out]), expected, atol=1e-5, rtol=1e-5)
    assert [done for done, *_ in out] == [3, 4] and out[-1][1] == 4
    stretch = DiffusionAD(get_preset("tiny-pretrained")[0]).eval()
    with torch.no_grad():
        squares_only = list(training_squares(stretch, [np.zeros((64, 64, 3), np.uint8)] * 3, CPU))
    assert torch.cat([o for *_, o in squares_only]).tolist() == [0, 1, 2]


def test_memory_turns_put_the_eight_flips_and_turns_of_each_square_in():
    cfg = get_preset("tiny-pretrained")[0]
    cfg = replace(cfg, features=replace(cfg.features, memory_turns=True))
    model = DiffusionAD(cfg).eval()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    with torch.no_grad():
        out = list(training_squares(model, [image, image[::-1].copy()], CPU))
        owners = torch.cat([o for *_, o in out]).tolist()
        feats = torch.cat([f for _, _, f, _ in out])
        turned = model.embed(to_tensor([np.rot90(image, 1).astype(np.float32) / 255], CPU, 3))
    assert owners == [0] * 8 + [1] * 8
    assert min(float((feats[i] - turned[0]).abs().max()) for i in range(8)) < 1e-5  # a quarter turn is among them


def test_describe_says_how_a_model_sees_an_image():
    assert describe(128, GeometryConfig()) == "128 px"
    assert describe(256, GeometryConfig("tiles", 1.0)) == "tiles of 256 px at x1"
    assert describe(128, GeometryConfig("tiles", 0.4871)) == "tiles of 128 px at x0.4871"


def test_make_sample_draws_random_squares_of_working_images():
    works = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
             for i, (h, w) in enumerate([(50, 90), (70, 70)])]
    synth = AnomalySynthesizer(replace(get_preset("tiny")[1].synthesis, anomaly_prob=0.0))
    seen = set()
    for j in range(6):
        image, mask, i = make_sample(works, synth, None, 0, 1, j, size=32)
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and not mask.any()
        padded = pad_to(works[i], 32).astype(np.float32) / 255
        hits = [(y, x) for y in range(padded.shape[0] - 31) for x in range(padded.shape[1] - 31)
                if np.array_equal(padded[y:y + 32, x:x + 32], image)]
        assert hits
        seen.add((i, hits[0]))
        again = make_sample(works, synth, None, 0, 1, j, size=32)
        assert np.array_equal(again[0], image)  # the same seed, step and sample: the same square
    assert len(seen) > 1


def test_working_scale_and_geometry(tmp_path):
    for i, (h, w) in enumerate([(100, 300), (200, 160), (128, 500)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((h, w, 3), np.uint8))
    (tmp_path / "x.png").write_bytes(b"not an image")
    paths = sorted(tmp_path.glob("*.png"))
    assert working_scale(paths, 64) == round(64 / 128, 4)  # the median shorter side becomes one square
    assert working_scale(paths, 256) == 1.0  # never magnified
    assert working_scale([tmp_path / "x.png"], 64) == 1.0
    by_rule = tiles_config(scale=0.0)
    cfg, geometry = working_geometry(by_rule, paths, None)
    assert geometry == cfg.geometry == GeometryConfig("tiles", 0.5, 16)
    given = tiles_config(scale=0.25)
    assert working_geometry(given, paths, None) == (given, given.geometry)
    stretch = get_preset("tiny-pretrained")[0]
    assert working_geometry(stretch, paths, None) == (stretch, GeometryConfig())


def test_run_spec_geometry_and_model_settings(tmp_path):
    spec = RunSpec([str(tmp_path)], str(tmp_path / "r"), preset="tiny-pretrained", geometry="tiles", scale=0.5,
                   model={"score_area": 0.02, "features": {"block_weighting": "equal", "fusion": "distance"},
                          "geometry": {"overlap": 8}})
    cfg = spec.configs()[0]
    assert cfg.geometry == GeometryConfig("tiles", 0.5, 8) and cfg.score_area == 0.02
    assert cfg.features.block_weighting == "equal" and cfg.features.fusion == "distance"
    assert cfg.features.blocks == get_preset("tiny-pretrained")[0].features.blocks  # the rest kept
    assert RunSpec([str(tmp_path)], str(tmp_path / "r")).configs()[0].geometry == GeometryConfig()
    for bad in ({"geometry": "crop"}, {"scale": -1}, {"scale": 9}, {"model": [1]}):
        with pytest.raises(RunSpecError):
            RunSpec([str(tmp_path)], str(tmp_path / "r"), **bad)
    with pytest.raises(RunSpecError, match="score_area"):
        RunSpec([str(tmp_path)], str(tmp_path / "r"), model={"score_area": 0.9}).configs()


def test_checkpoint_writes_new_fields_only_when_set(tmp_path):
    plain = get_preset("tiny-pretrained")[0]
    save_checkpoint(Checkpoint(plain, DiffusionAD(plain).state_dict()), tmp_path / "plain.safetensors")
    header = read_header(tmp_path / "plain.safetensors")["model_config"]
    assert not {"geometry", "score_area"} & set(header) and "block_weighting" not in header["features"]
    cfg = replace(tiles_config(scale=0.375, overlap=8, block_weighting="equal", fusion="distance"), score_area=0.05)
    model = DiffusionAD(cfg)
    model.feature_weight.copy_(torch.linspace(0.1, 1, model.feature_weight.numel()))
    save_checkpoint(Checkpoint(cfg, model.state_dict()), tmp_path / "tiles.safetensors")
    header = read_header(tmp_path / "tiles.safetensors")["model_config"]
    assert header["geometry"] == {"mode": "tiles", "scale": 0.375, "overlap": 8} and header["score_area"] == 0.05
    loaded = load_checkpoint(tmp_path / "tiles.safetensors")
    assert loaded.model_config == cfg
    assert torch.equal(loaded.state_dict["feature_weight"], model.feature_weight)


def test_cli_trains_a_tiling_model_at_the_scale_of_the_rule(trained, tmp_path, capsys):
    cfg = load_checkpoint(trained).model_config
    median = float(np.median([min(s) for s in SIZES]))
    # the overlap by default: a quarter of the 64 px square, held in the model as a number
    assert cfg.geometry == GeometryConfig("tiles", round(min(1.0, 64 / median), 4), 16) and cfg.geometry.scale < 1
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--preset", "tiny-pretrained", "--geometry", "tiles", "--scale", "-1",
              "--out", str(tmp_path / "r")])
    assert exc.value.code == 2 and "--scale" in capsys.readouterr().err


def test_a_tiling_model_maps_the_working_image(trained):
    insp = Inspector.from_checkpoint(trained, device="cpu")
    geometry, size = insp.config.geometry, insp.config.image_size
    rng = np.random.default_rng(5)
    images = [rng.random(s).astype(np.float32) for s in [(300, 200, 3), (90, 400, 3), (120, 120, 3)]]
    results = insp.predict(images)
    for r, im in zip(results, images):
        work = working_shape(im.shape[0], im.shape[1], size, geometry)
        assert r.anomaly_map.shape == work and r.reconstruction.shape == work + (3,)
        assert np.isfinite(r.score) and np.all(np.isfinite(r.anomaly_map))
        assert r.anomaly_map_full().shape == im.shape[:2]
    for a, b in zip(results, insp.predict(images)):  # deterministic: the same call, the same maps
        assert a.score == b.score and np.array_equal(a.anomaly_map, b.anomaly_map)
    for a, b in zip(results, insp.predict(images[::-1])[::-1]):  # another batch: the same up to rounding
        assert a.score == pytest.approx(b.score, abs=1e-5)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-5)

    parts = insp.predict_parts(images)
    assert parts.anomaly_map.shape == (3, size, size) and parts.patch_distance.shape == (3, size // 8, size // 8)
    np.testing.assert_allclose(parts.score, [r.score for r in results], rtol=1e-6)
    resized = [cv2.resize(r.anomaly_map, (size, size), interpolation=cv2.INTER_LINEAR) for r in results]
    np.testing.assert_allclose(parts.anomaly_map, np.stack(resized), atol=1e-6)

    works = [to_working(im, size, geometry) for im in images]
    recon, maps, scores = predict_working(insp.model, works, CPU)
    assert recon.shape == (3, size, size, 3) and maps.shape == (3, size, size)
    np.testing.assert_allclose(scores, predict_batch(insp.model, images, CPU)[2], rtol=1e-6)
    with torch.no_grad():
        stitched = _stitched_parts(insp.model, works[:1], CPU, None)[0]
    assert stitched.anomaly_map.shape == works[0].shape[:2] and stitched.reconstruction.shape == works[0].shape
    assert stitched.score == pytest.approx(results[0].score, rel=1e-6)
