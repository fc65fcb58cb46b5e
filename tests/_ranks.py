"""Code that the distributed-training tests run in each spawned rank (importable by the child processes)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.config import replace
from core.data import list_images
from core.distributed import World, process_group
from core.presets import get_preset
from core.training import TrainData, Trainer


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
