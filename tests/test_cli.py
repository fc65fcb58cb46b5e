import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from core.cli.main import main
from core.model.checkpoint import load_checkpoint


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
    assert main(["infer", str(ckpt), str(test_good), "--csv", str(out_csv), "--overlays", str(overlays)]) == 0
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert len(rows) == 5
    broken = [r for r in rows if r["file"].endswith("broken.png")][0]
    assert broken["verdict"] == "error" and broken["error"]
    ok_rows = [r for r in rows if r["verdict"] != "error"]
    assert all(r["verdict"] in {"OK", "NG"} and 0 <= float(r["score"]) <= 1 for r in ok_rows)
    panel = cv2.imread(str(overlays / "000_overlay.png"))
    assert panel.shape == (48, 3 * 56, 3)  # input | reconstruction | heatmap at input size

    (test_good / "broken.png").unlink()
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


def test_infer_exit_code_when_nothing_readable(tmp_path):
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
