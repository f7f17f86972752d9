"""Handing freed memory back to the operating system, which glibc's allocator keeps otherwise."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


def trim() -> None:
    """Return free memory to the OS: Arrow's pool's, and the C heap's (``malloc_trim(0)`` on
    glibc).

    Called when a task has dropped a part's worth of buffers. glibc serves 16 MiB parse blocks
    from its heap once its mmap threshold has risen to that size, and keeps them when freed:
    one file's ingest grew ~60 MiB per part (0.5 → 1.0 GiB over eight parts), and at 40 M
    rows a 1 GiB Dask worker held ~160 MiB of data and ~660 MiB besides, and paused for good
    (it pauses at 80 % of its limit, used or not). Trimming after each part kept ingest at
    ~0.45 GiB, for 27 ms in all; fixing the mmap threshold instead cost 2 s at 4 M rows.
    """
    pa.default_memory_pool().release_unused()
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
