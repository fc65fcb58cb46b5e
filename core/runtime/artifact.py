"""What an exported model carries besides its graph: one JSON document, the same in every format.

ONNX keeps it in the model's ``metadata_props`` under the key ``dad``; OpenVINO IR in its ``rt_info`` under
``dad``. It holds the model's configuration (the pre-processing reads its geometry, size, channels and input range
from it, exactly as from a checkpoint), the threshold, the model's identity (source file name, its SHA-256, the
training step) and what the graph's input and outputs are. A document of another kind or a newer version is
refused, as checkpoints are. Torch-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from core.common.config import ModelConfig, from_dict
from core.common.modelfile import CheckpointError

KIND = "diffusionad-inspector exported model"
VERSION = 1
META_KEY = "dad"
INPUT = "image"  # [N, C, S, S] float32 in [0, 1]: core.common.prepare.prepare's output
# every output a graph may have: [N] scores, [N, 1, S, S] maps, [N, 1, S/8, S/8] patch distances, [N, C, S, S]
# reconstructions; "distance" and "patch_distance" only for a model with the encoder's memory (and its calibration)
OUTPUTS = ("score", "anomaly_map", "head", "distance", "patch_distance", "difference", "reconstruction")
RECONSTRUCTION_OUTPUTS = ("difference", "reconstruction")  # the only ones that need the denoiser's pass


@dataclass
class ExportedInfo:
    """An exported model's identity, shaped like a checkpoint's for the callers that show or log it."""

    step: int
    threshold: float | None
    source_name: str
    source_sha256: str
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def metadata(model_config: dict[str, Any], *, step: int, threshold: float | None, source_name: str,
             source_sha256: str, outputs: list[str], info: dict[str, Any], metrics: dict[str, float],
             versions: dict[str, str], noise_seed: int) -> str:
    """The JSON document an exported model carries (``model_config`` as a checkpoint's header holds it)."""
    return json.dumps({
        "kind": KIND, "version": VERSION, "model_config": model_config, "step": step, "threshold": threshold,
        "source": {"name": source_name, "sha256": source_sha256}, "info": info, "metrics": metrics,
        "input": {"name": INPUT, "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
                  "prepared_by": "core.common.prepare.prepare"},
        "outputs": outputs, "noise_seed": noise_seed, "versions": versions,
    }, sort_keys=True)


def parse(text: str | None, path: Any) -> tuple[ModelConfig, ExportedInfo, list[str]]:
    """The model's configuration, identity and graph outputs from its document; :class:`CheckpointError` naming
    ``path`` and the reason when it is missing, of another kind, newer than this program, or inconsistent."""
    if not text:
        raise CheckpointError(f"{path}: not a DiffusionAD Inspector model (no '{META_KEY}' metadata); export one "
                              "with `dad export`")
    try:
        doc = json.loads(text)
    except ValueError:
        raise CheckpointError(f"{path}: unreadable '{META_KEY}' metadata") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise CheckpointError(f"{path}: not a DiffusionAD Inspector model (its metadata is of another kind)")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: exported model version {version} is newer than this program supports "
                              f"({VERSION}); update the application")
    try:
        config = from_dict(ModelConfig, doc["model_config"])
        threshold = doc.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not math.isfinite(float(threshold))):
            raise ValueError(f"threshold {threshold!r} is not a finite number")
        source = doc.get("source") or {}
        identity = ExportedInfo(int(doc.get("step", 0)), None if threshold is None else float(threshold),
                                str(source.get("name", "?")), str(source.get("sha256", "")),
                                dict(doc.get("info") or {}), dict(doc.get("metrics") or {}))
        outputs = [str(o) for o in doc["outputs"]]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid metadata in exported model ({exc})") from None
    missing = {"score", "anomaly_map", "head"} - set(outputs)
    if missing or not set(outputs) <= set(OUTPUTS):
        raise CheckpointError(f"{path}: the exported graph's outputs {outputs} are not those this program reads")
    return config, identity, outputs
