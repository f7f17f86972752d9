"""Wall time, rows/s and peak memory of `fmprep data` on a generated review file.

Usage: python benchmarks/bench_data.py --rows 2000000 [--scheduler threads|local] [--dir DIR]
       python benchmarks/bench_data.py --rows 10000000 --workers 2 --memory-limit 1GiB \\
           [--out data/bench/capped.json]

Generates the file once (kept in DIR), then runs the whole prep with --force in a child
process and reports its wall time, stage times and peak resident memory (the whole process
tree, its largest process). With --workers the prep runs on a fresh `dask scheduler` and that
many `dask worker` processes (one thread each, the given memory limit) on 127.0.0.1, started by
dask_cluster_run.py, which also reports each worker's peak; wall time then leaves out the
cluster's start-up. --out writes the figures as JSON.
No assertions: timings on a shared 2-core machine are noisy, compare runs made side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))


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


def stage_manifests(work: str, output: str) -> dict:
    """``{stage: manifest}`` of the ingest, prepare and encode stages of one make data run."""
    from fmprep.config import INGEST_MANIFEST, MANIFEST

    found = {}
    for stage, path in (("ingest", os.path.join(work, INGEST_MANIFEST)),
                        ("prepare", os.path.join(work, MANIFEST)),
                        ("encode", os.path.join(output, MANIFEST))):
        if os.path.exists(path):
            with open(path) as f:
                found[stage] = json.load(f)
    return found


def stage_seconds(work: str, output: str) -> dict:
    """``{stage: seconds}`` as the stage loop recorded them in each stage's manifest."""
    return {stage: m["seconds"] for stage, m in stage_manifests(work, output).items()
            if "seconds" in m}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--dir", default="data/bench")
    parser.add_argument("--workers", type=int, default=0,
                        help="start a scheduler and this many worker processes for the run")
    parser.add_argument("--memory-limit", default="1GiB", help="per worker, with --workers")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    source = os.path.join(args.dir, f"reviews_{args.rows}.tsv.gz")
    if not os.path.exists(source):
        subprocess.run([sys.executable, "-m", "fmprep", "-q", "sample", "--rows",
                        str(args.rows), "--out", source], check=True)
    cmd = [sys.executable, "-m", "fmprep", "data", "--source", source, "--work",
           os.path.join(args.dir, "work"), "--output", os.path.join(args.dir, "output"), "--force"]
    if args.workers:
        cluster_dir = os.path.join(args.dir, "cluster")
        cmd = [sys.executable, os.path.join(HERE, "dask_cluster_run.py"), "--workers",
               str(args.workers), "--memory-limit", args.memory_limit, "--dir", cluster_dir,
               "--"] + cmd + ["--scheduler", os.path.join(cluster_dir, "scheduler.json")]
    else:
        cmd += ["--scheduler", args.scheduler]
    peak, stop = {}, threading.Event()
    watcher = threading.Thread(target=peak_rss_of_tree, args=(os.getpid(), stop, peak))
    watcher.start()
    try:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        watcher.join()
    sys.stderr.write(done.stderr)
    if done.returncode:
        return done.returncode
    cluster = json.loads(done.stdout.strip().splitlines()[-1]) if args.workers else None
    if cluster:
        wall = cluster["wall_s"]  # the command alone, without the cluster's start-up
    size = os.path.getsize(source)
    where = f"{args.workers} workers × {args.memory_limit}" if args.workers else args.scheduler
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(),
                          "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
              "rows": args.rows, "gzip_mib": round(size / 2**20, 1), "scheduler": where,
              "wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall),
              "stages_s": stage_seconds(os.path.join(args.dir, "work"),
                                        os.path.join(args.dir, "output")),
              "peak_mib": {"total": round(peak.get("total", 0) / 2**20),
                           "largest_process": round(peak.get("largest", 0) / 2**20)}}
    if cluster:
        result["peak_mib"].update(cluster["peak_mib"])
    print(f"\nrows {args.rows:,}  gzip {size / 2**20:.0f} MiB  scheduler {where}")
    print(f"wall {wall:.1f} s  rows/s {args.rows / wall:,.0f}  stages {result['stages_s']}")
    print(f"peak RSS: total {result['peak_mib']['total']} MiB, largest process "
          f"{result['peak_mib']['largest_process']} MiB"
          + (f", per worker {cluster['peak_mib']['workers']} MiB, scheduler "
             f"{cluster['peak_mib']['scheduler']} MiB, client {cluster['peak_mib']['client']} MiB"
             if cluster else ""))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
