"""Thin background workers over ``core``: no ML logic, only threads, signals and cancel flags."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, QTimer, Signal

from core.common.cpu import lower_thread_priority
from core.common.datasets import Sample, folder_samples
from core.common.images import ImageReadError, read_image, read_mask
from core.common.modelfile import model_label
from core.runtime.base import InspectorBase
from core.runtime.open import open_inspector

from .jobs import JobSpec, run_job  # torch-free: the job imports torch in its own process
from .registry import Registry
from .state import FolderListing, ImageDetail, ResultRow


class TaskSignals(QObject):
    """One long-lived signal hub per runner (created on the GUI thread, so delivery is queued)."""

    results = Signal(int, object)  # generation, list of rows
    progressed = Signal(str, int, int, int)  # task kind, generation, done, total
    finished = Signal(str, int, bool)  # task kind, generation, cancelled
    failed = Signal(str, int, str)  # task kind, generation, message
    loaded = Signal(int, object, str)  # generation, inspector, its model label (for the results' model column)
    moved = Signal(int, object)  # generation, inspector on its new device
    listed = Signal(int, str, object)  # request token, folder, FolderListing
    viewed = Signal(int, object, object, object, str)  # request token, Sample, image, mask, error
    stored = Signal(int, object)  # request token, the ModelVersion staged in the registry


class _Task(QRunnable):
    def __init__(self, kind: str, generation: int, signals: TaskSignals, fn: Callable[[_Task], None]):
        super().__init__()
        self.kind = kind
        self.generation = generation
        self.signals = signals
        self.cancel_event = threading.Event()
        self._fn = fn
        self.setAutoDelete(True)

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def run(self) -> None:
        # Every worker thread (and the torch threads it starts) runs niced: the GUI thread alone keeps
        # normal priority, so it gets a core as soon as it has work, even on a 2-core machine running
        # a 10,000-image inspection; workers still get every idle cycle.
        lower_thread_priority()
        try:
            self._fn(self)
        except Exception as exc:  # noqa: BLE001 - every failure reaches the GUI once
            self.signals.failed.emit(self.kind, self.generation,
                                     f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")


def detail_from(result: Any) -> ImageDetail:
    recon = result.reconstruction
    return ImageDetail(None if recon is None else (np.clip(recon, 0, 1) * 255).astype(np.uint8),
                       result.anomaly_map.astype(np.float16))


class TaskRunner(QObject):
    """One inference task at a time (a new one cancels the old); model loading off the GUI thread."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(1)
        self.detail_pool = QThreadPool()
        self.detail_pool.setMaxThreadCount(1)
        self.io_pool = QThreadPool()  # folder listing and reading the image on screen
        self.io_pool.setMaxThreadCount(1)
        self.current: _Task | None = None
        self.signals = TaskSignals()

    def load_model(self, token: int, path: str, device: str = "auto") -> None:
        """Load off the GUI thread; ``loaded``/``failed`` carry ``token``, by which the window drops a load that
        a newer request superseded. A load always runs to its end: cancelling an inspection must not lose it."""
        def work(task: _Task) -> None:
            insp = open_inspector(path, device=device)  # a checkpoint (torch) or an exported model (its runtime)
            label = model_label(path, insp.checkpoint)  # hashes the file
            task.signals.loaded.emit(task.generation, insp, label)

        self._start(_Task("load", token, self.signals, work))

    def store_model(self, token: int, registry: Registry, path: str) -> None:
        """Copy a model file into the registry (:meth:`Registry.stage`: it may be large); ``stored`` carries the
        version for the GUI thread to :meth:`~Registry.commit`."""
        def work(task: _Task) -> None:
            task.signals.stored.emit(token, registry.stage(path))

        self.io_pool.start(_Task("store", token, self.signals, work))

    def inspect(self, generation: int, inspector: InspectorBase, paths: list[Path], batch_size: int = 8) -> None:
        def work(task: _Task) -> None:
            total, done = len(paths), 0
            rows: list[ResultRow] = []
            # no reconstruction where the score does not need it: the image on screen gets its own (detail)
            for fr in inspector.inspect_files(paths, batch_size=batch_size, cancel=task.cancelled, reconstruct=False):
                idx = done
                if fr.result is not None:
                    rows.append((idx, fr.result.score, None, detail_from(fr.result)))
                else:
                    rows.append((idx, None, fr.error, None))
                done += 1
                if len(rows) >= batch_size or done == total:
                    task.signals.results.emit(task.generation, rows)
                    task.signals.progressed.emit(task.kind, task.generation, done, total)
                    rows = []
            if rows:
                task.signals.results.emit(task.generation, rows)
            task.signals.finished.emit(task.kind, task.generation, task.cancelled())

        self._start(_Task("inspect", generation, self.signals, work))

    def detail(self, generation: int, inspector: InspectorBase, idx: int, path: Path) -> None:
        """Recompute one image's reconstruction and map (cache miss, or a folder's inspection that made no
        reconstruction) on a separate thread."""
        def work(task: _Task) -> None:
            fr = next(iter(inspector.inspect_files([path], batch_size=1, reconstruct=True)))
            row = (idx, fr.result.score if fr.result else None, fr.error,
                   detail_from(fr.result) if fr.result else None)
            task.signals.results.emit(task.generation, [row])

        self.detail_pool.start(_Task("detail", generation, self.signals, work))

    def move(self, generation: int, inspector: InspectorBase, device: str) -> None:
        """Copy the model to another device (GPU freed for training, or given back)."""
        def work(task: _Task) -> None:
            task.signals.moved.emit(task.generation, inspector.on_device(device))

        self.io_pool.start(_Task("move", generation, self.signals, work))

    def list_folder(self, token: int, folder: Path) -> None:
        """List a folder (can take seconds for 10,000 files or a network share)."""
        def work(task: _Task) -> None:
            try:
                samples = folder_samples(folder)
            except OSError as exc:
                task.signals.failed.emit("list", token, f"{folder}: {exc.strerror or exc}")
                return
            task.signals.listed.emit(token, str(folder), FolderListing.build(folder, samples))

        self.io_pool.start(_Task("list", token, self.signals, work))

    def view_image(self, token: int, sample: Sample, latest: Callable[[], int], input_max: float | None = None) -> None:
        """Read the image (and ground-truth mask) to show, on the model's input range ``input_max`` when a model
        is loaded; skipped when a newer request exists."""
        def work(task: _Task) -> None:
            if latest() != token:  # the user already moved on (holding the arrow key)
                return
            try:
                image = read_image(sample.path, input_max)
            except ImageReadError as err:
                task.signals.viewed.emit(token, sample, None, None, f"{sample.path.name}: {err.reason}")
                return
            mask, error = None, ""
            if sample.mask_path is not None:
                try:
                    mask = read_mask(sample.mask_path, image.shape[:2])
                except ImageReadError as err:
                    error = f"{sample.mask_path.name}: {err.reason}"
            task.signals.viewed.emit(token, sample, image, mask, error)

        self.io_pool.start(_Task("view", token, self.signals, work))

    def export_overlays(self, generation: int, inspector: InspectorBase, paths: list[Path],
                        write: Callable[[Path, Any], None]) -> None:
        """Write side-by-side overlay PNGs with ``write(path, result)`` (recomputed; nothing held in memory)."""
        def work(task: _Task) -> None:
            done = 0
            for fr in inspector.inspect_files(paths, cancel=task.cancelled):
                if fr.result is not None:
                    write(fr.path, fr.result)
                done += 1
                task.signals.progressed.emit(task.kind, task.generation, done, len(paths))
            task.signals.finished.emit(task.kind, task.generation, task.cancelled())

        self._start(_Task("export", generation, self.signals, work))

    def _start(self, task: _Task) -> None:
        self.cancel()
        self.current = task
        self.pool.start(task)

    def cancel(self) -> None:
        if self.current is not None:
            self.current.cancel_event.set()

    def wait(self, msecs: int = 30000) -> bool:
        self.cancel()
        ok = self.pool.waitForDone(msecs)
        ok = self.io_pool.waitForDone(msecs) and ok
        return self.detail_pool.waitForDone(msecs) and ok


class JobController(QObject):
    """Runs one fine-tuning job in a child process and relays its messages as signals."""

    started = Signal(dict)
    progressed = Signal(dict)
    preview = Signal(dict)
    finished = Signal(dict)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._queue: Any = None
        self._cancel: Any = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)

    def running(self) -> bool:
        return self._proc is not None

    def start(self, spec: JobSpec) -> None:
        if self.running():
            raise RuntimeError("a training job is already running; cancel it first")
        self._queue = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        # not a daemon, so that it can start the batch workers of its DataLoader; `wait` (on quit) cancels it, and
        # it stops by itself if this process dies
        self._proc = self._ctx.Process(target=run_job, args=(spec, self._queue, self._cancel), daemon=False)
        self._proc.start()
        self._timer.start()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def wait(self, timeout_s: float = 60.0) -> None:
        """Cancel, let the child checkpoint and exit; kill it if it does not.

        The queue is read while waiting: a child cannot exit while its last message (a preview is a few MB)
        is still in the pipe. A killed child may leave half a message there, which is not read: reading it
        would block for ever.
        """
        if self._proc is None:
            return
        self.cancel()
        deadline = time.monotonic() + timeout_s
        while self._proc is not None and self._proc.is_alive() and time.monotonic() < deadline:
            self._proc.join(0.1)
            self._poll()
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        else:
            self._poll()
        self._cleanup()

    def _poll(self) -> None:
        if self._queue is None:
            return
        latest_progress = None
        while True:
            try:
                msg = self._queue.get_nowait()
            except (queue_mod.Empty, OSError, EOFError, ValueError):
                break
            kind = msg.get("type")
            if kind == "progress":
                latest_progress = msg  # throttle: only the newest progress per poll
            elif kind == "preview":
                self.preview.emit(msg)
            elif kind == "started":
                self.started.emit(msg)
            elif kind == "done":
                if latest_progress:
                    self.progressed.emit(latest_progress)
                    latest_progress = None
                self._cleanup()
                self.finished.emit(msg)
                return
            elif kind == "error":
                self._cleanup()
                self.failed.emit(msg.get("message", "training failed"))
                return
        if latest_progress:
            self.progressed.emit(latest_progress)
        if self._proc is not None and not self._proc.is_alive():
            code = self._proc.exitcode
            self._cleanup()
            self.failed.emit(f"the training process stopped unexpectedly (exit code {code})")

    def _cleanup(self) -> None:
        self._timer.stop()
        if self._proc is not None:
            self._proc.join(1)
        self._proc = None
        self._queue = None
        self._cancel = None


class StationWorker(QThread):
    """Runs a :class:`core.station.station.Station` off the GUI thread: its events come to the GUI as :attr:`event`
    (queued). :meth:`pause` stops judging between two polls (files arriving meanwhile are judged on resume),
    :meth:`stop` ends the run and closes the log; :attr:`failed` says why the station could not start or go on."""

    event = Signal(object)  # core.station.station.Judgement or StationStatus
    failed = Signal(str)

    def __init__(self, inspector: InspectorBase, folder: Path, log: Path, model_path: str, threshold: float,
                 options: Any = None):
        super().__init__()
        self.inspector, self.folder, self.log_path = inspector, folder, log
        self.model_path, self.threshold, self.options = model_path, threshold, options
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._device: str | None = None  # where the model should be, taken at the next poll

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self) -> None:
        self._stop.set()

    def move_to(self, device: str) -> None:
        """Judge on ``device`` from the next poll on (also while paused), with a copy of the station's model."""
        with self._lock:
            self._device = device

    def _move(self, station: Any) -> None:
        with self._lock:
            device, self._device = self._device, None
        if device is not None:
            status = station.move_to(device)
            if status is not None:
                self.inspector = station.inspector
                self.event.emit(status)

    def run(self) -> None:
        from dataclasses import replace

        from core.station.station import Station, StationError, StationOptions, StationStatus

        lower_thread_priority()
        try:
            options = replace(self.options or StationOptions(), threshold=self.threshold)
            label = model_label(self.model_path, self.inspector.checkpoint)  # hashes the file: not on the GUI
            station = Station(self.inspector, self.folder, self.log_path, label, options)
            for ev in station.open():
                self.event.emit(ev)
        except Exception as exc:  # noqa: BLE001 - the GUI says why
            self.failed.emit(str(exc) if isinstance(exc, StationError) else f"{type(exc).__name__}: {exc}")
            return
        try:
            while not self._stop.is_set():
                # run() polls until told to stop or pause (or to move the model); the station stays open (and
                # the log locked) while paused
                for ev in station.run(cancel=lambda: self._stop.is_set() or self._paused.is_set()
                                      or self._device is not None):
                    self.event.emit(ev)
                    if isinstance(ev, StationStatus) and ev.kind == "stop":  # a stop option applied
                        self._stop.set()
                self._move(station)
                while self._paused.is_set() and not self._stop.is_set():
                    time.sleep(0.05)
                    self._move(station)  # a paused station does not hold on to the GPU either
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        finally:
            station.close()
