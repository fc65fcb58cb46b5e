"""What the station knows of the watched folder: listings and files not judged yet."""

from __future__ import annotations

from dataclasses import dataclass

DIR_TICK_S = 0.05  # a folder's mtime is taken as able to tell two changes this far apart (local file systems)


RELIST_S = 2.0  # a folder is listed again at least this often (for shares whose timestamps cannot be trusted)


@dataclass(frozen=True)
class Listing:
    """One folder's listing, kept while the folder's mtime says that nothing was added, removed or renamed."""

    mtime_ns: int
    conclusive: bool  # listed more than DIR_TICK_S after the folder's last change
    listed_at: float  # monotonic
    files: list[str]
    folders: list[str]


@dataclass
class Watch:
    """What the station knows of a file not judged yet."""

    sig: tuple[int, int]  # (size, mtime_ns)
    first: float  # monotonic time this sig was first seen
    seen: int = 1  # polls that saw this sig
    retry_at: float | None = None  # set when it could not be read: when to try a last time
