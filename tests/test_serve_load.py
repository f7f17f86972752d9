"""The local inference server under load and when it stops: real processes, loopback only.

The server runs as ``python -m fmprep.serving.serve``, as ``train_deploy.py deploy`` starts it. Every
client is a thread with its own HTTP connection and a socket timeout; every wait has a deadline.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fmprep import config
from fmprep.model.fm import FMModel
from fmprep.serving.serve import InferenceServer, make_server, sparse_json_body

F = 12      # feature_dim: 5 users, 6 items, days column
K = 4
CLIENTS = 200
TIMEOUT = 60  # seconds any client waits for an answer; the test fails instead of hanging


def _model():
    rng = np.random.default_rng(5)
    return FMModel(w0=3.5, w=rng.normal(0, 0.3, F), V=rng.normal(0, 0.2, (F, K)))


def _rows(n, seed):
    """CSR rows in fmprep's layout (user, item, days) with F columns."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 5, n)
    item = rng.integers(5, 11, n)
    days = rng.uniform(0, 3, n).astype(np.float32)
    indices = np.stack([user, item, np.full(n, F - 1)], axis=1).ravel()
    values = np.stack([np.ones(n, np.float32), np.ones(n, np.float32), days], axis=1).ravel()
    return np.arange(0, 3 * n + 1, 3), indices, values


def _start(tmp_path):
    """``python -m fmprep.serving.serve`` on a free loopback port; returns (process, host, port)."""
    ready = tmp_path / "ready.json"
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmprep.serving.serve", "--model-dir", str(tmp_path / "model"),
         "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + config.SERVE_START_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"the server did not start: {(tmp_path / 'serve.log').read_text()}")
        time.sleep(0.05)
    host, port = json.loads(ready.read_text())["url"].removeprefix("http://").split(":")
    return proc, host, int(port)


def _stop(proc):
    """SIGTERM and the exit status; a server that ignores it is killed and fails the test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the server did not exit within 30 s of SIGTERM")


@pytest.fixture
def served(tmp_path):
    """A small model served by its own process; yields (model, host, port, process)."""
    model = _model()
    model.save(str(tmp_path / "model"))
    proc, host, port = _start(tmp_path)
    try:
        yield model, host, port, proc
    finally:
        _stop(proc)


def _fire(host, port, requests_per_client, keep_alive):
    """CLIENTS threads, released together, each on its own connection; returns their results.

    Each result is a list of ``(status, scores, expected)`` per request, or the exception that
    ended the client (a reset, a timeout).
    """
    start = threading.Barrier(CLIENTS, timeout=TIMEOUT)
    results = [None] * CLIENTS

    def client(i):
        got = []
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            start.wait()
            for j in range(requests_per_client):
                csr = _rows(1 + (i + j) % 3, seed=i * 1000 + j)  # every request its own rows
                headers = {"Content-Type": "application/json"}
                if not keep_alive:
                    headers["Connection"] = "close"
                conn.request("POST", "/invocations", body=sparse_json_body(*csr, F),
                             headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                scores = ([p["score"] for p in json.loads(body)["predictions"]]
                          if resp.status == 200 else body)
                got.append((resp.status, scores, csr))
                if not keep_alive:
                    conn.close()
            results[i] = got
        except Exception as err:  # noqa: BLE001 (reported by the test, with the client's number)
            results[i] = err
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:  # each ends by itself: a bounded number of requests, each with a timeout
        t.join()
    return results


@pytest.mark.parametrize("requests_per_client, keep_alive", [(1, False), (5, True)],
                         ids=["new-connection-each", "keep-alive"])
def test_200_concurrent_clients_all_answered(served, requests_per_client, keep_alive):
    """200 clients connect at once (the stdlib's backlog of 5 reset dozens): all answered."""
    model, host, port, _ = served
    results = _fire(host, port, requests_per_client, keep_alive)
    failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException) or r is None}
    assert not failed, (f"{len(failed)} of {CLIENTS} clients failed, e.g. "
                        f"{next(iter(failed.items()))}")
    for got in results:
        assert len(got) == requests_per_client
        for status, scores, csr in got:
            assert status == 200, scores
            assert scores == pytest.approx(model.predict(*csr).tolist(), rel=1e-6)


def _read_head(sock) -> bytes:
    """Bytes up to the blank line ending a response head (the server sends nothing beyond)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _refused(host, port) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_the_request_in_flight_finish(served):
    """SIGTERM mid-request: no new connections, the request is answered, then exit status 0."""
    model, host, port, proc = served
    csr = _rows(3, seed=1)
    body = sparse_json_body(*csr, F)

    idle = http.client.HTTPConnection(host, port, timeout=TIMEOUT)  # keep-alive, between requests
    idle.request("GET", "/ping")
    assert idle.getresponse().read() == b""

    slow = socket.create_connection((host, port), timeout=TIMEOUT)
    try:
        # The headers alone; "100 Continue" proves the server has the request in hand.
        slow.sendall(f"POST /invocations HTTP/1.1\r\nHost: {host}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        assert _read_head(slow).startswith(b"HTTP/1.1 100")

        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TIMEOUT
        while not _refused(host, port):  # the listening socket closes once the stop begins
            assert time.monotonic() < deadline, "the server kept accepting after SIGTERM"
            time.sleep(0.05)
        assert proc.poll() is None, "the server exited with a request in flight"

        slow.sendall(body)
        resp = http.client.HTTPResponse(slow)
        resp.begin()
        scores = [p["score"] for p in json.loads(resp.read())["predictions"]]
        assert resp.status == 200 and resp.getheader("Connection") == "close"
        assert scores == pytest.approx(model.predict(*csr).tolist(), rel=1e-6)
    finally:
        slow.close()
    # The idle keep-alive connection was closed by the server, not left to hold the exit up.
    assert idle.sock.recv(1) == b""
    idle.close()
    assert proc.wait(timeout=30) == 0


def test_sigterm_with_nothing_in_flight_exits_0(served):
    _, host, port, proc = served
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    conn.request("GET", "/ping")
    assert conn.getresponse().status == 200  # the connection stays open, idle
    try:
        assert _stop(proc) == 0
    finally:
        conn.close()


# --- in-process: the connection limit and drain() ------------------------------------------------

def _serve_in_thread(srv):
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return thread


def test_connections_over_the_limit_wait_for_a_free_slot():
    """At max_connections the server stops accepting; the next client is served when one closes."""
    model = _model()
    srv = InferenceServer(model, "127.0.0.1", 0, max_connections=1)
    _serve_in_thread(srv)
    host, port = srv.server_address[:2]
    first = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    second = None
    try:
        first.request("GET", "/ping")
        assert first.getresponse().read() == b""  # the keep-alive connection holds the slot
        second = socket.create_connection((host, port), timeout=TIMEOUT)
        second.sendall(f"GET /ping HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        second.settimeout(0.3)
        with pytest.raises(TimeoutError):  # not answered while the slot is taken
            second.recv(1)
        second.settimeout(TIMEOUT)
        first.close()
        assert _read_head(second).startswith(b"HTTP/1.1 200")
    finally:
        first.close()
        if second is not None:
            second.close()
        srv.shutdown()
        assert srv.drain(10) == 0
        srv.server_close()


def test_drain_closes_idle_connections_and_refuses_new_ones():
    srv = make_server(_model(), "127.0.0.1", 0)
    _serve_in_thread(srv)
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b""
        srv.shutdown()
        assert srv.drain(10) == 0
        assert conn.sock.recv(1) == b""  # closed by the server
        assert _refused(host, port)
    finally:
        conn.close()
        srv.server_close()
