"""Wall time, rows/s and peak memory of `fmprep data` on a generated review file.

Usage: python benchmarks/bench_data.py --rows 2000000 [--scheduler threads|local] [--dir DIR]

Generates the file once (kept in DIR), then runs the whole prep with --force in a child
process and reports its wall time and the peak resident memory of the child (and of the
largest worker for --scheduler local). No assertions: timings on a shared 2-core machine are
noisy, compare runs made side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import psutil


def peak_rss_of_tree(proc: subprocess.Popen, stop: threading.Event, out: dict) -> None:
    """Poll the process tree every 50 ms; keep the largest total and single-process RSS."""
    root = psutil.Process(proc.pid)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--dir", default="data/bench")
    args = parser.parse_args()

    source = os.path.join(args.dir, f"reviews_{args.rows}.tsv.gz")
    if not os.path.exists(source):
        subprocess.run([sys.executable, "-m", "fmprep", "-q", "sample", "--rows",
                        str(args.rows), "--out", source], check=True)
    cmd = [sys.executable, "-m", "fmprep", "data", "--source", source, "--work",
           os.path.join(args.dir, "work"), "--output", os.path.join(args.dir, "output"),
           "--scheduler", args.scheduler, "--force"]
    peak, stop = {}, threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    watcher = threading.Thread(target=peak_rss_of_tree, args=(proc, stop, peak))
    watcher.start()
    code = proc.wait()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if code:
        return code
    size = os.path.getsize(source)
    print(f"\nrows {args.rows:,}  gzip {size / 2**20:.0f} MiB  scheduler {args.scheduler}")
    print(f"wall {wall:.1f} s  rows/s {args.rows / wall:,.0f}  "
          f"peak RSS: total {peak.get('total', 0) / 2**20:.0f} MiB, "
          f"largest process {peak.get('largest', 0) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
