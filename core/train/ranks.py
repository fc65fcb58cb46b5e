"""The training side of a run spread over the ranks of a ``torchrun`` launch (``core.model.distributed``).

The model's training forward as one module that DistributedDataParallel can wrap, sums over the ranks, the
sharing of rank 0's feature memory, and how the batch was spread (the checkpoint header). In a single process
every helper here does nothing but the work itself.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from core.model.distributed import World, shard
from core.model.network import DiffusionAD

MEMORY_BUFFERS = ("memory", "memory_tags", "feature_mean", "feature_std", "distance_scale", "distance_high")


class TrainForward(torch.nn.Module):
    """The model's training forward (one-step guided denoising, then the segmenter's logits) as one module, so
    that DistributedDataParallel can wrap it."""

    def __init__(self, model: DiffusionAD):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t_s: torch.Tensor, t_b: torch.Tensor, noise_s: torch.Tensor,
                noise_b: torch.Tensor, tags: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        diff = self.model.diffusion
        x0 = diff.to_model_range(self.model.denoiser_view(x))
        x0_g, eps_s, eps_b = diff.guided_from_noise(self.model.denoiser, x0, t_s, t_b, noise_s, noise_b)
        return eps_s, eps_b, self.model.anomaly_logits(x, x0_g, tags)


def distributed(forward: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """In a distributed run, ``forward`` wrapped in DistributedDataParallel (once): the ranks start from rank 0's
    weights; buffers (the memory, batch statistics) are not re-sent at each step. Alone: ``forward`` itself."""
    if not world.launched or isinstance(forward, DistributedDataParallel):
        return forward
    return DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def global_sum(world: World, device: torch.device, values: list[float]) -> list[float]:
    """``values`` summed over the ranks of a distributed run (unchanged in a single process)."""
    if not world.launched:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def no_sync(forward: torch.nn.Module, skip: bool) -> AbstractContextManager[Any]:
    """Within a step's micro-batches, gradients are averaged across ranks once, after the last one."""
    if skip and isinstance(forward, DistributedDataParallel):
        return forward.no_sync()
    return nullcontext()


def world_info(world: World, batch_size: int) -> dict[str, Any]:
    """How the run is spread: its processes and each one's share of the batch (checkpoint header)."""
    w = world.world_size if world.launched else 1
    return {"world_size": w, "rank_batch_sizes": [len(shard(range(batch_size), r, w)) for r in range(w)]}


def share_memory(model: DiffusionAD, world: World) -> bool:
    """Rank 0's feature memory and statistics on every rank of a distributed run; True when they were sent."""
    if not world.launched or not model.config.features.enabled:
        return False
    for name, buf in model.named_buffers():
        if name in MEMORY_BUFFERS:
            torch.distributed.broadcast(buf, src=0)
    return True
