"""Latency of inference: one helper for ``dad presets --measure`` and every bench/ script that times inference.

:func:`measure_latency` times a callable (or an :class:`Inspector` on random images) at one batch size and gives
the median time per image, its spread over the runs and the peak memory of the runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from core.inference.inspector import Inspector
from core.model.network import DiffusionAD


@dataclass(frozen=True)
class Latency:
    """Milliseconds per image over ``runs`` timed runs of a batch of ``batch`` images (after the warm-up runs),
    and the memory they took.

    ``peak_mib``: the highest memory while the warm-up and timed runs went on: on a CUDA device what torch had
    allocated there; on the CPU the process's resident set (its high-water mark since the runs began where the
    system lets it be reset, as on Linux; otherwise since the process began). ``added_mib``: ``peak_mib`` less
    what was held when the runs began (where the mark cannot be reset: less the mark before the runs). NaN where
    the system does not say.
    """

    batch: int
    runs: int
    ms_per_image: float  # median
    ms_min: float
    ms_max: float
    peak_mib: float
    added_mib: float
    memory: str  # "cuda allocated" or "resident set"

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latency(
    target: Callable[[], object] | Inspector, batch: int, repeats: int = 5, warmup: int = 2,
    device: str | torch.device | None = None, input_size: int = 256,
) -> Latency:
    """Time ``target`` ``warmup`` + ``repeats`` times and describe the timed runs.

    ``target``: a callable that processes one batch of ``batch`` images (its time is divided by ``batch``), or an
    :class:`Inspector`, timed on ``batch`` random ``input_size`` x ``input_size`` RGB images through its whole
    :meth:`Inspector.predict` (resize, both noise scales, segmenter, score). ``device``: where the work runs, for
    synchronisation and memory (default: the inspector's, else the CPU).
    """
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch and repeats must be at least 1 and warmup at least 0, not {batch}, {repeats}, "
                         f"{warmup}")
    if isinstance(target, Inspector):
        dev = torch.device(device) if device is not None else target.device
        rng = np.random.default_rng(0)
        images = [rng.random((input_size, input_size, 3), dtype=np.float32) for _ in range(batch)]
        inspector = target

        def work() -> object:
            return inspector.predict(images)
    else:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        work = target
    memory = _Memory(dev)
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        memory.sync()
        t0 = time.perf_counter()
        work()
        memory.sync()
        times.append(1000.0 * (time.perf_counter() - t0) / batch)
    peak, added = memory.peak()
    return Latency(batch, repeats, statistics.median(times), min(times), max(times), peak, added, memory.kind)


def inspector_for(model: DiffusionAD, device: str | torch.device = "cpu") -> Inspector:
    """An inspector around a model that was not loaded from a checkpoint (channels-last on the CPU, as loaded
    models are), for timing presets and candidate configurations."""
    dev = torch.device(device)
    model = model.to(dev)
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return Inspector(model, dev)


STATUS = Path("/proc/self/status")


class _Memory:
    """The peak memory of a stretch of work: CUDA's allocator statistics, or the process's resident set."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "cuda allocated" if self.cuda else "resident set"
        self.device = device
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.before = torch.cuda.memory_allocated(device) / 2**20
        elif _reset_high_water_mark():
            self.before = _status_mib("VmRSS")
        else:  # the high-water mark since the process began: what the work adds to it is a lower bound
            self.before = _process_peak_mib()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def peak(self) -> tuple[float, float]:
        """(peak, peak less what was held at the start) in MiB."""
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else _process_peak_mib()
        added = peak - self.before
        return peak, added if added != added else max(0.0, added)  # NaN stays NaN


def _status_mib(field: str) -> float:
    """A field of /proc/self/status (Linux) in MiB; NaN where there is none."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def _reset_high_water_mark() -> bool:
    """Start the process's resident-set high-water mark afresh (Linux: "5" into clear_refs); False where not."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _process_peak_mib() -> float:
    """The process's resident-set high-water mark in MiB (NaN where the system does not say)."""
    peak = _status_mib("VmHWM")
    if peak == peak:  # not NaN
        return peak
    try:
        import resource  # not on Windows

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024
    except (ImportError, OSError):
        return float("nan")
