"""Devices, seeds, input tensors and the fixed inference noise, shared by training and inference."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from core.common.prepare import model_batch

NOISE_SEED = 20240131  # fixed inference noise: the same image always gets the same score


def pick_device(preference: str = "auto") -> torch.device:
    """cuda, then mps, then cpu (or exactly what ``preference`` names)."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def inference_device(preference: str = "auto", busy: str | None = None) -> torch.device:
    """Where inference should run while a training job uses ``busy``: one GPU job at a time, so
    inference falls back to the CPU when training holds the accelerator it would use."""
    dev = pick_device(preference)
    if busy and dev.type != "cpu" and torch.device(busy).type == dev.type:
        return torch.device("cpu")
    return dev


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model, or CPU)."""
    if device.type == "cuda":
        try:
            return f"GPU: {torch.cuda.get_device_name(device)}"
        except (RuntimeError, AssertionError):  # driver gone or CUDA not compiled in
            return f"GPU: {device}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_tensor(images: Sequence[np.ndarray], device: torch.device, channels: int = 3) -> torch.Tensor:
    """float32 RGB [H, W, 3] arrays -> [N, channels, H, W] tensor (channels_last on CPU). With ``channels`` 1
    (a grey model) each image enters as its luminance (Rec. 601, as the synthesis' grey test and sources)."""
    return batch_tensor(model_batch(images, channels), device)  # the shared pre-processing's channels


def batch_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A prepared batch [N, C, H, W] (``core.common.prepare``) on ``device`` (channels_last on the CPU)."""
    t = torch.from_numpy(x).to(device)
    return t.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else t.contiguous()


def fixed_noise(shape: torch.Size | tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The same (eps_s, eps_b) for every image of a batch, independent of batch composition."""
    g = torch.Generator().manual_seed(NOISE_SEED)
    one = (1, *shape[1:])
    ns, nb = torch.randn(one, generator=g), torch.randn(one, generator=g)
    n = shape[0]
    return ns.expand(n, *one[1:]).to(device), nb.expand(n, *one[1:]).to(device)
