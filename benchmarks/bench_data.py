"""Wall time, rows/s and peak memory of `fmprep data` on a generated review file.

Usage: python benchmarks/bench_data.py --rows 2000000 [--scheduler threads|local] [--dir DIR]
       python benchmarks/bench_data.py --rows 10000000 --workers 2 --memory-limit 1GiB

Generates the file once (kept in DIR), then runs the whole prep with --force in a child
process and reports its wall time and the peak resident memory of the child (and of the
largest worker). With --workers it first starts a `dask scheduler` and that many `dask worker`
processes (one thread each, the given memory limit) on 127.0.0.1 and runs the prep on them.
No assertions: timings on a shared 2-core machine are noisy, compare runs made side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import psutil


def peak_rss_of_tree(pid: int, stop: threading.Event, out: dict) -> None:
    """Poll the process tree every 50 ms; keep the largest total and single-process RSS."""
    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root] + root.children(recursive=True)
            rss = [p.memory_info().rss for p in procs if p.is_running()]
        except psutil.Error:
            rss = []
        if rss:
            out["total"] = max(out.get("total", 0), sum(rss))
            out["largest"] = max(out.get("largest", 0), max(rss))
        time.sleep(0.05)


def start_cluster(directory: str, n_workers: int, memory_limit: str) -> list:
    """Start `dask scheduler` + worker processes; return [scheduler file, *processes]."""
    from distributed import Client

    sched_file = os.path.abspath(os.path.join(directory, "scheduler.json"))
    if os.path.exists(sched_file):
        os.remove(sched_file)
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--dashboard-address", "127.0.0.1:0",
                               "--scheduler-file", sched_file], stderr=subprocess.DEVNULL)]
    for i in range(n_workers):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", sched_file,
             "--nthreads", "1", "--memory-limit", memory_limit, "--host", "127.0.0.1",
             "--local-directory", os.path.join(directory, f"worker{i}"), "--no-dashboard"],
            stderr=subprocess.DEVNULL))
    for _ in range(600):
        if os.path.exists(sched_file):
            break
        time.sleep(0.1)
    with Client(scheduler_file=sched_file, timeout="60s") as client:
        client.wait_for_workers(n_workers, timeout=120)
    return [sched_file, *procs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--dir", default="data/bench")
    parser.add_argument("--workers", type=int, default=0,
                        help="start a scheduler and this many worker processes for the run")
    parser.add_argument("--memory-limit", default="1GiB", help="per worker, with --workers")
    args = parser.parse_args()

    source = os.path.join(args.dir, f"reviews_{args.rows}.tsv.gz")
    if not os.path.exists(source):
        subprocess.run([sys.executable, "-m", "fmprep", "-q", "sample", "--rows",
                        str(args.rows), "--out", source], check=True)
    cluster = start_cluster(args.dir, args.workers, args.memory_limit) if args.workers else []
    scheduler = cluster[0] if cluster else args.scheduler
    cmd = [sys.executable, "-m", "fmprep", "data", "--source", source, "--work",
           os.path.join(args.dir, "work"), "--output", os.path.join(args.dir, "output"),
           "--scheduler", scheduler, "--force"]
    peak, stop = {}, threading.Event()
    watcher = threading.Thread(target=peak_rss_of_tree, args=(os.getpid(), stop, peak))
    watcher.start()
    try:
        t0 = time.perf_counter()
        code = subprocess.run(cmd).returncode
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        watcher.join()
        for proc in cluster[1:][::-1]:
            proc.terminate()
            proc.wait(timeout=30)
    if code:
        return code
    size = os.path.getsize(source)
    where = f"{args.workers} workers × {args.memory_limit}" if args.workers else args.scheduler
    print(f"\nrows {args.rows:,}  gzip {size / 2**20:.0f} MiB  scheduler {where}")
    print(f"wall {wall:.1f} s  rows/s {args.rows / wall:,.0f}  "
          f"peak RSS: total {peak.get('total', 0) / 2**20:.0f} MiB, "
          f"largest process {peak.get('largest', 0) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
