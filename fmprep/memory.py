"""Handing freed memory back to the operating system, which glibc's allocator keeps otherwise."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import psutil
import pyarrow as pa

# Below this much resident memory, a process off a Dask worker keeps what it freed: see trim.
TRIM_ABOVE = 1 << 30


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


def _worker_memory_limit() -> int | None:
    """The memory limit of the Dask worker running this task, if any."""
    if "distributed" not in sys.modules:  # never imported: not on a worker
        return None
    from distributed import get_worker
    try:
        return get_worker().memory_manager.memory_limit or None
    except ValueError:  # not inside a worker
        return None


def should_trim(rss: int, worker_limit: int | None) -> bool:
    """Whether a process holding ``rss`` bytes should return its free memory now.

    On a Dask worker with a memory limit: always (the worker pauses at 80 % of it, counting
    memory that is free but kept; trimming only above half of it let a 1 GiB worker reach 95 %
    and be restarted at 40 M rows). Elsewhere: above :data:`TRIM_ABOVE`.
    """
    return bool(worker_limit) or rss > TRIM_ABOVE


def trim() -> None:
    """Return free memory to the OS where memory is bounded (see :func:`should_trim`): Arrow's
    pool's, and the C heap's (``malloc_trim(0)`` on glibc).

    Called when a task has dropped a part's worth of buffers. glibc serves 16 MiB parse blocks
    from its heap once its mmap threshold has risen to that size, and keeps them when freed:
    one file's ingest grew ~60 MiB per part (0.5 → 1.0 GiB over eight parts), and at 40 M
    rows a 1 GiB Dask worker held ~160 MiB of data and ~660 MiB besides, and paused for good.
    Trimming after each part kept ingest at ~0.45 GiB; fixing the mmap threshold instead cost
    2 s at 4 M rows. Trimming is not free either: the pages come back as page faults, and
    trimming always cost 0.3-0.5 s (0.6 s of system time) at 4 M rows on threads, where
    nothing pauses, so there it waits for the process to hold more than TRIM_ABOVE.
    """
    if not should_trim(psutil.Process().memory_info().rss, _worker_memory_limit()):
        return
    pa.default_memory_pool().release_unused()
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
