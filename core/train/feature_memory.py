"""The feature memory of the pretrained preset: built from the training images, and the calibration of its distance
(also for models saved before fused maps, which get the fused map without training)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from core.common.config import FeatureConfig, SynthesisConfig, replace
from core.common.geometry import overlap_px, squares
from core.model.checkpoint import (
    Checkpoint,
    CheckpointError,
)
from core.model.devices import to_tensor
from core.model.encoder import block_channels
from core.model.memory import Cancelled, greedy_coreset, nearest_distances, nearest_neighbors
from core.model.network import DiffusionAD
from core.train.data import TrainData, TrainingError
from core.train.validation import held_out_validation

MEMORY_POOL = 10  # greedy selection runs over at most this many candidates per memory entry (random subset)
SCALE_SAMPLE = 20000  # training patches whose leave-one-image-out distance sets the distance scale
DISTANCE_HIGH_QUANTILE = 0.99  # of normal patches' leave-one-image-out distances: the distance's probability is 0.5



def adopt_fusion(ckpt: Checkpoint, data: TrainData, fusion: str, textures: Sequence[np.ndarray] = (),
                 device: torch.device | str = "cpu") -> Checkpoint:
    """A ``pretrained``-preset model saved before fused maps (``fusion`` "none"), given the fused map ``fusion``
    without training: the distance calibrated on its training images (``data``: the same images and split it was
    trained with, uint8, in their order) and its validation figures and threshold computed anew for the new map.
    Weights, memory and step stay as they are."""
    cfg = ckpt.model_config
    if not cfg.features.enabled:
        raise TrainingError("only a model with a feature memory (the pretrained preset) has a distance to fuse")
    cfg = replace(cfg, features=replace(cfg.features, fusion=fusion))
    device = torch.device(device)
    model = DiffusionAD(cfg)
    missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    if unexpected or set(missing) - {"distance_high"}:
        raise CheckpointError(f"the model's weights do not match its architecture (missing {missing}, unexpected "
                              f"{unexpected})")
    model = model.to(device).eval()
    seed = ckpt.train_config.seed if ckpt.train_config else 0
    if "distance_high" in missing:
        high, _ = distance_calibration(model, data.train, seed, device)
        model.distance_high.fill_(max(high, 1.0 + 1e-3))
    metrics, threshold = dict(ckpt.metrics or {}), ckpt.threshold
    if data.val:
        synthesis = ckpt.train_config.synthesis if ckpt.train_config else SynthesisConfig()
        metrics, threshold = held_out_validation(model, data.val, device, synthesis, textures)
    return Checkpoint(model_config=cfg, state_dict={k: v.cpu() for k, v in model.state_dict().items()},
                      step=ckpt.step, train_config=ckpt.train_config, metrics=metrics, threshold=threshold,
                      info={**ckpt.info, "fusion_adopted_at_step": ckpt.step})


def leave_one_out_distances(model: DiffusionAD, patches: torch.Tensor, tags: torch.Tensor, sample: int,
                            generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Distances of ``sample`` random training patches [M, D] to the model's memory, each ignoring the entries
    of its own image (``tags`` [M]): how far a normal patch the memory has not seen lies. Zero distances
    (identical patches elsewhere: flat, saturated areas) are dropped."""
    pick = torch.randperm(len(patches), generator=generator)[:sample]
    d = nearest_distances(patches[pick].to(device), model.memory,
                          exclude=(model.memory_tags, tags[pick].to(device)))[:, 0]
    return d[torch.isfinite(d) & (d > 0)].cpu()


@torch.no_grad()
def distance_calibration(model: DiffusionAD, train_images: Sequence[np.ndarray], seed: int,
                         device: torch.device | str = "cpu") -> tuple[float, float]:
    """For a model whose memory was built before fused maps existed: the 99th percentile of its training patches'
    leave-one-image-out distances over their median (what training now stores as ``distance_high``), and that
    median over the stored ``distance_scale`` (about 1 when ``train_images`` are the model's training images,
    uint8, in their training order: the memory's tags index them)."""
    device = torch.device(device)
    feats = torch.cat([model.embed(to_tensor([im.astype(np.float32) / 255.0 for im in train_images[i:i + 8]], device,
                                             model.config.channels)).float().cpu()
                       for i in range(0, len(train_images), 8)])
    n, dim, h, w = feats.shape
    patches = feats.permute(0, 2, 3, 1).reshape(-1, dim)
    tags = torch.arange(n, dtype=torch.int32).repeat_interleave(h * w)
    d = leave_one_out_distances(model, patches, tags, SCALE_SAMPLE, torch.Generator().manual_seed(seed),
                                device)
    if not len(d):
        raise TrainingError("no training patch lies at a distance from the memory: nothing to calibrate")
    median = float(d.median())
    return float(torch.quantile(d.float(), DISTANCE_HIGH_QUANTILE)) / median, median / float(model.distance_scale)


def block_weights(patches: torch.Tensor, fc: FeatureConfig) -> torch.Tensor:
    """[D] weights that give each encoder block's channels the same total variance over ``patches`` [M, D]."""
    var = patches.float().var(0)
    weight = torch.empty_like(var)
    start = 0
    for block in fc.blocks:
        width = block_channels(block, fc.encoder)
        weight[start:start + width] = var[start:start + width].sum().clamp_min(1e-12).rsqrt()
        start += width
    return weight


def training_squares(model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device,
                     cancel: Callable[[], bool] | None = None,
                     ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """The patch features of training images (uint8 working images), 8 squares at a time: (images done, images,
    features [B, D, h, w] on the CPU, the index of each square's image [B]). A stretching model's images are its
    squares; a tiling model's are cut into them (``core.common.geometry.squares``); with ``memory_turns`` each square
    comes in its 8 flips and quarter turns."""
    cfg = model.config
    tiles = cfg.geometry.mode == "tiles"
    pending: list[tuple[np.ndarray, int]] = []
    for idx, im in enumerate(images):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        cut = squares(im, cfg.image_size, overlap_px(cfg.image_size, cfg.geometry))[0] if tiles else [im]
        if cfg.features.memory_turns:  # the 8 flips and quarter turns of each square
            cut = [np.rot90(t, k) for sq in cut for t in (sq, sq[:, ::-1]) for k in range(4)]
        pending.extend((np.ascontiguousarray(sq), idx) for sq in cut)
        while len(pending) >= 8 or (idx == len(images) - 1 and pending):
            batch, pending = pending[:8], pending[8:]
            x = to_tensor([sq.astype(np.float32) / 255.0 for sq, _ in batch], device, cfg.channels)
            yield idx + 1, len(images), model.embed(x).float().cpu(), torch.tensor([o for _, o in batch],
                                                                                    dtype=torch.int32)


@torch.no_grad()
def build_memory(model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device, seed: int,
                 keep_old: bool = False, cancel: Callable[[], bool] | None = None) -> Iterator[str]:
    """Fill the model's memory of normal patch features from the training images.

    Every training image's patch features are computed; a random pool of them is reduced by greedy
    coreset selection to ``memory_size`` entries, each tagged with its image (so a training image's
    distance ignores its own entries). The head's feature statistics and the distance scale (the median
    leave-one-image-out distance of training patches) are set here too. A fine-tuned model keeps its
    statistics and scale, and its old entries compete with the new images' for the memory's places.

    ``images`` are the training images (uint8); yields a message per stage. ``keep_old`` (fine-tuning): the
    model's old entries, statistics and scale stay in the competition.
    """
    fc = model.config.features
    model.eval()
    n = len(images)
    if n < 2:
        raise TrainingError("the feature memory needs at least 2 training images (a training image's distances "
                            "leave its own patches out)")
    feats, owners = [], []
    for done, total, batch, owner in training_squares(model, images, device, cancel):
        feats.append(batch)
        owners.append(owner)
        yield f"feature memory: {done} / {total} training images"
    f = torch.cat(feats)  # [squares, D, h, w]
    dim, per_image = f.shape[1], f.shape[2] * f.shape[3]
    patches = f.permute(0, 2, 3, 1).reshape(-1, dim)
    tags = torch.cat(owners).repeat_interleave(per_image)
    patches_raw = patches  # the head's statistics are of the features as they are
    if hasattr(model, "feature_weight") and not keep_old:  # a fine-tuned model keeps its weights with its memory
        model.feature_weight.copy_(block_weights(patches, fc))
    patches = model.weigh(patches)
    g = torch.Generator().manual_seed(seed)
    pool = min(len(patches), MEMORY_POOL * fc.memory_size)
    pick = torch.randperm(len(patches), generator=g)[:pool]
    if keep_old:
        # fine-tuning: every old entry competes with a random pool of the new images' patches. An old entry
        # that is a patch of one of these images (the same folder trained again) takes that image's tag, so
        # that the image's distances still leave it out
        old = model.memory.detach().float().cpu()
        old_tags = torch.full((len(old),), -1, dtype=torch.int32)
        d, idx = nearest_neighbors(old, patches)
        same = d[:, 0] <= 0.02 * float(model.distance_scale)  # the same patch, up to float rounding
        old_tags[same] = tags[idx[same, 0]]
        pick = torch.cat([torch.arange(len(old)), len(old) + pick[: max(pool - len(old), 0)]])
        patches = torch.cat([old, patches])
        tags = torch.cat([old_tags, tags])
        pool = len(pick)
    else:
        model.feature_mean.copy_(patches_raw.mean(0))
        model.feature_std.copy_(patches_raw.std(0).clamp_min(1e-3))
    size = min(fc.memory_size, pool)
    yield (f"feature memory: choosing {size} of {len(patches)} patch features")
    chosen = pick[greedy_coreset(patches[pick], size, seed=seed, cancel=cancel)]
    memory = torch.zeros_like(model.memory, device="cpu")
    memory_tags = torch.full_like(model.memory_tags, -1, device="cpu")
    memory[:size], memory_tags[:size] = patches[chosen], tags[chosen]
    if size < fc.memory_size:  # fewer patches than places: repeat them (duplicates change no distance)
        memory[size:] = memory[torch.arange(size, fc.memory_size) % size]
        memory_tags[size:] = memory_tags[torch.arange(size, fc.memory_size) % size]
    model.memory.copy_(memory)
    model.memory_tags.copy_(memory_tags)
    if not keep_old:
        d = leave_one_out_distances(model, patches, tags, SCALE_SAMPLE, g, device)
        scale = float(d.median()) if len(d) else 1.0
        model.distance_scale.fill_(scale)
        if hasattr(model, "distance_high"):  # the fused map's calibration: normal patches' 99th percentile
            high = float(torch.quantile(d.float(), DISTANCE_HIGH_QUANTILE)) / scale if len(d) else 2.0
            model.distance_high.fill_(max(high, 1.0 + 1e-3))
    yield (f"feature memory: {fc.memory_size} entries, distance scale {float(model.distance_scale):.3g}")
