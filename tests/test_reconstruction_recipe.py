"""A feature head without the reconstruction (``FeatureConfig.head_reconstruction``) and the denoiser's noise loss
on random crops (``TrainConfig.denoiser_crop``): what the head sees, what the denoiser trains on, what is saved."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.common.config import FeatureConfig, ModelConfig, TrainConfig, replace
from core.common.datasets import list_images
from core.common.presets import get_preset
from core.inference.inspector import Inspector
from core.model.checkpoint import Checkpoint, load_checkpoint, load_weights, read_header, save_checkpoint
from core.model.network import DiffusionAD
from core.train.data import TrainData, check_trainable
from core.train.ranks import TrainForward, random_crops, train_square
from core.train.trainer import Trainer, fit

SIZE = 64  # tiny-pretrained's image size; with denoiser_size 0 the denoiser works at it too
CROP = 32


def model_config(head: bool) -> ModelConfig:
    """tiny-pretrained with the denoiser at the image's size; the head with or without the reconstruction."""
    m, _ = get_preset("tiny-pretrained")
    return replace(m, denoiser_size=0, features=replace(m.features, head_reconstruction=head, recon_features=head))


def train_config(crop: int = 0) -> TrainConfig:
    _, t = get_preset("tiny-pretrained")
    return replace(t, steps=3, denoiser_crop=crop, checkpoint_every=0, validate_every=0)


def random_images(n: int, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((*size, 3), dtype=np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainData:
    folder = tmp_path_factory.mktemp("images")
    for i, im in enumerate(random_images(8, 0)):
        cv2.imwrite(str(folder / f"{i}.png"), (im * 255).astype(np.uint8))
    return TrainData.from_paths(list_images(folder), SIZE, 0.25, 0)


class Run:
    """A 3-step training run; records what the head was given at each training forward."""

    def __init__(self, data: TrainData, out: Path, head: bool, crop: int):
        self.trainer = Trainer(model_config(head), train_config(crop), data, out, device="cpu")
        model = self.trainer.model
        self.start = {k: v.detach().clone() for k, v in model.denoiser.named_parameters()}
        self.seen: list[tuple[tuple[int, ...], tuple[int, ...] | None, bool]] = []
        logits = model.anomaly_logits

        def recording(x, x0_hat, tags=None):
            self.seen.append((tuple(x.shape), None if x0_hat is None else tuple(x0_hat.shape),
                              x0_hat is not None and x0_hat.requires_grad))
            return logits(x, x0_hat, tags)

        model.anomaly_logits = recording
        self.first_batch = self.trainer._training_batches().batch(1)
        fit(self.trainer)

    def unchanged(self) -> list[str]:
        """The denoiser's parameters that training left as they started."""
        end = dict(self.trainer.model.denoiser.named_parameters())
        return [k for k, v in self.start.items() if torch.equal(v, end[k])]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[tuple[bool, int], Run]:
    out = tmp_path_factory.mktemp("runs")
    return {(head, crop): Run(data, out / f"{head}-{crop}", head, crop)
            for head, crop in ((True, CROP), (False, CROP), (True, 0))}


def _perturb_denoiser(model: DiffusionAD) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("head", [False, True])
def test_only_a_head_that_sees_the_reconstruction_depends_on_the_denoiser(head):
    torch.manual_seed(0)
    model = DiffusionAD(model_config(head))
    assert model.head_sees_reconstruction is head
    inspector = Inspector(model, torch.device("cpu"))
    images = random_images(1, 1) + random_images(1, 2, (50, 40))
    before = inspector.predict(images)
    again = inspector.predict(images)
    for a, b in zip(before, again):  # inference is deterministic: what changes below is the denoiser's doing
        assert np.array_equal(a.anomaly_map, b.anomaly_map) and np.array_equal(a.reconstruction, b.reconstruction)
    _perturb_denoiser(model)
    after = inspector.predict(images)
    for a, b in zip(before, after):
        assert np.abs(a.reconstruction - b.reconstruction).max() > 1e-3
        if head:
            assert np.abs(a.anomaly_map - b.anomaly_map).max() > 1e-6
        else:
            assert np.array_equal(a.anomaly_map, b.anomaly_map) and a.score == b.score


def test_the_head_without_the_reconstruction_takes_none_and_the_head_with_it_refuses_none():
    torch.manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE)
    without = DiffusionAD(model_config(False)).eval()
    assert without.segmenter.fine[0].in_channels == 3 + 1  # the input and the coarse logit
    with torch.no_grad():
        assert torch.equal(without.anomaly_logits(x, None), without.anomaly_logits(x, torch.rand_like(x)))
    with_recon = DiffusionAD(model_config(True)).eval()
    with pytest.raises(ValueError, match="reconstruction"):
        with_recon.anomaly_logits(x, None)


def test_recon_features_needs_the_head_to_see_the_reconstruction():
    with pytest.raises(ValueError, match="recon_features"):
        FeatureConfig(blocks=(2, 4), head_reconstruction=False, recon_features=True)
    m, _ = get_preset("tiny-pretrained")
    assert m.features.recon_features
    with pytest.raises(ValueError, match="recon_features"):
        replace(m.features, head_reconstruction=False)
    with pytest.raises(ValueError, match="head_reconstruction"):
        replace(m.features, head_reconstruction="no")
    assert not replace(m.features, head_reconstruction=False, recon_features=False).head_reconstruction


@pytest.mark.parametrize("head", [False, True])
def test_the_checkpoint_writes_head_reconstruction_only_when_false(head, tmp_path):
    cfg = model_config(head)
    path = tmp_path / "m.safetensors"
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict()), path)
    features = read_header(path)["model_config"]["features"]
    if head:
        assert "head_reconstruction" not in features
    else:
        assert features["head_reconstruction"] is False and features["recon_features"] is False
    ckpt = load_checkpoint(path)
    assert ckpt.model_config == cfg
    model = DiffusionAD(ckpt.model_config)
    load_weights(model, ckpt, path)  # the head's fine branch has the shape the config says
    assert model.head_sees_reconstruction is head


@pytest.mark.parametrize("crop", [CROP, 0])
def test_the_train_config_writes_denoiser_crop_only_when_used(runs, crop):
    path = runs[True, crop].trainer.checkpoint_path
    written = read_header(path)["train_config"]
    if crop:
        assert written["denoiser_crop"] == crop
    else:
        assert "denoiser_crop" not in written
    assert load_checkpoint(path).train_config.denoiser_crop == crop


@pytest.mark.parametrize("head", [True, False])
def test_crop_training_draws_crop_sized_noise_and_trains_the_denoiser(runs, head):
    run = runs[head, CROP]
    assert run.trainer.step == 3
    batch = run.first_batch
    assert batch[0].shape[-2:] == (SIZE, SIZE)
    assert batch[6].shape[-2:] == (CROP, CROP) and batch[7].shape[-2:] == (CROP, CROP)
    # the denoiser learns from the crops' noise loss alone (also when the head never sees its reconstruction)
    assert run.start and not run.unchanged()
    assert len(run.seen) == 3
    for x_shape, recon_shape, recon_grad in run.seen:
        assert x_shape[-2:] == (SIZE, SIZE)
        if head:  # the whole image's reconstruction, made without gradient
            assert recon_shape == x_shape and not recon_grad
        else:
            assert recon_shape is None


def test_without_crop_the_head_gets_the_reconstruction_with_gradient(runs):
    run = runs[True, 0]
    assert run.first_batch[6].shape[-2:] == (SIZE, SIZE)
    assert len(run.seen) == 3 and all(r == x and grad for x, r, grad in run.seen)
    assert run.start and not run.unchanged()


@pytest.mark.parametrize("crop", [0, CROP])
def test_the_heads_loss_reaches_the_denoiser_only_without_crop(crop):
    torch.manual_seed(0)
    model = DiffusionAD(model_config(True))
    forward = TrainForward(model, crop)
    n, r = 2, crop or SIZE
    x = torch.rand(n, 3, SIZE, SIZE)
    t_s, t_b = torch.tensor([3, 5]), torch.tensor([600, 700])
    noise_s, noise_b = torch.randn(n, 3, r, r), torch.randn(n, 3, r, r)
    eps_s, eps_b, logits = forward(x, t_s, t_b, noise_s, noise_b, None)
    assert eps_s.shape == eps_b.shape == (n, 3, r, r) and logits.shape == (n, 1, SIZE, SIZE)
    logits.sum().backward(retain_graph=True)
    grads = [p.grad for p in model.denoiser.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert bool(grads) is (crop == 0)
    model.zero_grad()
    ((eps_s - noise_s).square().mean() + (eps_b - noise_b).square().mean()).backward()  # the noise loss
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())


def test_train_square():
    m, t = model_config(True), train_config()
    assert [train_square(m, replace(t, denoiser_crop=c)) for c in (0, CROP, SIZE, 100)] == [SIZE, CROP, SIZE, SIZE]


def test_a_crop_off_the_denoisers_grid_is_refused(data, tmp_path):
    m = model_config(True)
    step = 2 ** (len(m.denoiser.channel_mults) - 1)
    assert step == 2
    check_trainable(data, m, train_config(CROP))  # a multiple of the step: accepted
    with pytest.raises(ValueError, match="denoiser_crop"):
        check_trainable(data, m, train_config(21))
    with pytest.raises(ValueError, match="denoiser_crop"):
        Trainer(m, train_config(21), data, tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())


def test_random_crops_are_windows_of_their_own_image_at_varying_places():
    n, c, h, w, s = 6, 2, 9, 13, 4  # not square: rows and columns cannot be swapped unnoticed
    x = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)
    places, corners = set(), set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        crops = random_crops(x, s, gen)
        assert crops.shape == (n, c, s, s)
        for k in range(n):
            first = int(crops[k, 0, 0, 0]) - k * c * h * w  # arange: the top-left value says where the window is
            i, j = divmod(first, w)
            assert 0 <= i <= h - s and 0 <= j <= w - s
            assert torch.equal(crops[k], x[k, :, i:i + s, j:j + s])
            corners.add((i, j))
        places.add(tuple(crops[:, 0, 0, 0].tolist()))
        assert len({int(crops[k, 0, 0, 0]) - k * c * h * w for k in range(n)}) > 1  # each image its own place
    assert len(places) > 1
    assert any(i != j for i, j in corners)  # the row and the column are drawn each on its own
    same = [random_crops(x, s, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(*same)
    square = x[:, :, :, :h].contiguous()
    assert torch.equal(random_crops(square, h, gen), square)  # a crop of the whole image is the image


def perturbed_model(head: bool, seed: int = 0) -> DiffusionAD:
    torch.manual_seed(seed)
    model = DiffusionAD(model_config(head))
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("head", [False, True])
def test_an_inspector_asked_for_no_reconstruction_scores_the_same(head):
    """dad eval, dad watch and dad infer without image outputs inspect with ``reconstruct`` off: a head that does not
    see the reconstruction then runs no denoiser (results without one), with the same maps and scores; a head that
    sees it still gets it (and the results keep it)."""
    images = random_images(2, 5) + random_images(1, 6, (50, 40))
    insp = Inspector(perturbed_model(head), torch.device("cpu"))
    full = insp.predict(images)
    calls = []
    insp.model.denoiser.register_forward_hook(lambda *_: calls.append(1))
    insp.reconstruct = False
    lean = insp.predict(images)
    assert all(r.reconstruction is not None for r in full)
    assert [r.score for r in lean] == [r.score for r in full]
    assert all(np.array_equal(a.anomaly_map, b.anomaly_map) for a, b in zip(lean, full))
    if head:
        assert calls and all(np.array_equal(a.reconstruction, b.reconstruction) for a, b in zip(lean, full))
    else:
        assert not calls and all(r.reconstruction is None for r in lean)
        with pytest.raises(ValueError, match="without its reconstruction"):
            lean[0].reconstruction_full()
    assert insp.on_device("cpu").reconstruct is False


def test_train_draws_follow_the_diffusion_ranges():
    from core.common.config import DiffusionConfig
    from core.train.pipeline import Draws, make_sample
    from core.train.synthesis import AnomalySynthesizer

    dc = DiffusionConfig(train_t_small_from=100, train_t_big_to=600)
    assert dc.train_ranges() == ((100, 300), (300, 600))
    assert DiffusionConfig().train_ranges() == ((0, 300), (300, 1000))
    with pytest.raises(ValueError, match="train_t_small_from"):
        DiffusionConfig(train_t_small_from=300)
    with pytest.raises(ValueError, match="train_t_big_to"):
        DiffusionConfig(train_t_big_to=300)
    draws = Draws(*dc.train_ranges(), (3, 8, 8))
    synth = AnomalySynthesizer(get_preset("tiny")[1].synthesis)
    images = [(im * 255).astype(np.uint8) for im in random_images(2, 1, (16, 16))]
    ts = [make_sample(images, synth, draws, 0, step, 0)[3:5] for step in range(40)]
    small, big = [int(t[0]) for t in ts], [int(t[1]) for t in ts]
    assert 100 <= min(small) and max(small) < 300 and 300 <= min(big) and max(big) < 600


def test_the_narrow_draws_are_saved_only_when_used(tmp_path):
    from core.common.config import DiffusionConfig

    base = model_config(True)
    save_checkpoint(Checkpoint(base, {}), tmp_path / "a.safetensors")
    assert "train_t_small_from" not in read_header(tmp_path / "a.safetensors")["model_config"]["diffusion"]
    narrow = replace(base, diffusion=DiffusionConfig(data_range="symmetric", train_t_small_from=100,
                                                     train_t_big_to=600))
    save_checkpoint(Checkpoint(narrow, {}), tmp_path / "b.safetensors")
    saved = read_header(tmp_path / "b.safetensors")["model_config"]["diffusion"]
    assert (saved["train_t_small_from"], saved["train_t_big_to"]) == (100, 600)
    assert load_checkpoint(tmp_path / "b.safetensors").model_config == narrow
