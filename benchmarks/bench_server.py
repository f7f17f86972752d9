"""Latency and throughput of the local inference server (fmprep.serve) on 127.0.0.1.

Saves a random FM model of the reference's size, starts ``python -m fmprep.serve`` in its own
process (so client and server do not share a GIL), then over one keep-alive connection measures

* single-instance sparse JSON requests: p50 / p99 latency (the online use case);
* 1000-instance batches as sparse JSON and as RecordIO-protobuf: latency and instances per second.

Prints a table and stops the server. No assertions: numbers on a shared 2-core machine are noisy.

    python benchmarks/bench_server.py [--feature-dim 100000] [--num-factors 256]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from fmprep import recordio
from fmprep.fm import FMModel
from fmprep.serve import sparse_json_body


def fm_rows(rng, n, feature_dim):
    """n rows in fmprep's layout: a user, an item and days_since_first."""
    users = feature_dim // 2
    user = rng.integers(0, users, n)
    item = rng.integers(users, feature_dim - 1, n)
    indices = np.stack([user, item, np.full(n, feature_dim - 1)], axis=1).ravel()
    values = np.stack([np.ones(n), np.ones(n), rng.uniform(0, 5, n)], axis=1).ravel()
    return np.arange(0, 3 * n + 1, 3), indices, values.astype(np.float32)


def start_server(model_dir, workdir):
    ready = os.path.join(workdir, "ready.json")
    proc = subprocess.Popen([sys.executable, "-m", "fmprep.serve", "--model-dir", model_dir,
                             "--host", "127.0.0.1", "--port", "0", "--ready-file", ready],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    with open(ready) as f:
        url = json.load(f)["url"]
    host, port = url.removeprefix("http://").split(":")
    return proc, host, int(port)


def timed_posts(conn, bodies, content_type):
    """Send each body, check the answer, return per-request seconds."""
    times = []
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", "/invocations", body=body,
                     headers={"Content-Type": content_type, "Accept": "application/json"})
        resp = conn.getresponse()
        out = resp.read()
        times.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise SystemExit(f"server answered {resp.status}: {out[:200]!r}")
    return np.array(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feature-dim", type=int, default=100_000,
                    help="users + items + 1 (default %(default)s)")
    ap.add_argument("--num-factors", type=int, default=256, help="(default %(default)s)")
    ap.add_argument("--single", type=int, default=500, help="single-instance requests")
    ap.add_argument("--batches", type=int, default=30, help="batch requests per format")
    ap.add_argument("--batch-size", type=int, default=1000, help="instances per batch")
    ns = ap.parse_args()

    rng = np.random.default_rng(0)
    F, k = ns.feature_dim, ns.num_factors
    model = FMModel(w0=3.9, w=rng.normal(0, 0.1, F).astype(np.float32),
                    V=rng.normal(0, 0.01, (F, k)).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        model.save(model_dir)
        proc, host, port = start_server(model_dir, tmp)
        try:
            conn = http.client.HTTPConnection(host, port, timeout=60)
            singles = [sparse_json_body(*fm_rows(rng, 1, F), F) for _ in range(ns.single)]
            batches = [fm_rows(rng, ns.batch_size, F) for _ in range(ns.batches)]
            json_batches = [sparse_json_body(*b, F) for b in batches]
            pbr_batches = [recordio.encode_csr(*b, None, F).tobytes() for b in batches]

            timed_posts(conn, singles[:20] + json_batches[:2], "application/json")  # warm up
            one = timed_posts(conn, singles, "application/json")
            bj = timed_posts(conn, json_batches, "application/json")
            bp = timed_posts(conn, pbr_batches, "application/x-recordio-protobuf")
            conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    ms = 1e3
    print(f"fmprep.serve on 127.0.0.1: feature_dim {F}, num_factors {k}, one keep-alive "
          "connection")
    print(f"{'request':<34}{'n':>5}{'body KB':>9}{'p50 ms':>9}{'p99 ms':>9}{'inst/s':>10}")
    for name, t, bodies, per in (
            ("1 instance, sparse JSON", one, singles, 1),
            (f"{ns.batch_size} instances, sparse JSON", bj, json_batches, ns.batch_size),
            (f"{ns.batch_size} instances, RecordIO-protobuf", bp, pbr_batches, ns.batch_size)):
        size = np.mean([len(b) for b in bodies]) / 1024
        print(f"{name:<34}{len(t):>5}{size:>9.1f}{np.percentile(t, 50) * ms:>9.2f}"
              f"{np.percentile(t, 99) * ms:>9.2f}{per * len(t) / t.sum():>10.0f}")


if __name__ == "__main__":
    main()
