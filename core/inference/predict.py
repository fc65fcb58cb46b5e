"""The one inference path: a batch of images through the model with the fixed noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from core.common.images import resize
from core.model.devices import fixed_noise, to_tensor
from core.model.network import DiffusionAD


@torch.inference_mode()
def predict_batch(
    model: DiffusionAD, images: Sequence[np.ndarray], device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reconstructions [N, S, S, 3], anomaly maps [N, S, S] and scores [N] of float32 RGB images in [0, 1]
    (any size; resized to the model's S), as one batch with the fixed noise. A grey model (``channels`` 1)
    sees every image as its luminance; its reconstruction comes back grey, in 3 equal channels.

    The one inference path: :class:`Inspector` and the trainer's validation and previews both go through it.
    """
    size = model.config.image_size
    x = to_tensor([im if im.shape[:2] == (size, size) else resize(im, size) for im in images], device,
                  model.config.channels)
    ns, nb = fixed_noise(model.noise_shape(x), device)
    pred = model.eval()(x, ns, nb)
    recon = pred.reconstruction.permute(0, 2, 3, 1).cpu().numpy()
    if recon.shape[-1] == 1:  # a grey model's reconstruction, shown as RGB
        recon = np.repeat(recon, 3, axis=-1)
    return recon, pred.anomaly_map[:, 0].cpu().numpy(), pred.score.cpu().numpy()
