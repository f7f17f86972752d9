"""A fault-injecting HTTP proxy on 127.0.0.1 for tests that put S3 (moto) behind a flaky network.

Not a test module: ``tests/test_s3_faults.py`` imports it. The proxy forwards each HTTP/1.1
request to the upstream server unchanged and can, decided by a seeded random generator:

* answer a fraction of requests with a ``503 SlowDown`` or ``500 InternalError`` S3 error;
* reset a fraction of connections right after a request's headers (mid-upload);
* cut a fraction of responses short (half the body, then a reset);
* hold a fraction of responses back for some seconds (a slow server);
* answer everything with 503 SlowDown for a window of seconds (:meth:`FaultProxy.slow_down`);
* go down for a window of seconds, by closing its listening socket (new connections are
  refused) and resetting every open connection; the window can start after a number of
  requests, so that it falls mid-run.

Only what S3 clients send is parsed: requests and responses framed by ``Content-Length`` or
``Transfer-Encoding: chunked``.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

ERRORS = (
    (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    (500, "Internal Server Error", "InternalError",
     "We encountered an internal error. Please try again."),
)


def _read_headers(rfile) -> tuple[bytes, list[bytes]] | None:
    """The start line and raw header lines of one message, or None at a clean EOF."""
    start = rfile.readline(65537)
    while start in (b"\r\n", b"\n"):  # tolerate stray blank lines between messages
        start = rfile.readline(65537)
    if not start:
        return None
    lines = []
    while True:
        line = rfile.readline(65537)
        if not line:
            raise ConnectionError("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            return start, lines
        lines.append(line)


def _header(lines: list[bytes], name: bytes) -> bytes | None:
    for line in lines:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _read_body(rfile, lines: list[bytes], until_eof: bool = False) -> bytes:
    """The raw body bytes as framed on the wire (chunked bodies keep their framing)."""
    if (_header(lines, b"transfer-encoding") or b"").lower() == b"chunked":
        parts = []
        while True:
            size_line = rfile.readline(65537)
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            parts.append(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = rfile.readline(65537)
                    parts.append(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
            parts.append(rfile.read(size + 2))
    length = _header(lines, b"content-length")
    if length is not None:
        return rfile.read(int(length))
    return rfile.read() if until_eof else b""


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset rather than a polite FIN, as a crashed server would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects faults.

    Parameters
    ----------
    upstream : str
        ``http://host:port`` of the real server.
    error_rate : float
        Fraction of requests answered with 503 SlowDown or 500 InternalError (half each).
    reset_rate : float
        Fraction of requests whose connection is reset before their body is read.
    truncate_rate : float
        Fraction of responses whose body is cut in half before the connection is reset.
    slow_rate, slow_seconds : float
        Fraction of responses sent only after a pause of ``slow_seconds``.
    down_after : int, optional
        Go down once this many requests have been received, for ``down_seconds``.
    down_seconds : float
        Length of that outage.
    seed : int
        Seed of the fault sequence: the n-th request always gets the same fate.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:<port>``; point ``AWS_ENDPOINT_URL`` at it.
    requests, faults, refused : int
        Requests received, requests answered with an error or truncated, and connections reset
        or requests cut off because the proxy was down.
    """

    def __init__(self, upstream: str, error_rate: float = 0.0, reset_rate: float = 0.0,
                 truncate_rate: float = 0.0,
                 slow_rate: float = 0.0, slow_seconds: float = 0.0,
                 down_after: int | None = None, down_seconds: float = 0.0, seed: int = 0):
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.error_rate = error_rate
        self.reset_rate = reset_rate
        self.truncate_rate = truncate_rate
        self.slow_rate = slow_rate
        self.slow_seconds = slow_seconds
        self.down_after = down_after
        self.down_seconds = down_seconds
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._down_until = 0.0
        self._throttled_until = 0.0
        self._stopped = threading.Event()
        self.requests = self.faults = self.refused = 0
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="faultproxy", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, reset open connections and wait for the accept thread."""
        self._stopped.set()
        self._close_listener()
        self._reset_all()
        self._thread.join(timeout=5)

    def slow_down(self, seconds: float) -> None:
        """Answer every request with 503 SlowDown for ``seconds`` from now."""
        with self._lock:
            self._throttled_until = time.monotonic() + seconds

    def go_down(self, seconds: float) -> None:
        """Refuse new connections and reset open ones for ``seconds`` from now."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
        self._close_listener()
        self._reset_all()

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    # --- sockets ------------------------------------------------------------------------------

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        sock.settimeout(0.05)
        return sock

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _reset_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            _reset(conn)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            if self.is_down:
                time.sleep(0.02)
                continue
            if self._listener is None:
                try:  # back up: listen on the same port again
                    listener = self._listen(self.port)
                except OSError:  # the port is briefly taken; try again shortly
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self._listener = listener
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError, AttributeError):
                continue
            conn.settimeout(None)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    # --- one client connection ----------------------------------------------------------------

    def _fate(self) -> str:
        """``down``, ``error-503``, ``error-500``, ``reset``, ``truncate``, ``slow`` or ``ok``."""
        with self._lock:
            self.requests += 1
            n = self.requests
            draw = self._rng.random()
            pick = self._rng.random()
        if self.down_after is not None and n == self.down_after:
            self.go_down(self.down_seconds)
        if self.is_down:
            return "down"
        if time.monotonic() < self._throttled_until:
            return "error-503"
        if draw < self.error_rate:
            return "error-503" if pick < 0.5 else "error-500"
        edge = self.error_rate
        for fate, rate in (("reset", self.reset_rate), ("truncate", self.truncate_rate),
                           ("slow", self.slow_rate)):
            edge += rate
            if draw < edge:
                return fate
        return "ok"

    def _handle(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        try:
            while not self._stopped.is_set():
                head = _read_headers(rfile)
                if head is None:
                    break
                start, lines = head
                fate = self._fate()
                if fate == "reset":
                    with self._lock:
                        self.faults += 1
                    break
                if (_header(lines, b"expect") or b"").lower() == b"100-continue":
                    # The client waits for this before it sends the body; upstream gets the
                    # whole request at once, so it must not see the header.
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    lines = [l for l in lines if not l.lower().startswith(b"expect:")]
                body = _read_body(rfile, lines)
                if fate == "down":
                    with self._lock:
                        self.refused += 1
                    break
                if fate.startswith("error"):
                    with self._lock:
                        self.faults += 1
                    conn.sendall(self._error(start, fate))
                    continue
                response = self._forward(start, lines, body)
                if fate == "truncate":
                    with self._lock:
                        self.faults += 1
                    head_end = response.index(b"\r\n\r\n") + 4
                    cut = head_end + (len(response) - head_end) // 2
                    conn.sendall(response[:cut])
                    break
                if fate == "slow":
                    with self._lock:
                        self.faults += 1
                    time.sleep(self.slow_seconds)
                conn.sendall(response)
        except (OSError, ValueError, ConnectionError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            _reset(conn)

    def _error(self, start: bytes, fate: str) -> bytes:
        status, reason, code, message = ERRORS[0] if fate == "error-503" else ERRORS[1]
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>FAULTPROXY</RequestId>"
                "<HostId>faultproxy</HostId></Error>").encode()
        if start.split(b" ", 1)[0].upper() == b"HEAD":
            body = b""
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-request-id: FAULTPROXY\r\n\r\n")
        return head.encode() + body

    def _forward(self, start: bytes, lines: list[bytes], body: bytes) -> bytes:
        """Send one request upstream on a fresh connection; the raw response bytes."""
        with socket.create_connection(self.upstream, timeout=60) as up:
            up.sendall(start + b"".join(lines) + b"\r\n" + body)
            urfile = up.makefile("rb")
            head = _read_headers(urfile)
            if head is None:
                raise ConnectionError("upstream closed without a response")
            status_line, rlines = head
            status = int(status_line.split()[1])
            if start.split(b" ", 1)[0].upper() == b"HEAD" or status in (204, 304) \
                    or 100 <= status < 200:
                rbody = b""
            else:
                rbody = _read_body(urfile, rlines, until_eof=True)
        # One request per upstream connection, but the client may keep its connection.
        rlines = [l for l in rlines if not l.lower().startswith(b"connection:")]
        if _header(rlines, b"content-length") is None and \
                _header(rlines, b"transfer-encoding") is None:
            rlines.append(f"Content-Length: {len(rbody)}\r\n".encode())
        return status_line + b"".join(rlines) + b"\r\n" + rbody
