"""The benchmarks measure the product: their figures for a model's shown map are `dad eval`'s, and the parts of
the map they study come from the path `Inspector.predict` takes."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli.main import main
from core.common.config import replace
from core.common.datasets import list_images, mvtec_test_samples
from core.common.images import resize
from core.common.presets import get_preset
from core.inference.inspector import Inspector
from core.model.network import DiffusionAD
from core.train.data import TrainData
from core.train.trainer import Trainer

BENCH = Path(__file__).resolve().parent.parent / "bench"
METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")


def bench(name: str):  # noqa: ANN201
    """A bench script as a module (the scripts import each other by their own names)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny `pretrained` model with the shown map of the preset (the head's probability joined with the
    calibrated memory distance), trained a few steps on a synthetic MVTec-layout folder named as the benchmark's
    data (its ablation reads `magnetic_tile/train/good`); its images are smaller than the model's size."""
    from conftest import write_mvtec

    root = write_mvtec(tmp_path_factory.mktemp("data") / "magnetic_tile", np.random.default_rng(3), tests=6)
    model_cfg, train_cfg = get_preset("tiny-pretrained")
    assert model_cfg.features.fusion == "mean"
    train_cfg = replace(train_cfg, steps=3, checkpoint_every=3, validate_every=3)
    out = root.parent / "run"
    data = TrainData.from_paths(list_images(root / "train/good"), model_cfg.image_size, 0.2, 0)
    list(Trainer(model_cfg, train_cfg, data, out, device="cpu").run())
    return out / "last.safetensors", root


def dad_eval(ckpt: Path, root: Path, tmp_path: Path) -> dict:
    out = tmp_path / "eval.json"
    assert main(["eval", str(ckpt), str(root), "--json", str(out), "--device", "cpu"]) == 0
    return json.loads(out.read_text())


def test_the_pretrained_benchmark_scores_the_shown_map_as_dad_eval(trained, tmp_path):
    ckpt, root = trained
    expected = dad_eval(ckpt, root, tmp_path)
    assert 0.0 < expected["pixel_auroc"] < 1.0 and expected["images"] == 12  # a model that sees something
    pretrained = bench("pretrained")
    got = pretrained.score(ckpt, root, ablation=True)
    for key in METRICS:
        assert got["segmenter"][key] == expected[key], key
    # the ablation rows come from the same model's parts, and differ from the shown map
    assert set(pretrained.MAP_KINDS) <= set(got)
    assert got["memory distance"]["pixel_auroc"] != expected["pixel_auroc"]
    insp = Inspector.from_checkpoint(ckpt, device="cpu")
    own = pretrained.score_fusions(insp, root)  # the model's own calibration: its own fusion is the shown map
    for key in METRICS:
        assert own["mean"][key] == expected[key], key
    assert own["none"]["pixel_auroc"] != own["mean"]["pixel_auroc"]  # the head alone, from the parts: another map


def test_the_peer_benchmark_scores_our_checkpoints_as_dad_eval(trained, tmp_path):
    ckpt, root = trained
    expected = dad_eval(ckpt, root, tmp_path)
    got = bench("peer_draem_runs").our_report(ckpt, str(root))
    assert {k: got[k] for k in METRICS} == {k: expected[k] for k in METRICS}


def test_the_parts_shown_map_is_inspector_predicts_map(trained):
    ckpt, root = trained
    insp = Inspector.from_checkpoint(ckpt, device="cpu")
    images = [insp.read_image(s.path) for s in mvtec_test_samples(root)]
    results = insp.predict_many(images, batch_size=8)
    parts = insp.predict_parts(images, batch_size=8)
    np.testing.assert_array_equal(parts.anomaly_map, np.stack([r.anomaly_map for r in results]))
    np.testing.assert_array_equal(parts.score, np.array([r.score for r in results], dtype=np.float32))
    np.testing.assert_array_equal(parts.reconstruction, np.stack([r.reconstruction for r in results]))
    size = insp.config.image_size
    assert parts.head.shape == parts.distance.shape == parts.difference.shape == (len(images), size, size)
    n, h, w = parts.patch_distance.shape  # one distance per encoder patch
    assert n == len(images) and 1 < h < size and 1 < w < size
    # the shown map is the preset's join of the two probabilities, and the difference is the reconstruction's
    np.testing.assert_allclose(parts.anomaly_map, (parts.head + parts.distance) / 2, atol=1e-6)
    x = np.stack([resize(im, size) for im in images])
    np.testing.assert_allclose(parts.difference, np.abs(x - parts.reconstruction).mean(-1), atol=1e-5)
    # the model's calibration given explicitly changes nothing; another changes the distance, not the head
    own = insp.predict_parts(images, high=float(insp.model.distance_high))
    np.testing.assert_allclose(own.anomaly_map, parts.anomaly_map, atol=1e-6)
    other = insp.predict_parts(images, high=float(insp.model.distance_high) * 4)
    np.testing.assert_array_equal(other.head, parts.head)
    assert not np.allclose(other.distance, parts.distance)


def test_parts_of_a_model_without_memory(tiny_configs):
    torch.manual_seed(0)
    model_cfg = replace(tiny_configs[0], channels=1)
    insp = Inspector(DiffusionAD(model_cfg).eval(), torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [rng.random((40 + 3 * i, 50, 3), dtype=np.float32) for i in range(5)]
    parts = insp.predict_parts(images, batch_size=2)
    results = insp.predict_many(images, batch_size=2)
    assert parts.distance is None and parts.patch_distance is None
    np.testing.assert_array_equal(parts.anomaly_map, np.stack([r.anomaly_map for r in results]))
    np.testing.assert_array_equal(parts.head, parts.anomaly_map)  # without a memory the head's map is shown
    assert parts.reconstruction.shape == (5, model_cfg.image_size, model_cfg.image_size, 3)  # grey, as RGB
    with pytest.raises(ValueError, match="batch_size"):
        insp.predict_parts(images, batch_size=0)


@pytest.mark.parametrize(("script", "args"), [("pretrained", ["speed", "--help"]), ("one_step", ["--help"]),
                                            ("inference_settings", ["--help"]), ("peer_draem", ["ours", "--help"])])
def test_the_changed_bench_scripts_parse_their_arguments(script, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *args])
    with pytest.raises(SystemExit) as done:
        bench(script).main()
    assert done.value.code == 0 and "usage" in capsys.readouterr().out
