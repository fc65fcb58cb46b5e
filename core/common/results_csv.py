"""The results CSV of ``dad infer``: its rows, the partial files that keep a run's progress, and reading both back
to resume an interrupted run; and the result columns that every results file shares.

One row per image: ``file, score, verdict, reason, model, threshold`` (:data:`RESULT_COLUMNS`, which the station's
log and the app's export share, so that they can be joined). While a run goes on, each process appends its rows
to ``OUT.csv.partN`` (N: its rank; flushed after every image, synced to disk every few seconds); at the end the
complete CSV replaces ``OUT.csv`` atomically and the partial files are removed. Reading tolerates damage: a line
cut by an interruption, or any row that is not a complete row, is left out (that image is inspected again). A CSV
of the earlier format (``file, score, verdict, threshold, error``) is read too, as rows of this one.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from core.common.fileio import atomic_write_text
from core.common.results import verdict as verdict_for

RESULT_COLUMNS = ("file", "score", "verdict", "reason", "model", "threshold")
"""What every results file says of an image, under these names and written alike (:func:`result_fields`): the
``dad infer`` CSV (these columns), the station's log (its time first, where the image went after) and the app's
export (its own columns after). ``verdict`` is OK, NG or ERROR (then ``reason`` says why), or empty without a
threshold; ``model`` is the model's label (:func:`core.model.checkpoint.model_label`)."""

COLUMNS = list(RESULT_COLUMNS)

EARLIER_COLUMNS = ["file", "score", "verdict", "threshold", "error"]  # before the shared columns; read, not written

ERROR = "ERROR"  # the verdict of an image without a usable result

VERDICTS = ("", "OK", "NG")  # of an image with a score


class ResultsError(Exception):
    """An existing results file cannot be used; the message names it and says why."""


def result_fields(file: str | Path, score: float | None, verdict: str, reason: str, model: str,
                  threshold: float | None) -> list[str]:
    """The shared columns' text, in :data:`RESULT_COLUMNS` order: the score with 6 decimals, the threshold as
    Python writes a float, absent values empty."""
    return [str(file), "" if score is None else f"{score:.6f}", verdict, reason, model,
            "" if threshold is None else str(threshold)]


def file_row(path: str | Path, score: float | None, error: str | None, threshold: float | None,
             model: str = "") -> list[str]:
    """The CSV row of one file: its score and verdict (NG when score >= threshold; none without a threshold), or
    an ERROR with its reason. A non-finite score is refused (``ValueError``): it is an error with its reason
    (``core.common.results.unusable``), never a verdict."""
    if score is None:
        return result_fields(path, None, ERROR, error or "", model, threshold)
    if not math.isfinite(score):
        raise ValueError(f"{path}: a non-finite score ({score}) has no verdict; it is an error")
    return result_fields(path, score, "" if threshold is None else verdict_for(score, threshold), "", model, threshold)


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    """The CSV, header first."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def _complete(row: Sequence[str]) -> bool:
    if len(row) != len(COLUMNS) or not row[0]:
        return False
    if row[2] == ERROR:
        return True
    try:
        return row[2] in VERDICTS and math.isfinite(float(row[1]))
    except ValueError:
        return False


def _from_earlier(row: Sequence[str]) -> list[str]:
    """A row of the earlier format (``file, score, verdict, threshold, error``, verdict ``error``) in this one."""
    if len(row) != len(EARLIER_COLUMNS):
        return []
    file, score, verdict, threshold, error = row
    return [file, score, ERROR if verdict == "error" else verdict, error, "", threshold]


def read_rows(path: str | Path) -> list[list[str]]:
    """The complete rows of a results CSV (or partial file), in file order, in this format; [] when there is no
    such file.

    A last line without its line end was cut while being written and is left out, as is any row that is not a
    whole row of its format. A file of the earlier format gives its rows in this one (without a model). A file
    whose first line is another header is refused (:class:`ResultsError`).
    """
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace").replace("\x00", "")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    records: list[list[str]] = []
    try:
        records.extend(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:  # keep the records before the damage
        pass
    if records and not text.endswith("\n"):
        records.pop()
    if not records:
        return []
    if records[0] == EARLIER_COLUMNS:
        records = [records[0], *(_from_earlier(row) for row in records[1:])]
    elif records[0] != COLUMNS:
        raise ResultsError(f"{path}: not a results CSV of dad infer (its first line is not {','.join(COLUMNS)})")
    return [row for row in records[1:] if _complete(row)]


def partial_path(csv_path: str | Path, rank: int) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.name}.part{rank}")


def partial_files(csv_path: str | Path) -> list[Path]:
    """The partial files of ``csv_path`` that exist (left by an interrupted run, with any number of processes)."""
    csv_path = Path(csv_path)
    prefix = f"{csv_path.name}.part"
    try:
        names = os.listdir(csv_path.parent)
    except OSError:
        return []
    return sorted(csv_path.parent / n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit())


def read_progress(csv_path: str | Path) -> dict[str, list[str]]:
    """The rows already in ``csv_path`` and its partial files, by file (the first row of each file wins)."""
    done: dict[str, list[str]] = {}
    for source in (Path(csv_path), *partial_files(csv_path)):
        for row in read_rows(source):
            done.setdefault(row[0], row)
    return done


def ordered(files: Sequence[str], rows: dict[str, list[str]]) -> list[list[str]]:
    """The rows of ``files`` in that order, then rows of files that are not in it (kept from an earlier run)."""
    wanted = set(files)
    return [rows[f] for f in files if f in rows] + [row for f, row in rows.items() if f not in wanted]


def start_run(csv_path: str | Path, done: dict[str, list[str]], files: Sequence[str]) -> None:
    """Begin a run that writes ``csv_path``: the CSV becomes the rows kept (none for a fresh run), written
    atomically, and then the partial files of an earlier run (whose rows it now holds) are removed."""
    atomic_write_text(csv_path, csv_text(ordered(files, done)))
    remove_partials(csv_path)


def remove_partials(csv_path: str | Path) -> None:
    for path in partial_files(csv_path):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class RowJournal:
    """Rows appended to a partial file as they come: flushed after every row (a killed process loses none),
    synced to disk at most every ``sync_every_s`` seconds (a power cut loses that much at most)."""

    def __init__(self, path: str | Path, sync_every_s: float = 5.0):
        self.path = Path(path)
        self.sync_every_s = sync_every_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._writer = csv.writer(self._fh)
        self._synced = time.monotonic()
        self.add(COLUMNS)

    def add(self, row: Sequence[str]) -> None:
        self._writer.writerow(row)
        self._fh.flush()
        if time.monotonic() - self._synced >= self.sync_every_s:
            os.fsync(self._fh.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
