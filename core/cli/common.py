"""Shared pieces of the `dad` commands: the progress bar, option checks, running as a torchrun rank."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.common.world import World


class ProgressBar:
    """A one-line text progress bar on stderr (redrawn at most 10 times a second)."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label = max(total, 1), label
        self.stream = stream or sys.stderr
        self._last = 0.0

    def update(self, done: int, extra: str = "", force: bool = False, total: int | None = None) -> None:
        if total is not None:
            self.total = max(total, 1)
        now = time.monotonic()
        if not force and now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {extra}   ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def format_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ---- option checks (a bad value: one line on stderr, exit code 2) ------------------------------
def share_arg(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value:g}")
    return value


def non_negative_arg(text: str) -> float:
    value = float(text)
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value:g}")
    return value


def positive_int_arg(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int_arg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def finite_arg(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {value:g}")
    return value


def positive_arg(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {value:g}")
    return value


def run_as_rank(args: argparse.Namespace, body: Callable[[argparse.Namespace, World, str], int]) -> int:
    """Run ``body(args, world, device)`` alone, or as one rank of a torchrun launch: on its own device (CPU ranks
    share the machine's cores), inside the run's process group."""
    from core.common.world import DistributedError, cpu_threads, world_from_env

    try:
        world = world_from_env()
        if not world.launched:  # a single process: no torch.distributed (an exported model needs no torch at all)
            return body(args, world, args.device)
        from core.model.distributed import process_group, rank_device

        device = rank_device(world, args.device)
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cpu":
        import torch

        torch.set_num_threads(cpu_threads(world))  # ranks on one machine share its cores
    try:
        with process_group(world, device):
            return body(args, world, str(device))
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
