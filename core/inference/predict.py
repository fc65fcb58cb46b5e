"""The one inference path: a batch of images through the model with the fixed noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from core.common.images import resize
from core.model.devices import fixed_noise, to_tensor
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
    """Float32 RGB images in [0, 1] of any size as the model takes them: resized to its size by the library's rule
    (``core.common.images.resize``), its channels, on ``device``."""
    size = model.config.image_size
    return to_tensor([im if im.shape[:2] == (size, size) else resize(im, size) for im in images], device,
                     model.config.channels)


def _rgb(recon: torch.Tensor) -> np.ndarray:
    out = recon.permute(0, 2, 3, 1).cpu().numpy()
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out  # a grey model's reconstruction, shown as RGB


@torch.inference_mode()
def predict_batch(
    model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reconstructions [N, S, S, 3], anomaly maps [N, S, S] and scores [N] of float32 RGB images in [0, 1]
    (any size; resized to the model's S), as one batch with the fixed noise. A grey model (``channels`` 1)
    sees every image as its luminance; its reconstruction comes back grey, in 3 equal channels.

    The one inference path: :class:`Inspector` and the trainer's validation and previews both go through it.
    """
    x = model_input(model, images, device)
    pred = model.eval()(x, *fixed_noise(model.noise_shape(x), device))
    return _rgb(pred.reconstruction), pred.anomaly_map[:, 0].cpu().numpy(), pred.score.cpu().numpy()


@torch.inference_mode()
def predict_parts_batch(
    model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device, high: float | None = None,
) -> ImageParts:
    """:func:`predict_batch` with the parts of each map (the same input, noise and code; ``high``: see
    ``DiffusionAD.map_parts``)."""
    x = model_input(model, images, device)
    parts: MapParts = model.eval().map_parts(x, *fixed_noise(model.noise_shape(x), device), high=high)

    def plane(t: torch.Tensor) -> np.ndarray:
        return t[:, 0].float().cpu().numpy()

    return ImageParts(_rgb(parts.reconstruction), plane(parts.head),
                      None if parts.distance is None else plane(parts.distance),
                      None if parts.patch_distance is None else plane(parts.patch_distance),
                      plane(parts.difference), plane(parts.anomaly_map), parts.score.cpu().numpy())
