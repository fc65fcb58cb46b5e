"""Code that the distributed-training tests run in each spawned rank (importable by the child processes)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.common.config import replace
from core.common.datasets import list_images
from core.common.presets import get_preset
from core.model.distributed import World, process_group
from core.train.data import TrainData
from core.train.trainer import Trainer


def tiny(batch_size: int = 4):
    model_cfg, train_cfg = get_preset("tiny")
    return model_cfg, replace(train_cfg, batch_size=batch_size, steps=3, checkpoint_every=0, validate_every=0,
                              synthesis=replace(train_cfg.synthesis, anomaly_prob=0.5), seed=2)


def one_step_gradients(trainer: Trainer) -> tuple[dict, list[torch.Tensor]]:
    """The first step's loss terms and gradients, batch statistics frozen (the one thing ranks cannot share on a
    CPU, where SyncBatchNorm does not run)."""
    trainer.model.train()
    for m in trainer.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    trainer._distribute()
    x, mask, normal, tags, *draws = trainer._on_device(trainer._training_batches().batch(1))
    losses = trainer._backward(x, mask, normal, tags, draws)
    return losses, [p.grad.clone() for p in trainer.model.parameters()]


def rank_main(rank: int, world_size: int, port: int, folder: str, out: str, batch_size: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World(rank, world_size, rank, world_size, launched=True)
    model_cfg, train_cfg = tiny(batch_size)
    data = TrainData.from_paths(list_images(folder), model_cfg.image_size, 0.2, 0)
    with process_group(world, torch.device("cpu")):
        trainer = Trainer(model_cfg, train_cfg, data, Path(out) / "run", device="cpu", world=world, workers=0)
        losses, grads = one_step_gradients(trainer)
        torch.save({"losses": losses, "grads": grads}, Path(out) / f"rank{rank}.pt")


def rank_trains_pretrained(rank: int, world_size: int, port: int, folder: str, out: str) -> None:
    """Two steps of the tiny pretrained preset in micro-batches of 2 (ranks of 3 and 2 images: 2 and 1 chunks);
    each rank saves the feature memory it trained with and its weights."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World(rank, world_size, rank, world_size, launched=True)
    model_cfg, train_cfg = get_preset("tiny-pretrained")
    train_cfg = replace(train_cfg, batch_size=5, micro_batch=2, steps=2, checkpoint_every=0, validate_every=0)
    data = TrainData.from_paths(list_images(folder), model_cfg.image_size, 0.2, 0)
    with process_group(world, torch.device("cpu")):
        trainer = Trainer(model_cfg, train_cfg, data, Path(out) / "run", device="cpu", world=world, workers=0)
        records = list(trainer.run())
        assert records[-1].done and records[-1].step == 2
        torch.save({"memory": trainer.model.memory.clone(), "distance_high": trainer.model.distance_high.clone(),
                    "denoiser": [p.detach().clone() for p in trainer.model.denoiser.parameters()],
                    "setup": sum(r.setup for r in records)}, Path(out) / f"rank{rank}.pt")
