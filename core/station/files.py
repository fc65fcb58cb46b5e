"""Files the station judges: whether one is complete, moving or copying it safely."""

from __future__ import annotations

import os
from pathlib import Path

from core.common.fileio import atomic_write_bytes


def unfinished(path: str | Path, size: int) -> str | None:
    """Why a file looks cut short (its format's end is missing), or None: PNG, JPEG, BMP and WebP say where they
    end; other formats are left to the decoder."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            fh.seek(max(0, size - 64))
            tail = fh.read(64)
    except OSError:
        return None  # the decoder says why
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if tail.endswith(b"IEND\xaeB`\x82") else "PNG without its end (IEND chunk)"
    if head.startswith(b"\xff\xd8"):
        return None if tail.rstrip(b"\x00").endswith(b"\xff\xd9") else "JPEG without its end marker"
    if head[:2] == b"BM" and len(head) >= 6:
        need = int.from_bytes(head[2:6], "little")
        return None if size >= need else f"BMP shorter than its header says ({size} of {need} bytes)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        need = int.from_bytes(head[4:8], "little") + 8
        return None if size >= need else f"WebP shorter than its header says ({size} of {need} bytes)"
    return None


def place(src: Path, dst: Path, move: bool) -> None:
    """Copy or move ``src`` to ``dst`` (a free name) so that no crash loses the file: ``dst`` appears whole
    (written to a temporary name, synced, renamed) before ``src`` is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        try:
            os.replace(src, dst)  # one file system: atomic
            return
        except OSError:
            pass  # another file system (or a share that refuses renames): copy, then remove
    atomic_write_bytes(dst, src.read_bytes())
    if move:
        src.unlink()


def file_signature(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it cannot be seen."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def real_path(path: str) -> str:
    """A folder's path with links resolved, in the case the file system compares names in."""
    return os.path.normcase(os.path.realpath(path))
