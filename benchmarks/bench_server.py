"""Latency and throughput of the local inference server (fmprep.serving.serve) on 127.0.0.1.

Saves a random FM model of the reference's size, starts ``python -m fmprep.serving.serve`` in its own
process (so client and server do not share a GIL), then measures

* over one keep-alive connection: single-instance sparse JSON requests (p50 / p99 latency, the
  online use case) and 1000-instance batches as sparse JSON and as RecordIO-protobuf (latency
  and instances per second);
* concurrent clients (default 1, 10 and 100): each a thread with its own keep-alive connection,
  all connecting at once, sending single-instance requests; p50 / p99 latency (the first
  request's includes the connect), requests per second and failed requests by kind;
* connection bursts (default 100 and 200 clients): each opens a new connection at the same
  moment and sends one request, the load that overflowed the old listen backlog of 5; failed
  requests (resets, refusals, timeouts) and p50 / p99 latency.

Every client thread stops after its share of ``--requests`` or ``--level-seconds``, whichever
comes first, and waits at most ``--timeout`` seconds for any answer. The clients run in this
process, so at 100 clients their own GIL contention is part of the latency. Prints tables and
stops the server. No assertions: numbers on a shared 2-core machine are noisy.

    python benchmarks/bench_server.py [--feature-dim 100000] [--num-factors 256]
        [--clients 1,10,100] [--burst 100,200]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from fmprep import recordio
from fmprep.model.fm import FMModel
from fmprep.serving.serve import sparse_json_body


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
    proc = subprocess.Popen([sys.executable, "-m", "fmprep.serving.serve", "--model-dir", model_dir,
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


def failure_kind(err: BaseException) -> str:
    """A short name for why a request got no answer."""
    if isinstance(err, http.client.RemoteDisconnected):  # before ConnectionResetError, its base
        return "closed"
    if isinstance(err, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    if isinstance(err, TimeoutError):
        return "timeout"
    return type(err).__name__


def run_clients(host, port, bodies, clients, per_client, keep_alive, timeout, seconds):
    """``clients`` threads, released together, each sending ``per_client`` requests.

    With ``keep_alive`` each client reuses one connection (reconnecting after a failure);
    without, every request opens a new connection. Returns the latencies of answered requests
    (seconds), a Counter of failures by kind, and the wall time.
    """
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies, failures = [], collections.Counter()

    def client(i):
        mine, failed = [], collections.Counter()
        conn = None
        start.wait(timeout=60)
        stop_at = time.monotonic() + seconds
        for j in range(per_client):
            if time.monotonic() > stop_at:
                failed["not sent (time limit)"] += per_client - j
                break
            body = bodies[(i * per_client + j) % len(bodies)]
            headers = {"Content-Type": "application/json"}
            if not keep_alive:
                headers["Connection"] = "close"
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as err:
                failed[failure_kind(err)] += 1
                conn.close()
                conn = None
                continue
            if resp.status == 200:
                mine.append(time.perf_counter() - t0)
            else:
                failed[f"HTTP {resp.status}"] += 1
            if not keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)
            failures.update(failed)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait(timeout=60)
    t0 = time.perf_counter()
    for t in threads:  # each stops by itself: bounded requests, time limit and socket timeout
        t.join()
    return np.array(latencies), failures, time.perf_counter() - t0


def describe(failures) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(failures.items())) or "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feature-dim", type=int, default=100_000,
                    help="users + items + 1 (default %(default)s)")
    ap.add_argument("--num-factors", type=int, default=256, help="(default %(default)s)")
    ap.add_argument("--single", type=int, default=500, help="single-instance requests")
    ap.add_argument("--batches", type=int, default=30, help="batch requests per format")
    ap.add_argument("--batch-size", type=int, default=1000, help="instances per batch")
    ap.add_argument("--clients", default="1,10,100",
                    help="concurrent keep-alive client counts (default %(default)s)")
    ap.add_argument("--requests", type=int, default=1000,
                    help="requests per concurrency level, split among its clients, at least 5 "
                         "each (default %(default)s)")
    ap.add_argument("--burst", default="100,200",
                    help="clients that each open a new connection at once (default "
                         "%(default)s; empty for none)")
    ap.add_argument("--timeout", type=float, default=30, help="client socket timeout, s")
    ap.add_argument("--level-seconds", type=float, default=60,
                    help="each client stops sending after this long (default %(default)s)")
    ns = ap.parse_args()
    levels = [int(c) for c in ns.clients.split(",") if c.strip()]
    bursts = [int(c) for c in ns.burst.split(",") if c.strip()]

    rng = np.random.default_rng(0)
    F, k = ns.feature_dim, ns.num_factors
    model = FMModel(w0=3.9, w=rng.normal(0, 0.1, F).astype(np.float32),
                    V=rng.normal(0, 0.01, (F, k)).astype(np.float32))
    concurrent, burst = [], []
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

            # warm up, both decoders included (the first call of a numba function compiles it)
            timed_posts(conn, singles[:20] + json_batches[:2], "application/json")
            timed_posts(conn, pbr_batches[:2], "application/x-recordio-protobuf")
            one = timed_posts(conn, singles, "application/json")
            bj = timed_posts(conn, json_batches, "application/json")
            bp = timed_posts(conn, pbr_batches, "application/x-recordio-protobuf")
            conn.close()

            for c in levels:
                per = max(5, -(-ns.requests // c))
                concurrent.append((c, per, *run_clients(host, port, singles, c, per, True,
                                                        ns.timeout, ns.level_seconds)))
            for c in bursts:
                burst.append((c, *run_clients(host, port, singles, c, 1, False, ns.timeout,
                                              ns.level_seconds)))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 30 s"

    ms = 1e3

    def pct(t, q):
        return f"{np.percentile(t, q) * ms:.2f}" if t.size else "-"

    print(f"fmprep.serving.serve on 127.0.0.1: feature_dim {F}, num_factors {k}, one keep-alive "
          "connection")
    print(f"{'request':<34}{'n':>5}{'body KB':>9}{'p50 ms':>9}{'p99 ms':>9}{'inst/s':>10}")
    for name, t, bodies, per in (
            ("1 instance, sparse JSON", one, singles, 1),
            (f"{ns.batch_size} instances, sparse JSON", bj, json_batches, ns.batch_size),
            (f"{ns.batch_size} instances, RecordIO-protobuf", bp, pbr_batches, ns.batch_size)):
        size = np.mean([len(b) for b in bodies]) / 1024
        print(f"{name:<34}{len(t):>5}{size:>9.1f}{np.percentile(t, 50) * ms:>9.2f}"
              f"{np.percentile(t, 99) * ms:>9.2f}{per * len(t) / t.sum():>10.0f}")
    if concurrent:
        print("\nconcurrent clients, one keep-alive connection each, 1-instance sparse JSON")
        print(f"{'clients':>7}{'req each':>9}{'answered':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'req/s':>8}  failed")
        for c, per, t, failed, wall in concurrent:
            print(f"{c:>7}{per:>9}{t.size:>9}{pct(t, 50):>9}{pct(t, 99):>9}"
                  f"{t.size / wall:>8.0f}  {describe(failed)}")
    if burst:
        print("\nconnection bursts: every client opens a new connection at once, one request")
        print(f"{'clients':>7}{'answered':>9}{'p50 ms':>9}{'p99 ms':>9}{'wall s':>8}  failed")
        for c, t, failed, wall in burst:
            print(f"{c:>7}{t.size:>9}{pct(t, 50):>9}{pct(t, 99):>9}{wall:>8.2f}  "
                  f"{describe(failed)}")
    print(f"\nserver exit status after SIGTERM: {code}")


if __name__ == "__main__":
    main()
