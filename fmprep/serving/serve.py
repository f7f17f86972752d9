"""A local inference server that speaks the SageMaker inference container contract.

``GET /ping`` answers 200 once the model is loaded. ``POST /invocations`` takes the request formats
of the built-in Factorization Machines container (docs/design.md §3) and answers with its response formats:

========================================  ==================================================
Content-Type                              one instance
========================================  ==================================================
``application/json``                      ``{"instances": [instance, …]}``
``application/jsonlines``                 one instance per line
``application/x-recordio-protobuf``       RecordIO-protobuf records, sparse or dense
========================================  ==================================================

where an instance is sparse ``{"data": {"features": {"keys": […], "shape": [F], "values": […]}}}``
or dense ``{"features": […]}`` / ``{"data": {"features": {"values": […]}}}`` with F values.
The response follows ``Accept`` (default: JSON Lines for a JSON Lines request, JSON otherwise):
``{"predictions": [{"score": s}, …]}``, one ``{"score": s}`` per line, or RecordIO-protobuf records
with ``label["score"]``; a binary classifier adds ``predicted_label`` (1 when score ≥ 0.5).

Bad requests get a 4xx status and a JSON body ``{"error": "…"}``; the server keeps serving. Bodies
over 6,291,456 bytes (InvokeEndpoint's cap) are refused with 413 before they are read. Each request
becomes one CSR matrix and one ``model.predict`` call.

Each open connection has a thread, up to ``config.SERVE_MAX_CONNECTIONS``; further clients wait in
a listen backlog of ``config.SERVE_LISTEN_BACKLOG``. SIGTERM stops the server gracefully: new
connections are refused, idle keep-alive connections closed, requests in flight answered (for up
to ``config.SERVE_DRAIN_S`` seconds), then the process exits with status 0.

Run it with ``python -m fmprep.serving.serve --model-dir OUTPUT/model``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

from .. import config, recordio, storage
from ..errors import FmprepError, command, setting, use_spelling

__all__ = ["InferenceServer", "RequestError", "encode_response", "main", "make_server",
           "parse_request", "serve", "sparse_json_body"]

JSON = "application/json"
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"
CONTENT_TYPES = (JSON, JSONLINES, RECORDIO)

logger = logging.getLogger("fmprep.serving.serve")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


def _media_type(header: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` → ``"application/json"``."""
    return (header or "").split(";", 1)[0].strip().lower()


# --- requests -----------------------------------------------------------------------------------

def _instance_entries(inst, where: str, feature_dim: int):
    """Keys and values of one JSON instance (either documented form), as Python sequences."""
    if not isinstance(inst, dict):
        raise RequestError(400, f"{where}: an instance must be a JSON object, got "
                                f"{type(inst).__name__}")
    if "data" in inst:
        data = inst["data"]
        if not isinstance(data, dict) or "features" not in data:
            raise RequestError(400, f'{where}: "data" must be an object with "features"')
        feats = data["features"]
    elif "features" in inst:
        feats = inst["features"]
    else:
        raise RequestError(400, f'{where}: an instance needs "features" or "data": {{"features"}}')

    if isinstance(feats, dict) and "keys" in feats:
        keys, values = feats["keys"], feats.get("values")
        if not isinstance(keys, list) or not isinstance(values, list):
            raise RequestError(400, f'{where}: sparse features need lists "keys" and "values"')
        if len(keys) != len(values):
            raise RequestError(400, f"{where}: {len(keys)} keys but {len(values)} values")
        shape = feats.get("shape", [feature_dim])
        if shape != [feature_dim]:
            raise RequestError(400, f"{where}: shape {shape} does not match the model's "
                                    f"feature_dim [{feature_dim}]")
        return keys, values
    values = feats.get("values") if isinstance(feats, dict) else feats
    if not isinstance(values, list):
        raise RequestError(400, f'{where}: "features" must be a list of values or an object with '
                                '"keys", "shape" and "values"')
    if len(values) != feature_dim:
        raise RequestError(400, f"{where}: dense features have {len(values)} values, the model's "
                                f"feature_dim is {feature_dim}")
    return range(feature_dim), values


def _json_instances(instances, feature_dim: int, label: str):
    """Gather every instance's entries into flat CSR arrays (one pass, no per-row arrays)."""
    keys, values, lengths = [], [], [0]
    for i, inst in enumerate(instances):
        k, v = _instance_entries(inst, f"{label} {i}", feature_dim)
        keys.extend(k)
        values.extend(v)
        lengths.append(len(v))
    indptr = np.cumsum(lengths, dtype=np.int64)
    idx = np.asarray(keys) if keys else np.zeros(0, np.int64)
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise RequestError(400, "keys must be integers")
    try:
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(400, "values must be numbers") from None
    if vals.ndim != 1:
        raise RequestError(400, "values must be numbers")
    return indptr, idx.astype(np.int64, copy=False), vals


def _checked_csr(indptr, indices, values, feature_dim: int):
    """Validate a request's CSR arrays and return them with keys sorted within each row."""
    n = indptr.size - 1
    if n == 0:
        raise RequestError(400, "the request holds no instances")
    bad = (indices < 0) | (indices >= feature_dim)
    if bad.any():
        pos = int(np.argmax(bad))
        row = int(np.searchsorted(indptr, pos, side="right")) - 1
        raise RequestError(400, f"instance {row}: key {int(indices[pos])} is outside "
                                f"[0, feature_dim={feature_dim})")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, reported just below
        vals32 = values.astype(np.float32)
    finite = np.isfinite(vals32)
    if not finite.all():
        pos = int(np.argmin(finite))
        row = int(np.searchsorted(indptr, pos, side="right")) - 1
        raise RequestError(400, f"instance {row}: value {values[pos]!r} is not a finite float32")
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    order = np.lexsort((indices, rows))
    rows, indices, vals32 = rows[order], indices[order], vals32[order]
    dup = (rows[1:] == rows[:-1]) & (indices[1:] == indices[:-1])
    if dup.any():
        pos = int(np.argmax(dup))
        raise RequestError(400, f"instance {int(rows[pos])}: key {int(indices[pos])} appears "
                                "more than once")
    return indptr, indices, vals32


def parse_request(body: bytes, content_type: str, feature_dim: int):
    """Turn an ``/invocations`` body into one CSR matrix.

    Parameters
    ----------
    body : bytes
        The request body.
    content_type : str
        ``application/json``, ``application/jsonlines`` or ``application/x-recordio-protobuf``
        (parameters such as ``; charset=utf-8`` are ignored).
    feature_dim : int
        The model's number of features; every instance must have this shape.

    Returns
    -------
    indptr : numpy.ndarray of int64, shape (n + 1,)
    indices : numpy.ndarray of int64, shape (nnz,)
        Keys, ascending within each instance.
    values : numpy.ndarray of float32, shape (nnz,)

    Raises
    ------
    RequestError
        415 for another content type; 400 for malformed bodies, keys out of range or repeated,
        a shape other than ``[feature_dim]``, or keys and values of different lengths.
    """
    media = _media_type(content_type)
    if media == RECORDIO:
        try:
            rec = recordio.decode_records(body)
        except ValueError as err:
            raise RequestError(400, f"malformed RecordIO-protobuf: {err}") from None
        if rec.indptr.size > 1 and rec.shape != feature_dim:
            raise RequestError(400, f"records have shape [{rec.shape}], the model's feature_dim "
                                    f"is [{feature_dim}]")
        return _checked_csr(rec.indptr, rec.indices, rec.values, feature_dim)
    if media == JSON:
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise RequestError(400, f"malformed JSON: {err}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise RequestError(400, 'a JSON request must be an object with an "instances" list')
        csr = _json_instances(doc["instances"], feature_dim, "instance")
        return _checked_csr(*csr, feature_dim)
    if media == JSONLINES:
        instances = []
        for i, line in enumerate(body.splitlines()):
            if line.strip():
                try:
                    instances.append(json.loads(line))
                except ValueError as err:
                    raise RequestError(400, f"line {i + 1}: malformed JSON: {err}") from None
        csr = _json_instances(instances, feature_dim, "line instance")
        return _checked_csr(*csr, feature_dim)
    raise RequestError(415, f"unsupported Content-Type {content_type!r}; use one of "
                            f"{', '.join(CONTENT_TYPES)}")


def sparse_json_body(indptr, indices, values, feature_dim: int) -> bytes:
    """The sparse ``application/json`` request body for CSR rows, as clients send it.

    Parameters
    ----------
    indptr, indices, values : array_like
        CSR rows: instance ``i`` has keys ``indices[indptr[i]:indptr[i + 1]]``.
    feature_dim : int
        The shape stated for every instance.

    Returns
    -------
    bytes
        ``{"instances": [{"data": {"features": {"keys", "shape", "values"}}}, …]}``.
    """
    indptr = np.asarray(indptr, np.int64)
    keys = np.asarray(indices, np.int64).tolist()
    vals = np.asarray(values, np.float32).tolist()
    instances = [{"data": {"features": {"keys": keys[a:b], "shape": [int(feature_dim)],
                                        "values": vals[a:b]}}}
                 for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist())]
    return json.dumps({"instances": instances}).encode("utf-8")


# --- responses ----------------------------------------------------------------------------------

def _label_record_template(names: tuple[str, ...]) -> tuple[bytes, list[int]]:
    """One framed RecordIO record with ``label[name] = Float32Tensor{values=[x]}`` per name.

    Returns the record with zeros for the floats and the byte offset of each float, so a batch
    of records is one tiled array with the floats filled in (every record has the same size).
    """
    payload, offsets = b"", []
    for name in names:
        key = name.encode("ascii")
        tensor = b"\x0a\x04" + bytes(4)                        # packed values, one float
        value = b"\x12" + bytes([len(tensor)]) + tensor         # Value.float32_tensor
        entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(value)]) + value
        # float position: record field tag+len, key tag+len+key, value tag+len, tensor tag+len
        offsets.append(8 + len(payload) + 2 + 2 + len(key) + 2 + 2 + 2)
        payload += b"\x12" + bytes([len(entry)]) + entry        # Record.label map entry
    pad = -len(payload) % 4
    return struct.pack("<II", recordio.MAGIC, len(payload)) + payload + bytes(pad), offsets


def _recordio_response(columns: dict[str, np.ndarray]) -> bytes:
    template, offsets = _label_record_template(tuple(columns))
    n = len(next(iter(columns.values())))
    out = np.tile(np.frombuffer(template, np.uint8), (n, 1))
    for off, col in zip(offsets, columns.values()):
        out[:, off:off + 4] = np.ascontiguousarray(col, "<f4").view(np.uint8).reshape(n, 4)
    return out.tobytes()


def _choose_accept(accept: str | None, request_type: str) -> str:
    default = JSONLINES if _media_type(request_type) == JSONLINES else JSON
    if not accept:
        return default
    for item in accept.split(","):
        media = _media_type(item)
        if media in CONTENT_TYPES:
            return media
        if media in ("*/*", "application/*", ""):
            return default
    raise RequestError(406, f"cannot answer with Accept {accept!r}; accept one of "
                            f"{', '.join(CONTENT_TYPES)}")


def encode_response(scores, predictor_type: str, accept: str) -> bytes:
    """Serialize scores the way the FM container does.

    Parameters
    ----------
    scores : numpy.ndarray of float32, shape (n,)
        One score per instance.
    predictor_type : {"regressor", "binary_classifier"}
        A binary classifier adds ``predicted_label``: 1 when score ≥ 0.5, else 0.
    accept : str
        One of the three content types.

    Returns
    -------
    bytes
        The response body.
    """
    scores = np.asarray(scores, np.float32)
    columns = {"score": scores}
    if predictor_type == "binary_classifier":
        columns["predicted_label"] = (scores >= 0.5).astype(np.float32)
    if accept == RECORDIO:
        return _recordio_response(columns)
    if "predicted_label" in columns:
        preds = [{"score": s, "predicted_label": int(p)}
                 for s, p in zip(scores.tolist(), columns["predicted_label"].tolist())]
    else:
        preds = [{"score": s} for s in scores.tolist()]
    if accept == JSONLINES:
        return "".join(json.dumps(p) + "\n" for p in preds).encode("utf-8")
    return json.dumps({"predictions": preds}).encode("utf-8")


# --- the server ---------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection for many requests
    server_version = "fmprep-serve"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client's delayed
    # ACK stalls every small response by ~40 ms.
    disable_nagle_algorithm = True
    timeout = 60  # seconds a connection may sit idle or stall mid-request (SageMaker's limit)

    def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
        logger.debug("%s %s", self.address_string(), format % args)

    def handle(self):
        # The base class loops the same way; the server is asked before every request so that a
        # stopping server closes keep-alive connections between requests, never during one.
        self.close_connection = True
        while self.server._wait_for_request(self.connection):
            self.handle_one_request()
            if self.close_connection:
                break

    def parse_request(self):
        # The request line is in: from here until the answer is sent, a stop waits for it.
        self.server._request_started(self.connection)
        return super().parse_request()

    def _send(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close or self.server.stopping:
            # The body was not read, or the server is stopping: this is the connection's last
            # answer, and the client learns so before it sends another request.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        logger.info("%s %s → %d: %s", self.command, self.path, status, message)
        self._send(status, json.dumps({"error": message}).encode("utf-8"), JSON, close)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if urlsplit(self.path).path == "/ping":
            self._send(200, b"", "text/plain")
        else:
            self._error(404, f"no such path {self.path}; use GET /ping or POST /invocations")

    def do_POST(self):  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None:
            self._error(411, "Content-Length is required", close=True)
            return
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self._error(400, f"bad Content-Length {length!r}", close=True)
            return
        if size > config.INVOKE_MAX_BYTES:
            self._error(413, f"request body of {size} bytes exceeds the "
                             f"{config.INVOKE_MAX_BYTES}-byte limit; send fewer instances per "
                             "request", close=True)
            return
        body = self.rfile.read(size)
        if len(body) < size:  # the client stopped sending; a truncated body must not be parsed
            self._error(400, f"the request body ended after {len(body)} of {size} bytes",
                        close=True)
            return
        if urlsplit(self.path).path != "/invocations":
            self._error(404, f"no such path {self.path}; use GET /ping or POST /invocations")
            return
        server: InferenceServer = self.server
        try:
            content_type = self.headers.get("Content-Type", "")
            accept = _choose_accept(self.headers.get("Accept"), content_type)
            indptr, indices, values = parse_request(body, content_type, server.feature_dim)
            scores = server.model.predict(indptr, indices, values)
            out = encode_response(scores, server.predictor_type, accept)
        except RequestError as err:
            self._error(err.status, err.message)
            return
        except Exception:  # a bug, not the client's fault: log it and keep serving
            logger.exception("prediction failed")
            self._error(500, "internal error while predicting; see the server log")
            return
        self._send(200, out, accept)


class InferenceServer(ThreadingHTTPServer):
    """A threading HTTP server holding one FM model.

    Each open connection has a thread; up to ``max_connections`` are served at once and the
    next ones wait in a listen backlog of ``request_queue_size``. :meth:`drain` stops it
    gracefully once ``serve_forever()`` has returned (see :meth:`shutdown`).

    Parameters
    ----------
    model : object
        Has ``predict(indptr, indices, values) -> float32 scores``, ``w`` (its first dimension is
        the feature dimension) and ``predictor_type``.
    host : str
        Address to bind.
    port : int
        Port to bind; 0 picks a free one (see :attr:`url`).
    max_connections : int, optional
        Connections served at once.

    Attributes
    ----------
    stopping : bool
        True once :meth:`drain` has begun: answers say ``Connection: close``.
    """

    daemon_threads = True  # a client stalled past the drain time must not keep the process alive
    request_queue_size = config.SERVE_LISTEN_BACKLOG

    def __init__(self, model, host: str = config.SERVE_HOST, port: int = config.SERVE_PORT,
                 max_connections: int = config.SERVE_MAX_CONNECTIONS):
        self.model = model
        self.feature_dim = int(model.w.shape[0])
        self.predictor_type = str(model.predictor_type)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._state = threading.Condition()
        self._connections: dict[socket.socket, bool] = {}  # open connection → request in flight
        self._closing = threading.Event()   # shutdown() or drain() called: accept nothing more
        self.stopping = False                # drain() called: close connections between requests
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    # --- connection bookkeeping (the accept loop and the connection threads) ------------------

    def process_request(self, request, client_address):
        # At the connection limit, stop accepting: the next clients wait in the listen backlog
        # instead of each costing a thread. Poll so that shutdown() is not held up.
        while not self._slots.acquire(timeout=0.1):
            if self._closing.is_set():
                self.shutdown_request(request)
                return
        with self._state:
            if self.stopping:  # drain() has begun: it would not know this connection
                self._slots.release()
                self.shutdown_request(request)
                return
            self._connections[request] = False
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request) -> None:
        with self._state:
            if self._connections.pop(request, None) is not None:
                self._slots.release()
            self._state.notify_all()

    def _request_started(self, request) -> None:
        with self._state:
            self._connections[request] = True

    def _wait_for_request(self, request) -> bool:
        """Mark the connection idle before it reads the next request; False: close it instead.

        Once the server is stopping, a connection that just answered closes. One that was idle
        has been shut for reading by :meth:`drain`: it still reads and answers a request that
        arrived before, and otherwise sees end-of-file.
        """
        with self._state:
            if self.stopping and self._connections[request]:
                return False
            self._connections[request] = False
            self._state.notify_all()
            return True

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            # The client went away or stalled: its loss, not a server fault worth a traceback.
            logger.debug("connection from %s ended: %s", client_address[0], err)
        else:
            logger.exception("error on the connection from %s", client_address[0])

    # --- stopping ---------------------------------------------------------------------------

    def shutdown(self):
        """Make ``serve_forever()`` return; call from another thread. See :meth:`drain`."""
        self._closing.set()
        super().shutdown()

    def drain(self, timeout: float = config.SERVE_DRAIN_S) -> int:
        """Stop serving gracefully: let the requests in flight finish, close the rest.

        Call after ``serve_forever()`` has returned. Closes the listening socket (new
        connections are refused, those still in its backlog reset), closes idle keep-alive
        connections, answers requests in flight with ``Connection: close`` and waits for their
        connections to close.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the requests in flight.

        Returns
        -------
        int
            Requests still unfinished after ``timeout`` (0 when all finished).
        """
        self._closing.set()
        with self._state:
            self.stopping = True  # first: an answer sent after the socket closes says so
            self.socket.close()
            for conn, in_flight in self._connections.items():
                if not in_flight:
                    # Wakes the thread blocked reading the next request line with end-of-file;
                    # bytes that already arrived are still read, and answered.
                    try:
                        conn.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass
            self._state.wait_for(lambda: not self._connections, timeout)
            return sum(self._connections.values())


def make_server(model, host: str = config.SERVE_HOST,
                port: int = config.SERVE_PORT) -> InferenceServer:
    """Bind an :class:`InferenceServer` for ``model``; call ``serve_forever()`` to run it.

    Raises
    ------
    FmprepError
        If the address cannot be bound (port in use, bad host).
    """
    try:
        return InferenceServer(model, host, port)
    except OSError as err:
        raise FmprepError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose "
                          f"another port ({setting('port')}) or stop the server using it "
                          f"({command('undeploy')})") from None


def load_model(model_dir: str):
    """Load a model saved by the local trainer (``fmprep.model.fm.FMModel``)."""
    from ..model.fm import FMModel  # imported here so that the server module loads without numba

    if not os.path.isdir(model_dir):
        raise FmprepError(f"no model at {model_dir}; train first ({command('train')}) or pass "
                          f"{setting('model_dir')}")
    return FMModel.load(model_dir)


def serve(model_dir: str, host: str = config.SERVE_HOST, port: int = config.SERVE_PORT,
          ready_file: str | None = None) -> None:
    """Serve the model in ``model_dir`` until SIGTERM or Ctrl-C, then drain it.

    Requests in flight at the signal are answered (for up to ``config.SERVE_DRAIN_S``
    seconds; see :meth:`InferenceServer.drain`) before this returns.

    Parameters
    ----------
    model_dir : str
        Directory written by the local trainer (model.npz + model.json).
    host, port : str, int
        Address to bind; port 0 picks a free port.
    ready_file : str, optional
        Written (atomically) with ``{"url", "pid"}`` once the server accepts connections, so a
        parent process can learn the port and know the model loaded.
    """
    model = load_model(model_dir)
    server = make_server(model, host, port)
    # SIGTERM (undeploy) stops the accept loop from another thread (shutdown() waits for the
    # loop, which runs here); then drain() lets the requests in flight finish.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=server.shutdown, name="sigterm", daemon=True).start())
    try:
        if ready_file:
            storage.write_json(ready_file, {"url": server.url, "pid": os.getpid()})
        logger.info("serving %s (%s, feature_dim %d) on %s", model_dir, server.predictor_type,
                    server.feature_dim, server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        unfinished = server.drain(config.SERVE_DRAIN_S)
        server.server_close()
        if unfinished:
            logger.warning("stopped with %d requests unfinished after %s s", unfinished,
                           config.SERVE_DRAIN_S)
        else:
            logger.info("stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m fmprep.serving.serve``: run the local inference server in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m fmprep.serving.serve",
        description="Serve a locally trained FM model over the SageMaker inference protocol "
                    "(GET /ping, POST /invocations).",
        epilog="example:\n  python -m fmprep.serving.serve --model-dir data/output/model --port 8080\n"
               "  curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\\n"
               "       -d '{\"instances\":[{\"data\":{\"features\":{\"keys\":[0,7,9],"
               "\"shape\":[10],\"values\":[1,1,0.5]}}}]}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="directory of model.npz + model.json")
    parser.add_argument("--host", default=config.SERVE_HOST, help="address (default %(default)s)")
    parser.add_argument("--port", type=int, default=config.SERVE_PORT,
                        help="port, 0 for any free one (default %(default)s)")
    parser.add_argument("--ready-file", help="write {url, pid} here once listening")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    ns = parser.parse_args(argv)
    # Started by deploy, it inherits the FMPREP_SPELLING of make's environment: its errors,
    # relayed by deploy, name the port as the user set it.
    use_spelling()
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        serve(ns.model_dir, ns.host, ns.port, ns.ready_file)
    except FmprepError as err:
        print(f"fmprep.serving.serve: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
