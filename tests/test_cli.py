import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.cli.main import main
from core.model.checkpoint import load_checkpoint, model_label


def test_cli_end_to_end(mvtec_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(mvtec_folder), "--preset", "tiny", "--steps", "4", "--micro-batch", "2",
                 "--brightness-defects", "0.3", "--grad-clip", "0.5", "--out", str(run)]) == 0
    ckpt = run / "last.safetensors"
    header = load_checkpoint(ckpt)
    assert header.step == 4 and header.train_config.micro_batch == 2 and header.train_config.grad_clip == 0.5
    assert header.train_config.synthesis.intensity_prob == pytest.approx(0.3)

    test_good = mvtec_folder / "test" / "good"
    (test_good / "broken.png").write_bytes(b"\x89PNG truncated")
    out_csv, overlays = tmp_path / "res.csv", tmp_path / "ov"
    # an image that cannot be read is an ERROR row, the others are inspected, and the run is not clean: exit 1
    assert main(["infer", str(ckpt), str(test_good), "--csv", str(out_csv), "--overlays", str(overlays)]) == 1
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert len(rows) == 5 and list(rows[0]) == ["file", "score", "verdict", "reason", "model", "threshold"]
    broken = [r for r in rows if r["file"].endswith("broken.png")][0]
    assert broken["verdict"] == "ERROR" and "not a readable image" in broken["reason"] and broken["score"] == ""
    ok_rows = [r for r in rows if r["verdict"] != "ERROR"]
    assert all(r["verdict"] in {"OK", "NG"} and 0 <= float(r["score"]) <= 1 and not r["reason"] for r in ok_rows)
    assert {r["model"] for r in rows} == {model_label(ckpt, header)} and "last.safetensors step 4 sha256" in \
        rows[0]["model"]
    panel = cv2.imread(str(overlays / "000_overlay.png"))
    assert panel.shape == (48, 3 * 56, 3)  # input | reconstruction | heatmap at input size

    (test_good / "broken.png").unlink()
    # an MVTec layout's test/good/000.png and test/spot/000.png: an overlay each, the sub-folders mirrored
    mirrored = tmp_path / "ov2"
    assert main(["infer", str(ckpt), str(mvtec_folder), "--csv", str(tmp_path / "all.csv"),
                 "--overlays", str(mirrored)]) == 0
    assert sorted(p.relative_to(mirrored).as_posix() for p in mirrored.rglob("*.png")) == [
        f"test/{sub}/{i:03d}_overlay.png" for sub in ("good", "spot") for i in range(4)]
    report_path = tmp_path / "metrics.json"
    assert main(["eval", str(ckpt), str(mvtec_folder), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert {"image_auroc", "pixel_auroc", "aupro", "pixel_ap"} <= set(report)
    assert report["images"] == 8 and 0 <= report["image_auroc"] <= 1
    assert "image_auroc" in capsys.readouterr().out


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert main(["infer", str(bad), str(tmp_path)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    assert "no image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(empty), "--brightness-defects", "1.5", "--out", str(tmp_path / "r")])
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(empty), "--grad-clip", "-1", "--out", str(tmp_path / "r")])
    assert "0 or more" in capsys.readouterr().err


def test_infer_exit_code_is_1_when_any_image_errs(tmp_path):
    from core.common.presets import get_preset
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    cfg = get_preset("tiny")[0]
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict()), tmp_path / "m.safetensors")
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    assert main(["infer", str(tmp_path / "m.safetensors"), str(folder), "--csv", str(tmp_path / "r.csv")]) == 1
    cv2.imwrite(str(folder / "b.png"), np.zeros((9, 9, 3), np.uint8))
    assert main(["infer", str(tmp_path / "m.safetensors"), str(folder), "--csv", str(tmp_path / "r.csv")]) == 1
    assert [r["verdict"] for r in csv.DictReader((tmp_path / "r.csv").read_text().splitlines())] == ["ERROR", ""]
    (folder / "a.png").unlink()  # every image inspected: a clean run
    assert main(["infer", str(tmp_path / "m.safetensors"), str(folder), "--csv", str(tmp_path / "r.csv")]) == 0


def test_presets_lists_parameter_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "paper" in out and "131.65" in out and "fast" in out


@pytest.mark.parametrize("cmd", [[], ["train"], ["infer"], ["eval"], ["presets"]])
def test_help(cmd):
    res = subprocess.run([sys.executable, "-m", "core.cli", *cmd, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: dad" in res.stdout


def test_training_is_fp32_unless_bf16_is_asked_for(mvtec_folder, tmp_path, monkeypatch):
    """The official recipe trains in fp32; bf16 autocast (CUDA) is an opt-in: ``dad train --bf16``."""
    import core.train.trainer as T
    from core.common.config import TrainConfig
    from core.common.presets import PRESETS
    from core.model.checkpoint import Checkpoint, CheckpointError, save_checkpoint
    from core.model.network import DiffusionAD

    assert TrainConfig().amp is False and not any(train.amp for _, train in PRESETS.values())
    seen = []

    def fake_trainer(model_cfg, train_cfg, *a, **k):
        seen.append(train_cfg.amp)
        raise CheckpointError("stop here")

    monkeypatch.setattr(T, "Trainer", fake_trainer)
    for extra in ([], ["--bf16"]):
        assert main(["train", str(mvtec_folder), "--preset", "tiny", "--out", str(tmp_path / "r"), *extra]) == 2
    assert seen == [False, True]
    # a checkpoint written when bf16 was the default still loads, with its setting
    cfg = PRESETS["tiny"][0]
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), train_config=TrainConfig(amp=True)),
                    tmp_path / "old.safetensors")
    assert load_checkpoint(tmp_path / "old.safetensors").train_config.amp is True


@pytest.mark.parametrize("what", ["score", "map"])
def test_infer_makes_a_nan_result_an_error_row_and_exits_1(tiny_ckpt_file, tmp_path, capsys, nan_for_one_image,
                                                           what):
    """A model that gives NaN for one image of a batch of 8: that image is an ERROR row with the reason, never a
    verdict (NaN >= threshold is False: it would pass as OK); the 7 others are judged."""
    from core.common.images import read_image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    batches = nan_for_one_image(read_image(folder / "05.png"), what)
    out = tmp_path / "r.csv"
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(out)]) == 1
    assert batches == [8]  # one batch of 8; the NaN is one image's error, not the batch's
    text = out.read_text()
    values = [[r[1], r[2], r[5]] for r in csv.reader(text.splitlines())]  # score, verdict, threshold
    assert not any("nan" in v.lower() or "inf" in v.lower() for row in values for v in row)
    rows = {Path(r["file"]).name: r for r in csv.DictReader(text.splitlines())}
    assert len(rows) == 8
    bad = rows.pop("05.png")
    assert bad["verdict"] == "ERROR" and bad["score"] == "" and "non-finite" in bad["reason"]
    assert all(r["verdict"] in ("OK", "NG") and r["reason"] == "" and r["threshold"] == "0.5" for r in rows.values())
    err = capsys.readouterr().err
    assert "05.png" in err and "non-finite" in err and "7 images inspected, 1 errors" in err


def test_infer_refuses_a_checkpoint_with_a_nan_weight(nan_weight_ckpt, good_folder, tmp_path, capsys):
    path, tensor = nan_weight_ckpt
    out = tmp_path / "r.csv"
    assert main(["infer", str(path), str(good_folder), "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and tensor in err and "Traceback" not in err
    assert not out.exists()


def test_eval_reports_defects_caught_at_1_and_5_percent_false_ng_and_the_own_thresholds_calls(tmp_path, capsys):
    """On 20 good and 20 defective test images: 1 % allows no good image NG, 5 % one; the figures agree with the
    model's scores, and the own threshold's calls are `dad infer`'s verdicts."""
    import torch
    from conftest import write_mvtec

    from core.common.datasets import mvtec_test_samples
    from core.common.presets import get_preset
    from core.inference.inspector import Inspector
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    root = write_mvtec(tmp_path / "product", np.random.default_rng(5), tests=20)
    cfg = get_preset("tiny")[0]
    torch.manual_seed(0)
    state = DiffusionAD(cfg).state_dict()
    bare = tmp_path / "bare.safetensors"
    save_checkpoint(Checkpoint(cfg, state), bare)
    samples = mvtec_test_samples(root)
    insp = Inspector.from_checkpoint(bare, device="cpu")
    scores = np.array([fr.result.score for fr in insp.inspect_files([s.path for s in samples], batch_size=8)])
    labels = np.array([s.label for s in samples])
    good, bad = scores[labels == 0], scores[labels == 1]
    assert len(good) == len(bad) == 20 and len(np.unique(scores)) > 10

    assert main(["eval", str(bare), str(root), "--json", str(tmp_path / "bare.json"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "bare.json").read_text())["own_threshold"] is None
    assert "none in the checkpoint" in capsys.readouterr().out

    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(Checkpoint(cfg, state, threshold=float(np.median(scores))), ckpt)
    assert main(["eval", str(ckpt), str(root), "--json", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    table = capsys.readouterr().out
    for name, allowed in (("1pct", 0), ("5pct", 1)):
        p = report["operating_points"][f"{name}_false_ng"]
        t = p["threshold"]
        assert report[f"caught_at_{name}_false_ng"] == p["caught"] == np.mean(bad >= t)
        assert p["caught_images"] == np.sum(bad >= t) and (p["good"], p["defective"]) == (20, 20)
        assert p["false_ng_images"] == np.sum(good >= t) <= allowed and p["false_ng"] == p["false_ng_images"] / 20
        # the lowest such threshold: just above the next good score down, which would call one good image too many
        below = good[good < t].max()
        assert t == np.nextafter(below, np.inf) and np.sum(good >= below) > allowed
        assert f"{p['caught']:.1%} caught ({p['caught_images']} of 20 defective)" in table and repr(t) in table
    assert "caught at 1% false NG" in table and "caught at 5% false NG" in table

    assert main(["infer", str(ckpt), str(root / "test"), "--csv", str(tmp_path / "r.csv")]) == 0
    ng = {sub: sum(r["verdict"] == "NG" for r in csv.DictReader((tmp_path / "r.csv").read_text().splitlines())
                   if Path(r["file"]).parent.name == sub) for sub in ("good", "spot")}
    own = report["own_threshold"]
    assert own["threshold"] == float(np.median(scores)) and 0 < ng["good"] < 20
    assert (own["false_ng_images"], own["caught_images"]) == (ng["good"], ng["spot"])
    assert own["false_ng"] == ng["good"] / 20 and own["caught"] == ng["spot"] / 20
    assert f"{own['false_ng']:.1%} false NG ({ng['good']} of 20 good)" in table.split("own threshold")[1]
