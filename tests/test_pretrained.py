"""The pretrained preset: frozen encoder, memory of normal patch features, head over features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.common.config import replace
from core.common.datasets import list_images
from core.common.presets import DEFAULT_PRESET, get_preset
from core.inference.inspector import Inspector
from core.model.checkpoint import load_checkpoint
from core.model.network import DiffusionAD
from core.train.data import TrainData
from core.train.trainer import Trainer


@pytest.fixture
def configs():
    model_cfg, train_cfg = get_preset("tiny-pretrained")
    return model_cfg, replace(train_cfg, steps=4, checkpoint_every=2, validate_every=4)


@pytest.fixture
def data(good_folder, configs):
    return TrainData.from_paths(list_images(good_folder), configs[0].image_size, 0.2, 0)


def test_pretrained_is_the_default_preset():
    assert DEFAULT_PRESET == "pretrained"
    model_cfg, train_cfg = get_preset(DEFAULT_PRESET)
    assert model_cfg.features.enabled
    # the reconstruction is made at the working resolution; the denoiser trains on crops of it
    assert model_cfg.denoiser_resolution == model_cfg.image_size > train_cfg.denoiser_crop > 0


def test_encoder_weights_stay_out_of_the_checkpoint_and_the_memory_goes_in(configs):
    model = DiffusionAD(configs[0])
    keys = model.state_dict().keys()
    assert not any(k.startswith("encoder") or "_conv_stem" in k for k in keys)
    assert {"memory", "memory_tags", "feature_mean", "feature_std", "distance_scale"} <= set(keys)
    assert model.encoder is not None and not model.encoder.training
    model.to(torch.float64)  # module conversions reach the encoder too
    assert model.encoder._conv_stem.weight.dtype == torch.float64


def test_training_builds_a_memory_of_the_training_images(data, configs, tmp_path):
    trainer = Trainer(*configs, data, tmp_path, device="cpu")
    records = list(trainer.run())
    setup = [r for r in records if r.setup]
    assert setup and "feature memory" in setup[-1].message and not setup[-1].losses
    assert [r.step for r in records if not r.setup and not r.done] == [1, 2, 3, 4]
    model = trainer.model
    tags = model.memory_tags
    assert tags.min() >= 0 and tags.max() < len(data.train)  # every entry comes from a training image
    assert len(torch.unique(tags)) > 1
    assert float(model.distance_scale) > 0 and torch.all(model.feature_std > 0)
    ckpt = load_checkpoint(tmp_path / "last.safetensors")
    assert torch.equal(ckpt.state_dict["memory"], model.memory)
    # the training images sit in the memory: their patches are close to it, unless their own entries are ignored
    x = torch.from_numpy(np.stack([im.astype(np.float32) / 255 for im in data.train])).permute(0, 3, 1, 2)
    with torch.no_grad():
        feats = model.embed(x)
        own = model.memory_distance(feats)
        held_out = model.memory_distance(feats, torch.arange(len(data.train)))
    assert torch.all(held_out >= own - 1e-5) and held_out.mean() > own.mean()


def test_a_saved_model_inspects_like_the_live_one(data, configs, tmp_path):
    trainer = Trainer(*configs, data, tmp_path, device="cpu")
    list(trainer.run())
    img = data.val[0].astype(np.float32) / 255
    live = trainer._predict([img])
    insp = Inspector.from_checkpoint(tmp_path / "last.safetensors", device="cpu")
    (res,) = insp.predict([img])
    assert res.reconstruction.shape == (64, 64, 3) and res.anomaly_map.shape == (64, 64)
    assert np.allclose(res.anomaly_map, live[1][0], atol=1e-5) and res.score == pytest.approx(live[2][0], abs=1e-5)


def test_resume_keeps_the_memory_and_fine_tuning_adds_the_new_images(data, configs, tmp_path):
    first = Trainer(*configs, data, tmp_path / "a", device="cpu")
    list(first.run())
    memory = first.model.memory.clone()
    resumed = Trainer(configs[0], replace(configs[1], steps=6), data, tmp_path / "a", device="cpu",
                      resume_from=tmp_path / "a" / "last.safetensors")
    records = list(resumed.run())
    assert not any(r.setup for r in records)  # no rebuild
    assert torch.equal(resumed.model.memory, memory)
    # fine-tuning on other images: the old entries (untagged) compete with the new images' patches
    other = TrainData([np.ascontiguousarray(im[::-1]) for im in data.train], data.val)
    tuned = Trainer(*configs, other, tmp_path / "b", device="cpu", init_from=tmp_path / "a" / "last.safetensors")
    list(tuned.run())
    tags = tuned.model.memory_tags
    assert (tags == -1).any() and (tags >= 0).any()
    # the standardisation the head learnt with is kept
    assert torch.equal(tuned.model.feature_mean, first.model.feature_mean)
    # fine-tuning on the same images again: an old entry that is a patch of a training image takes its tag, so
    # that image's distances still leave it out
    again = Trainer(*configs, data, tmp_path / "c", device="cpu", init_from=tmp_path / "a" / "last.safetensors")
    list(again.run())
    assert (again.model.memory_tags >= 0).all()


def test_fine_tuning_loads_images_at_the_base_models_size(data, configs, tmp_path, good_folder):
    from core.train.data import TrainingError, working_size

    first = Trainer(*configs, data, tmp_path / "a", device="cpu", info={"preset": "tiny-pretrained"})
    list(first.run())
    base = tmp_path / "a" / "last.safetensors"
    assert working_size(128, base) == configs[0].image_size and working_size(128, None) == 128
    wrong = TrainData.from_paths(list_images(good_folder), 32, 0.2, 0)
    with pytest.raises(TrainingError, match="loaded at 32 x 32 px, but the model works at 64 px"):
        Trainer(*configs, wrong, tmp_path / "b", device="cpu", init_from=base)
    tuned = Trainer(*configs, data, tmp_path / "b", device="cpu", init_from=base, info={"preset": "fast"})
    assert tuned.info["preset"] == "tiny-pretrained"  # the base model's preset, not the one named


def test_models_without_features_keep_the_older_header(tmp_path):
    from core.model.checkpoint import Checkpoint, read_header, save_checkpoint

    model_cfg, _ = get_preset("tiny")
    save_checkpoint(Checkpoint(model_cfg, DiffusionAD(model_cfg).state_dict()), tmp_path / "m.safetensors")
    header = read_header(tmp_path / "m.safetensors")["model_config"]
    assert "features" not in header and "denoiser_size" not in header  # builds before the pretrained preset open it
    assert load_checkpoint(tmp_path / "m.safetensors").model_config == model_cfg


def test_feature_config_refuses_what_cannot_run():
    from core.common.config import FeatureConfig, ModelConfig

    with pytest.raises(ValueError, match="FeatureConfig.blocks"):
        FeatureConfig(blocks=(4, 4))
    with pytest.raises(ValueError, match="ModelConfig.denoiser_size"):
        ModelConfig(denoiser_size=64)  # the image U-Net segmenter needs the reconstruction at its own size


def test_cancel_while_building_the_memory_stops_cleanly(data, configs, tmp_path):
    trainer = Trainer(*configs, data, tmp_path, device="cpu")
    records = list(trainer.run(cancel=lambda: True))
    assert records[-1].done and records[-1].cancelled and "feature memory" in records[-1].message
    assert not (tmp_path / "last.safetensors").exists()


def test_distance_probability_is_zero_for_normal_patches_and_half_at_the_calibration():
    from core.model.features import distance_probability

    d = torch.tensor([0.2, 1.0, 1.2, 1.5, 3.0, 6.0])
    p = distance_probability(d, 1.5)
    assert torch.all(p[:2] == 0) and p[3] == pytest.approx(0.5)
    assert torch.all(p[1:].diff() > 0) and p[-1] < 1  # strictly rising past the median, never saturating


def test_fusions_join_the_two_probabilities():
    from core.common.prepare import fuse

    seg, dist = torch.tensor([0.0, 0.2, 0.9]), torch.tensor([0.0, 0.6, 0.1])
    assert torch.equal(fuse(seg, dist, "none"), seg)
    assert torch.allclose(fuse(seg, dist, "mean"), torch.tensor([0.0, 0.4, 0.5]))
    assert torch.allclose(fuse(seg, dist, "or"), torch.tensor([0.0, 0.68, 0.91]))
    assert torch.equal(fuse(seg, dist, "distance"), dist)
    with pytest.raises(ValueError, match="fusion"):
        fuse(seg, dist, "max")


def test_smoothed_distance_map_is_the_bench_maps_gaussian():
    import cv2

    from core.model.features import smooth_distance

    d = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = smooth_distance(d, (64, 64), 2.0)[:, 0].numpy()
    up = torch.nn.functional.interpolate(d, size=(64, 64), mode="bilinear", align_corners=False)[:, 0].numpy()
    assert np.allclose(ours, np.stack([cv2.GaussianBlur(m, (0, 0), 2.0) for m in up]), atol=1e-5)


def test_a_fused_model_calibrates_the_distance_and_its_map_joins_both(data, configs, tmp_path):
    from core.common.config import FeatureConfig

    model_cfg = replace(configs[0], features=replace(configs[0].features, fusion="or"))
    trainer = Trainer(model_cfg, configs[1], data, tmp_path, device="cpu")
    list(trainer.run())
    model = trainer.model
    assert float(model.distance_high) > 1.0  # normal patches' 99th percentile, above their median
    insp = Inspector.from_checkpoint(tmp_path / "last.safetensors", device="cpu")
    assert insp.config.features.fusion == "or"
    assert float(insp.model.distance_high) == pytest.approx(float(model.distance_high))
    x = torch.from_numpy(np.stack([im.astype(np.float32) / 255 for im in data.val])).permute(0, 3, 1, 2)
    with torch.no_grad():
        x0_hat = model.reconstruct(x, *[torch.zeros(model.noise_shape(x))] * 2)
        logits, dist = model._head(x, x0_hat)
        fused = model.anomaly_map(x, x0_hat)
    seg = torch.sigmoid(logits)
    assert fused.shape == seg.shape and torch.all((fused >= seg - 1e-6) & (fused <= 1))
    assert dist is not None
    p_dist = model.distance_probability_map(dist, x.shape[-2:])
    assert torch.allclose(fused, 1 - (1 - seg) * (1 - p_dist))
    with pytest.raises(ValueError, match="FeatureConfig.fusion"):
        FeatureConfig(blocks=(4,), fusion="max")


def test_a_distance_model_shows_its_memory_distance_whatever_its_head_says(data, configs, tmp_path):
    model_cfg = replace(configs[0], features=replace(configs[0].features, fusion="distance"))
    trainer = Trainer(model_cfg, replace(configs[1], steps=1), data, tmp_path, device="cpu")
    list(trainer.run())
    insp = Inspector.from_checkpoint(tmp_path / "last.safetensors", device="cpu")
    images = [im.astype(np.float32) / 255 for im in data.val]
    parts = insp.predict_parts(images)
    np.testing.assert_allclose(parts.anomaly_map, parts.distance, atol=1e-6)
    assert not np.allclose(parts.anomaly_map, parts.head, atol=1e-3)  # the head plays no part in it
    np.testing.assert_allclose([r.score for r in insp.predict(images)], parts.score, rtol=1e-5)


def test_models_saved_before_fusion_load_with_the_segmenters_map(data, configs, tmp_path):
    assert configs[0].features.fusion == "mean"  # the preset's; a model saved before fusion has none
    model_cfg = replace(configs[0], features=replace(configs[0].features, fusion="none"))
    trainer = Trainer(model_cfg, configs[1], data, tmp_path, device="cpu")
    list(trainer.run())
    insp = Inspector.from_checkpoint(tmp_path / "last.safetensors", device="cpu")
    assert insp.config.features.fusion == "none" and not hasattr(insp.model, "distance_high")


def test_a_model_saved_before_fusion_adopts_the_fused_map(data, configs, tmp_path):
    from core.train.data import TrainingError
    from core.train.feature_memory import adopt_fusion

    model_cfg = replace(configs[0], features=replace(configs[0].features, fusion="none"))
    list(Trainer(model_cfg, configs[1], data, tmp_path, device="cpu").run())
    old = load_checkpoint(tmp_path / "last.safetensors")
    fused = adopt_fusion(old, data, "mean")
    assert fused.model_config.features.fusion == "mean" and fused.step == old.step
    assert float(fused.state_dict["distance_high"]) > 1.0
    assert torch.equal(fused.state_dict["memory"], old.state_dict["memory"])  # weights and memory unchanged
    from core.model.checkpoint import save_checkpoint

    save_checkpoint(fused, tmp_path / "fused.safetensors")
    insp = Inspector.from_checkpoint(tmp_path / "fused.safetensors", device="cpu")
    scores = [r.score for r in insp.predict([im.astype(np.float32) / 255 for im in data.val])]
    from core.common.metrics import threshold_robust

    assert fused.threshold == pytest.approx(threshold_robust(scores), rel=1e-5)  # from the new map's held-out scores
    assert fused.threshold != old.threshold
    assert set(fused.metrics) == set(old.metrics)
    with pytest.raises(TrainingError, match="feature memory"):
        tiny_cfg, _ = get_preset("tiny")
        adopt_fusion(replace(old, model_config=tiny_cfg), data, "mean")
