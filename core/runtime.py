"""Process-level CPU tuning for PyTorch (allocator and threads)."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_tuned = False


def tune_cpu() -> None:
    """Keep large tensors in glibc's heap instead of mmap/munmap on every allocation.

    Measured 1.2-1.3x faster CPU inference and training on the reference 2-core machine
    (see docs/benchmarks.md). A no-op outside glibc Linux; safe to call twice.
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        return
    _tuned = True
