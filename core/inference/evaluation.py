"""Evaluate a model on an MVTec-layout test split with the project's metric functions."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.common.datasets import mvtec_test_samples
from core.common.images import ImageReadError, read_mask
from core.common.metrics import (
    aupro,
    calls_at_threshold,
    catch_rate_at_false_ng,
    f1_max,
    image_auroc,
    pixel_ap,
    pixel_auroc,
)
from core.runtime.base import InspectorBase as Inspector

EVAL_SIZE = 256  # pixel metrics are computed at 256 x 256 whatever the model's resolution
FALSE_NG_SHARES = {"1pct": 0.01, "5pct": 0.05}  # the operating points reported: good images allowed NG


def evaluate(
    inspector: Inspector, root: str | Path, batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """I-AUROC, P-AUROC, AUPRO@0.3, P-AP, F1-max, per-defect I-AUROC, the defects caught at 1 % and 5 % false NG,
    and what the model's own threshold calls on ``root/test``.

    Defective images without a (non-empty) mask count for image metrics only.
    """
    pred = predict_test(inspector, root, batch_size, progress)
    report = score_report(pred.samples, pred.scores, pred.maps, threshold=inspector.threshold)
    report.update(errors=pred.errors, seconds=pred.seconds,
                  ms_per_image_incl_io=1000 * pred.seconds / max(len(pred.samples), 1),
                  model_image_size=inspector.config.image_size)
    return report


@dataclass
class SplitPrediction:
    """A model's image scores and EVAL_SIZE anomaly maps on a test split, before the metrics."""

    samples: list[Any]  # the readable test samples, in order
    scores: np.ndarray
    maps: list[np.ndarray]
    errors: list[str]  # "<file>: <reason>" of each unreadable one
    seconds: float  # inference time, reading the files included


def predict_test(
    inspector: Inspector, root: str | Path, batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> SplitPrediction:
    """Scores and maps of every image of ``root/test``; :func:`score_report` turns them into metrics (the
    metrics are the slow part on a GPU: a caller may compute them elsewhere)."""
    root = Path(root)
    if not (root / "test").is_dir():
        raise FileNotFoundError(f"{root}: no test/ folder (MVTec AD layout expected)")
    samples = mvtec_test_samples(root)
    if not samples:
        raise ValueError(f"{root}: test/ holds no images")
    kept, scores, maps, errors = [], [], [], []
    t0 = time.perf_counter()
    results = inspector.inspect_files([s.path for s in samples], batch_size=batch_size)
    for i, (sample, fr) in enumerate(zip(samples, results), 1):
        if progress:
            progress(i, len(samples))
        if fr.result is None:
            errors.append(f"{sample.path}: {fr.error}")
            continue
        kept.append(sample)
        scores.append(fr.result.score)
        maps.append(cv2.resize(fr.result.anomaly_map, (EVAL_SIZE, EVAL_SIZE), interpolation=cv2.INTER_LINEAR))
    if not kept:
        raise ValueError(f"{root}: no test image could be inspected ({len(errors)} errors; the first: {errors[0]})")
    return SplitPrediction(kept, np.array(scores), maps, errors, time.perf_counter() - t0)


def score_report(
    samples: list[Any], scores: np.ndarray, maps: list[np.ndarray], threshold: float | None = None,
) -> dict[str, Any]:
    """The metrics of any model's image scores and anomaly maps (any size) for MVTec test ``samples``.

    Shared by :func:`evaluate` and the peer benchmark, so other models are scored by the same code.
    ``caught_at_1pct_false_ng`` (and ``5pct``) is the share of defective images caught at the lowest threshold
    that calls at most that share of the good images NG; ``operating_points`` gives each one's threshold and
    achieved false-NG share (:func:`core.common.metrics.catch_rate_at_false_ng`). ``own_threshold`` is what
    ``threshold`` (the model's own) calls, or None without one.
    """
    labels_a = np.array([s.label for s in samples])
    defects = np.array([s.defect for s in samples])
    scores_a = np.asarray(scores, dtype=np.float64)
    pixel_maps, masks, pixel_defects = [], [], []
    for sample, amap in zip(samples, maps):
        mask = eval_mask(sample)
        if mask is None:
            continue
        amap = np.asarray(amap, dtype=np.float32)
        if amap.shape != (EVAL_SIZE, EVAL_SIZE):
            amap = cv2.resize(amap, (EVAL_SIZE, EVAL_SIZE), interpolation=cv2.INTER_LINEAR)
        pixel_maps.append(amap)
        masks.append(mask)
        pixel_defects.append(sample.defect)
    maps_a, masks_a = np.stack(pixel_maps), np.stack(masks)
    pixel_defects_a = np.array(pixel_defects)
    per_defect = {
        d: image_auroc(np.r_[np.zeros(np.sum(labels_a == 0)), np.ones(np.sum(defects == d))],
                       np.r_[scores_a[labels_a == 0], scores_a[defects == d]])
        for d in sorted(set(defects.tolist()) - {"good"})
    }
    # each defect type against the good images' pixels, so one type's share of the pixels cannot hide another
    good_px = pixel_defects_a == "good"
    per_defect_pixel, defect_pixels = {}, {}
    for d in sorted(set(pixel_defects) - {"good"}):
        of_type = pixel_defects_a == d
        defect_pixels[d] = int(masks_a[of_type].sum())
        if good_px.any():
            keep = good_px | of_type
            per_defect_pixel[d] = pixel_auroc(masks_a[keep], maps_a[keep])
    points = {name: catch_rate_at_false_ng(labels_a, scores_a, share) for name, share in FALSE_NG_SHARES.items()}
    own = None if threshold is None else calls_at_threshold(labels_a, scores_a, threshold)._asdict()
    return {
        "image_auroc": image_auroc(labels_a, scores_a),
        "pixel_auroc": pixel_auroc(masks_a, maps_a),
        "aupro": aupro(masks_a, maps_a),
        "pixel_ap": pixel_ap(masks_a, maps_a),
        "image_f1_max": f1_max(labels_a, scores_a),
        "per_defect_image_auroc": per_defect,
        "per_defect_pixel_auroc": per_defect_pixel,
        "per_defect_pixels": defect_pixels,  # defective pixels of each type at EVAL_SIZE
        **{f"caught_at_{name}_false_ng": p.caught for name, p in points.items()},
        "operating_points": {f"{name}_false_ng": dict(p._asdict(), allowed_false_ng=FALSE_NG_SHARES[name])
                             for name, p in points.items()},
        "own_threshold": own,
        "images": len(samples), "defective": int(labels_a.sum()), "pixel_images": len(pixel_maps),
    }


def eval_mask(sample: Any) -> np.ndarray | None:
    """Binary GT at EVAL_SIZE; zeros for good images; None if a defective image has no usable mask."""
    if sample.label == 0:
        return np.zeros((EVAL_SIZE, EVAL_SIZE), bool)
    if sample.mask_path is None:
        return None
    try:
        mask = read_mask(sample.mask_path, (EVAL_SIZE, EVAL_SIZE))
    except ImageReadError:
        return None
    return mask if mask.any() else None


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'metric':28s} value"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "image_f1_max"):
        lines.append(f"{key:28s} {report[key]:.4f}")
    for d, v in report["per_defect_image_auroc"].items():
        lines.append(f"{'image_auroc/' + d:28s} {v:.4f}")
    for d, v in report.get("per_defect_pixel_auroc", {}).items():
        lines.append(f"{'pixel_auroc/' + d:28s} {v:.4f}")
    for name, share in FALSE_NG_SHARES.items():
        p = report["operating_points"][f"{name}_false_ng"]
        lines.append(f"{f'caught at {share:.0%} false NG':28s} {_calls(p)}")
    own = report.get("own_threshold")
    lines.append(f"{'own threshold':28s} {_calls(own) if own else 'none in the checkpoint'}")
    lines.append(f"{'images (defective)':28s} {report['images']} ({report['defective']})")
    lines.append(f"{'ms per image (with I/O)':28s} {report['ms_per_image_incl_io']:.1f}")
    if report["errors"]:
        lines.append(f"{'unreadable files':28s} {len(report['errors'])}")
    return "\n".join(lines)


def _calls(p: dict[str, Any]) -> str:
    """One operating point for a person: defects caught, then the good images called NG, at its threshold (in
    full: a threshold just above a good image's score, rounded, could call that image NG)."""
    return (f"{p['caught']:.1%} caught ({p['caught_images']} of {p['defective']} defective), "
            f"{p['false_ng']:.1%} false NG ({p['false_ng_images']} of {p['good']} good), "
            f"threshold {float(p['threshold'])!r}")
