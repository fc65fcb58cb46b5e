"""Self-describing checkpoints that load without executing code.

One ``.safetensors`` file holds the weights of both networks, optionally the optimizer
state (flattened to tensors), and a JSON header under the metadata key ``dad``: format
version, model and train configs, step, metrics, threshold and free-form info.
Files are written atomically: a temporary file in the same folder, fsync, then rename.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from core.common.config import FeatureConfig, GeometryConfig, ModelConfig, TrainConfig, from_dict, to_dict
from core.common.fileio import atomic_write_bytes
from core.common.modelfile import (  # noqa: F401 - torch-free, re-exported
    FORMAT_VERSION,
    META_KEY,
    CheckpointError,
    model_label,
    read_file_header,
    read_header,
)
from core.model.network import check_model_size


@dataclass
class Checkpoint:
    model_config: ModelConfig
    state_dict: dict[str, Tensor]
    step: int = 0
    train_config: TrainConfig | None = None
    optimizer: dict[str, Any] | None = None  # {"denoiser": state_dict, "segmenter": state_dict}
    metrics: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


# ---- optimizer state <-> flat tensors -------------------------------------------------------
def _flatten_optimizer(name: str, state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{name}.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, sub = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[sub] = value
    for key, value in meta.get("scalars", {}).items():
        pid, sub = key.split(".", 1)
        state.setdefault(int(pid), {})[sub] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def to_bytes(ckpt: Checkpoint) -> bytes:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    optim_meta = {}
    for name, state in (ckpt.optimizer or {}).items():
        t, m = _flatten_optimizer(name, state)
        tensors.update(t)
        optim_meta[name] = m
    header = {
        "format_version": FORMAT_VERSION,
        "model_config": _model_config_dict(ckpt.model_config),
        "train_config": _train_config_dict(ckpt.train_config) if ckpt.train_config else None,
        "step": ckpt.step,
        "metrics": ckpt.metrics,
        "threshold": ckpt.threshold,
        "info": ckpt.info,
        "optimizer": optim_meta,
    }
    return st_save(tensors, metadata={META_KEY: json.dumps(header)})


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> None:
    """Atomically write ``ckpt`` to ``path`` (a failed write leaves any previous file intact)."""
    try:
        atomic_write_bytes(path, to_bytes(ckpt))
    except OSError as exc:
        raise CheckpointError(f"{path}: could not write checkpoint ({exc.strerror or exc})") from exc


def _model_config_dict(cfg: ModelConfig) -> dict:
    """``input_max`` is written only when it is not the 8-bit default, so that builds from before it existed still
    open 8-bit models, and refuse (unknown key) a model whose images they would scale wrongly. For the same
    reason a model without encoder features (``paper``, ``fast``) is written without ``features`` and
    ``denoiser_size``, and the encoder's ``encoder``, ``input_scaling``, ``block_weighting``, ``memory_turns`` and
    ``head_reconstruction`` only when they are not lite0, imagenet, none, false and true; ``score_area``,
    ``geometry`` and the diffusion's ``train_t_small_from`` and ``train_t_big_to`` likewise only when not their
    defaults."""
    data = to_dict(cfg)
    if data.get("input_max") == ModelConfig.input_max:
        data.pop("input_max")
    features = data.get("features", {})
    for name, default in (("encoder", FeatureConfig.encoder), ("input_scaling", FeatureConfig.input_scaling),
                          ("block_weighting", FeatureConfig.block_weighting),
                          ("memory_turns", FeatureConfig.memory_turns),
                          ("head_reconstruction", FeatureConfig.head_reconstruction)):
        if features.get(name) == default:
            features.pop(name)
    for name in ("train_t_small_from", "train_t_big_to"):
        if not data["diffusion"].get(name):
            data["diffusion"].pop(name, None)
    if data.get("score_area") == ModelConfig.score_area:
        data.pop("score_area")
    if cfg.geometry == GeometryConfig():
        data.pop("geometry", None)
    if not cfg.features.enabled:
        data.pop("features", None)
        if not cfg.denoiser_size:
            data.pop("denoiser_size", None)
    return data


def _train_config_dict(cfg: TrainConfig) -> dict:
    """``micro_batch`` (a memory setting, not part of the maths) and ``denoiser_crop`` are written only when used, so
    that builds from before them still open checkpoints trained without them."""
    data = to_dict(cfg)
    for name in ("micro_batch", "denoiser_crop"):
        if not data.get(name):
            data.pop(name, None)
    return data


def load_checkpoint(path: str | Path, with_optimizer: bool = False) -> Checkpoint:
    """Load a checkpoint without executing code; raises :class:`CheckpointError` with the reason."""
    header, tensors = _load(Path(path), header_only=False)
    try:
        model_config = from_dict(ModelConfig, header["model_config"])
        train_config = from_dict(TrainConfig, header["train_config"]) if header.get("train_config") else None
        check_model_size(model_config)  # before any weight is allocated
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid configuration in checkpoint ({exc})") from exc
    _check_header_values(header, path)
    _check_finite(tensors, path)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = None
    if with_optimizer and header.get("optimizer"):
        optimizer = {n: _unflatten_optimizer(n, tensors, m) for n, m in header["optimizer"].items()}
    return Checkpoint(
        model_config=model_config, state_dict=state, step=int(header.get("step", 0)),
        train_config=train_config, optimizer=optimizer, metrics=dict(header.get("metrics") or {}),
        threshold=None if header.get("threshold") is None else float(header["threshold"]),
        info=dict(header.get("info") or {}),
    )


def _check_finite(tensors: dict[str, Tensor], path: str | Path) -> None:
    """Refuse a checkpoint with a NaN or infinite value in any tensor (a half-written or edited file, an fp16
    overflow): such a model gives non-finite scores, which no verdict may come from. Names the first such tensor."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            shown = name[len("model."):] if name.startswith("model.") else name
            raise CheckpointError(f"{path}: refused: tensor {shown} holds {bad} non-finite value"
                                  f"{'s' if bad > 1 else ''} (NaN or infinity) of {tensor.numel()}; the file is "
                                  "damaged or the model diverged")


def _check_header_values(header: dict[str, Any], path: str | Path) -> None:
    """The header's values besides the configs: a NaN threshold would pass every image as OK."""
    threshold = header.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not math.isfinite(threshold)):
        raise CheckpointError(f"{path}: invalid threshold in checkpoint ({threshold!r}; expected a finite number)")
    step = header.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: invalid step in checkpoint ({step!r}; expected an integer of 0 or more)")
    for key in ("metrics", "info", "optimizer"):
        if not isinstance(header.get(key) or {}, dict):
            raise CheckpointError(f"{path}: invalid {key} in checkpoint (expected a mapping)")


def _load(path: Path, header_only: bool) -> tuple[dict[str, Any], dict[str, Tensor]]:
    header, data = read_file_header(path)
    if header_only:
        return header, {}
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is damaged or truncated ({exc})") from None
    return header, tensors


def load_weights(model: torch.nn.Module, ckpt: Checkpoint, path: str | Path = "checkpoint") -> None:
    """Load weights strictly; a shape or key mismatch becomes a :class:`CheckpointError`."""
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(first[:2])[:300]
        raise CheckpointError(f"{path}: weights do not match the model architecture ({detail})") from None


def export_for_inference(src: str | Path, dst: str | Path, half: bool = True) -> None:
    """Copy a checkpoint without its optimizer state, float weights stored as float16 if ``half``.

    Float16 storage halves the file; weights are cast back to float32 when loaded.
    """
    ckpt = load_checkpoint(src)
    if half:
        ckpt.state_dict = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    ckpt.optimizer = None
    save_checkpoint(ckpt, dst)
