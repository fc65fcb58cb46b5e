import pytest
import torch

from core.common.presets import PRESETS, get_preset
from core.model.denoiser import DenoiserUNet, timestep_embedding
from core.model.network import DiffusionAD, build_on_meta, count_parameters, image_score, top_k_for


def test_paper_preset_parameter_counts():
    model = build_on_meta(get_preset("paper")[0])
    assert count_parameters(model.denoiser) == pytest.approx(131.7e6, rel=0.005)
    assert count_parameters(model.segmenter) == pytest.approx(28.4e6, rel=0.005)


def test_paper_denoiser_layout():
    cfg = get_preset("paper")[0]
    with torch.device("meta"):
        unet = DenoiserUNet(cfg.denoiser, 256)
    attn_sizes = []
    size = 256
    for block in unet.down:
        if block.attn is not None:
            attn_sizes.append(size)
        if block.res.down:
            size //= 2
    assert sorted(set(attn_sizes)) == [8, 16, 32]
    assert unet.time_embed[0].in_features == 128 and unet.time_embed[2].out_features == 512


def test_timestep_embedding_sin_cos_order():
    emb = timestep_embedding(torch.tensor([0, 5]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert emb[1, 0].item() == pytest.approx(torch.sin(torch.tensor(5.0)).item(), abs=1e-6)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "paper"])
def test_presets_forward_shapes(name):
    cfg = get_preset(name)[0]
    model = DiffusionAD(cfg).eval()
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with torch.inference_mode():
        pred = model(x, torch.randn(model.noise_shape(x)), torch.randn(model.noise_shape(x)))
    assert pred.reconstruction.shape == x.shape
    assert pred.anomaly_map.shape == (2, 1, cfg.image_size, cfg.image_size)
    assert ((pred.anomaly_map >= 0) & (pred.anomaly_map <= 1)).all()
    assert pred.score.shape == (2,)


def test_denoiser_output_starts_at_zero():
    cfg = get_preset("tiny")[0]
    unet = DenoiserUNet(cfg.denoiser, cfg.image_size)
    out = unet(torch.randn(1, 3, 32, 32), torch.tensor([10]))
    assert out.abs().max().item() == 0.0  # zero-initialised output conv, as in ADM


def test_top_k_scales_with_map_size():
    cfg = get_preset("paper")[0]
    assert top_k_for(cfg, 256, 256) == 50
    assert top_k_for(cfg, 128, 128) == 12
    assert top_k_for(cfg, 8, 8) == 1
    amap = torch.zeros(1, 1, 4, 4)
    amap[0, 0, 0, :2] = torch.tensor([1.0, 0.5])
    assert image_score(amap, 2).item() == pytest.approx(0.75)


def test_segmenter_gives_logits_and_the_model_probabilities():
    """Training takes the segmenter's logits (a stable focal loss); the model's map is their sigmoid."""
    cfg = get_preset("tiny")[0]
    torch.manual_seed(0)
    model = DiffusionAD(cfg).eval()
    with torch.no_grad():
        model.segmenter.head.bias.fill_(-30.0)  # a confident "good": p = 1e-13, far below any clamp
        x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
        logits = model.segmenter(x, x)
        assert logits.max() < -20
        torch.testing.assert_close(model.anomaly_map(x, x), torch.sigmoid(logits))
        pred = model(x, torch.randn_like(x), torch.randn_like(x))
    assert ((pred.anomaly_map >= 0) & (pred.anomaly_map < 1e-6)).all()
