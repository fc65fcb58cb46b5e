"""DiffusionAD engine: model, training, inference, metrics. Never imports Qt.

The package is laid out in layers, each importing only the ones below it (checked by the import-linter contracts
in ``pyproject.toml``): ``common`` (torch-free) < ``model`` < ``inference`` < ``train`` | ``station`` < ``cli``.
Names are loaded lazily, so ``import core`` costs nothing and ``core.X`` imports only what X needs.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

MAX_PIXELS = 100_000_000  # larger images are refused from their header, before decoding (core.common.images)
# OpenCV's own decoder limit as a second guard: read when cv2 loads, so set here, before any core module imports cv2
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

_EXPORTS = {
    "Checkpoint": "core.model.checkpoint", "CheckpointError": "core.model.checkpoint",
    "load_checkpoint": "core.model.checkpoint", "save_checkpoint": "core.model.checkpoint",
    **{name: "core.common.config" for name in (
        "DenoiserConfig", "DiffusionConfig", "ModelConfig", "SegmenterConfig", "SynthesisConfig", "TrainConfig")},
    "ImageReadError": "core.common.images", "read_image": "core.common.images",
    "FileResult": "core.common.results", "InspectionResult": "core.common.results",
    "Inspector": "core.inference.inspector",
    "PRESETS": "core.common.presets", "get_preset": "core.common.presets",
    "TrainData": "core.train.data", "TrainingError": "core.train.data", "TrainProgress": "core.train.data",
    "Trainer": "core.train.trainer",
}
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DenoiserConfig",
    "DiffusionConfig",
    "FileResult",
    "ImageReadError",
    "InspectionResult",
    "Inspector",
    "ModelConfig",
    "PRESETS",
    "SegmenterConfig",
    "SynthesisConfig",
    "TrainConfig",
    "TrainData",
    "TrainProgress",
    "Trainer",
    "TrainingError",
    "get_preset",
    "load_checkpoint",
    "read_image",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from core.common.config import (
        DenoiserConfig,
        DiffusionConfig,
        ModelConfig,
        SegmenterConfig,
        SynthesisConfig,
        TrainConfig,
    )
    from core.common.images import ImageReadError, read_image
    from core.common.presets import PRESETS, get_preset
    from core.common.results import FileResult, InspectionResult
    from core.inference.inspector import Inspector
    from core.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
    from core.train.data import TrainData, TrainingError, TrainProgress
    from core.train.trainer import Trainer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
