"""The model files the apps open, and their identity read without running them (no Qt, no torch).

A checkpoint's identity is its JSON header (``core.common.modelfile.read_header``); an exported model's is its
``dad`` metadata document (``core.runtime.artifact``), read here straight from the file: from an ONNX file's
top-level ``metadata_props`` (its graph is skipped, not parsed), from an OpenVINO ``.xml``'s ``rt_info``. Opening
the model's runtime session for it would take a second or more; this takes milliseconds, so the registry may call
it on the GUI thread.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from core.common.modelfile import CheckpointError, is_exported, read_header
from core.runtime.artifact import META_KEY, parse

CHECKPOINT_SUFFIX = ".safetensors"
ALL_MODELS_FILTER = "Models (*.safetensors *.onnx *.xml)"
EXPORTED_FILTER = "Exported models (*.onnx *.xml)"
# ModelProto's field numbers (onnx.proto): metadata_props, and in each entry its key and value
_METADATA_PROPS, _KEY, _VALUE = 14, 1, 2


@dataclass
class ModelIdentity:
    """What the registry and the model list show of a model file, whatever its kind."""

    step: int = 0
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    exported: bool = False


def is_model_file(path: str | Path, exported_only: bool = False) -> bool:
    """Whether an app opens ``path`` (by its suffix): exported models, and checkpoints unless ``exported_only``."""
    return is_exported(path) or (not exported_only and Path(path).suffix.lower() == CHECKPOINT_SUFFIX)


def companions(path: str | Path) -> list[Path]:
    """The files a model is made of, the model file last: an OpenVINO ``.xml`` has its weights in the ``.bin``
    beside it."""
    path = Path(path)
    return [path.with_suffix(".bin"), path] if path.suffix.lower() == ".xml" else [path]


def model_identity(path: str | Path) -> ModelIdentity:
    """The identity of a checkpoint or an exported model; :class:`CheckpointError` naming the file and the reason."""
    path = Path(path)
    if not is_exported(path):
        header = read_header(path)
        threshold = header.get("threshold")
        return ModelIdentity(int(header.get("step", 0)), None if threshold is None else float(threshold),
                             dict(header.get("info") or {}), dict(header.get("metrics") or {}))
    _config, ident, _outputs = parse(exported_metadata(path), path)
    return ModelIdentity(ident.step, ident.threshold, ident.info, ident.metrics, exported=True)


def exported_metadata(path: str | Path) -> str | None:
    """The ``dad`` document of an exported model (None: it has none); :class:`CheckpointError` when the file cannot
    be read or is not of its kind."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".xml":
            return _openvino_metadata(path)
        with open(path, "rb") as fh:
            return _onnx_metadata(fh, path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _openvino_metadata(path: Path) -> str | None:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise CheckpointError(f"{path}: not an OpenVINO model (unreadable XML: {exc})") from None
    if root.tag != "net":
        raise CheckpointError(f"{path}: not an OpenVINO model (its root element is <{root.tag}>)")
    entry = root.find(f"rt_info/{META_KEY}")
    return None if entry is None else entry.get("value")


def _varint(fh: BinaryIO, path: Path) -> int:
    value = shift = 0
    while True:
        byte = fh.read(1)
        if not byte:
            raise CheckpointError(f"{path}: not an ONNX model, or truncated")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise CheckpointError(f"{path}: not an ONNX model (bad varint)")


def _fields(fh: BinaryIO, path: Path, end: int) -> Iterator[tuple[int, tuple[int, int] | None]]:
    """(field number, (offset, size) of a length-delimited field's payload, else None) of each protobuf field from
    where ``fh`` is up to ``end``; payloads are skipped, not read."""
    while fh.tell() < end:
        tag = _varint(fh, path)
        number, wire, span = tag >> 3, tag & 7, None
        if wire == 0:
            _varint(fh, path)
        elif wire in (1, 5):
            fh.seek(8 if wire == 1 else 4, 1)
        elif wire == 2:
            size = _varint(fh, path)
            span = (fh.tell(), size)
            if span[0] + size > end:
                raise CheckpointError(f"{path}: not an ONNX model, or truncated")
            fh.seek(size, 1)
        else:
            raise CheckpointError(f"{path}: not an ONNX model (protobuf wire type {wire})")
        yield number, span


def _payload(fh: BinaryIO, span: tuple[int, int]) -> bytes:
    here = fh.tell()
    fh.seek(span[0])
    data = fh.read(span[1])
    fh.seek(here)
    return data


def _onnx_metadata(fh: BinaryIO, path: Path) -> str | None:
    """The value under the key ``dad`` in the model's top-level metadata_props (the graph is skipped)."""
    end = fh.seek(0, 2)
    fh.seek(0)
    found = None
    for number, span in _fields(fh, path, end):
        if number == _METADATA_PROPS and span is not None:
            entry = io.BytesIO(_payload(fh, span))
            parts = {n: _payload(entry, s) for n, s in _fields(entry, path, span[1]) if s is not None}
            try:
                key, value = parts.get(_KEY, b"").decode("utf-8"), parts.get(_VALUE, b"").decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(f"{path}: unreadable ONNX metadata") from None
            if key == META_KEY:
                found = value
    return found
