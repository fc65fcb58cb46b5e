"""`dad infer --reconstructions DIR`: the model's reconstruction of every image, at its own size, paths mirrored."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.cli.main import main
from core.common.overlay import reconstruction_path
from core.inference.inspector import Inspector


def _folder(root: Path, deep: bool = False) -> dict[str, Path]:
    """Sub-folders with images of two sizes and a .png / .jpg pair of one stem (16-bit PNGs up to 4095 if
    ``deep``); their paths by the name their reconstruction should have under DIR."""
    rng = np.random.default_rng(7)
    made = {}
    for rel, (h, w) in {"a/000.png": (30, 40), "a/000.jpg": (30, 40), "b/001.png": (70, 50),
                        "b/c/002.png": (30, 40)}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if deep and path.suffix == ".png":
            img = rng.integers(0, 4096, (h, w, 3), dtype=np.uint16)
        else:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(path), img)
        made[rel if path.suffix == ".png" else rel + ".png"] = path
    return made


def _save_model(tmp_path: Path, tiny_configs, **changes) -> Path:  # noqa: ANN001
    import torch

    from core.common.config import replace
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    torch.manual_seed(0)
    cfg = replace(tiny_configs[0], **changes)
    path = tmp_path / "model.safetensors"
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), threshold=0.5), path)
    return path


def _expected(ckpt: Path, paths: list[Path]) -> dict[Path, np.ndarray]:
    """The inspector's own reconstruction_full() of each image."""
    insp = Inspector.from_checkpoint(ckpt, device="cpu")
    return {fr.path: fr.result.reconstruction_full() for fr in insp.inspect_files(paths)}


def _written(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_reconstruction_path_mirrors_the_folder():
    assert reconstruction_path("F/crack/000.png", "F", "OUT") == Path("OUT/crack/000.png")
    assert reconstruction_path("F/a/001.jpg", "F", "OUT") == Path("OUT/a/001.jpg.png")
    assert reconstruction_path("F/a/001.PNG", "F", "OUT") == Path("OUT/a/001.PNG")
    assert reconstruction_path("elsewhere/x.bmp", "F", "OUT") == Path("OUT/x.bmp.png")  # outside: by its name


def test_reconstructions_at_each_images_size_paths_mirrored(tmp_path, tiny_configs):
    ckpt = _save_model(tmp_path, tiny_configs)
    images = _folder(tmp_path / "imgs")
    out = tmp_path / "recon"
    assert main(["infer", str(ckpt), str(tmp_path / "imgs"), "--csv", str(tmp_path / "r.csv"),
                 "--reconstructions", str(out)]) == 0
    assert _written(out) == sorted(images)  # 000.png and 000.jpg: a file each
    expected = _expected(ckpt, list(images.values()))
    for name, image in images.items():
        png = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        h, w = cv2.imread(str(image)).shape[:2]
        assert png.dtype == np.uint8 and png.shape == (h, w, 3)
        recon = expected[image]
        assert recon.shape == (h, w, 3) and np.ptp(recon) > 1 / 255  # a colour image with content, not a flat one
        np.testing.assert_allclose(png[..., ::-1] / 255.0, recon, atol=1 / 255)


def test_grey_model_writes_one_channel(tmp_path, tiny_configs):
    ckpt = _save_model(tmp_path, tiny_configs, channels=1)
    images = _folder(tmp_path / "imgs")
    out = tmp_path / "recon"
    assert main(["infer", str(ckpt), str(tmp_path / "imgs"), "--reconstructions", str(out)]) == 0
    expected = _expected(ckpt, list(images.values()))
    for name, image in images.items():
        png = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == expected[image].shape[:2]
        np.testing.assert_allclose(png / 255.0, expected[image][..., 0], atol=1 / 255)


def test_deep_model_writes_16_bit_in_the_inputs_units(tmp_path, tiny_configs):
    ckpt = _save_model(tmp_path, tiny_configs, input_max=4095.0)
    images = _folder(tmp_path / "imgs", deep=True)
    out = tmp_path / "recon"
    assert main(["infer", str(ckpt), str(tmp_path / "imgs"), "--reconstructions", str(out)]) == 0
    expected = _expected(ckpt, list(images.values()))
    for name, image in images.items():
        png = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == expected[image].shape
        np.testing.assert_allclose(png[..., ::-1] / 4095.0, expected[image], atol=1 / 4095)
        assert png.max() > 255  # in 0..4095, not 0..255


def test_unwritable_target_is_one_line_and_the_rows_are_all_written(tmp_path, tiny_configs, capsys):
    ckpt = _save_model(tmp_path, tiny_configs)
    images = _folder(tmp_path / "imgs")
    out = tmp_path / "recon"
    out.write_text("a file, not a folder")
    res = tmp_path / "r.csv"
    assert main(["infer", str(ckpt), str(tmp_path / "imgs"), "--csv", str(res), "--reconstructions", str(out)]) == 0
    err = capsys.readouterr().err
    for name, image in images.items():
        line = [ln for ln in err.splitlines() if str(out / name) in ln]
        assert len(line) == 1 and "could not write reconstruction" in line[0] and str(image) in line[0]
    rows = list(csv.DictReader(res.read_text().splitlines()))
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in images.values())
    assert all(r["verdict"] in {"OK", "NG"} for r in rows)
    assert out.read_text() == "a file, not a folder"


def test_the_image_folder_itself_is_refused(tmp_path, tiny_configs, capsys):
    ckpt = _save_model(tmp_path, tiny_configs)
    images = _folder(tmp_path / "imgs")
    before = {p: p.read_bytes() for p in images.values()}
    assert main(["infer", str(ckpt), str(tmp_path / "imgs"), "--reconstructions", str(tmp_path / "imgs")]) == 2
    assert "--reconstructions" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in images.values()} == before


def test_help_names_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    assert "--reconstructions" in capsys.readouterr().out
