import cv2
import numpy as np
import pytest

import core.train.synthesis as synthesis
from core.common.config import SynthesisConfig, TrainConfig
from core.common.images import is_grey, luminance
from core.train.synthesis import (
    AUGMENTERS,
    LARGE_AREA,
    LARGE_SHIFT,
    AnomalySynthesizer,
    augment_source,
    auto_foreground,
    autocontrast,
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


def grey_image(h=64, w=64, seed=0):
    return np.repeat(image(h, w, seed)[..., :1], 3, axis=-1)


# every kind of source: (config changes, whether colour textures are given)
SOURCE_KINDS = {
    "texture": (dict(texture_prob=1.0), True),
    "self-shuffle": (dict(shuffle_prob=1.0), False),
    "procedural": (dict(shuffle_prob=0.0), False),
    "intensity": (dict(intensity_prob=1.0), False),
    "large-brightness": (dict(large_brightness_prob=1.0), False),
}
COLOUR_TEXTURES = [np.random.default_rng(s).random((24, 24, 3), dtype=np.float32) for s in range(3)]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_grey_image_gets_grey_defects_from_every_source(kind):
    changes, with_textures = SOURCE_KINDS[kind]
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0, **changes),
                               COLOUR_TEXTURES if with_textures else (), seed=0)
    made = 0
    for i in range(8):
        aug, mask = synth(grey_image(seed=i))
        made += bool(mask.any())
        assert np.ptp(aug, axis=-1).max() <= 1 / 255, kind
    assert made >= 6


def test_grey_sources_setting():
    tinted = np.clip(np.array([0.6, 0.4, 0.3], np.float32) + 0.05 * image(64, 64), 0, 1)  # colour data

    def defect_spread(grey_sources, img):
        """Largest channel spread inside the defects; beta ~ 0 puts the source itself there."""
        cfg = SynthesisConfig(anomaly_prob=1.0, shuffle_prob=0.0, beta_min=0.0, beta_max=1e-9,
                              grey_sources=grey_sources)
        synth = AnomalySynthesizer(cfg, seed=0)
        spreads = [float(np.ptp(a[m > 0], axis=-1).max()) for a, m in (synth(img) for _ in range(8)) if m.any()]
        assert len(spreads) >= 6
        return max(spreads)

    assert is_grey(grey_image()) and not is_grey(tinted)
    assert defect_spread("auto", grey_image()) <= 1 / 255
    assert defect_spread("auto", tinted) > 0.05  # colour data keeps colour textures
    assert defect_spread("never", grey_image()) > 0.05
    assert defect_spread("always", tinted) <= 1 / 255
    with pytest.raises(ValueError, match="grey_sources"):
        AnomalySynthesizer(SynthesisConfig(grey_sources="sometimes"))


@pytest.fixture
def augment_calls(monkeypatch):
    """Counts augment_source calls made by the synthesiser."""
    calls = []
    real = synthesis.augment_source

    def counting(x, rng, grey=False):
        calls.append(x.shape)
        return real(x, rng, grey)

    monkeypatch.setattr(synthesis, "augment_source", counting)
    return calls


@pytest.mark.parametrize("kind", ["texture", "self-shuffle", "procedural"])
def test_every_source_gets_exactly_one_augmentation_pass(kind, augment_calls):
    changes, with_textures = SOURCE_KINDS[kind]
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0, **changes),
                               COLOUR_TEXTURES if with_textures else (), seed=0)
    for i in range(6):
        del augment_calls[:]
        _, mask = synth(image(seed=i))
        assert len(augment_calls) == (1 if mask.any() else 0), kind


def test_texture_folder_mix_is_half_textures_half_self_shuffle(monkeypatch):
    picked = {"texture": 0, "shuffle": 0}
    real_shuffle = synthesis.self_shuffle

    def no_procedural(*args, **kwargs):
        raise AssertionError("procedural textures stand in for a texture folder only without one")

    def shuffle(x, rng, grid=8):
        picked["shuffle"] += 1
        return real_shuffle(x, rng, grid)

    monkeypatch.setattr(synthesis, "procedural_texture", no_procedural)
    monkeypatch.setattr(synthesis, "self_shuffle", shuffle)
    synth = AnomalySynthesizer(SynthesisConfig(anomaly_prob=1.0), [np.zeros((8, 8, 3), np.float32)], seed=0)
    made = sum(synth(image(32, 32, seed=i))[1].any() for i in range(200))
    picked["texture"] = made - picked["shuffle"]
    assert 70 < picked["shuffle"] < 130 and 70 < picked["texture"] < 130


def test_large_brightness_defects_are_large_feathered_and_faint():
    cfg = SynthesisConfig(anomaly_prob=1.0, large_brightness_prob=1.0)
    synth = AnomalySynthesizer(cfg, seed=0)
    img = np.clip(np.array([0.5, 0.45, 0.4], np.float32) + 0.1 * (image(96, 128) - 0.5), 0, 1)  # no clipping
    shifts = []
    for _ in range(20):
        aug, mask = synth(img)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert LARGE_AREA[0] - 0.01 <= mask.mean() <= LARGE_AREA[1] + 0.01
        delta = aug - img
        np.testing.assert_allclose(delta, delta[..., :1].repeat(3, -1), atol=1e-5)  # luminance only
        shift = float(luminance(aug)[mask > 0].mean() - luminance(img)[mask > 0].mean())
        assert LARGE_SHIFT[0] / 2 <= abs(shift) <= LARGE_SHIFT[1] + 1e-4
        full = np.abs(delta[..., 0]).max()
        outside = np.abs(delta[..., 0])[mask == 0]
        assert (outside > 0.05 * full).any() and outside.max() <= 0.5 * full + 1e-4  # a feathered edge
        shifts.append(shift)
    assert min(shifts) < 0 < max(shifts)


def test_large_brightness_share():
    cfg = SynthesisConfig(anomaly_prob=1.0, large_brightness_prob=0.5)
    synth = AnomalySynthesizer(cfg, seed=0)
    large = sum(synth(image(64, 64, seed=i))[1].mean() >= LARGE_AREA[0] - 0.01 for i in range(100))
    assert 35 < large < 70  # Perlin defects reach 20 % of the image only rarely


def test_brightness_augmenter_changes_luminance_only():
    x = np.clip(np.array([0.7, 0.4, 0.3], np.float32) + 0.1 * (image() - 0.5), 0, 1)
    for seed in range(10):
        out = synthesis._brightness(x, np.random.default_rng(seed))
        delta = out - x
        np.testing.assert_allclose(delta, delta[..., :1].repeat(3, -1), atol=1e-5)  # chroma (R-G, B-G) kept
        assert np.abs(delta).max() > 1e-3


def test_hue_saturation_leaves_grey_alone():
    grey, colour = grey_image(), np.clip(np.array([0.6, 0.4, 0.3], np.float32) + 0.05 * image(64, 64), 0, 1)
    for seed in range(5):
        np.testing.assert_array_equal(synthesis._hue_saturation(grey, np.random.default_rng(seed)), grey)
        assert np.abs(synthesis._hue_saturation(colour, np.random.default_rng(seed)) - colour).max() > 0.01


def test_autocontrast_cuts_off_a_share_of_each_end():
    x = np.rint(image(100, 100) * 255) / 255  # uniform 8-bit noise
    stretched = autocontrast(x, 0)
    for c in range(3):
        assert stretched[..., c].min() == pytest.approx(0, abs=1e-6)
        assert stretched[..., c].max() == pytest.approx(1, abs=1e-6)
        assert (stretched[..., c] < 1e-6).mean() < 0.01
    cut = autocontrast(x, 10)
    for c in range(3):
        assert 0.09 <= (cut[..., c] < 1e-6).mean() <= 0.12 and 0.09 <= (cut[..., c] > 1 - 1e-6).mean() <= 0.12
    flat = np.full((8, 8, 3), 0.3, np.float32)
    np.testing.assert_array_equal(autocontrast(flat, 5), flat)  # a single level is left alone
    # the augmenter draws its cutoff from 0 to 20 %, the same for every channel
    shares = []
    for seed in range(60):
        out = synthesis._autocontrast(x, np.random.default_rng(seed))
        share = (out < 1e-6).mean(axis=(0, 1))
        assert np.ptp(share) < 0.02
        shares.append(share.mean())
    assert min(shares) < 0.02 and 0.18 < max(shares) <= 0.22


def test_affine_pads_with_black():
    white = np.ones((64, 64, 3), np.float32)
    for seed in range(20):
        angle = np.random.default_rng(seed).uniform(-45, 45)
        out = synthesis._affine(white, np.random.default_rng(seed))
        assert out[32, 32].min() == pytest.approx(1)
        if abs(angle) > 5:
            assert out[0, 0].max() < 0.05 and out[-1, -1].max() < 0.05


def test_cli_large_brightness_sets_the_share(tmp_path, monkeypatch):
    import core.train.trainer as trainer_module
    from core.cli.main import main
    from core.model.checkpoint import CheckpointError

    seen = {}

    class StopTrainer:
        def __init__(self, model_cfg, train_cfg, *args, **kwargs):
            seen["cfg"] = train_cfg
            raise CheckpointError("stop before training")

    monkeypatch.setattr(trainer_module, "Trainer", StopTrainer)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), (255 * image(32, 32, seed=i)).astype(np.uint8))
    assert main(["train", str(tmp_path), "--preset", "tiny", "--large-brightness", "0.3",
                 "--out", str(tmp_path / "run")]) == 2
    assert seen["cfg"].synthesis.large_brightness_prob == pytest.approx(0.3)
