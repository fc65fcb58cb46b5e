"""Timing helpers shared by ``dad presets --measure`` and the bench/ scripts."""

from __future__ import annotations

import time

import numpy as np
import torch

from core.inference.inspector import Inspector
from core.model.network import DiffusionAD


def time_inference(model: DiffusionAD, batch: int, repeats: int = 3, input_size: int = 256,
                   device: str = "cpu") -> float:
    """Best-of-``repeats`` ms per ``input_size``^2 RGB image for the whole pipeline at ``batch``."""
    dev = torch.device(device)
    model = model.to(dev)
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    insp = Inspector(model, dev)
    rng = np.random.default_rng(0)
    images = [rng.random((input_size, input_size, 3), dtype=np.float32) for _ in range(batch)]
    insp.predict(images)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        insp.predict(images)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 1000.0 * best / batch
