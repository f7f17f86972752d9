"""When fmprep hands freed memory back to the OS (fmprep.memory)."""

from __future__ import annotations

from fmprep import memory

MiB = 1 << 20


def test_trims_always_on_a_worker_and_elsewhere_above_the_threshold():
    assert memory.should_trim(600 * MiB, 1024 * MiB)
    assert memory.should_trim(100 * MiB, 1024 * MiB)
    assert memory.should_trim(memory.TRIM_ABOVE + 1, None)
    assert not memory.should_trim(memory.TRIM_ABOVE - 1, None)


def test_trim_runs_off_a_worker():
    memory.trim()  # must not fail where no Dask worker exists (and distributed may be loaded)
    assert memory._worker_memory_limit() is None


def test_a_dask_worker_reports_its_memory_limit():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="512MiB",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert client.submit(memory._worker_memory_limit).result() == 512 * MiB
