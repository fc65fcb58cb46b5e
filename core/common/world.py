"""This process's place in a ``torchrun`` launch, its share of the work, and the exchanges between ranks.

Torch-free for a single process (a run not started by ``torchrun``): every helper then does nothing but the work
itself, so inspection with an exported model needs no torch. Launched ranks exchange through
``torch.distributed``, imported only then; joining the process group is ``core.model.distributed``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(RuntimeError):
    """The processes of a run could not start or keep working together; the message says which and why."""


class RankFailed(DistributedError):
    """The work of one or more ranks raised; ``failures`` holds (rank, message) of each, on every rank."""

    def __init__(self, failures: Sequence[tuple[int, str]]):
        self.failures = list(failures)
        super().__init__("; ".join(f"rank {rank} failed: {message}" for rank, message in self.failures))


@dataclass(frozen=True)
class World:
    """This process's place in a run: its rank among ``world_size`` processes and on its own machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launched: bool = False  # started by torchrun: the ranks exchange through a process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The :class:`World` that torchrun's variables describe, or :data:`SINGLE` when they are not all set."""
    env = os.environ if environ is None else environ
    if not all(env.get(k) for k in ENV_VARS):
        return SINGLE
    try:
        rank, size, local = (int(env[k]) for k in ENV_VARS)
        local_size = int(env.get("LOCAL_WORLD_SIZE") or size)
    except ValueError as exc:
        raise DistributedError(f"torchrun's environment is not understood: {exc}") from None
    if not (0 <= rank < size and 0 <= local < local_size <= size):
        raise DistributedError(f"torchrun's environment is not consistent: RANK {rank}, WORLD_SIZE {size}, "
                               f"LOCAL_RANK {local}, LOCAL_WORLD_SIZE {local_size}")
    return World(rank, size, local, local_size, launched=True)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_threads(world: World, cores: int | None = None) -> int:
    """Threads for one rank on the CPU: the machine's cores shared by the ranks running on it."""
    return max(1, (cores or available_cores()) // world.local_world_size)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s contiguous share of ``items``: shares differ by one item at most, the first ranks get the
    larger ones, and the shares of ranks 0, 1, ... one after the other are ``items`` in order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start:start + base + (1 if rank < extra else 0)])


def _distributed():  # noqa: ANN202
    """``core.model.distributed``, for launched ranks only (torch is there then): a single process never loads it."""
    import importlib

    return importlib.import_module("core.model.distributed")


def broadcast_from_main(world: World, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled: keep it to plain data)."""
    return obj if not world.launched else _distributed().broadcast_from_main(world, obj)


def gather_to_main(world: World, obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0; None on the other ranks."""
    return [obj] if not world.launched else _distributed().gather_to_main(world, obj)


def run_on_every_rank(world: World, work: Callable[[], T]) -> list[T] | None:
    """Run ``work`` on this rank and gather every rank's result on rank 0 (None on the others).

    When ``work`` raised an :class:`Exception` on any rank, every rank raises :class:`RankFailed` naming the ranks
    and their errors. A single process just runs ``work``: its exceptions propagate unchanged.
    """
    return [work()] if not world.launched else _distributed().run_on_every_rank(world, work)
