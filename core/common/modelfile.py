"""Model files without torch: the checkpoint header, the error every model file raises, and a model's label.

A checkpoint (``.safetensors``, ``core.model.checkpoint``) holds a JSON header under the metadata key ``dad``; an
exported model (``.onnx``, or OpenVINO's ``.xml`` + ``.bin``, ``core.export``) holds the same identity in its own
metadata. Both are read here without importing torch, for the registry, the line application and the CLI.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
META_KEY = "dad"
EXPORTED_SUFFIXES = (".onnx", ".xml")  # exported models: ONNX, and OpenVINO IR (its .bin beside the .xml)


class CheckpointError(Exception):
    """A model file could not be used; the message names the file and the reason."""


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (by its suffix) rather than a checkpoint."""
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


def _sniff(path: Path, head: bytes) -> str | None:
    """Name the file type when it is clearly not safetensors."""
    if head[:2] == b"PK":
        return "a zip archive (e.g. a torch.save file, which holds a pickle)"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}", b"c"):
        return "a Python pickle, which could run code when loaded"
    return None


def read_header(path: str | Path) -> dict[str, Any]:
    """Read and validate only the JSON header of a checkpoint (fast; for registries and listings)."""
    return read_file_header(Path(path))[0]


def read_file_header(path: Path) -> tuple[dict[str, Any], bytes]:
    """A checkpoint's validated header and the file's bytes; :class:`CheckpointError` with the reason."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header_len = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    looks_safetensors = 0 < header_len <= len(data) - 8 and data[8:9] == b"{"
    if not looks_safetensors:
        kind = _sniff(path, data[:8])
        if kind:
            raise CheckpointError(f"{path}: refused: the file is {kind}; only .safetensors checkpoints are loaded")
        if len(data) < 8:
            raise CheckpointError(f"{path}: not a checkpoint (file too short)")
        raise CheckpointError(f"{path}: not a checkpoint, or truncated (bad safetensors header)")
    try:
        meta_json = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}).get(META_KEY)
        header = json.loads(meta_json) if meta_json else None
    except (ValueError, AttributeError):
        raise CheckpointError(f"{path}: not a checkpoint (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path}: a safetensors file, but not a DiffusionAD checkpoint (no '{META_KEY}' metadata)")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this program supports "
            f"({FORMAT_VERSION}); update the application"
        )
    return header, data


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_label(path: str | Path, checkpoint: Any = None) -> str:
    """A model's name in every results file (the ``model`` column): its file name, training step and the start of
    the file's SHA-256, e.g. ``last.safetensors step 4000 sha256 0123456789ab``. Reads the whole file.
    ``checkpoint``: anything with the model's ``step`` (a ``Checkpoint``, an exported model's identity)."""
    step = f" step {checkpoint.step}" if checkpoint is not None else ""
    return f"{Path(path).name}{step} sha256 {file_sha256(path)[:12]}"
