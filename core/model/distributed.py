"""Work spread over the processes that ``torchrun`` starts: one process (rank) per device, each on its own share.

A process started by ``torchrun`` finds its rank in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
without them it is alone (:data:`SINGLE`) and every helper here does nothing but the work itself, with no
process group. Ranks exchange only small Python objects (file lists, result rows) through ``torch.distributed``:
gloo on the CPU, nccl on CUDA. Every wait has a timeout, and a rank whose work raised makes every rank raise
:class:`RankFailed` at the next exchange, so that the run ends with a message instead of waiting for a rank
that gave up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from core.common.world import (  # noqa: F401 - the torch-free part, re-exported
    SINGLE,
    DistributedError,
    RankFailed,
    World,
    available_cores,
    cpu_threads,
    shard,
    world_from_env,
)
from core.model.devices import pick_device

T = TypeVar("T")
DEFAULT_TIMEOUT = timedelta(minutes=30)  # joining, and any one exchange (ranks' shares differ by one image at most)


def rank_device(world: World, preference: str = "auto") -> torch.device:
    """The device of this rank: a CUDA device without an index becomes ``cuda:LOCAL_RANK`` (one per rank)."""
    device = pick_device(preference)
    if not world.launched or device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise DistributedError(f"rank {world.rank} would use cuda:{world.local_rank}, but this machine has {count} "
                               f"CUDA device(s): start at most {count} processes per machine")
    return torch.device("cuda", world.local_rank)


@contextmanager
def process_group(world: World, device: torch.device, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Join the other ranks for the ``with`` block (nothing to join for a single process) and leave, also after
    an error. Joining waits ``timeout`` at most for the others."""
    if not world.launched:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                                world_size=world.world_size, timeout=timeout)
    except (RuntimeError, ValueError) as exc:  # DistStoreError and DistNetworkError are RuntimeErrors
        raise DistributedError(f"rank {world.rank} could not join the other processes: {exc}") from None
    try:
        yield
    finally:
        cleanup()


def cleanup() -> None:
    """Leave the process group, if this process is in one (safe to call twice, and after a failed exchange)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except RuntimeError:
            pass


def _exchange(world: World, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except RuntimeError as exc:  # a rank died (connection reset) or did not come within the timeout
        raise DistributedError(f"rank {world.rank} lost the other processes while {what}: {exc}") from None


def broadcast_from_main(world: World, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled: keep it to plain data)."""
    if not world.launched:
        return obj
    box: list[Any] = [obj if world.is_main else None]
    _exchange(world, "receiving rank 0's data", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def gather_to_main(world: World, obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0; None on the other ranks."""
    if not world.launched:
        return [obj]
    out: list[Any] | None = [None] * world.world_size if world.is_main else None
    _exchange(world, "gathering results on rank 0", lambda: dist.gather_object(obj, out, dst=0))
    return out


def run_on_every_rank(world: World, work: Callable[[], T]) -> list[T] | None:
    """Run ``work`` on this rank and gather every rank's result on rank 0 (None on the others).

    When ``work`` raised an :class:`Exception` on any rank, every rank raises :class:`RankFailed` naming the ranks
    and their errors. A single process just runs ``work``: its exceptions propagate unchanged.
    """
    if not world.launched:
        return [work()]
    result: T | None = None
    failure: str | None = None
    try:
        result = work()
    except Exception as exc:  # reported to every rank below: no rank is left waiting for this one
        failure = f"{type(exc).__name__}: {exc}"
    gathered = gather_to_main(world, (result, failure))
    failures = [(r, f) for r, (_, f) in enumerate(gathered) if f is not None] if gathered is not None else None
    failures = broadcast_from_main(world, failures)
    if failures:
        raise RankFailed(failures)
    return [r for r, _ in gathered] if gathered is not None else None
