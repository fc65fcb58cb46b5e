"""Open any model file as an inspector: a checkpoint with torch, an exported model with its runtime."""

from __future__ import annotations

import importlib
from pathlib import Path

from core.common.modelfile import CheckpointError, is_exported
from core.runtime.base import InspectorBase


def torch_available() -> bool:
    """Whether this installation can run checkpoints (the full application; the line application cannot)."""
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def open_inspector(path: str | Path, device: str = "auto") -> InspectorBase:
    """The inspector of the model in ``path``: ``.onnx`` and OpenVINO's ``.xml`` run on their runtime (the CPU),
    anything else is loaded as a checkpoint on ``device``. :class:`CheckpointError` with the reason otherwise."""
    if is_exported(path):
        if device not in ("auto", "cpu"):
            raise CheckpointError(f"{path}: exported models run on the CPU here, not on {device}; use --device cpu "
                                  "or the checkpoint it was exported from")
        from core.runtime.exported import ExportedInspector

        return ExportedInspector(path)
    if not torch_available():
        raise CheckpointError(f"{path}: a training checkpoint needs the full application (with torch). Export it "
                              "there with `dad export MODEL.safetensors MODEL.onnx` and open the .onnx here")
    # the one upward edge of core.runtime: checkpoints are the torch layer's (core.inference), loaded only here
    inspector = importlib.import_module("core.inference.inspector").Inspector
    return inspector.from_checkpoint(path, device=device)
