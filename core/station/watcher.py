"""What the station knows of the watched folder: which image files are there that it has not judged, and which of
them are complete now.

The folder is polled (``os.scandir``); a folder is listed again only when its mtime says that something was
added, removed or renamed (or at least every ``RELIST_S``). A file is complete when two polls have seen the same
size and modification time and that (size, mtime) has stayed put for ``settle_s`` (by this machine's clock, or by
the file's own mtime). Hidden names (``.name.png``, ``~name.png``) and other extensions (``name.png.tmp``,
``.part``, ``.crdownload``) are not images: a file written under such a name and renamed into place is seen once
it is in place. Sub-folders are watched too when asked (not hidden ones, not the NG folder).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from core.common.images import IMAGE_EXTS
from core.station.files import file_signature, real_path

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


class FolderWatcher:
    """The image files of ``folder`` (and of its sub-folders when ``recursive``, except the NG folder, whose real
    path is ``ng_real``) that are not judged yet, and the ones complete now."""

    def __init__(self, folder: str, recursive: bool = False, ng_real: str | None = None, settle_s: float = 0.1):
        self.folder = folder
        self.recursive = recursive
        self.ng_real = ng_real
        self.settle_s = settle_s
        self.done: set[str] = set()  # names judged (and logged), by this run or an earlier one
        self.moved_away: set[str] = set()  # judged names this run moved to the NG folder
        self.pending: dict[str, Watch] = {}  # files seen and not judged yet
        self._listings: dict[str, Listing] = {}

    def judged(self, key: str) -> None:
        """``key`` is logged: it is not judged again."""
        self.done.add(key)
        self.pending.pop(key, None)

    def forget(self) -> None:
        """The folder cannot be reached: what was seen of it no longer holds."""
        self.pending.clear()
        self._listings.clear()

    def scan(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of the image files not judged yet, and of judged ones seen again (raises OSError when
        the folder cannot be listed)."""
        found: dict[str, tuple[int, int]] = {}
        listings: dict[str, Listing] = {}
        folders, wall, now = [self.folder], time.time(), time.monotonic()
        while folders:
            here = folders.pop()
            try:
                listing = listings[here] = self._list(here, wall, now)
            except OSError:
                if here == self.folder:
                    raise
                continue
            folders.extend(listing.folders)
            for path in listing.files:
                if path in self.done and path not in self.moved_away:
                    continue  # judged already
                sig = file_signature(path)
                if sig is not None:  # else gone since the listing
                    found[path] = sig
        self._listings = listings
        return found

    def _list(self, here: str, wall: float, now: float) -> Listing:
        """The image files (not judged when listed) and sub-folders of ``here``: listed again only when the
        folder's mtime changed, or it changed too shortly before the last listing for its timestamp to tell (a
        later change could share it), or the last listing is older than ``RELIST_S``. Listing a large folder costs
        about a microsecond a file; its mtime, a few."""
        mtime = os.stat(here).st_mtime_ns
        old = self._listings.get(here)
        if old is not None and old.mtime_ns == mtime and old.conclusive and now - old.listed_at < RELIST_S:
            return old
        files, folders = [], []
        with os.scandir(here) as entries:
            for entry in entries:
                if entry.name.startswith((".", "~")):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive and (self.ng_real is None or real_path(entry.path) != self.ng_real):
                        folders.append(entry.path)
                elif (os.path.splitext(entry.name)[1].lower() in IMAGE_EXTS and entry.is_file()
                      and (entry.path not in self.done or entry.path in self.moved_away)):
                    files.append(entry.path)
        return Listing(mtime, wall - mtime / 1e9 > DIR_TICK_S, now, files, folders)

    def track(self, found: dict[str, tuple[int, int]], now: float) -> tuple[list[str], list[str]]:
        """Update what is known of each file: the ones complete now (oldest first), and warnings to tell."""
        warnings: list[str] = []
        for key, sig in found.items():
            if key in self.done:  # a new file where a judged one was moved away
                self.moved_away.discard(key)
                warnings.append(f"{key}: a new file under a name already judged; not judged again (give each "
                                "image its own name)")
                continue
            watch = self.pending.get(key)
            if watch is None or watch.sig != sig:
                self.pending[key] = Watch(sig, now)
            else:
                watch.seen += 1
        for key in [k for k in self.pending if k not in found]:
            del self.pending[key]
            warnings.append(f"{key}: gone before it was judged")
        wall = time.time()
        settle = self.settle_s
        ready = [k for k, w in self.pending.items() if w.seen >= 2 and (
            now >= w.retry_at if w.retry_at is not None
            else now - w.first >= settle or wall - w.sig[1] / 1e9 >= settle)]
        return sorted(ready, key=lambda k: (self.pending[k].sig[1], k)), warnings
