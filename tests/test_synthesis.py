import numpy as np
import pytest

from core.config import SynthesisConfig, TrainConfig
from core.synthesis import (
    AUGMENTERS,
    AnomalySynthesizer,
    augment_source,
    auto_foreground,
    perlin_noise,
    procedural_texture,
    self_shuffle,
)


def image(h=64, w=48, seed=0):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_shapes_and_binary_mask():
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0), seed=0)
    for i in range(10):
        aug, mask = synth(image(seed=i))
        assert aug.shape == (64, 48, 3) and aug.dtype == np.float32 and mask.shape == (64, 48)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert 0 <= aug.min() and aug.max() <= 1


def test_deterministic_with_seed():
    a = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0), seed=3)
    b = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0), seed=3)
    for i in range(5):
        (xa, ma), (xb, mb) = a(image(seed=i)), b(image(seed=i))
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ma, mb)


def test_probability_zero_is_identity():
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=0.0), seed=0)
    img = image()
    for _ in range(5):
        aug, mask = synth(img)
        np.testing.assert_array_equal(aug, img)
        assert not mask.any()


def test_pixels_change_only_inside_mask():
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0), seed=1)
    img = image()
    aug, mask = synth(img)
    assert mask.any()
    np.testing.assert_array_equal(aug[mask == 0], img[mask == 0])


def test_anomaly_probability_is_respected():
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=0.5), seed=0)
    hits = sum(synth(image(32, 32))[1].any() for _ in range(200))
    assert 70 < hits < 130


def test_foreground_auto_keeps_defects_on_object():
    img = np.zeros((64, 64, 3), np.float32)
    img[16:48, 16:48] = 0.9  # bright object on a dark background
    fg = auto_foreground(img)
    assert fg[32, 32] == 1 and fg[2, 2] == 0
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0, foreground="auto"), seed=0)
    for _ in range(5):
        _, mask = synth(img)
        assert mask[fg == 0].sum() == 0


def test_texture_source_is_used():
    tex = [np.full((20, 20, 3), 0.0, np.float32)]
    cfg = SynthesisConfig(anomaly_prob=1.0, texture_prob=1.0, beta_min=0.0, beta_max=1e-9)
    synth = AnomalySynthesizer(cfg, textures=tex, seed=0)
    img = np.full((32, 32, 3), 0.5, np.float32)
    # black texture, then 3 augmenters: the masked pixels differ from the plain grey image
    diffs = [np.abs(a - img)[m > 0].mean() for a, m in (synth(img) for _ in range(5)) if m.any()]
    assert diffs and max(diffs) > 0.05


def test_intensity_source_changes_grey_level_and_keeps_texture():
    cfg = SynthesisConfig(anomaly_prob=1.0, intensity_prob=1.0, beta_min=0.0, beta_max=1e-9)
    synth = AnomalySynthesizer(cfg, seed=0)
    img = 0.3 + 0.2 * image(64, 64)  # no clipping at any gain
    ratios = []
    for _ in range(20):
        aug, m = synth(img)
        if not m.any():
            continue
        inside = m > 0
        ratio = aug[inside] / img[inside]
        assert np.allclose(ratio, ratio.flat[0], atol=1e-4)  # one gain: the texture is kept, only scaled
        assert np.array_equal(aug[~inside], img[~inside])
        ratios.append(float(ratio.flat[0]))
    assert ratios and all(1.1 - 1e-3 <= max(r, 1 / r) <= 1.65 + 1e-3 for r in ratios)
    assert min(ratios) < 1 < max(ratios)  # brighter and darker patches


@pytest.mark.parametrize("aug", AUGMENTERS, ids=lambda f: f.__name__)
def test_augmenters_keep_shape_and_range(aug):
    out = aug(image(), np.random.default_rng(0))
    assert out.shape == (64, 48, 3)
    assert np.clip(out, 0, 1).min() >= 0 and np.isfinite(out).all()


def test_augmentation_chains_stay_finite_on_rounding_overshoot():
    # a resized texture can hold 1.0000001; solarize made that -1e-7, gamma NaN and autocontrast a whole NaN image,
    # which stopped a training run at step 353 as "loss is not finite"
    x = image(32, 32)
    x[::3, ::5] = np.nextafter(np.float32(1), np.float32(2))
    x[1::7, ::2] = -np.float32(1e-7)
    for seed in range(300):
        out = augment_source(x, np.random.default_rng(seed))
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, seed


def test_self_shuffle_is_a_permutation():
    img = image(64, 64)
    out = self_shuffle(img, np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(out.ravel()), np.sort(img.ravel()))
    assert not np.array_equal(out, img)


def test_perlin_and_procedural_sources():
    rng = np.random.default_rng(0)
    n = perlin_noise((50, 70), (4, 8), rng)
    assert n.shape == (50, 70) and np.isfinite(n).all() and n.std() > 0.05
    for _ in range(10):
        t = procedural_texture((32, 40), rng)
        assert t.shape == (32, 40, 3) and 0 <= t.min() and t.max() <= 1


def test_with_synthesis_changes_only_the_named_synthesis_settings():
    base = TrainConfig(steps=7, synthesis=SynthesisConfig(foreground="auto"))
    changed = base.with_synthesis(intensity_prob=0.25)
    assert changed.synthesis == SynthesisConfig(foreground="auto", intensity_prob=0.25)
    assert changed.steps == 7 and base.synthesis.intensity_prob == 0.0  # the original is untouched
    with pytest.raises(TypeError):
        base.with_synthesis(no_such_setting=1)
