"""Inspection with a trained model: any image size, grey or colour, deterministic scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.common.results import InspectionResult
from core.inference.predict import ImageParts, predict_batch, predict_parts_batch
from core.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_weights
from core.model.devices import pick_device
from core.model.encoder import EncoderError
from core.model.network import DiffusionAD
from core.runtime.base import InspectorBase


class Inspector(InspectorBase):
    """Batched, deterministic inference with a trained model."""

    def __init__(self, model: DiffusionAD, device: torch.device, checkpoint: Checkpoint | None = None):
        self.model = model.eval()
        self.device = device
        self.checkpoint = checkpoint
        self.config = model.config
        self.threshold = checkpoint.threshold if checkpoint else None
        # False: results carry no reconstruction (None) where the score does not need one (a head that does not
        # see it): for callers that only judge (dad eval, dad infer without image outputs). Scores are the same
        self.reconstruct = True

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Inspector:
        ckpt = load_checkpoint(path)
        dev = pick_device(device)
        try:
            model = DiffusionAD(ckpt.model_config)
        except EncoderError as exc:  # a pretrained-preset model without its encoder's weights
            raise CheckpointError(f"{path}: cannot be used: {exc}") from None
        load_weights(model, ckpt, path)
        model = model.to(dev)
        if dev.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        ckpt.state_dict = {}  # weights live in the model now
        return cls(model, dev, ckpt)

    @property
    def device_text(self) -> str:
        from core.model.devices import device_name

        return device_name(self.device)

    def on_device(self, device: str | torch.device) -> Inspector:
        """A copy of this inspector on another device (this one keeps working meanwhile)."""
        dev = pick_device(str(device))
        if dev == self.device:
            return self
        model = DiffusionAD(self.config)  # built on the CPU; weights copied straight to the target device,
        model.load_state_dict({k: v.detach().to(dev) for k, v in self.model.state_dict().items()})  # no 2nd GPU copy
        model = model.to(dev)
        if dev.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        moved = Inspector(model, dev, self.checkpoint)
        moved.reconstruct = self.reconstruct
        return moved

    def predict(self, images: Sequence[np.ndarray], reconstruct: bool | None = None) -> list[InspectionResult]:
        if not images:
            return []
        recon, maps, scores = predict_batch(self.model, images, self.device,
                                            self.reconstruct if reconstruct is None else reconstruct)
        recons = recon if recon is not None else [None] * len(images)
        return [
            InspectionResult(float(s), r, m, im.shape[:2]) for s, r, m, im in zip(scores, recons, maps, images)
        ]

    def predict_parts(self, images: Sequence[np.ndarray], batch_size: int = 8,
                      high: float | None = None) -> ImageParts:
        """The parts of each image's map (``DiffusionAD.map_parts``) at the model's size, ``batch_size`` images at a
        time: the same resize, noise and code as :meth:`predict`, whose maps and scores they include. ``high``: the
        distance's calibration instead of the model's own (a model saved without one, or to try another)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not images:
            raise ValueError("no images to inspect")
        return ImageParts.concatenate([predict_parts_batch(self.model, images[i:i + batch_size], self.device, high)
                                       for i in range(0, len(images), batch_size)])
