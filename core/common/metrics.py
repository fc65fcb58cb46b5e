"""Anomaly-detection metrics and threshold pickers as plain functions on numpy arrays.

Conventions: higher score = more anomalous; a sample is NG when ``score >= threshold``.
AUPRO follows the DiffusionAD / MVTec protocol: per-region overlap (8-connectivity, holes
filled), global FPR over normal pixels, curve cut at FPR = 0.3 (interpolated) and integrated over
FPR rescaled to [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np


def _check_binary(labels: np.ndarray) -> None:
    if len(np.unique(labels)) < 2:
        raise ValueError("metric needs both good and defective samples")


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return roc_summary(labels, scores)[2]


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    return roc_summary(np.asarray(masks).astype(bool), maps)[2]


def pixel_ap(masks: np.ndarray, maps: np.ndarray) -> float:
    """Average precision: the precision at each distinct score, weighted by the recall it adds (scikit-learn's
    ``average_precision_score``, no interpolation)."""
    tp, fp = _counts(np.asarray(masks).astype(bool), maps)
    precision, recall = tp / (tp + fp), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    return roc_summary(labels, scores)[3]


def _counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct score taken as the threshold, highest first (ties grouped)."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, np.float64).ravel()
    _check_binary(labels)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(y)[last].astype(np.float64)
    return tp, (last + 1 - tp).astype(np.float64)


def roc_summary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(fpr, tpr, AUROC, F1-max) from one sort, in plain numpy.

    The same values as scikit-learn's ``roc_curve``/``roc_auc_score``/``precision_recall_curve``
    (ties grouped, trapezoidal area; checked against it by the tests), and fast: the threshold panel recomputes it
    while 10,000 results stream in and while the slider moves. numpy only, so that inspection needs no scikit-learn.
    """
    tp, fp = _counts(labels, scores)
    n_pos, n_neg = tp[-1], fp[-1]
    fpr, tpr = np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    precision, recall = tp / np.maximum(tp + fp, 1e-12), tp / n_pos
    f1 = float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))
    return fpr, tpr, auroc, f1


def _filled_regions(mask: np.ndarray) -> list[np.ndarray]:
    """Connected regions (8-connectivity) of a binary mask, each with holes filled, as bool masks."""
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    regions = []
    for i in range(1, n):
        region = (lab == i).astype(np.uint8)
        padded = np.pad(region, 1)
        flood = padded.copy()
        ffmask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
        cv2.floodFill(flood, ffmask, (0, 0), 1)  # everything reachable from outside
        holes = flood[1:-1, 1:-1] == 0
        regions.append(region.astype(bool) | holes)
    return regions


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3, num_thresholds: int = 1000) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, normalised to [0, 1].

    ``masks`` and ``maps`` are [N, H, W]. Images without a defect region only contribute
    normal pixels to the FPR.
    """
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=np.float64)
    thresholds = np.linspace(maps.max(), maps.min(), num_thresholds)
    normal = np.sort(maps[~masks])
    if normal.size == 0:
        raise ValueError("AUPRO needs normal pixels")
    # fraction of normal pixels >= each threshold
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    overlaps = []
    for m, amap in zip(masks, maps):
        for region in _filled_regions(m):
            vals = np.sort(amap[region])
            overlaps.append(1.0 - np.searchsorted(vals, thresholds, side="left") / vals.size)
    if not overlaps:
        raise ValueError("AUPRO needs at least one defect region")
    pro = np.mean(overlaps, axis=0)
    # curve ordered by FPR; cut at max_fpr, interpolating the point exactly at max_fpr
    order = np.argsort(fpr, kind="stable")
    fpr, pro = fpr[order], pro[order]
    if fpr[0] > max_fpr:
        return 0.0
    keep = fpr <= max_fpr
    end_pro = np.interp(max_fpr, fpr, pro) if fpr[-1] >= max_fpr else pro[keep][-1]
    end_fpr = max_fpr if fpr[-1] >= max_fpr else fpr[keep][-1]
    fpr, pro = np.r_[fpr[keep], end_fpr], np.r_[pro[keep], end_pro]
    if end_fpr <= 0:
        return float(pro[-1])
    return float(np.trapezoid(pro, fpr) / end_fpr)


# ---- threshold pickers -------------------------------------------------------------------------
def _candidates(scores: np.ndarray) -> np.ndarray:
    """Thresholds worth testing: every distinct score, plus one above the maximum."""
    s = np.unique(scores)
    return np.append(s, np.nextafter(s[-1], np.inf))


def threshold_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold that maximises F1 of the NG class (NG when score >= threshold)."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    best_t, best_f1 = float(scores.max()), -1.0
    for t in _candidates(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        f1 = 2 * tp / max(pred.sum() + labels.sum(), 1)
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def threshold_max_fpr(good_scores: np.ndarray, max_fpr: float) -> float:
    """Lowest (most sensitive) threshold whose false-NG rate on good images is <= ``max_fpr``."""
    good = np.asarray(good_scores, dtype=np.float64)
    for t in _candidates(good):
        if np.mean(good >= t) <= max_fpr:
            return float(t)
    raise AssertionError("unreachable: the last candidate has no false NG")


def threshold_zero_false_ng(good_scores: np.ndarray) -> float:
    """Smallest threshold that calls every good image OK (just above the highest good score)."""
    return float(np.nextafter(np.max(good_scores), np.inf))


def threshold_mean_k_sigma(good_scores: np.ndarray, k: float = 3.0) -> float:
    """Mean + k standard deviations of the good scores."""
    good = np.asarray(good_scores, dtype=np.float64)
    return float(good.mean() + k * good.std())


# robust standard deviations above the median of held-out good scores: the models' own threshold. 2, chosen on
# magnetic_tile_val by the THRESHOLD RULE of bench/recipe.py (the most defects caught while calling at most 2 % of the
# good tiles NG: 80 % caught, 1.2 % good NG; 3 caught 40 %)
ROBUST_K = 2.0


def threshold_robust(good_scores: np.ndarray, k: float = ROBUST_K) -> float:
    """Median + k robust standard deviations (1.4826 x the median absolute deviation) of the good scores.

    Unlike mean + k sigma or the highest good score, one odd good image does not move it: a held-out good image
    that scores like a defect is called NG rather than deciding that every defect scoring below it is OK.
    """
    good = np.asarray(good_scores, dtype=np.float64)
    median = float(np.median(good))
    sigma = 1.4826 * float(np.median(np.abs(good - median)))
    return median + k * max(sigma, 1e-6 * max(abs(median), 1e-3))


def threshold_gap(good_scores: np.ndarray, defect_scores: np.ndarray, threshold: float) -> dict[str, float]:
    """How well ``threshold`` separates held-out good scores from defect scores: the share of good images it
    calls NG and the share of defects it calls OK."""
    good, bad = np.asarray(good_scores, dtype=np.float64), np.asarray(defect_scores, dtype=np.float64)
    return {"val_good_above_threshold": float(np.mean(good >= threshold)) if len(good) else 0.0,
            "val_synthetic_below_threshold": float(np.mean(bad < threshold)) if len(bad) else 0.0}


def threshold_warning(metrics: dict[str, float]) -> str | None:
    """A sentence for a person when a model's held-out figures leave no clear gap at its own threshold."""
    missed = metrics.get("val_synthetic_below_threshold")
    false_ng = metrics.get("val_good_above_threshold")
    parts = []
    if missed is not None and missed > 0.2:
        parts.append(f"{missed:.0%} of the held-out synthetic defects score below it")
    if false_ng is not None and false_ng > 0.05:
        parts.append(f"{false_ng:.0%} of the held-out good images score above it")
    if not parts:
        return None
    return ("no clear gap between good and defective at the model's threshold: " + " and ".join(parts)
            + "; check it on real images before relying on it")


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of true/false OK/NG at ``threshold`` (labels: 1 defective)."""
    labels, pred = np.asarray(labels).astype(bool), np.asarray(scores) >= threshold
    return {
        "true_ng": int(np.sum(pred & labels)), "false_ng": int(np.sum(pred & ~labels)),
        "true_ok": int(np.sum(~pred & ~labels)), "false_ok": int(np.sum(~pred & labels)),
    }


# ---- operating points: what a threshold calls on a labelled split ------------------------------
class OperatingPoint(NamedTuple):
    """What one threshold calls on a labelled set (NG when ``score >= threshold``)."""

    threshold: float
    false_ng: float  # share of the good images called NG
    false_ng_images: int
    good: int
    caught: float  # share of the defective images called NG
    caught_images: int
    defective: int


def _good_and_defective(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores")
    if not np.isfinite(scores).all():
        raise ValueError("every score must be finite")
    good, bad = scores[~labels], scores[labels]
    if good.size == 0 or bad.size == 0:
        raise ValueError("an operating point needs both good and defective images")
    return good, bad


def calls_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> OperatingPoint:
    """Good images called NG and defective images caught at ``threshold`` (labels: 1 defective)."""
    good, bad = _good_and_defective(labels, scores)
    if not np.isfinite(threshold):
        raise ValueError(f"a threshold of {threshold} calls nothing: it must be finite")
    k, c = int(np.sum(good >= threshold)), int(np.sum(bad >= threshold))
    return OperatingPoint(float(threshold), k / good.size, k, good.size, c / bad.size, c, bad.size)


def catch_rate_at_false_ng(labels: np.ndarray, scores: np.ndarray, false_ng: float) -> OperatingPoint:
    """The share of defective images caught at the lowest threshold that calls at most ``false_ng`` of the good
    images NG (labels: 1 defective; NG when ``score >= threshold``): the ROC curve's best true-positive rate at a
    false-positive rate <= ``false_ng``.

    With n good images, ``m = floor(false_ng * n)`` of them may be NG (``false_ng * n`` taken to 1e-9, so that 5 %
    of 100 is 5). The threshold is the smallest float above the (m+1)-th highest good score, so every good image
    scoring at or below that one is OK; if ``m >= n`` it is the lowest score of all and every image is NG. Ties
    are never split: good images tied with the (m+1)-th highest are all OK, so fewer than m may be NG, and a
    defective image tied with it is not caught. The achieved share is ``false_ng`` of the result: with 82 good
    images, 1 % allows none, and the threshold lies just above the highest good score.
    """
    if not 0.0 <= false_ng <= 1.0:  # NaN fails too
        raise ValueError(f"the false-NG share must be between 0 and 1, not {false_ng}")
    good, bad = _good_and_defective(labels, scores)
    allowed = min(int(np.floor(false_ng * good.size + 1e-9)), good.size)
    if allowed == good.size:
        threshold = float(min(good.min(), bad.min()))
    else:
        highest_ok = np.sort(good)[::-1][allowed]  # the (allowed+1)-th highest good score
        threshold = float(np.nextafter(highest_ok, np.inf))
    return calls_at_threshold(labels, scores, threshold)
