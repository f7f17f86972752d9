"""The local backend's server: start it, find it, ask it, stop it.

``deploy`` starts ``python -m fmprep.serving.serve`` detached on 127.0.0.1 and records it in
OUTPUT/endpoint.json (url, pid, model, log, the data the model was trained on); ``predict``
posts to the recorded url; ``undeploy`` stops the recorded process and removes the record.
OUTPUT must be local: the record holds a pid, meaningful only on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from .. import config, storage
from ..errors import FmprepError, command, setting
from ..freshness import check_model, read_manifest

SERVER_MODULE = "fmprep.serving.serve"
READY_FILE = ".serve-ready.json"  # OUTPUT: the starting server writes its url here


def local_dir(output: str) -> str:
    """``output`` itself, or a one-line error when it is remote.

    The local server's record is a pid on this machine, so it lives in a local OUTPUT only.
    """
    if storage.is_remote(output):
        raise FmprepError(f"the local server keeps its state under OUTPUT, which is {output}; "
                          f"use a local OUTPUT, or {setting('backend')}sagemaker")
    return output


def read_local_record(output: str) -> dict | None:
    """The running server's record in OUTPUT/endpoint.json, or None when there is none."""
    return storage.read_json(os.path.join(local_dir(output), config.ENDPOINT_RECORD))


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that already exited
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, check the command line names the server module."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return SERVER_MODULE.encode() in f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc") and _alive(pid)


def _last_line(path: str) -> str:
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def deploy_local(output: str, model_dir: str, host: str, port: int) -> dict:
    """Start the local inference server detached and wait until it answers ``/ping``.

    Parameters
    ----------
    output : str
        Local OUTPUT directory; the record and the server's log go there.
    model_dir : str
        The model to serve; it must match OUTPUT's data (:func:`fmprep.freshness.check_model`).
    host, port : str, int
        Address to listen on; port 0 picks a free port.

    Returns
    -------
    dict
        The record written to OUTPUT/endpoint.json: ``backend``, ``url``, ``pid``,
        ``model_dir``, ``log``, ``data``.

    Raises
    ------
    FmprepError
        A server is already running, there is no (current) model, or the server did not start.
    """
    output = local_dir(output)
    record_path = os.path.join(output, config.ENDPOINT_RECORD)
    running = storage.read_json(record_path)
    if running and _ping(running["url"]):
        raise FmprepError(f"a local server is already running at {running['url']} (pid "
                          f"{running['pid']}); run undeploy first")
    model_meta = storage.read_json(os.path.join(model_dir, "model.json"))
    if model_meta is None:
        raise FmprepError(f"no model in {model_dir}; run {command('train')} first (or pass "
                          f"{setting('model_dir')})")
    check_model(model_meta, read_manifest(output), model_dir)
    log_path = os.path.join(output, config.SERVER_LOG)
    ready = os.path.join(output, READY_FILE)
    if os.path.exists(ready):
        os.remove(ready)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--model-dir", os.path.abspath(model_dir),
             "--host", host, "--port", str(port), "--ready-file", os.path.abspath(ready)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own session: it outlives this command and make
    deadline = time.monotonic() + config.SERVE_START_TIMEOUT_S
    url = None
    # The server writes its url (the real port, when port is 0) to the ready file once bound.
    while url is None or not _ping(url):
        if proc.poll() is not None:
            raise FmprepError(f"the server exited with status {proc.returncode}: "
                              f"{_last_line(log_path)} (log: {log_path})")
        if time.monotonic() > deadline:
            proc.terminate()
            raise FmprepError(f"the server did not answer within {config.SERVE_START_TIMEOUT_S} "
                              f"s; see {log_path}")
        if url is None and os.path.exists(ready):
            url = storage.read_json(ready)["url"]
        time.sleep(0.1)
    os.remove(ready)
    record = {"backend": "local", "url": url, "pid": proc.pid,
              "model_dir": os.path.abspath(model_dir), "log": os.path.abspath(log_path),
              "data": model_meta.get("data")}
    storage.write_json(record_path, record)
    return record


def undeploy_local(output: str) -> str:
    """Stop the server recorded in OUTPUT/endpoint.json (SIGTERM) and remove the record.

    Returns
    -------
    str
        What was done, for the user.

    Raises
    ------
    FmprepError
        No record, or the server did not stop within 10 s.
    """
    record_path = os.path.join(local_dir(output), config.ENDPOINT_RECORD)
    record = storage.read_json(record_path)
    if record is None:
        raise FmprepError(f"nothing to undeploy: no {record_path}")
    pid = int(record["pid"])
    if not _alive(pid) or not _is_our_server(pid):
        os.remove(record_path)
        return f"the server (pid {pid}) was not running; removed {record_path}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid):
        if time.monotonic() > deadline:
            raise FmprepError(f"server pid {pid} did not stop within 10 s after SIGTERM; stop it "
                              f"with kill {pid}")
        time.sleep(0.05)
    os.remove(record_path)
    return f"stopped the server at {record['url']} (pid {pid})"


def invoke_local(url: str, body: bytes) -> dict:
    """POST a sparse JSON request to the server's ``/invocations``; its JSON answer.

    Raises
    ------
    FmprepError
        The server refused the request, or no server answers at ``url``.
    """
    req = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise FmprepError(f"the server answered {err.code}: {err.read().decode(errors='replace')}"
                          ) from None
    except OSError as err:
        raise FmprepError(f"no server answering at {url} ({err}); run "
                          f"{command('deploy')}") from None
