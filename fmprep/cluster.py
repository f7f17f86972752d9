"""Where Dask work runs: the threaded scheduler, a LocalCluster, or an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os

from .errors import FmprepError, setting

log = logging.getLogger(__name__)


def _dashboard(client) -> str:
    """``", dashboard <link>"`` when the scheduler serves one, else ``", no dashboard"``."""
    try:
        served = "dashboard" in client.scheduler_info().get("services", {})
    except Exception:  # an old or unusual scheduler: say nothing rather than fail the run
        return ""
    return f", dashboard {client.dashboard_link}" if served else ", no dashboard"


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, memory_limit: str = "auto"):
    """Connect to the scheduler named by ``scheduler`` for the duration of the block.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://host:port`` (or any distributed address), a path to a scheduler file, ``local``
        for a LocalCluster of one single-threaded worker process per core, or ``threads`` /
        None for Dask's threaded scheduler in this process. ``DASK_SCHEDULER_ADDRESS`` is used
        when ``scheduler`` is None.
    memory_limit : str
        Per-worker memory limit of a ``local`` cluster.

    Yields
    ------
    distributed.Client or None
    """
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or "threads"
    if address == "threads":
        import dask
        import dask.threaded

        # Named outright: otherwise every compute imports distributed (0.2 s) to look for a
        # client, and a name ("threads") would too.
        with dask.config.set(scheduler=dask.threaded.get):
            yield None
        return
    from distributed import Client, LocalCluster

    if address == "local":
        with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                          processes=True, memory_limit=memory_limit,
                          dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
                Client(cluster) as client:
            log.info("dask: LocalCluster of %d processes%s", len(cluster.workers),
                     _dashboard(client))
            yield client
        return
    try:
        if os.path.exists(address):
            client = Client(scheduler_file=address, timeout="20s")
        else:
            client = Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as err:
        raise FmprepError(f"cannot reach the Dask scheduler at {address} ({err}); start it or "
                          f"fix {setting('scheduler')}") from None
    with client:
        log.info("dask: %s%s", address, _dashboard(client))
        yield client
