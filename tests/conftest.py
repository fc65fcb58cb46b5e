"""Shared fixtures: tiny configs and generated image folders (no external data)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from core.common.config import replace
from core.common.presets import get_preset


def make_good(rng: np.random.Generator, h: int = 48, w: int = 56) -> np.ndarray:
    """A textured 'product surface': smooth gradient plus fine noise, uint8 BGR."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 110 + 30 * np.sin(xx / 6.0) + 10 * (yy / h)
    img = base[..., None] + rng.normal(0, 4, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_defect(rng: np.random.Generator, h: int = 48, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    img = make_good(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    cy, cx = int(rng.integers(10, h - 10)), int(rng.integers(10, w - 10))
    cv2.circle(mask, (cx, cy), int(rng.integers(4, 8)), 255, -1)
    img[mask > 0] = (20, 20, 200)
    return img, mask


@pytest.fixture
def tiny_configs():
    model_cfg, train_cfg = get_preset("tiny")
    return model_cfg, replace(train_cfg, steps=6, checkpoint_every=3, validate_every=3)


@pytest.fixture
def good_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "good"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        cv2.imwrite(str(folder / f"g{i:02d}.png"), make_good(rng))
    return folder


def write_mvtec(root: Path, rng: np.random.Generator, tests: int = 4) -> Path:
    """An MVTec-AD-layout folder at ``root``: 10 train/good images, ``tests`` test/good and test/spot images with
    ground_truth masks."""
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(10):
        cv2.imwrite(str(root / "train/good" / f"{i:03d}.png"), make_good(rng))
    for i in range(tests):
        cv2.imwrite(str(root / "test/good" / f"{i:03d}.png"), make_good(rng))
        img, mask = make_defect(rng)
        cv2.imwrite(str(root / "test/spot" / f"{i:03d}.png"), img)
        cv2.imwrite(str(root / "ground_truth/spot" / f"{i:03d}_mask.png"), mask)
    return root


@pytest.fixture
def mvtec_folder(tmp_path: Path) -> Path:
    """An MVTec-AD-layout folder: train/good, test/good, test/spot with ground_truth masks."""
    return write_mvtec(tmp_path / "product", np.random.default_rng(1))


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tiny test models gain nothing from threads; one thread avoids OpenMP oversubscription."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def isolated(tmp_path: Path):
    """Per-test settings file and data folder for the app; errors are collected instead of shown in dialogs."""
    from dad_gui.qt_util import Isolated

    with Isolated(tmp_path) as iso:
        yield iso.errors


@pytest.fixture
def tiny_ckpt_file(tmp_path: Path, tiny_configs) -> Path:
    """A saved tiny model with seeded random weights."""
    import torch

    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    torch.manual_seed(0)
    path = tmp_path / "tiny model.safetensors"
    save_checkpoint(Checkpoint(tiny_configs[0], DiffusionAD(tiny_configs[0]).state_dict(), threshold=0.5,
                               info={"preset": "tiny"}), path)
    return path


@pytest.fixture
def nan_weight_ckpt(tiny_ckpt_file: Path) -> tuple[Path, str]:
    """The tiny model edited: one weight of the segmenter set to NaN, saved as ``edited.safetensors``; and the
    tensor's name."""
    from core.model.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_ckpt_file)
    name = next(k for k, v in ckpt.state_dict.items() if k.startswith("segmenter.") and v.is_floating_point())
    ckpt.state_dict[name] = ckpt.state_dict[name].clone()
    ckpt.state_dict[name].view(-1)[0] = float("nan")
    path = tiny_ckpt_file.with_name("edited.safetensors")
    save_checkpoint(ckpt, path)
    return path, name


@pytest.fixture
def nan_for_one_image(monkeypatch):
    """``patch(target, what)``: Inspector.predict as a model gone bad for one image (the one equal to ``target``):
    its score NaN (``what="score"``) or one pixel of its map (``"map"``), the other results as they are. Returns
    the sizes of the batches predicted."""
    from dataclasses import replace as replace_field

    from core.inference.inspector import Inspector

    real = Inspector.predict

    def patch(target: np.ndarray, what: str = "score") -> list[int]:
        batches: list[int] = []

        def predict(self, images, reconstruct=None):  # noqa: ANN001, ANN202
            batches.append(len(images))
            out = []
            for image, r in zip(images, real(self, images, reconstruct)):
                if image.shape == target.shape and np.array_equal(image, target):
                    if what == "score":
                        r = replace_field(r, score=float("nan"))
                    else:
                        bad = r.anomaly_map.copy()
                        bad[3, 4] = np.nan
                        r = replace_field(r, anomaly_map=bad)
                out.append(r)
            return out

        monkeypatch.setattr(Inspector, "predict", predict)
        return batches

    return patch
