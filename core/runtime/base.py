"""What every inspector does around its network, torch or exported: the result policy and reading files.

:class:`InspectorBase` holds the verdict-giving code that every caller goes through (``dad infer``, ``dad eval``,
``dad watch``, the app, the station): :meth:`judge` and :meth:`inspect_files`. A subclass only says how a batch of
images becomes results (:meth:`predict`): ``core.inference.inspector.Inspector`` with the torch model,
``core.runtime.exported.ExportedInspector`` with an exported one. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.common.config import ModelConfig
from core.common.images import ImageReadError, read_image
from core.common.results import FileResult, InspectionResult, Judged, unusable


class InspectorBase:
    """Batched, deterministic inspection; subclasses implement :meth:`predict`.

    ``config``: the model's ``ModelConfig``; ``threshold``: its decision threshold (None: not set);
    ``checkpoint``: where the model came from (``step``, ``info``, ``threshold``); ``device``: where it runs;
    ``reconstruct``: False makes results carry no reconstruction (None) where the score does not need one, for
    callers that only judge (dad eval, dad infer without image outputs). Scores are the same either way.
    """

    config: ModelConfig
    threshold: float | None
    checkpoint: Any
    device: Any
    reconstruct: bool = True

    def predict(self, images: Sequence[np.ndarray], reconstruct: bool | None = None) -> list[InspectionResult]:
        """Inspect float32 RGB [H, W, 3] images in [0, 1] of any size, as one batch. ``reconstruct``: this call's
        choice instead of the inspector's ``reconstruct`` (a caller sharing the inspector across threads)."""
        raise NotImplementedError

    def on_device(self, device: Any) -> InspectorBase:
        """This inspector on another device (itself where it cannot move)."""
        return self

    @property
    def device_text(self) -> str:
        """Where inspection runs, for people (e.g. "CPU (2 threads)", "GPU: ...", "ONNX Runtime, CPU")."""
        return str(self.device)

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
