"""Progress on a terminal: bytes for ingest, tasks for Dask stages; silent in logs.

Shown only when stderr is a terminal and ``--quiet`` is not given. Task bars come from Dask's
local-scheduler callbacks, so they cover the threaded scheduler; on a cluster the dashboard
(its link is printed) shows the same.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

_bytes_bar = None  # the active ByteProgress of this process, if any


class ByteProgress:
    """A one-line ``label: done/total MiB (pct)`` counter, redrawn at most twice a second."""

    def __init__(self, label: str, total: int, stream=None):
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._last = 0.0

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last >= 0.5 or self.done >= self.total:
                self._last = now
                self.stream.write(f"\r{self.label}: {self.done / 2**20:,.0f} / "
                                  f"{self.total / 2**20:,.0f} MiB "
                                  f"({min(100, 100 * self.done // self.total)}%)")
                self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def report_bytes(n: int) -> None:
    """Add ``n`` source bytes to this process's ingest counter (no-op when none is shown)."""
    bar = _bytes_bar
    if bar is not None and n > 0:
        bar.advance(n)


def enabled(quiet: bool) -> bool:
    """Progress is for people at a terminal, never for logs."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def ingest_bytes(total: int, show: bool):
    """Count compressed source bytes read by ingest tasks running in this process."""
    global _bytes_bar
    if not show:
        yield
        return
    _bytes_bar = ByteProgress("ingest", total)
    try:
        yield
    finally:
        _bytes_bar.close()
        _bytes_bar = None


@contextlib.contextmanager
def dask_tasks(show: bool):
    """Dask's task progress bar for computations that take more than a second."""
    if not show:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0, dt=0.5, out=sys.stderr):
        yield
