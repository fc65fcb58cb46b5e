"""Held-out validation: figures on good images and synthetic defects, and the threshold they suggest."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from core.common.config import SynthesisConfig, replace
from core.common.metrics import image_auroc, pixel_auroc, threshold_gap, threshold_robust
from core.inference.predict import predict_working
from core.model.network import DiffusionAD
from core.train.synthesis import AnomalySynthesizer

VALIDATION_SEED = 12345  # the synthetic validation defects are the same at every validation


def synthetic_defect_auroc(
    predict: Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]], good: list[np.ndarray],
    good_scores: np.ndarray, good_maps: np.ndarray, synthesis: SynthesisConfig, textures: Sequence[np.ndarray],
) -> tuple[float, float]:
    """Image and pixel AUROC of held-out good images against one synthetic defect made from each of them
    (fixed seed). ``predict`` maps images to (scores, maps); the good images' are passed in, so several
    synthesis settings can be judged against one prediction of the good images."""
    bad, masks = synthetic_defects(good, synthesis, textures)
    bad_scores, bad_maps = predict(bad)
    return defect_aurocs(good_scores, good_maps, bad_scores, bad_maps, masks)


def synthetic_defects(
    good: list[np.ndarray], synthesis: SynthesisConfig, textures: Sequence[np.ndarray], size: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """One synthetic defect made from each good image (fixed seed): the images and their boolean masks (resized to
    ``size`` x ``size`` where given and they differ)."""
    synth = AnomalySynthesizer(replace(synthesis, anomaly_prob=1.0), textures, seed=VALIDATION_SEED)
    bad, masks = zip(*(synth(g) for g in good))
    if size:  # the maps' size (a tiling model's working images differ in size; their maps come resized to it)
        masks = tuple(m if m.shape == (size, size) else cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
                      for m in masks)
    return list(bad), np.stack(masks) > 0.5


def defect_aurocs(good_scores: np.ndarray, good_maps: np.ndarray, bad_scores: np.ndarray, bad_maps: np.ndarray,
                  masks: np.ndarray) -> tuple[float, float]:
    """Image and pixel AUROC of good images (all pixels normal) against defective ones with ``masks``."""
    labels = np.r_[np.zeros(len(good_scores)), np.ones(len(bad_scores))]
    pixels = np.concatenate([np.zeros_like(good_maps, dtype=bool), masks])
    return (image_auroc(labels, np.r_[good_scores, bad_scores]),
            pixel_auroc(pixels, np.concatenate([good_maps, bad_maps])))


def held_out_validation(model: DiffusionAD, val: Sequence[np.ndarray], device: torch.device,
                        synthesis: SynthesisConfig, textures: Sequence[np.ndarray]) -> tuple[dict[str, float], float]:
    """A model's figures on held-out good images (uint8) and on synthetic defects made from them (fixed seed), and
    the threshold it suggests: the median of the good images' scores + ROBUST_K (2) robust standard deviations
    (``core.common.metrics.threshold_robust``: one odd good image does not decide it), with the share of good images it
    calls NG and of synthetic defects it calls OK (``threshold_warning`` reads them)."""
    good = [im.astype(np.float32) / 255.0 for im in val]

    def predict(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        parts = [predict_working(model, images[i:i + 8], device) for i in range(0, len(images), 8)]
        return np.concatenate([p[2] for p in parts]), np.concatenate([p[1] for p in parts])

    good_scores, good_maps = predict(good)
    bad, masks = synthetic_defects(good, synthesis, textures, model.config.image_size)
    bad_scores, bad_maps = predict(bad)
    i_auroc, p_auroc = defect_aurocs(good_scores, good_maps, bad_scores, bad_maps, masks)
    threshold = threshold_robust(good_scores)
    metrics = {
        "val_good_score_mean": float(good_scores.mean()),
        "val_good_score_std": float(good_scores.std()),
        "val_good_score_max": float(good_scores.max()),
        "val_synthetic_image_auroc": i_auroc,
        "val_synthetic_pixel_auroc": p_auroc,
        **threshold_gap(good_scores, bad_scores, threshold),
    }
    return metrics, threshold
