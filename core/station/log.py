"""The station's audit log: append-only CSV lines, synced one by one; one station per log (a lock)."""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from core.common.fileio import atomic_write_bytes
from core.common.results_csv import RESULT_COLUMNS

COLUMNS = ["time", *RESULT_COLUMNS, "moved_to", "copied_to"]  # the shared result columns, between when and where
VERDICTS = ("OK", "NG", "ERROR")
MODEL_ROW = "MODEL"  # the verdict column of a line that records a new model or threshold


class StationError(Exception):
    """The station cannot start or go on; the message names the file or folder and the reason."""


def local_now() -> datetime:
    return datetime.now().astimezone()


def one_line(text: str) -> str:
    """A field without line breaks: every log line is one record, so a cut tail is exactly one line."""
    return text.replace("\r", " ").replace("\n", " ")


class LogLock:
    """An exclusive lock on ``path`` while the station runs (released by the system when the process dies)."""

    def __init__(self, path: Path, log: Path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a+b")  # noqa: SIM115 (closed by release())
        except OSError as exc:
            raise StationError(f"{log}: cannot be used ({exc.strerror or exc})") from None
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(self._fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise StationError(f"{log}: another station is writing this log") from None

    def release(self) -> None:
        self._fh.close()


class AuditLog:
    """The append-only CSV log: one file, or with ``rotate="daily"`` one per local date (``LOG-YYYY-MM-DD.csv``)."""

    def __init__(self, path: str | Path, rotate: str | None = None):
        self.path = Path(os.path.abspath(path))
        self.rotate = rotate
        self._fd: int | None = None
        self._fd_path: Path | None = None

    def path_for(self, when: datetime) -> Path:
        if self.rotate == "daily":
            return self.path.with_name(f"{self.path.stem}-{when:%Y-%m-%d}{self.path.suffix}")
        return self.path

    @property
    def shown_path(self) -> Path:
        """The log's name as a person reads it: ``LOG-YYYY-MM-DD.csv`` when it rotates daily."""
        if self.rotate == "daily":
            return self.path.with_name(f"{self.path.stem}-YYYY-MM-DD{self.path.suffix}")
        return self.path

    def files(self) -> list[Path]:
        """The log files there are: the plain one and the dated ones (whether or not this run rotates)."""
        pattern = re.compile(rf"{re.escape(self.path.stem)}-\d{{4}}-\d{{2}}-\d{{2}}{re.escape(self.path.suffix)}")
        try:
            names = os.listdir(self.path.parent)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StationError(f"{self.path.parent}: cannot list the log folder ({exc.strerror or exc})") from None
        found = sorted(self.path.parent / n for n in names if pattern.fullmatch(n))
        return ([self.path] if self.path.name in names else []) + found

    @staticmethod
    def read(path: Path) -> tuple[list[list[str]], str | None]:
        """The rows of one log, and a note when its incomplete last line was cut off (written back to disk)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StationError(f"{path}: cannot read the log ({exc.strerror or exc})") from None
        note = None
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            try:
                with open(path, "r+b") as fh:
                    fh.truncate(keep)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise StationError(f"{path}: cannot repair the log's incomplete last line "
                                   f"({exc.strerror or exc})") from None
            note = (f"{path}: removed an incomplete last line ({len(data) - keep} bytes) "
                    "left by an interrupted run; that image is judged again")
            data = data[:keep]
        lines = data.decode("utf-8", errors="replace").replace("\x00", "").splitlines()
        if not lines:
            return [], note
        if next(csv.reader([lines[0]]), None) != COLUMNS:
            raise StationError(f"{path}: not a station log (its first line is not {','.join(COLUMNS)}); "
                               "choose another log file")
        rows = [row for line in lines[1:] for row in csv.reader([line]) if len(row) == len(COLUMNS)]
        return rows, note

    def append(self, row: Sequence[str], when: datetime) -> None:
        """Write one line (and the header first in a new file) with one ``write``, then ``fsync``. On failure
        the file is cut back to where it was, so no torn line stays, and the OSError is raised."""
        path = self.path_for(when)
        if self._fd is None or self._fd_path != path:
            self.close()
            if not path.exists():  # a new log appears whole, with its header, under a name synced to disk
                atomic_write_bytes(path, _line(COLUMNS))
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            self._fd_path = path
        fd = self._fd
        start = os.fstat(fd).st_size
        data = (_line(COLUMNS) if start == 0 else b"") + _line([one_line(str(v)) for v in row])
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass


def _line(row: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue().encode("utf-8")


def parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.astimezone()
