"""The station: a folder that a camera or PLC writes images into, judged image by image into an audit log.

:class:`Station` watches the folder by polling it (``os.scandir``), judges each new image as soon as it is
complete, and appends one line per image to a CSV log (``time, file, score, verdict, reason, model, threshold,
moved_to, copied_to``), flushed and synced to disk line by line. It is driven either by :meth:`Station.run`, a
generator of events (one :class:`Judgement` per judged image, :class:`StationStatus` for everything else), or
by calling :meth:`Station.open` once and then :meth:`Station.poll` in the caller's own loop. It never prints.

When a file is complete is the :class:`~core.station.watcher.FolderWatcher`'s rule (two polls see the same size
and mtime, which then stay put for ``settle_s``; hidden and temporary names are not images). A PNG, JPEG, BMP
or WebP file whose format's end is missing, or a file that does not decode, is taken as still being written:
it is tried again when it changes, and logged as ERROR (with the reason) only when it stays unchanged and
unreadable for ``error_after_s``.

The log is the audit record. It is only ever appended to: each line goes to disk with one ``write`` and an
``fsync``, so a crash leaves at most the last line incomplete; the next start cuts such a tail off (the one
change ever made to a log) and reads the ``file`` column of every log, with ``rotate="daily"`` of every
``LOG-YYYY-MM-DD.csv`` beside it too, so each image is logged exactly once across restarts: images already
logged are not judged again, images that arrived meanwhile are. Names are the identity of images: a new image
under a name already logged is not judged again (a warning says so when this run moved the earlier one to the
NG folder). A model or threshold other than the last logged one gets a line of its own (verdict ``MODEL``).
One station at a time may write a log (a lock file ``.LOG.csv.lock`` beside it).

NG and ERROR images can be moved (or copied) into a folder of their own: the log line, naming the
destination, is written first, then the file is moved (``os.replace``, or across file systems copied, synced,
renamed into place and only then removed); the next start finishes every logged move or copy left undone (by a
crash, or a failure) whose source is still there and whose destination is not. A folder that cannot be listed (a
network share that dropped) is waited for.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from core.common.images import ImageReadError
from core.common.results import InspectionResult
from core.common.results import verdict as judge_verdict
from core.common.results_csv import result_fields
from core.runtime.base import InspectorBase as Inspector
from core.station.files import file_signature, place, real_path, unfinished
from core.station.log import MODEL_ROW, VERDICTS, AuditLog, LogLock, StationError, local_now, one_line, parse_time
from core.station.watcher import FolderWatcher, Watch


@dataclass(frozen=True)
class StationOptions:
    """How a station runs. Times are in seconds."""

    threshold: float | None = None  # NG when score >= threshold; None: the model's own
    recursive: bool = False  # also watch sub-folders (not hidden ones, not ng_dir)
    ng_dir: str | Path | None = None  # NG and ERROR images go here (moved, or copied with copy_ng)
    copy_ng: bool = False
    rotate: str | None = None  # None: one log; "daily": LOG-YYYY-MM-DD.csv by the local date of each line
    poll_s: float = 0.05  # pause between two looks at the folder
    settle_s: float = 0.1  # how long a file's size and mtime must stay put before it is read
    error_after_s: float = 5.0  # an unreadable file unchanged this long is logged as ERROR
    batch_size: int = 8  # images judged together when several are ready at once
    max_images: int | None = None  # run(): stop after judging this many (tests, scripts)
    exit_when_idle_s: float | None = None  # run(): stop when nothing was waiting this long (tests, scripts)

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, not {self.threshold}")
        if self.rotate not in (None, "daily"):
            raise ValueError(f"rotate: {self.rotate!r} is not allowed; expected None or 'daily'")
        if self.copy_ng and self.ng_dir is None:
            raise ValueError("copy_ng needs ng_dir (the folder to copy NG images into)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        for name in ("poll_s", "settle_s", "error_after_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more, not {getattr(self, name)}")


@dataclass(frozen=True)
class Judgement:
    """One judged image, as logged. ``result`` and ``image`` (float RGB as the model saw it) are None for ERROR."""

    time: datetime
    path: Path
    score: float | None
    verdict: str  # OK, NG or ERROR
    reason: str
    model: str
    threshold: float
    moved_to: Path | None
    copied_to: Path | None
    result: InspectionResult | None
    image: np.ndarray | None


@dataclass(frozen=True)
class StationStatus:
    """Anything else worth telling. ``kind``: start, model (a change logged), repaired (a log's cut tail removed),
    finished (a move cut short, done now), waiting (folder unreachable), back, warning, log (the log cannot be
    written: waiting), device (the same model now judges on another device), stop."""

    kind: str
    message: str
    time: datetime


Event = Judgement | StationStatus


class Station:
    """Watch ``folder``, judge each complete new image with ``inspector``, log it to ``log``."""

    def __init__(self, inspector: Inspector, folder: str | Path, log: str | Path, model: str,
                 options: StationOptions | None = None, now: Callable[[], datetime] = local_now):
        self.inspector = inspector
        self.folder = os.path.abspath(folder)
        self.model = one_line(model)
        self.options = options or StationOptions()
        threshold = self.options.threshold if self.options.threshold is not None else inspector.threshold
        if threshold is None:
            raise StationError("the model has no threshold of its own; give one")
        self.threshold = float(threshold)
        self.log = AuditLog(log, self.options.rotate)
        self.ng_dir = os.path.abspath(self.options.ng_dir) if self.options.ng_dir is not None else None
        # the NG folder as the file system resolves it: reached through a link, or named in another letter case
        # where names ignore case, it is still the same folder (judging its own NG copies would never end)
        ng_real = real_path(self.ng_dir) if self.ng_dir is not None else None
        if ng_real is not None and ng_real == real_path(self.folder):
            raise StationError(f"{self.ng_dir}: the folder for NG images cannot be the watched folder itself")
        self.watcher = FolderWatcher(self.folder, self.options.recursive, ng_real, self.options.settle_s)
        self.judged = 0  # images judged (and logged) since open()
        self._now = now
        self._lock: LogLock | None = None
        self._missing = False
        self._log_retry_at = 0.0
        self._more = False  # the last poll left ready files for the next one

    # ---- start and stop -------------------------------------------------------------------------
    @property
    def opened(self) -> bool:
        return self._lock is not None

    @property
    def backlog(self) -> int:
        """Files seen and not judged yet (still being written, unreadable for now, or queued)."""
        return len(self.watcher.pending)

    def open(self) -> list[StationStatus]:
        """Take the log's lock, repair and read the logs, log a model change, finish the moves and copies left
        undone, and run a first inference."""
        if self.opened:
            return []
        self._lock = LogLock(self.log.path.with_name(f".{self.log.path.name}.lock"), self.log.path)
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> list[StationStatus]:
        events: list[StationStatus] = []
        last: tuple[datetime, list[str]] | None = None
        placed: list[list[str]] = []  # the logged moves and copies
        for path in self.log.files():
            rows, note = self.log.read(path)
            if note:
                events.append(self._status("repaired", note))
            for i, row in enumerate(rows):
                if row[3] in VERDICTS and row[1]:
                    self.watcher.done.add(row[1])
                    # every logged move whose file is still here; a copy only on a log's last line (a copy a
                    # person later removed from the NG folder after review stays removed)
                    if row[7] or (row[8] and i == len(rows) - 1):
                        placed.append(row)
            if rows:
                when = parse_time(rows[-1][0])
                if when is not None and (last is None or when >= last[0]):
                    last = (when, rows[-1])
        if self.ng_dir is not None:
            try:
                os.makedirs(self.ng_dir, exist_ok=True)
            except OSError as exc:
                raise StationError(f"{self.ng_dir}: cannot create the folder for NG images "
                                   f"({exc.strerror or exc})") from None
        for row in placed:
            events.extend(self._finish_move(row))
        threshold = str(self.threshold)
        if last is not None and (last[1][5], last[1][6]) != (self.model, threshold):
            was = f"{last[1][5]} (threshold {last[1][6]})"
            reason = f"model or threshold changed: was {was}, now {self.model} (threshold {threshold})"
            when = self._now()
            try:
                fields = result_fields("", None, MODEL_ROW, reason, self.model, self.threshold)
                self.log.append([when.isoformat(timespec="milliseconds"), *fields, "", ""], when)
            except OSError as exc:
                raise StationError(f"{self.log.path}: cannot write ({exc.strerror or exc})") from None
            events.append(self._status("model", reason))
        where = f"; NG images {'copied' if self.options.copy_ng else 'moved'} to {self.ng_dir}" if self.ng_dir else ""
        size = self.inspector.config.image_size  # a first inference: the first image is not slower than the rest
        self.inspector.predict([np.zeros((size, size, 3), np.float32)])
        events.append(self._status(
            "start", f"watching {self.folder}{' and its sub-folders' if self.options.recursive else ''}: "
                     f"{len(self.watcher.done)} images already in the log {self.log.shown_path}; model {self.model}, "
                     f"threshold {threshold}{where}"))
        return events

    def close(self) -> None:
        self.log.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _finish_move(self, row: list[str]) -> list[StationStatus]:
        """A logged NG move or copy that a crash cut short or that failed, finished now: when its source is still
        there (and not newer than the line) and its destination is not (or, for a move, holds the whole copy)."""
        src, moved, copied = Path(row[1]), row[7], row[8]
        dst = Path(moved or copied)
        when, sig = parse_time(row[0]), file_signature(str(src))
        if when is None or sig is None or sig[1] / 1e9 > when.timestamp() + 1:
            return []  # done, or a newer file under the same name
        try:
            if dst.is_file() and moved and dst.stat().st_size == src.stat().st_size:
                src.unlink()  # copied across file systems, not yet removed
            elif not dst.exists():
                place(src, dst, move=bool(moved))
            else:
                return []
        except OSError as exc:
            return [self._status("warning", f"{src}: could not finish {'moving' if moved else 'copying'} it to "
                                            f"{dst} ({exc.strerror or exc})")]
        return [self._status("finished", f"{src}: {'moved' if moved else 'copied'} to {dst} "
                                         "(left undone by an earlier run)")]

    def move_to(self, device: str) -> StationStatus | None:
        """Judge on ``device`` from now on, with a copy of the session's model (a training job took the GPU, or
        gave it back); None when the model is there already. A copy that cannot be made leaves the model where it
        is, with a warning."""
        try:
            moved = self.inspector.on_device(device)
        except (RuntimeError, ValueError) as exc:
            return self._status("warning", f"could not move the model to {device} ({one_line(str(exc))}); judging "
                                           f"on {self.inspector.device}")
        if moved is self.inspector:
            return None
        self.inspector = moved
        return self._status("device", f"judging on {moved.device} from now on")

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, cancel: Callable[[], bool] | None = None) -> Iterator[Event]:
        """Open (unless open), then poll until ``cancel()`` is true (or a stop option applies); one event per
        judged image and per status. Closes what it opened."""
        own = not self.opened
        opts = self.options
        try:
            if own:
                yield from self.open()
            idle_since = time.monotonic()
            while not (cancel is not None and cancel()):
                yield from self.poll()
                now = time.monotonic()
                if opts.max_images is not None and self.judged >= opts.max_images:
                    yield self._status("stop", f"{self.judged} images judged: stopping")
                    return
                if self.watcher.pending:
                    idle_since = now
                elif opts.exit_when_idle_s is not None and now - idle_since >= opts.exit_when_idle_s:
                    yield self._status("stop", f"nothing new for {opts.exit_when_idle_s:g} s: stopping")
                    return
                if not self._more:
                    time.sleep(opts.poll_s)
        finally:
            if own:
                self.close()

    def poll(self) -> list[Event]:
        """One look at the folder, and judge the files that are complete (one batch at most)."""
        if not self.opened:
            raise StationError("open() the station first")
        events: list[Event] = []
        self._more = False
        now = time.monotonic()
        if now < self._log_retry_at:
            return events
        try:
            found = self.watcher.scan()
        except OSError as exc:
            if not self._missing:
                self._missing = True
                self.watcher.forget()
                events.append(self._status("waiting", f"{self.folder}: cannot be reached "
                                                      f"({exc.strerror or exc}); waiting for it"))
            return events
        if self._missing:
            self._missing = False
            events.append(self._status("back", f"{self.folder}: reachable again; going on"))
        ready, warnings = self.watcher.track(found, now)
        events.extend(self._status("warning", message) for message in warnings)
        limit = self.options.batch_size
        if self.options.max_images is not None:
            limit = min(limit, self.options.max_images - self.judged)
        self._more = len(ready) > limit
        if ready and limit > 0:
            events.extend(self._judge(ready[:limit]))
        return events

    # ---- judging --------------------------------------------------------------------------------
    def _judge(self, keys: list[str]) -> list[Event]:
        events: list[Event] = []
        batch: list[tuple[str, np.ndarray, str]] = []
        errors: list[tuple[str, str]] = []
        for key in keys:
            watch = self.watcher.pending[key]
            last_try = watch.retry_at is not None
            cut = unfinished(key, watch.sig[0])
            if cut and not last_try:
                self._park(watch)
                continue
            try:
                image = self.inspector.read_image(key)
            except ImageReadError as err:
                if not os.path.exists(key):
                    del self.watcher.pending[key]
                    events.append(self._status("warning", f"{key}: gone before it was judged"))
                elif not last_try:
                    self._park(watch)
                else:
                    errors.append((key, f"{cut}; {err.reason}" if cut else err.reason))
                continue
            if file_signature(key) != watch.sig:  # written to while it was read: wait until it settles again
                self.watcher.pending[key] = Watch(file_signature(key) or watch.sig, time.monotonic())
                continue
            note = (f"judged although the file looks cut short ({cut}): it stayed so for "
                    f"{self.options.error_after_s:g} s" if cut else "")
            batch.append((key, image, note))
        outcomes = self.inspector.judge([image for _, image, _ in batch])
        try:
            for (key, image, note), (result, failure) in zip(batch, outcomes):
                if result is None:
                    events.extend(self._record(key, "ERROR", failure or "", None, None))
                else:
                    verdict = judge_verdict(result.score, self.threshold)
                    events.extend(self._record(key, verdict, note, result, image))
            for key, reason in errors:
                events.extend(self._record(key, "ERROR", reason, None, None))
        except OSError as exc:
            self._log_retry_at = time.monotonic() + max(1.0, self.options.poll_s)
            events.append(self._status("log", f"{self.log.path}: cannot be written ({exc.strerror or exc}); "
                                              "trying again"))
        return events

    def _park(self, watch: Watch) -> None:
        """Not readable yet: try again when it changes, or a last time after ``error_after_s``."""
        watch.retry_at = time.monotonic() + self.options.error_after_s

    def _record(self, key: str, verdict: str, reason: str, result: InspectionResult | None,
                image: np.ndarray | None) -> list[Event]:
        """Log one image (raises OSError when the log cannot be written: then nothing changed), then move or
        copy it when it is NG or ERROR."""
        when = self._now()
        dest: Path | None = None
        if verdict != "OK" and self.ng_dir is not None:
            dest = self._destination(key)
        moved = dest if dest is not None and not self.options.copy_ng else None
        copied = dest if dest is not None and self.options.copy_ng else None
        score = None if result is None else result.score
        fields = result_fields(key, score, verdict, reason, self.model, self.threshold)
        self.log.append([when.isoformat(timespec="milliseconds"), *fields, str(moved or ""), str(copied or "")], when)
        self.watcher.judged(key)
        self.judged += 1
        events: list[Event] = [Judgement(when, Path(key), score, verdict,
                                         one_line(reason), self.model, self.threshold, moved, copied, result,
                                         image)]
        if dest is not None:
            try:
                place(Path(key), dest, move=moved is not None)
                if moved is not None:
                    self.watcher.moved_away.add(key)
            except OSError as exc:
                events.append(self._status("warning", f"{key}: could not be {'moved' if moved else 'copied'} "
                                                      f"to {dest} ({exc.strerror or exc}); the next start tries "
                                                      "again"))
        return events

    def _destination(self, key: str) -> Path:
        """A free name in the NG folder (the sub-folders of a recursive watch kept)."""
        assert self.ng_dir is not None
        rel = Path(os.path.relpath(key, self.folder))
        dest = Path(self.ng_dir) / rel
        n = 1
        while dest.exists():
            dest = Path(self.ng_dir) / rel.with_name(f"{rel.stem}_{n}{rel.suffix}")
            n += 1
        return dest

    def _status(self, kind: str, message: str) -> StationStatus:
        return StationStatus(kind, message, self._now())
