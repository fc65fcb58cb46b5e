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

from core.common.config import ModelConfig, TrainConfig
from core.model.distributed import World, shard
from core.model.network import DiffusionAD

MEMORY_BUFFERS = ("memory", "memory_tags", "feature_mean", "feature_std", "distance_scale", "distance_high")


def train_square(model_config: ModelConfig, train_config: TrainConfig) -> int:
    """The side of what the denoiser trains on: ``denoiser_crop`` when it is set and smaller than the denoiser's
    resolution, else that resolution (the noise draws are of this size)."""
    r, crop = model_config.denoiser_resolution, train_config.denoiser_crop
    return crop if 0 < crop < r else r


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each image of x [N, C, H, W] (each its own place)."""
    n, _, h, w = x.shape
    ys = torch.randint(0, h - size + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (n,), generator=generator).tolist()
    return torch.stack([x[k, :, i:i + size, j:j + size] for k, (i, j) in enumerate(zip(ys, xs))])


class TrainForward(torch.nn.Module):
    """The model's training forward (one-step guided denoising, then the segmenter's logits) as one module, so
    that DistributedDataParallel can wrap it.

    With ``crop`` (``TrainConfig.denoiser_crop``, noises of that size) the denoiser's noise loss is taken on a random
    window of each image; a head that sees the reconstruction gets the whole image's, made without gradient at the
    same timesteps with fresh noise. Without: the official step (the head's loss reaches the denoiser too)."""

    def __init__(self, model: DiffusionAD, crop: int = 0):
        super().__init__()
        self.model = model
        self.crop = crop

    def forward(self, x: torch.Tensor, t_s: torch.Tensor, t_b: torch.Tensor, noise_s: torch.Tensor,
                noise_b: torch.Tensor, tags: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model, diff = self.model, self.model.diffusion
        x0 = diff.to_model_range(model.denoiser_view(x))
        if not self.crop or self.crop >= x0.shape[-1]:
            x0_g, eps_s, eps_b = diff.guided_from_noise(model.denoiser, x0, t_s, t_b, noise_s, noise_b)
            return eps_s, eps_b, model.anomaly_logits(x, x0_g, tags)
        _, eps_s, eps_b = diff.guided_from_noise(model.denoiser, random_crops(x0, self.crop), t_s, t_b,
                                                 noise_s, noise_b)
        x0_g = None
        if model.head_sees_reconstruction:
            with torch.no_grad():
                x0_g = diff.guided_from_noise(model.denoiser, x0, t_s, t_b, torch.randn_like(x0),
                                              torch.randn_like(x0))[0]
        return eps_s, eps_b, model.anomaly_logits(x, x0_g, tags)


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
