"""The training-batch pipeline: reproducible per sample, the same with or without workers and across ranks."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from core.common.config import SynthesisConfig, replace
from core.train.pipeline import Draws, TrainingBatches, batch_loader
from core.train.trainer import Trainer


def _images(n=6, size=32):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _batches(**kw):
    args = {"images": _images(), "synthesis": SynthesisConfig(anomaly_prob=0.7), "textures": (), "batch_size": 5,
            "seed": 3, "first_step": 0, "last_step": 4, "draws": Draws((0, 250), (250, 1000), (3, 16, 16))}
    return TrainingBatches(**{**args, **kw})


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_batches_are_the_same_with_workers_and_without():
    plain = list(batch_loader(_batches(), 0, torch.device("cpu")))
    workers = list(batch_loader(_batches(), 2, torch.device("cpu")))
    assert len(plain) == len(workers) == 4  # steps 1..4, in order
    assert all(_equal(a, b) for a, b in zip(plain, workers))
    assert not torch.equal(plain[0][0], plain[1][0])  # each step its own samples
    assert not multiprocessing.active_children()  # the workers ended with the loader


def test_the_ranks_batches_together_are_the_one_process_batch():
    whole = _batches().batch(2)
    parts = [_batches(rank=r, world=2).batch(2) for r in range(2)]
    assert [len(p[0]) for p in parts] == [3, 2]
    assert _equal(whole, tuple(torch.cat([p[i] for p in parts]) for i in range(len(whole))))


def test_a_resumed_stream_goes_on_with_the_same_batches():
    full = list(batch_loader(_batches(), 0, torch.device("cpu")))
    resumed = list(batch_loader(_batches(first_step=2), 0, torch.device("cpu")))
    assert len(resumed) == 2 and all(_equal(a, b) for a, b in zip(full[2:], resumed))


def test_draws_respect_the_timestep_split():
    b = _batches().batch(1)
    t_s, t_b, noise_s = b[4], b[5], b[6]
    assert torch.all((t_s >= 0) & (t_s < 250)) and torch.all((t_b >= 250) & (t_b < 1000))
    assert noise_s.shape == (5, 3, 16, 16) and b[0].shape == (5, 3, 32, 32)
    assert torch.equal(b[2], b[1].flatten(1).amax(1) == 0)  # normal: no defect pixel


def test_training_with_workers_gives_the_same_losses(good_folder, tiny_configs, tmp_path):
    from core.common.datasets import list_images
    from core.train.data import TrainData

    model_cfg, train_cfg = tiny_configs
    train_cfg = replace(train_cfg, steps=3, checkpoint_every=0, validate_every=0)
    data = TrainData.from_paths(list_images(good_folder), model_cfg.image_size, 0.2, 0)

    def losses(workers, out):
        trainer = Trainer(model_cfg, train_cfg, data, tmp_path / out, device="cpu", workers=workers)
        return [r.losses["loss"] for r in trainer.run() if not r.done]

    plain, with_workers = losses(0, "a"), losses(2, "b")
    assert len(plain) == 3 and plain == pytest.approx(with_workers, rel=1e-6, abs=1e-7)
    assert not multiprocessing.active_children()
