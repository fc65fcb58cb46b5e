"""The one inference path: a batch of images through the model with the fixed noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch

from core.common.geometry import to_working
from core.common.prepare import PLANES, SQUARES_PER_RUN, Stitched, as_rgb, finish, prepare, prepare_working
from core.model.devices import batch_tensor, fixed_noise
from core.model.network import DiffusionAD, MapParts


class ImageParts(NamedTuple):
    """The anomaly map's parts of N images at the model's size S (``DiffusionAD.map_parts``), as arrays.

    ``distance`` and ``patch_distance`` are None for a model without the pretrained encoder's memory (and
    ``distance`` for one saved without the distance's calibration, unless one is given).
    """

    reconstruction: np.ndarray  # [N, S, S, 3] in [0, 1] (a grey model's in 3 equal channels)
    head: np.ndarray  # [N, S, S] the segmentation head's probability
    distance: np.ndarray | None  # [N, S, S] the memory distance's probability (smoothed, calibrated)
    patch_distance: np.ndarray | None  # [N, h, w] each patch's distance to the memory, over the typical one
    difference: np.ndarray  # [N, S, S] |image - reconstruction|, mean over the channels
    anomaly_map: np.ndarray  # [N, S, S] the shown map, as Inspector.predict gives it
    score: np.ndarray  # [N] the image score, as Inspector.predict gives it

    @classmethod
    def concatenate(cls, batches: Sequence[ImageParts]) -> ImageParts:
        joined = [None if field[0] is None else np.concatenate(field) for field in zip(*batches)]
        return cls(*joined)  # type: ignore[arg-type]  # None only where every batch has None (no memory)


def model_input(model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Float32 RGB images in [0, 1] of any size as a stretching model takes them: the shared pre-processing
    (``core.common.prepare``), on ``device``."""
    return batch_tensor(prepare(images, model.config).x, device)


def tiled(model: DiffusionAD) -> bool:
    return model.config.geometry.mode == "tiles"


def _stitched_parts(model: DiffusionAD, works: Sequence[np.ndarray], device: torch.device,
                    high: float | None, reconstruct: bool = True) -> list[Stitched]:
    """Per working image, its stitched parts (``core.common.prepare.finish``): every square of every image goes
    through ``map_parts`` (batches of at least ``SQUARES_PER_RUN`` squares), and each image's squares are blended
    back, joined and scored by the shared post-processing."""
    prep = prepare_working(works, model.config)
    chunk = max(SQUARES_PER_RUN, len(works))
    planes: list[list[np.ndarray | None]] = []
    for i in range(0, len(prep.x), chunk):
        x = batch_tensor(prep.x[i:i + chunk], device)
        p: MapParts = model.map_parts(x, *fixed_noise(model.noise_shape(x), device), high=high,
                                      reconstruct=reconstruct)
        planes.append([_rgb(p.reconstruction)] + [None if t is None else t[:, 0].float().cpu().numpy()
                                                  for t in (p.head, p.distance, p.patch_distance, p.difference)])
    joined = [None if col[0] is None else np.concatenate(col) for col in zip(*planes)]
    assert prep.layouts is not None
    return finish(model.config, prep.layouts, dict(zip(PLANES, joined)))


def _rgb(recon: torch.Tensor | None) -> np.ndarray | None:
    if recon is None:
        return None
    return as_rgb(recon.float().cpu().numpy())  # a grey model's reconstruction, shown as RGB


@torch.inference_mode()
def predict_batch(
    model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device, reconstruct: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Reconstructions [N, S, S, 3], anomaly maps [N, S, S] and scores [N] of float32 RGB images in [0, 1]
    (any size; resized to the model's S), as one batch with the fixed noise. A grey model (``channels`` 1)
    sees every image as its luminance; its reconstruction comes back grey, in 3 equal channels.
    ``reconstruct`` False: no reconstructions (None) where the maps do not need them; maps and scores the same.

    The one inference path: :class:`Inspector` and the trainer's validation and previews both go through it.
    """
    if tiled(model):  # maps at each image's working geometry, so lists of arrays of different shapes
        cfg = model.config
        works = [to_working(im, cfg.image_size, cfg.geometry) for im in images]
        per = _stitched_parts(model.eval(), works, device, None, reconstruct)
        recons = [p.reconstruction for p in per] if per[0].reconstruction is not None else None
        return recons, [p.anomaly_map for p in per], np.array([p.score for p in per], np.float32)  # type: ignore
    x = model_input(model, images, device)
    pred = model.eval()(x, *fixed_noise(model.noise_shape(x), device), reconstruct=reconstruct)
    return _rgb(pred.reconstruction), pred.anomaly_map[:, 0].cpu().numpy(), pred.score.cpu().numpy()


@torch.inference_mode()
def predict_parts_batch(
    model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device, high: float | None = None,
) -> ImageParts:
    """:func:`predict_batch` with the parts of each map (the same input, noise and code; ``high``: see
    ``DiffusionAD.map_parts``). A tiling model's stitched parts are resized to S x S (its score is the stitched
    map's)."""
    if tiled(model):
        return _tiled_parts(model, images, device, high)
    x = model_input(model, images, device)
    parts: MapParts = model.eval().map_parts(x, *fixed_noise(model.noise_shape(x), device), high=high)

    def plane(t: torch.Tensor) -> np.ndarray:
        return t[:, 0].float().cpu().numpy()

    return ImageParts(_rgb(parts.reconstruction), plane(parts.head),
                      None if parts.distance is None else plane(parts.distance),
                      None if parts.patch_distance is None else plane(parts.patch_distance),
                      plane(parts.difference), plane(parts.anomaly_map), parts.score.cpu().numpy())


def _column(per: list[Stitched], name: str, size: int) -> np.ndarray | None:
    """Part ``name`` of every image's stitched parts (:func:`_stitched_parts`), each resized to ``size`` x
    ``size``, stacked; None where the model has no such part."""
    if getattr(per[0], name) is None:
        return None
    return np.stack([a if a.shape[:2] == (size, size) else cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)
                     for a in (getattr(p, name) for p in per)])


def _tiled_parts(model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device,
                 high: float | None) -> ImageParts:
    cfg = model.config
    size = cfg.image_size
    per = _stitched_parts(model.eval(), [to_working(im, size, cfg.geometry) for im in images], device, high)
    return ImageParts(_column(per, "reconstruction", size), _column(per, "head", size),  # type: ignore[arg-type]
                      _column(per, "distance", size), _column(per, "patch_distance", size // 8),
                      _column(per, "difference", size), _column(per, "anomaly_map", size),  # type: ignore[arg-type]
                      np.array([p.score for p in per], np.float32))


@torch.inference_mode()
def predict_working(model: DiffusionAD, works: Sequence[np.ndarray], device: torch.device,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`predict_batch` of working images (training's held-out and preview images, already at the model's
    geometry: ``core.common.geometry.to_working``), as arrays: a tiling model's stitched reconstructions and maps
    are resized to S x S, its scores are the stitched maps'."""
    if not tiled(model):
        return predict_batch(model, works, device)
    size = model.config.image_size
    per = _stitched_parts(model.eval(), works, device, None)
    return (_column(per, "reconstruction", size), _column(per, "anomaly_map", size),  # type: ignore[return-value]
            np.array([p.score for p in per], np.float32))
