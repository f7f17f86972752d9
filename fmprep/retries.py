"""One retry budget for every S3 and AWS API request fmprep makes, and one line when it is spent.

S3 that stumbles (503 SlowDown, 500 InternalError, resets, cut-off downloads, an endpoint gone
for half a minute) should slow a run down, not stop it. Two layers retry:

* botocore retries each request (retry mode and attempts, connect and read timeouts), for the
  s3fs filesystems of :mod:`fmprep.storage` and the boto3 clients of :mod:`fmprep.serving.sagemaker`;
* s3fs re-runs a download that broke off mid-body, which botocore never sees, and a request
  botocore gave up on after SlowDown or a dropped connection.

The numbers are in :mod:`fmprep.config` (``S3_RETRY_MODE`` …); the environment overrides them
(``FMPREP_S3_MAX_ATTEMPTS``, else ``AWS_MAX_ATTEMPTS`` …) and is read at each call, so Dask
workers started by fmprep use the same budget. :func:`describe_exhausted` turns an error that
outlasted the budget into one line that says so and that rerunning resumes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass

from . import config
from .errors import FmprepError

MODES = ("standard", "adaptive", "legacy")
RESUME = "rerun the same command to resume (stages already done are skipped)"

# botocore's throttling codes (retries/standard.py) and S3's own; HEAD requests have no body, so
# their error code is the HTTP status.
_THROTTLING = {"Throttling", "ThrottlingException", "ThrottledException", "SlowDown",
               "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
               "BandwidthLimitExceeded", "RequestThrottled", "503", "429"}
_SERVER = {"InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
           "RequestTimeoutException", "500", "502", "504"}
# What s3fs makes of a 503 / 500 when the botocore error is lost (pickled from a Dask worker).
_SERVER_ERRNOS = {errno.EBUSY: "503", getattr(errno, "EREMOTEIO", errno.EIO): "500"}


@dataclass(frozen=True)
class RetryBudget:
    """How hard one request is tried; see the ``S3_…`` settings in :mod:`fmprep.config`.

    Parameters
    ----------
    mode : {"standard", "adaptive", "legacy"}
        botocore's retry mode.
    max_attempts : int
        botocore's tries per request, the first included.
    fs_retries : int
        s3fs's tries of a download that breaks off (and of a request botocore gave up on after
        SlowDown or a dropped connection).
    connect_timeout, read_timeout : float
        Seconds to open a connection, and of silence on an open one.
    """

    mode: str
    max_attempts: int
    fs_retries: int
    connect_timeout: float
    read_timeout: float

    def botocore_kwargs(self) -> dict:
        """Keyword arguments of ``botocore.config.Config`` (and of s3fs's ``config_kwargs``)."""
        # total_max_attempts counts the first try, as AWS_MAX_ATTEMPTS does; Config's
        # max_attempts would count retries only (one attempt more).
        return {"retries": {"mode": self.mode, "total_max_attempts": self.max_attempts},
                "connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout}


def _env(names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _number(names: tuple[str, ...], default, kind=int, minimum=1):
    found = _env(names)
    if found is None:
        return default
    name, text = found
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        what = "a whole number" if kind is int else "a number of seconds"
        raise FmprepError(f"{name}={text} must be {what} ≥ {minimum}; unset it to use the "
                          f"default ({default})")
    return value


def budget() -> RetryBudget:
    """The retry budget: ``fmprep.config`` overridden by the environment, read now.

    Returns
    -------
    RetryBudget

    Raises
    ------
    fmprep.errors.FmprepError
        If an override is not a valid value, naming the variable.
    """
    found = _env(("FMPREP_S3_RETRY_MODE", "AWS_RETRY_MODE"))
    mode = found[1].lower() if found else config.S3_RETRY_MODE
    if mode not in MODES:
        raise FmprepError(f"{found[0]}={found[1]} is not a retry mode; use one of "
                          f"{', '.join(MODES)}")
    return RetryBudget(
        mode=mode,
        max_attempts=_number(("FMPREP_S3_MAX_ATTEMPTS", "AWS_MAX_ATTEMPTS"),
                             config.S3_MAX_ATTEMPTS),
        fs_retries=_number(("FMPREP_S3FS_RETRIES",), config.S3FS_RETRIES),
        connect_timeout=_number(("FMPREP_S3_CONNECT_TIMEOUT",), config.S3_CONNECT_TIMEOUT_S,
                                float, 0.1),
        read_timeout=_number(("FMPREP_S3_READ_TIMEOUT",), config.S3_READ_TIMEOUT_S, float, 0.1))


def botocore_config(**kwargs):
    """A ``botocore.config.Config`` with the retry budget, for ``boto3.client(…, config=)``.

    Parameters
    ----------
    **kwargs
        Further ``Config`` options; they win over the budget's.
    """
    from botocore.config import Config

    return Config(**{**budget().botocore_kwargs(), **kwargs})


def is_s3(url: str) -> bool:
    """True for the URLs s3fs serves (``s3://``, ``s3a://``)."""
    return url.split("://", 1)[0].lower() in ("s3", "s3a") and "://" in url


def s3_storage_options(storage_options: dict | None) -> dict:
    """``storage_options`` for an S3 URL with the budget's botocore settings filled in.

    The caller's own ``config_kwargs`` (and their ``retries``) win over the budget's.
    """
    options = dict(storage_options or {})
    ours = budget().botocore_kwargs()
    theirs = dict(options.get("config_kwargs") or {})
    if isinstance(theirs.get("retries"), dict):
        base = dict(ours["retries"])
        if {"max_attempts", "total_max_attempts"} & set(theirs["retries"]):
            base.pop("total_max_attempts")  # theirs may count retries only: keep their meaning
        theirs["retries"] = {**base, **theirs["retries"]}
    options["config_kwargs"] = {**ours, **theirs}
    return options


def apply_fs_retries(fs) -> None:
    """Set s3fs's own retry count on ``fs`` (an attribute: s3fs takes no option for it)."""
    if "s3" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        fs.retries = budget().fs_retries


# --- exceptions nobody waits for any more ---------------------------------------------------------

_NETWORK_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE,
                   errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}


def _is_network_error(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    try:
        import aiohttp
        from botocore import exceptions as bx
    except ImportError:
        return False
    return isinstance(exc, (aiohttp.ClientError, bx.HTTPClientError, bx.ConnectionError))


class _OrphanRequestErrors(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for a network error, only.

    These come from tasks on fsspec's event loop that the request they served has given up
    on. One such: aiohttp sends a request body from a task of its own
    (``ClientRequest.write_bytes``) and drops its reference once the task is done; when the
    connection is reset mid-upload the request fails and botocore or s3fs retry it, but the
    body task's copy of the connection error is never awaited, so at garbage collection
    asyncio logs it with a traceback, on a run that succeeded. Unretrieved exceptions of any
    other kind still print: they may be bugs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Task exception was never retrieved"):
            return True
        return not _is_network_error(record.exc_info[1] if record.exc_info else None)


def quiet_orphan_request_errors() -> None:
    """Install :class:`_OrphanRequestErrors` on the ``asyncio`` logger (once per process).

    :mod:`fmprep.storage` calls it whenever it makes a filesystem, so Dask workers get it too.
    """
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrphanRequestErrors) for f in logger.filters):
        logger.addFilter(_OrphanRequestErrors())


# --- when the budget is spent ---------------------------------------------------------------------

def _chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while err is not None and id(err) not in seen and len(chain) < 12:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _network_reason(err: BaseException) -> str:
    """``connection refused``, ``connection reset by peer`` … from the OS error underneath."""
    for e in _chain(err) + [getattr(err, "kwargs", {}).get("error")]:
        for candidate in (e, getattr(e, "os_error", None)):
            code = getattr(candidate, "errno", None)
            if isinstance(candidate, OSError) and code:
                return os.strerror(code).lower()
    return "connection failed"


_STORAGE_PACKAGES = ("s3fs", "fsspec", "aiobotocore", "botocore", "aiohttp", "boto3")


def _raised_in_storage(err: BaseException) -> bool:
    """True if a frame of ``err``'s traceback belongs to one of the S3 client libraries."""
    tb = err.__traceback__
    while tb is not None:
        parts = tb.tb_frame.f_code.co_filename.replace("\\", "/").split("/")
        if any(p in parts for p in _STORAGE_PACKAGES):
            return True
        tb = tb.tb_next
    return False


def _url(err: BaseException, service: str) -> str:
    # Query strings can hold presigned credentials: never print them.
    url = (getattr(err, "kwargs", None) or {}).get("endpoint_url") or f"the {service} endpoint"
    return _short(str(url).split("?", 1)[0], 200)


def describe_exhausted(err: BaseException, service: str = "S3",
                       resume: str = RESUME) -> str | None:
    """One line for a transient S3/AWS error that outlasted the retry budget, or None.

    Transient: throttling (503 SlowDown …), 5xx server errors, connections refused, reset or
    timed out, downloads cut off. The line names the failure, the attempts made, that
    rerunning resumes, and the setting that allows more attempts; it holds no credentials
    (URLs lose their query strings).

    Parameters
    ----------
    err : BaseException
        The error a command ended with; its ``__cause__`` / ``__context__`` chain is searched.
    service : str
        What was called, for the message (``S3``, ``SageMaker create_endpoint`` …).
    resume : str
        What rerunning does, for the message.

    Returns
    -------
    str or None
    """
    try:
        from botocore import exceptions as bx
    except ImportError:  # no AWS libraries: nothing of theirs can have failed
        return None
    try:
        import aiohttp
    except ImportError:
        aiohttp = None
    try:
        tries = budget()
    except FmprepError:  # a bad override was reported already, or will be; say the defaults
        tries = RetryBudget(config.S3_RETRY_MODE, config.S3_MAX_ATTEMPTS, config.S3FS_RETRIES,
                            config.S3_CONNECT_TIMEOUT_S, config.S3_READ_TIMEOUT_S)
    network = "check the network, AWS_ENDPOINT_URL and the region"

    def line(what: str, kind: str, hint: str = "", attempts: int | None = None,
             knob: str = "FMPREP_S3_MAX_ATTEMPTS") -> str:
        attempts = tries.max_attempts if attempts is None else attempts
        then = f"{hint}, then " if hint else ""
        return (f"{what} after {_attempts(attempts)}; this is transient ({kind}): {then}{resume}"
                f"; {knob} above {attempts} tries longer")

    chain = _chain(err)
    # The most specific error first: botocore's and aiohttp's know what happened.
    for e in chain:
        if isinstance(e, bx.ClientError):
            meta = e.response.get("ResponseMetadata", {}) or {}
            code = str(e.response.get("Error", {}).get("Code", "") or "")
            status = str(meta.get("HTTPStatusCode", "") or "")
            if not (code in _THROTTLING or code in _SERVER or status.startswith("5")):
                return None  # a refusal, not a stumble: the caller words it
            made = meta.get("RetryAttempts")
            label = code if code == status or not status else f"{status} {code}"
            throttled = code in _THROTTLING
            return line(f"{service} kept answering {label}",
                        "throttling" if throttled else "server error",
                        "wait a minute" if throttled else "",
                        made + 1 if isinstance(made, int) else None)
        if isinstance(e, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            which = "connect" if isinstance(e, bx.ConnectTimeoutError) else "read"
            limit = tries.connect_timeout if which == "connect" else tries.read_timeout
            return line(f"{_url(e, service)} did not answer within {limit:g} s ({which} "
                        "timeout)", "network", network)
        if isinstance(e, (bx.ConnectionError, bx.HTTPClientError)):
            return line(f"cannot reach {_url(e, service)} ({_network_reason(e)})",
                        "network or endpoint down", network)
        if aiohttp is not None and isinstance(e, aiohttp.ClientPayloadError):
            # s3fs re-reads a download that broke off; botocore never sees the body.
            return line(f"a download from {service} kept breaking off", "network", network,
                        tries.fs_retries, "FMPREP_S3FS_RETRIES")
        if aiohttp is not None and isinstance(e, aiohttp.ClientError):
            return line(f"the connection to {service} failed ({_network_reason(e)})",
                        "network", network, tries.fs_retries, "FMPREP_S3FS_RETRIES")
    # Then the bare errors left when a Dask worker's error lost its cause, or fsspec timed out;
    # only if raised inside the storage libraries (Dask has timeouts and connections too).
    for e in chain:
        if not _raised_in_storage(e):
            continue
        # asyncio's TimeoutError is the builtin one only from Python 3.11.
        if isinstance(e, (TimeoutError, asyncio.TimeoutError)) or \
                type(e).__name__ == "FSTimeoutError":
            return line(f"{service} did not answer in time", "network", network,
                        tries.fs_retries, "FMPREP_S3FS_RETRIES")
        if isinstance(e, ConnectionError):
            return line(f"the connection to {service} failed ({_network_reason(e)})",
                        "network", network)
        if isinstance(e, OSError) and e.errno in _SERVER_ERRNOS and e.filename is None:
            code = _SERVER_ERRNOS[e.errno]
            return line(f"{service} kept answering {code} ({_short(e.strerror or e, 60)})",
                        "throttling" if code == "503" else "server error")
    return None
