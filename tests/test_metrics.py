import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from core.common import metrics as M


def test_auroc_and_ap_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.random(200) + 0.3 * labels
    assert M.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    masks = rng.random((3, 16, 16)) > 0.8
    maps = rng.random((3, 16, 16)) + 0.2 * masks
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert M.pixel_ap(masks, maps) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))


@pytest.mark.parametrize("levels", [0, 7])
def test_the_numpy_metrics_equal_scikit_learns_also_with_ties(levels):
    """Inspection needs no scikit-learn (the line bundle leaves it out): the numpy metrics must give its values,
    also where many scores tie (quantised maps)."""
    rng = np.random.default_rng(levels)
    labels = rng.random(5000) > 0.7
    scores = rng.random(5000) + 0.4 * labels
    if levels:
        scores = np.round(scores * levels) / levels
    assert M.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.pixel_ap(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert M.f1_max(labels, scores) == pytest.approx(f1, abs=1e-12)


def test_single_class_is_an_error():
    with pytest.raises(ValueError):
        M.image_auroc(np.zeros(5), np.arange(5))


def test_f1_max_perfect_and_hand_case():
    assert M.f1_max([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    # best: threshold 0.6 -> tp 2, fp 1, fn 0 -> F1 = 0.8
    assert M.f1_max([0, 1, 0, 1], [0.1, 0.6, 0.7, 0.9]) == pytest.approx(0.8)


def _square_mask():
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 8:16, 8:16] = True
    return masks


def test_aupro_perfect_prediction_is_one():
    masks = _square_mask()
    assert M.aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-3)


def test_aupro_inverted_prediction_is_zero():
    masks = _square_mask()
    assert M.aupro(masks, (~masks).astype(float)) == pytest.approx(0.0, abs=1e-3)


def test_aupro_averages_over_regions_not_pixels():
    # two regions: a big one detected perfectly, a small one never -> PRO = 0.5 at low FPR
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 0:20, 0:20] = True
    masks[0, 50:52, 50:52] = True
    maps = np.random.default_rng(0).uniform(0.1, 0.9, (1, 64, 64))  # normal pixels spread out
    maps[0, 0:20, 0:20] = 1.0
    maps[0, 50:52, 50:52] = 0.0
    assert M.aupro(masks, maps) == pytest.approx(0.5, abs=0.01)


def test_aupro_fills_holes_in_regions():
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 4:20, 4:20] = True
    masks[0, 10:14, 10:14] = False  # a ring: its hole counts as part of the region
    maps = masks.astype(float)
    # the hole's pixels are never detected, so the region overlap stays below 1
    assert M.aupro(masks, maps) < 0.99


def test_threshold_pickers_on_crafted_scores():
    good = np.array([0.1, 0.2, 0.3, 0.4])
    bad = np.array([0.35, 0.8, 0.9])
    labels = np.r_[np.zeros(4), np.ones(3)]
    scores = np.r_[good, bad]
    assert M.threshold_f1(labels, scores) == pytest.approx(0.35)  # F1 = 6/7 at 0.35 vs 0.8 at 0.8
    assert M.threshold_zero_false_ng(good) > 0.4
    assert M.threshold_zero_false_ng(good) == pytest.approx(0.4)
    assert M.threshold_max_fpr(good, 0.25) == pytest.approx(0.4)  # 1 of 4 good flagged
    assert M.threshold_max_fpr(good, 0.0) > 0.4
    assert M.threshold_mean_k_sigma(good, 2) == pytest.approx(good.mean() + 2 * good.std())
    c = M.confusion(labels, scores, 0.35)
    assert c == {"true_ng": 3, "false_ng": 1, "true_ok": 3, "false_ok": 0}


def test_fast_roc_summary_matches_scikit_learn():
    from sklearn.metrics import roc_curve

    from core.common.metrics import f1_max, image_auroc, roc_summary

    rng = np.random.default_rng(3)
    for n, ties in ((50, False), (400, True), (7, True)):
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        scores = rng.random(n) + 0.5 * labels
        if ties:
            scores = np.round(scores, 1)
        fpr, tpr, auroc, f1 = roc_summary(labels, scores)
        ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        assert np.allclose(fpr, ref_fpr) and np.allclose(tpr, ref_tpr)
        assert auroc == pytest.approx(image_auroc(labels, scores), abs=1e-12)
        assert f1 == pytest.approx(f1_max(labels, scores), abs=1e-12)


def test_score_report_gives_each_defect_type_its_own_pixel_auroc(tmp_path):
    """A large defect type the maps find must not hide a small one they miss: the overall P-AUROC counts
    pixels, the per-type figure sets each type against the good images alone."""
    import cv2

    from core.common.datasets import Sample
    from core.inference.evaluation import EVAL_SIZE, score_report

    big = np.zeros((EVAL_SIZE, EVAL_SIZE), np.uint8)
    big[:128, :128] = 255
    small = np.zeros_like(big)
    small[200:208, 200:208] = 255
    cv2.imwrite(str(tmp_path / "big.png"), big)
    cv2.imwrite(str(tmp_path / "small.png"), small)
    samples = [Sample(tmp_path / f"g{i}.png", 0, "good", None) for i in range(2)] + [
        Sample(tmp_path / "a.png", 1, "found", tmp_path / "big.png"),
        Sample(tmp_path / "b.png", 1, "missed", tmp_path / "small.png"),
    ]
    found = np.where(big > 0, 0.9, 0.3).astype(np.float32)
    missed = np.where(small > 0, 0.0, 0.3).astype(np.float32)
    maps = [np.full((EVAL_SIZE, EVAL_SIZE), 0.3, np.float32)] * 2 + [found, missed]
    report = score_report(samples, np.array([0.3, 0.3, 0.9, 0.1]), maps)
    assert report["per_defect_pixel_auroc"]["found"] == pytest.approx(1.0)
    assert report["per_defect_pixel_auroc"]["missed"] == pytest.approx(0.0, abs=1e-6)
    assert report["pixel_auroc"] > 0.95  # the big type's pixels dominate the overall figure
    assert report["per_defect_pixels"] == {"found": 128 * 128, "missed": 8 * 8}


def test_one_odd_good_image_does_not_set_the_robust_threshold():
    from core.common.metrics import threshold_mean_k_sigma, threshold_robust, threshold_zero_false_ng

    rng = np.random.default_rng(0)
    good = rng.normal(0.30, 0.02, 60)
    defects = rng.normal(0.50, 0.05, 40)
    with_outlier = np.r_[good, 0.70]  # one held-out good image that scores like no defect does
    old_rule = max(threshold_mean_k_sigma(with_outlier, 3.0), threshold_zero_false_ng(with_outlier))
    assert np.mean(defects >= old_rule) == 0.0  # the old rule lets every defect pass
    robust = threshold_robust(with_outlier)
    assert abs(robust - threshold_robust(good)) < 0.01 and 0.33 < robust < 0.40
    assert np.mean(defects >= robust) > 0.95 and np.mean(good >= robust) < 0.05
    assert threshold_robust(np.full(10, 0.4)) > 0.4  # identical scores: just above them


def test_threshold_warning_names_what_is_missing():
    from core.common.metrics import threshold_gap, threshold_warning

    gap = threshold_gap(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.5, 0.6, 0.7]), 0.28)
    assert gap == {"val_good_above_threshold": pytest.approx(1 / 3), "val_synthetic_below_threshold": 0.25}
    warning = threshold_warning(gap)
    assert warning and "25% of the held-out synthetic defects" in warning and "33% of the held-out good" in warning
    assert threshold_warning({"val_good_above_threshold": 0.0, "val_synthetic_below_threshold": 0.05}) is None
    assert threshold_warning({}) is None  # models trained before these figures


def _point(good, bad, false_ng):
    return M.catch_rate_at_false_ng(np.r_[np.zeros(len(good)), np.ones(len(bad))], np.r_[good, bad], false_ng)


def test_catch_rate_at_false_ng_by_hand():
    good, bad = [0.1, 0.2, 0.3, 0.4], [0.25, 0.35, 0.4, 0.9]
    none = _point(good, bad, 0.0)  # no good image NG: just above the highest good score
    assert none.threshold == np.nextafter(0.4, 1) and (none.false_ng_images, none.caught_images) == (0, 1)
    assert none.caught == 0.25 and none.false_ng == 0.0 and (none.good, none.defective) == (4, 4)
    one = _point(good, bad, 0.25)  # one good image (0.4) may be NG: just above the second highest, 0.3
    assert one.threshold == np.nextafter(0.3, 1) and one.false_ng == 0.25 and one.caught == 0.75
    assert _point(good, bad, 0.49) == one  # 1.96 good images allow one
    two = _point(good, bad, 0.5)
    assert two.threshold == np.nextafter(0.2, 1) and two.false_ng == 0.5 and two.caught == 1.0
    every = _point(good, bad, 1.0)  # every good image may be NG: the lowest score, every image NG
    assert every.threshold == 0.1 and every.false_ng == 1.0 and every.caught == 1.0


def test_catch_rate_ties_are_never_split():
    # two good images may be NG, but the second and third highest tie: both stay OK, and so does the tied defect
    p = _point([0.2, 0.5, 0.5, 0.7], [0.5, 0.6], 0.5)
    assert p.threshold == np.nextafter(0.5, 1) and p.false_ng_images == 1 and p.false_ng == 0.25
    assert p.caught_images == 1 and p.caught == 0.5
    # all scores equal: nothing can be told apart; at 1 % false NG nothing is NG, at 100 % everything is
    same = _point([0.3] * 3, [0.3] * 2, 0.01)
    assert (same.false_ng, same.caught, same.threshold) == (0.0, 0.0, np.nextafter(0.3, 1))
    assert _point([0.3] * 3, [0.3] * 2, 1.0)[1:] == (1.0, 3, 3, 1.0, 2, 2)


def test_catch_rate_perfect_separation_and_small_good_sets():
    perfect = _point([0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7], 0.0)
    assert perfect.caught == 1.0 and perfect.false_ng == 0.0 and 0.5 < perfect.threshold <= 0.6
    good = np.linspace(0.0, 0.5, 82)
    bad = np.r_[good[-6:] + 1e-4, 0.9]  # each just above one of the six highest good scores
    assert _point(good, bad, 0.01).false_ng_images == 0  # 1 % of 82 good images allows none
    assert _point(good, bad, 0.01).caught_images == 2  # only those above the highest good score
    at5 = _point(good, bad, 0.05)  # 4.1 allows 4: just above the fifth highest good score, so 5 + 1 caught
    assert at5.false_ng_images == 4 and at5.false_ng == pytest.approx(4 / 82) and at5.caught_images == 6
    assert at5.threshold == np.nextafter(good[-5], 1)
    hundred = np.arange(100) / 100  # 0.29 x 100 is 28.999999999999996 in floating point: still 29 images
    assert _point(hundred, [2.0], 0.29).false_ng_images == 29 and _point(hundred, [2.0], 0.05).false_ng_images == 5


def test_catch_rate_is_the_roc_curves_best_rate_within_the_false_ng_share():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(2)
    for _ in range(20):
        n_good, n_bad = rng.integers(1, 60, 2)
        labels = np.r_[np.zeros(n_good), np.ones(n_bad)]
        scores = np.round(np.r_[rng.normal(0, 1, n_good), rng.normal(1, 1, n_bad)], 1)  # rounded: many ties
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        for share in (0.0, 0.01, 0.05, 0.2, 1.0):
            p = M.catch_rate_at_false_ng(labels, scores, share)
            assert p.caught == pytest.approx(tpr[fpr <= share + 1e-12].max())
            assert p.false_ng == pytest.approx(fpr[fpr <= share + 1e-12].max())
            assert p == M.calls_at_threshold(labels, scores, p.threshold)


def test_operating_points_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="both good and defective"):
        M.catch_rate_at_false_ng(np.ones(3), np.array([0.1, 0.2, 0.3]), 0.05)  # no good images
    with pytest.raises(ValueError, match="both good and defective"):
        M.calls_at_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)  # no defective images
    labels, scores = np.array([0, 1]), np.array([0.1, 0.9])
    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 1"):
            M.catch_rate_at_false_ng(labels, scores, share)
    with pytest.raises(ValueError, match="finite"):
        M.catch_rate_at_false_ng(labels, np.array([0.1, np.nan]), 0.05)
    with pytest.raises(ValueError, match="finite"):
        M.calls_at_threshold(labels, scores, float("nan"))


def test_calls_at_threshold_call_a_score_equal_to_it_ng():
    p = M.calls_at_threshold(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.5, 0.6, 0.5, 0.2]), 0.5)
    assert p == M.OperatingPoint(0.5, 2 / 3, 2, 3, 0.5, 1, 2)
