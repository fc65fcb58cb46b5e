"""Training batches from a ``torch.utils.data`` pipeline: good images with synthetic defects, and the diffusion
draws of each sample, made in worker processes while the model trains.

Every sample is reproducible on its own: sample ``j`` of the global batch of step ``s`` comes from generators
seeded with ``(seed, s, j)`` (numpy for the image and its defect, torch for its timesteps and noises). So a run
gives the same batches with 0 or N workers, resumed or not, and split across any number of ranks: rank ``r`` of
``world`` makes its ``core.model.distributed.shard`` of each step's samples, and the ranks' samples together are
the one-process batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from core.common.config import ModelConfig, SynthesisConfig
from core.common.geometry import random_square
from core.common.images import luminance
from core.model.distributed import shard
from core.train.synthesis import AnomalySynthesizer


@dataclass(frozen=True)
class Draws:
    """What the diffusion needs beside the images: per sample a small and a big timestep and their noises."""

    small: tuple[int, int]  # t_s's half-open range (DiffusionConfig.train_ranges)
    big: tuple[int, int]  # t_b's
    noise_shape: tuple[int, int, int]  # (C, r, r): the denoiser's view


class Batch(tuple):
    """(x [N, C, S, S], mask [N, 1, S, S], normal [N] bool, tags [N] int64, t_s [N], t_b [N], noise_s, noise_b)."""

    __slots__ = ()


def sample_seed(seed: int, step: int, j: int) -> list[int]:
    return [int(seed) & 0xFFFFFFFF, int(step), int(j)]


def _torch_generator(seed: int, step: int, j: int) -> torch.Generator:
    # one 63-bit seed from the three numbers (numpy's SeedSequence mixes them well)
    state = np.random.SeedSequence(sample_seed(seed, step, j) + [1]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def make_sample(images: Sequence[np.ndarray], synth: AnomalySynthesizer, draws: Draws | None, seed: int,
                step: int, j: int, size: int = 0) -> tuple:
    """Sample ``j`` of step ``step``: (image float32 [S, S, 3], mask [S, S], image index, and with ``draws`` the
    timesteps and noises). ``size``: the images are a tiling model's working images, and the sample is a random
    ``size`` square of one (``core.common.geometry.random_square``); 0: they are squares already."""
    rng = np.random.default_rng(sample_seed(seed, step, j))
    i = int(rng.integers(0, len(images)))
    image = random_square(images[i], size, rng) if size else images[i]
    aug, mask = synth(image.astype(np.float32) / 255.0, rng)
    if draws is None:
        return aug, mask, i
    g = _torch_generator(seed, step, j)
    t_s = torch.randint(*draws.small, (1,), generator=g)
    t_b = torch.randint(*draws.big, (1,), generator=g)
    return aug, mask, i, t_s, t_b, torch.randn(draws.noise_shape, generator=g), torch.randn(draws.noise_shape,
                                                                                             generator=g)


def collate(samples: list[tuple], channels: int) -> Batch:
    """Samples -> one CPU :class:`Batch` (images as their luminance for a grey model)."""
    images = np.stack([s[0] for s in samples])
    if channels == 1:
        images = luminance(images)[..., None]
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    mask = torch.from_numpy(np.stack([s[1] for s in samples]))[:, None].float()
    normal = mask.flatten(1).amax(1) == 0
    tags = torch.tensor([s[2] for s in samples], dtype=torch.int64)
    if len(samples[0]) == 3:
        return Batch((x, mask, normal, tags))
    t_s, t_b = torch.cat([s[3] for s in samples]), torch.cat([s[4] for s in samples])
    return Batch((x, mask, normal, tags, t_s, t_b, torch.stack([s[5] for s in samples]),
                  torch.stack([s[6] for s in samples])))


class TrainingBatches(IterableDataset):
    """The batches of steps ``first_step + 1 .. last_step`` for one rank; with N workers, worker w makes the
    steps w, w + N, ... (the DataLoader hands them out in step order)."""

    def __init__(self, images: Sequence[np.ndarray], synthesis: SynthesisConfig, textures: Sequence[np.ndarray],
                 batch_size: int, seed: int, first_step: int, last_step: int, channels: int = 3,
                 draws: Draws | None = None, rank: int = 0, world: int = 1, size: int = 0):
        super().__init__()
        self.size = size  # > 0: random squares of this size from working images (make_sample)
        self.images, self.synthesis, self.textures = list(images), synthesis, list(textures)
        self.samples = shard(range(batch_size), rank, world)
        self.seed, self.first_step, self.last_step = seed, first_step, last_step
        self.channels, self.draws = channels, draws

    def batch(self, step: int, synth: AnomalySynthesizer | None = None) -> Batch:
        synth = synth or AnomalySynthesizer(self.synthesis, self.textures)
        samples = [make_sample(self.images, synth, self.draws, self.seed, step, j, self.size) for j in self.samples]
        return collate(samples, self.channels)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        synth = AnomalySynthesizer(self.synthesis, self.textures)
        for step in range(self.first_step + 1 + worker, self.last_step + 1, workers):
            yield self.batch(step, synth)


def square_size(config: ModelConfig) -> int:
    """``TrainingBatches``'s ``size`` for a model: its squares' size when it tiles working images, else 0."""
    return config.image_size if config.geometry.mode == "tiles" else 0


def default_workers(device: torch.device) -> int:
    """Worker processes when the run does not say: none on a CPU (they would take the cores the model trains
    on), up to 4 beside an accelerator."""
    if device.type == "cpu":
        return 0
    import os

    return max(0, min(4, (os.cpu_count() or 1) - 1))


def batch_loader(dataset: TrainingBatches, workers: int, device: torch.device) -> DataLoader:
    """The DataLoader over ``dataset``: ``workers`` processes (spawned: safe beside Qt's and torch's threads, and
    in a frozen bundle), two batches ahead each, pinned memory for a CUDA device."""
    kwargs: dict = {}
    if workers > 0:
        kwargs = {"multiprocessing_context": "spawn", "prefetch_factor": 2, "persistent_workers": False}
    return DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda", **kwargs)
