"""Run one command against a fresh Dask cluster on 127.0.0.1, then take the cluster down.

Starts ``dask scheduler`` (writing a scheduler file) and ``dask worker`` with ``--nworkers N
--nthreads 1 [--memory-limit M]``, waits until the N workers have registered, runs the command,
stops every process it started, and prints ``{"wall_s", "startup_s", "returncode", "workers",
"memory_limit", "peak_mib"}`` as JSON on stdout. ``wall_s`` is the command alone, without the
cluster's start-up; ``peak_mib`` is the peak RSS of each role (``client``, ``scheduler``,
``workers``: one figure per worker process, sampled every 50 ms while the command runs).

bench_scale.py runs this as one child process so that the peak memory of its process tree is
the whole cluster's: scheduler, nanny, workers and the client command. The command's stdout
goes to stderr (stdout carries only the JSON); scheduler and worker logs go to files in --dir.

Usage::

    python benchmarks/dask_cluster_run.py --workers 2 [--memory-limit 1GiB] --dir DIR -- \\
        python -m fmprep data --scheduler DIR/scheduler.json ...
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0


def _wait_for_file(path: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"the scheduler exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no scheduler file {path} after {timeout:.0f} s")
        time.sleep(0.1)


def _wait_for_workers(scheduler_file: str, n: int, timeout: float) -> None:
    # A short-lived child, so that this process never imports distributed and its memory stays
    # out of the cluster's peak.
    code = ("import sys; from distributed import Client\n"
            f"with Client(scheduler_file={scheduler_file!r}, timeout='{timeout:.0f}s') as c:\n"
            f"    c.wait_for_workers({n}, timeout={timeout})\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout + 30)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process (last started first), then SIGKILL what is left of their trees."""
    tree = []
    for p in procs:
        try:
            tree += psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            pass
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=15)
    # Worker processes spawned by a nanny outlive it when the nanny is killed hard.
    _, alive = psutil.wait_procs(tree, timeout=5)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def _sample_peaks(scheduler: subprocess.Popen, workers: subprocess.Popen,
                  client: subprocess.Popen, stop: threading.Event, peaks: dict) -> None:
    """Largest RSS seen per process: ``peaks[(role, pid)]``, until ``stop`` is set.

    The worker processes are the children of the ``dask worker`` process (its nannies' spawns),
    not counting multiprocessing's resource tracker.
    """
    def rss(pid):
        try:
            return psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return 0

    while not stop.is_set():
        try:
            worker_pids = [c.pid for c in psutil.Process(workers.pid).children()
                           if "resource_tracker" not in " ".join(c.cmdline())]
        except psutil.Error:
            worker_pids = []
        for role, pids in (("scheduler", [scheduler.pid]), ("client", [client.pid]),
                           ("workers", worker_pids)):
            for pid in pids:
                peaks[(role, pid)] = max(peaks.get((role, pid), 0), rss(pid))
        time.sleep(0.05)


def _peak_mib(peaks: dict) -> dict:
    out = {"client": 0.0, "scheduler": 0.0, "workers": []}
    for (role, _), rss in sorted(peaks.items()):
        mib = round(rss / 2 ** 20, 1)
        if role == "workers":
            out["workers"].append(mib)
        else:
            out[role] = max(out[role], mib)
    return out


def run(workers: int, directory: str, command: list[str], timeout: float,
        memory_limit: str | None = None) -> dict:
    """Start the cluster, run ``command``, stop the cluster.

    Parameters
    ----------
    workers : int
        Worker processes (one thread each).
    directory : str
        Holds ``scheduler.json``, the scheduler and worker logs and the workers' local
        directory. The command should be given ``--scheduler DIR/scheduler.json``.
    command : list of str
        The client command.
    timeout : float
        Seconds the command may run before it is killed.
    memory_limit : str, optional
        Each worker's ``--memory-limit`` (Dask's default when not given).

    Returns
    -------
    dict
        ``wall_s`` (the command), ``startup_s`` (cluster start to all workers registered),
        ``returncode``, ``workers``, ``memory_limit`` and ``peak_mib`` (see the module).
    """
    os.makedirs(directory, exist_ok=True)
    scheduler_file = os.path.join(directory, "scheduler.json")
    if os.path.exists(scheduler_file):
        os.remove(scheduler_file)
    procs: list[subprocess.Popen] = []
    logs = []
    peaks: dict = {}
    try:
        t0 = time.perf_counter()
        logs.append(open(os.path.join(directory, "scheduler.log"), "wb"))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", HOST, "--port", "0",
             "--no-dashboard", "--scheduler-file", scheduler_file],
            stdout=logs[-1], stderr=subprocess.STDOUT))
        _wait_for_file(scheduler_file, procs[0], START_TIMEOUT_S)
        logs.append(open(os.path.join(directory, "worker.log"), "wb"))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", scheduler_file,
             "--nworkers", str(workers), "--nthreads", "1", "--host", HOST, "--no-dashboard",
             "--local-directory", os.path.join(directory, "worker-space")]
            + (["--memory-limit", memory_limit] if memory_limit else []),
            stdout=logs[-1], stderr=subprocess.STDOUT))
        _wait_for_workers(scheduler_file, workers, START_TIMEOUT_S)
        startup = time.perf_counter() - t0

        t0 = time.perf_counter()
        client = subprocess.Popen(command, stdout=sys.stderr)
        procs.append(client)
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_peaks,
                                   args=(procs[0], procs[1], client, stop, peaks), daemon=True)
        sampler.start()
        try:
            code = client.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = "timeout"
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join(timeout=5)
    finally:
        _stop(procs)
        for f in logs:
            f.close()
    return {"wall_s": round(wall, 3), "startup_s": round(startup, 3), "returncode": code,
            "workers": workers, "memory_limit": memory_limit, "peak_mib": _peak_mib(peaks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--dir", required=True, help="scheduler file, logs, worker space")
    parser.add_argument("--memory-limit", help="per worker, e.g. 1GiB (default: Dask's)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds the command may run (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.workers < 1:
        parser.error("give --workers >= 1 and a command after --")
    report = run(args.workers, args.dir, command, args.timeout, args.memory_limit)
    print(json.dumps(report), flush=True)
    return 0 if report["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
