"""Inspection with a trained model: any image size, grey or colour, deterministic scores."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from core.common.images import ImageReadError, read_image
from core.common.results import FileResult, InspectionResult, Judged, unusable
from core.inference.predict import ImageParts, predict_batch, predict_parts_batch
from core.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_weights
from core.model.devices import pick_device
from core.model.encoder import EncoderError
from core.model.network import DiffusionAD


class Inspector:
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
        """Inspect float32 RGB [H, W, 3] images in [0, 1] of any size, as one batch. ``reconstruct``: this call's
        choice instead of the inspector's ``reconstruct`` (a caller sharing the inspector across threads)."""
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

    def read_image(self, path: str | Path) -> np.ndarray:
        """An image file as this model sees it: float32 RGB in [0, 1], scaled by the model's input range."""
        return read_image(path, self.config.input_max)

    def judge(self, images: Sequence[np.ndarray], reconstruct: bool | None = None) -> list[Judged]:
        """The result policy, used by every caller that gives a verdict (``dad infer``, ``dad eval``, the app, the
        station, the self-test): one ``(result, None)`` or ``(None, reason)`` per image, in order.

        The images go as one batch; a batch that fails (e.g. out of memory) is retried image by image, so that one
        failure is one error. A result whose score or map is not finite is an error with its reason, never a result:
        compared with a threshold it would pass the part as OK.
        """
        if not images:
            return []
        try:
            results = self.predict(images, reconstruct)
        except (RuntimeError, ValueError) as exc:
            if len(images) > 1:
                return [pair for image in images for pair in self.judge([image], reconstruct)]
            return [(None, f"inference failed: {exc}")]
        judged: list[Judged] = []
        for r in results:
            reason = unusable(r.score, r.anomaly_map)
            judged.append((None, reason) if reason else (r, None))
        return judged

    def predict_many(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[InspectionResult]:
        """:meth:`predict` over any number of images, ``batch_size`` at a time (bounded memory)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        return [r for i in range(0, len(images), batch_size) for r in self.predict(images[i:i + batch_size])]

    def inspect_files(
        self, paths: Sequence[str | Path], batch_size: int = 8, cancel: Callable[[], bool] | None = None,
        reconstruct: bool | None = None,
    ) -> Iterator[FileResult]:
        """Yield one :class:`FileResult` per path, in order: unreadable files, and images the model gives no usable
        result for (:meth:`judge`), become errors with their reason. ``reconstruct``: as in :meth:`predict`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        pending: list[tuple[Path, np.ndarray | None, str | None]] = []

        def flush() -> list[FileResult]:
            judged = iter(self.judge([im for _, im, _ in pending if im is not None], reconstruct))
            out = []
            for path, im, err in pending:
                result, reason = (None, err) if im is None else next(judged)
                out.append(FileResult(path, result, reason))
            pending.clear()
            return out

        n_images = 0
        for path in paths:
            if cancel is not None and cancel():
                return
            try:
                pending.append((Path(path), self.read_image(path), None))
                n_images += 1
            except ImageReadError as err:
                pending.append((Path(path), None, err.reason))
            if n_images >= batch_size or len(pending) >= 4 * batch_size:
                yield from flush()
                n_images = 0
        if pending:
            yield from flush()
