"""Files written so that a crash leaves the old file or the new one, never a part: atomic writes and folder syncs."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new hidden temporary file beside ``path``, open for writing.

    Created with mode 0666 so the kernel applies the umask, the usual mode of a new file, like ``open``
    does (``mkstemp`` would make it 0600, and reading the umask means setting it, which races other threads).
    """
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part: a temporary file
    beside it, synced, renamed over it, then the folder synced, so that after a power cut the name holds the new
    file (without that sync a new name can be lost, or point at the old file, after the rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    sync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sync_folder(folder: str | Path) -> None:
    """Make a new or renamed file's name durable (POSIX; elsewhere, where a folder cannot be opened, a no-op)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
