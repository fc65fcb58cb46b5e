"""DiffusionAD engine: model, training, inference, metrics. Never imports Qt."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import DenoiserConfig, DiffusionConfig, ModelConfig, SegmenterConfig, SynthesisConfig, TrainConfig
from .data import ImageReadError, read_image
from .inference import FileResult, InspectionResult, Inspector
from .presets import PRESETS, get_preset
from .training import TrainData, Trainer, TrainingError, TrainProgress

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "DenoiserConfig", "DiffusionConfig", "ModelConfig", "SegmenterConfig", "SynthesisConfig", "TrainConfig",
    "ImageReadError", "read_image", "FileResult", "InspectionResult", "Inspector", "PRESETS", "get_preset",
    "TrainData", "Trainer", "TrainingError", "TrainProgress",
]
