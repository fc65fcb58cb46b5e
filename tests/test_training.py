import numpy as np
import pytest
import torch

from core.common.config import replace
from core.common.datasets import list_images
from core.model.checkpoint import load_checkpoint
from core.model.devices import pick_device
from core.train.data import TrainData, TrainingError
from core.train.trainer import Trainer, fit


@pytest.fixture
def data(good_folder, tiny_configs):
    model_cfg, train_cfg = tiny_configs
    return TrainData.from_paths(list_images(good_folder), model_cfg.image_size, 0.2, 0)


def test_split_holds_out_good_images(data):
    assert len(data.train) == 8 and len(data.val) == 2


def test_short_fit_lowers_the_loss(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    train_cfg = replace(train_cfg, steps=60, batch_size=4, checkpoint_every=0, validate_every=0, seed=1)
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu")
    losses = [rec.losses["loss"] for rec in trainer.run() if not rec.done]
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-15:]) < 0.8 * np.mean(losses[:15])


def test_progress_records_checkpoints_and_validation(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu", preview_every=2)
    records = list(trainer.run())
    steps = [r.step for r in records if not r.done]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [r.step for r in records if r.checkpoint and not r.done] == [3, 6]
    assert records[2].validation and 0.0 <= records[2].validation["val_synthetic_image_auroc"] <= 1.0
    assert records[1].preview["reconstruction"].shape == (32, 32, 3)
    assert records[-1].done and not records[-1].cancelled
    assert {"noise", "focal", "smooth_l1", "loss"} <= set(records[0].losses)
    assert records[0].eta_s > 0 and records[0].images_per_s > 0
    ckpt = load_checkpoint(tmp_path / "last.safetensors")
    assert ckpt.step == 6 and ckpt.threshold is not None and "val_good_score_mean" in ckpt.metrics


def test_cancel_saves_and_resume_continues(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    train_cfg = replace(train_cfg, checkpoint_every=100)
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu")
    records = list(trainer.run(cancel=lambda: trainer.step >= 4))
    assert records[-1].cancelled and records[-1].step == 4
    saved = load_checkpoint(tmp_path / "last.safetensors", with_optimizer=True)
    assert saved.step == 4 and saved.optimizer is not None

    resumed = Trainer(model_cfg, replace(train_cfg, steps=6), data, tmp_path, device="cpu",
                      resume_from=tmp_path / "last.safetensors")
    assert resumed.step == 4
    adam_state = resumed.opt_denoiser.state_dict()["state"]
    assert adam_state and int(next(iter(adam_state.values()))["step"]) == 4
    steps = [r.step for r in resumed.run() if not r.done]
    assert steps == [5, 6]
    assert load_checkpoint(tmp_path / "last.safetensors").step == 6


def test_closing_the_generator_still_checkpoints(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, replace(train_cfg, checkpoint_every=100), data, tmp_path, device="cpu")
    run = trainer.run()
    next(run)
    next(run)
    run.close()
    assert load_checkpoint(tmp_path / "last.safetensors").step == 2


def test_fine_tune_starts_from_base_weights(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    base = Trainer(model_cfg, train_cfg, data, tmp_path / "base", device="cpu")
    fit(base)
    ft = Trainer(model_cfg, replace(train_cfg, steps=2), data, tmp_path / "ft", device="cpu",
                 init_from=tmp_path / "base" / "last.safetensors")
    assert ft.step == 0
    for k, v in base.model.state_dict().items():
        torch.testing.assert_close(ft.model.state_dict()[k], v)
    fit(ft)
    assert load_checkpoint(tmp_path / "ft" / "last.safetensors").info["base_model"].endswith("last.safetensors")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu")
    run = trainer.run()
    for _ in range(3):
        next(run)  # step 3 writes a checkpoint
    good = (tmp_path / "last.safetensors").read_bytes()
    with torch.no_grad():
        next(trainer.model.segmenter.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match="not finite.*last good checkpoint"):
        next(run)
    assert (tmp_path / "last.safetensors").read_bytes() == good


def test_non_finite_gradient_stops_and_keeps_last_good_checkpoint(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu")
    run = trainer.run()
    for _ in range(3):
        next(run)
    good = (tmp_path / "last.safetensors").read_bytes()
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    next(trainer.model.denoiser.parameters()).register_hook(lambda g: g * float("inf"))  # loss stays finite
    with pytest.raises(TrainingError, match="denoiser's gradient is not finite.*step 4.*last good checkpoint"):
        next(run)
    assert (tmp_path / "last.safetensors").read_bytes() == good
    for k, v in trainer.model.named_parameters():  # no optimizer step was taken with the broken gradient
        torch.testing.assert_close(v.detach(), before[k])


def test_non_finite_synthetic_image_is_named_as_such(data, tiny_configs, tmp_path, monkeypatch):
    from core.train.synthesis import AnomalySynthesizer

    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu")
    real = AnomalySynthesizer.__call__

    def broken(self, image, rng=None):
        out, mask = real(self, image, rng)
        return np.full_like(out, np.nan), mask

    monkeypatch.setattr(AnomalySynthesizer, "__call__", broken)
    with pytest.raises(TrainingError, match="anomaly synthesis produced non-finite pixels at step 1"):
        fit(trainer)


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_grad_clip_bounds_each_network_and_reports_the_norm(data, tiny_configs, tmp_path, clip):
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, replace(train_cfg, grad_clip=clip), data, tmp_path, device="cpu")
    losses = trainer.train_step()
    for name in ("denoiser", "segmenter"):
        net = getattr(trainer.model, name)
        applied = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for p in net.parameters() if p.grad is not None])))
        reported = losses[f"grad_norm_{name}"]
        assert reported > 1e-3  # the tiny model's raw gradients are larger than the clip tested
        if clip:
            assert applied == pytest.approx(clip, rel=1e-3)
        else:
            assert applied == pytest.approx(reported, rel=1e-5)


def test_grad_clip_travels_with_the_checkpoint(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    fit(Trainer(model_cfg, replace(train_cfg, grad_clip=0.5), data, tmp_path, device="cpu"))
    resumed = Trainer(model_cfg, replace(train_cfg, steps=8), data, tmp_path, device="cpu",
                      resume_from=tmp_path / "last.safetensors")
    assert resumed.train_config.grad_clip == 0.5 and resumed.train_config.steps == 8


def test_all_anomalous_batches_train_without_nan(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    synth = replace(train_cfg.synthesis, anomaly_prob=1.0)
    trainer = Trainer(model_cfg, replace(train_cfg, synthesis=synth, steps=3), data, tmp_path, device="cpu")
    recs = [r for r in trainer.run() if not r.done]
    assert all(r.losses["noise"] == 0.0 and np.isfinite(r.losses["loss"]) for r in recs)


def _gradients_of_one_batch(data, model_cfg, train_cfg, tmp_path, micro_batch):
    torch.manual_seed(0)
    trainer = Trainer(model_cfg, replace(train_cfg, batch_size=6, micro_batch=micro_batch), data, tmp_path,
                      device="cpu")
    trainer.model.train()
    for m in trainer.model.modules():  # batch statistics are the one thing chunks cannot share
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    x, mask, normal, tags = trainer._batch()
    assert len(set(normal.view(3, 2).sum(1).tolist())) > 1  # chunks with different shares of normal samples
    seen: list[int] = []
    hook = trainer.model.segmenter.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[0]))
    torch.manual_seed(1)
    losses = trainer._backward(x, mask, normal, tags)
    hook.remove()
    assert seen == ([2, 2, 2] if micro_batch == 2 else [6])
    return losses, [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


def test_micro_batches_give_the_whole_batch_gradients(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    train_cfg = replace(train_cfg, synthesis=replace(train_cfg.synthesis, anomaly_prob=0.5), seed=3)
    whole, g_whole = _gradients_of_one_batch(data, model_cfg, train_cfg, tmp_path / "a", 0)
    chunks, g_chunks = _gradients_of_one_batch(data, model_cfg, train_cfg, tmp_path / "b", 2)
    assert whole.keys() == chunks.keys()
    for k in whole:
        assert chunks[k] == pytest.approx(whole[k], rel=1e-4, abs=1e-6), k
    assert len(g_whole) == len(g_chunks) > 0
    for a, b in zip(g_whole, g_chunks):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6)


def test_micro_batch_training_runs_whole_steps(data, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, replace(train_cfg, batch_size=4, micro_batch=3, steps=3), data, tmp_path,
                      device="cpu")
    recs = [r for r in trainer.run() if not r.done]
    assert [r.step for r in recs] == [1, 2, 3] and all(np.isfinite(r.losses["loss"]) for r in recs)
    assert load_checkpoint(tmp_path / "last.safetensors").train_config.micro_batch == 3
    # resuming keeps the checkpoint's micro-batch unless the caller gives one (a memory setting)
    kept = Trainer(model_cfg, replace(train_cfg, steps=4), data, tmp_path, device="cpu",
                   resume_from=tmp_path / "last.safetensors")
    assert kept.train_config.micro_batch == 3 and kept.train_config.batch_size == 4
    changed = Trainer(model_cfg, replace(train_cfg, steps=4, micro_batch=2), data, tmp_path / "b", device="cpu",
                      resume_from=tmp_path / "last.safetensors")
    assert changed.train_config.micro_batch == 2 and changed.step == 3
    with pytest.raises(ValueError, match="micro_batch"):
        Trainer(model_cfg, replace(train_cfg, micro_batch=-1), data, tmp_path / "c", device="cpu")


def test_chunks_of_one_image_are_refused_where_batchnorm_would_see_one_value(data, tiny_configs, tmp_path,
                                                                            good_folder):
    from core.train.data import chunk_bounds

    assert chunk_bounds(8, 3) == [0, 2, 5, 8] and chunk_bounds(8, 0) == [0, 8] and chunk_bounds(3, 2) == [0, 1, 3]
    model_cfg, train_cfg = tiny_configs  # 32 px: the segmenter's deepest level is 1 x 1
    for batch, micro in ((3, 2), (1, 0), (4, 1)):
        with pytest.raises(ValueError, match="at least 2 images"):
            Trainer(model_cfg, replace(train_cfg, batch_size=batch, micro_batch=micro), data, tmp_path, device="cpu")
    fit(Trainer(model_cfg, replace(train_cfg, batch_size=5, micro_batch=3, steps=1), data, tmp_path, device="cpu"))
    big = replace(model_cfg, image_size=64)  # 2 x 2 at the deepest level: a lone image trains
    data64 = TrainData.from_paths(list_images(good_folder), 64, 0.2, 0)
    fit(Trainer(big, replace(train_cfg, batch_size=3, micro_batch=2, steps=1), data64, tmp_path / "b", device="cpu"))


def test_checkpoints_without_micro_batches_do_not_record_it(data, tiny_configs, tmp_path):
    from core.model.checkpoint import read_header

    model_cfg, train_cfg = tiny_configs
    fit(Trainer(model_cfg, replace(train_cfg, steps=1), data, tmp_path, device="cpu"))
    assert "micro_batch" not in read_header(tmp_path / "last.safetensors")["train_config"]  # older builds open it


def test_no_readable_images_is_a_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(TrainingError, match="bad.png"):
        TrainData.from_paths([tmp_path / "bad.png"], 32, 0.1, 0)


def test_pick_device_on_cpu_machine():
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type in {"cpu", "cuda", "mps"}


def test_inference_device_gives_the_gpu_to_training(monkeypatch):
    import torch

    from core.model import devices

    monkeypatch.setattr(devices, "pick_device", lambda pref="auto": torch.device("cuda" if pref == "auto" else pref))
    assert devices.inference_device("auto", None).type == "cuda"
    assert devices.inference_device("auto", "cuda:0").type == "cpu"  # training holds the GPU
    assert devices.inference_device("auto", "cpu").type == "cuda"  # a CPU job leaves the GPU free
    assert devices.inference_device("cpu", None).type == "cpu"


def test_validation_predicts_like_the_inspector(data, tiny_configs, tmp_path):
    """Validation and previews go through the Inspector's inference path: the live model scores a set of
    images exactly as an Inspector around it does."""
    from core.inference.inspector import Inspector

    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path, device="cpu")
    trainer.train_step()
    images = [im.astype(np.float32) / 255.0 for im in data.train + data.val]  # 10: two chunks of 8
    recon, maps, scores = trainer._predict(images)
    results = Inspector(trainer.model, trainer.device).predict_many(images, batch_size=8)
    np.testing.assert_array_equal(scores, [r.score for r in results])
    np.testing.assert_array_equal(maps, np.stack([r.anomaly_map for r in results]))
    np.testing.assert_array_equal(recon, np.stack([r.reconstruction for r in results]))
    trainer.train_step()  # and training goes on in training mode
    assert trainer.model.training


def test_one_seeded_stream_makes_batches_reproducible(data, tiny_configs, tmp_path):
    """Sample j of step s comes from generators seeded with (train seed, s, j): they draw the image and its
    synthetic defect. Same seed, same batches; another seed, others."""
    from core.model.devices import to_tensor
    from core.train.synthesis import AnomalySynthesizer

    model_cfg, train_cfg = tiny_configs

    def first_batches(seed):
        trainer = Trainer(model_cfg, replace(train_cfg, seed=seed), data, tmp_path / str(seed), device="cpu")
        out = []
        for _ in range(2):
            out.append(trainer._batch())
            trainer.step += 1
        return out

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for (xa, ma, _, ta), (xb, mb, _, tb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ma, mb) and torch.equal(ta, tb)
    assert not torch.equal(a[0][0], c[0][0]) and not torch.equal(a[0][0], a[1][0])
    # replayed from the documented seeds
    synth = AnomalySynthesizer(train_cfg.synthesis)
    expected, idx = [], []
    for j in range(train_cfg.batch_size):
        rng = np.random.default_rng([5, 1, j])
        i = int(rng.integers(0, len(data.train)))
        idx.append(i)
        expected.append(synth(data.train[i].astype(np.float32) / 255.0, rng))
    assert a[0][3].tolist() == idx
    assert torch.equal(a[0][0], to_tensor([im for im, _ in expected], torch.device("cpu")))
    assert torch.equal(a[0][1][:, 0], torch.from_numpy(np.stack([m for _, m in expected])))
