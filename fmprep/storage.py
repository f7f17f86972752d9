"""I/O at the edges: paths that may be local or remote (s3://), JSON manifests, stage directories.

Every function takes ``storage_options`` like dask's own I/O; S3 endpoints, credentials and
profiles come from the usual AWS environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE`` …), which
s3fs and boto3 both honour.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid

import fsspec
from fsspec.core import url_to_fs

from . import retries
from .errors import FmprepError, aside, setting

# A local file being written: <name>.tmp-<8 hex digits>, renamed to <name> once complete.
TMP_INFIX = ".tmp-"


def is_remote(url: str) -> bool:
    """True for URLs with a scheme other than ``file``."""
    return "://" in url and not url.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for remote URLs and the OS separator for local paths."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def _options(url: str, storage_options: dict | None) -> dict:
    # S3 gets fmprep's retry budget (fmprep.retries); the caller's own options win.
    if retries.is_s3(url):
        retries.quiet_orphan_request_errors()
        return retries.s3_storage_options(storage_options)
    return dict(storage_options or {})


def filesystem(url: str, storage_options: dict | None = None):
    """Return ``(fs, path)`` for ``url``; a missing S3 dependency or bad option is a user error.

    Every filesystem fmprep uses comes from here or :func:`open_file` (on Dask workers too), so
    that S3 requests get the retry budget of :mod:`fmprep.retries`.
    """
    try:
        fs, path = url_to_fs(url, **_options(url, storage_options))
    except (ImportError, ValueError) as err:
        raise FmprepError(f"cannot open {url}: {err}; check the URL scheme and storage options")
    retries.apply_fs_retries(fs)
    return fs, path


def expand_sources(source: str, storage_options: dict | None = None,
                   role: str = "source") -> list[str]:
    """Expand a path, URL, glob or directory into a sorted list of existing files.

    Parameters
    ----------
    source : str
        A file, a glob, or a directory: a directory gives the files directly in it that
        ``role`` reads, by name (see :func:`fmprep.sources.directory_files`).
    storage_options : dict, optional
        fsspec options.
    role : {"source", "meta"}
        The setting that named ``source``: review files or product metadata files.

    Raises
    ------
    FmprepError
        If nothing matches, with the pattern and the setting to fix in the message.
    """
    fs, path = filesystem(source, storage_options)
    if any(ch in path for ch in "*?["):
        paths = sorted(p for p in fs.glob(path) if fs.isfile(p))
    else:
        # info(), not isfile(): isfile() turns missing credentials into "not a file".
        try:
            kind = fs.info(path)["type"]
        except FileNotFoundError:
            kind = None
        if kind == "directory":
            from .sources import directory_files  # sources imports this module

            names = [e["name"] for e in fs.ls(path, detail=True) if e["type"] == "file"]
            paths = directory_files(source, names, role)
        else:
            paths = [path] if kind == "file" else []
    if not paths:
        if role == "meta":
            raise FmprepError(f"meta file not found: {source}; set {setting('meta')}"
                              f"{aside('meta')} to an existing meta_<Category>.jsonl(.gz), "
                              "u.item, movies.dat or "
                              "movies.csv, a directory or a glob")
        raise FmprepError(f"source not found: {source}; set {setting(role)} to an existing file, "
                          "directory, s3:// URI or glob")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if is_remote(source):
        return [f"{protocol}://{p}" for p in paths]
    return paths


def read_json(url: str, storage_options: dict | None = None) -> dict | None:
    """Read a JSON file, or return None if it does not exist."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


@contextlib.contextmanager
def open_atomic(url: str, storage_options: dict | None = None):
    """A binary file to write ``url`` through, seen by readers only once complete.

    Local files are written under a temporary name and renamed when the block ends without an
    error (removed otherwise); S3 objects appear only when the upload completes, so they are
    written directly. Writers stream into it: no copy of the whole file in memory.
    """
    fs, path = filesystem(url, storage_options)
    if is_remote(url):
        with fs.open(path, "wb") as f:
            yield f
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}{TMP_INFIX}{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(url: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write ``data`` so that readers see either nothing or the whole file (see
    :func:`open_atomic`)."""
    with open_atomic(url, storage_options) as f:
        f.write(data)


def write_json(url: str, obj: dict, storage_options: dict | None = None) -> None:
    """Write ``obj`` as indented JSON, atomically (see :func:`write_bytes_atomic`)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    write_bytes_atomic(url, text.encode("utf-8"), storage_options)


def remove(url: str, storage_options: dict | None = None) -> None:
    """Delete one file if it exists."""
    fs, path = filesystem(url, storage_options)
    if fs.exists(path):
        fs.rm(path)


def check_writable(url: str, storage_options: dict | None = None) -> None:
    """Fail early, with the fix in the message, if ``url`` cannot be written."""
    probe = join(url, f".fmprep-write-test-{uuid.uuid4().hex[:8]}")
    fs, path = filesystem(probe, storage_options)
    try:
        with fs.open(path, "wb") as f:
            f.write(b"ok")
        fs.rm(path)
    except (OSError, PermissionError) as err:
        explained = describe_storage_error(err) if is_remote(url) else None
        if explained:  # a network or S3 error (spent retries, credentials): say that instead
            raise FmprepError(explained) from None
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise FmprepError(f"cannot write to {url}: {reason}; choose a writable location "
                          f"({setting('work')} / {setting('output')}) or check credentials and "
                          "permissions")


def to_url(fs, path: str) -> str:
    """Turn an ``fs`` path back into a URL that :func:`filesystem` understands."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def same_location(a: str, b: str, storage_options: dict | None = None) -> bool:
    """Whether the URLs or paths ``a`` and ``b`` name the same directory."""
    def where(url):
        fs, path = filesystem(url, storage_options)
        return fs.protocol, path.rstrip("/")
    return where(a) == where(b)


def open_file(url: str, mode: str = "rb", storage_options: dict | None = None):
    """``fsspec.open`` with fmprep's storage options and retry budget (no compression: callers
    sniff it)."""
    opened = fsspec.open(url, mode, **_options(url, storage_options))
    retries.apply_fs_retries(opened.fs)
    return opened


def describe_storage_error(err: BaseException) -> str | None:
    """A one-line, credential-free explanation of an S3/network error, or None if not one.

    A transient failure that outlasted the retry budget (throttling, 5xx, connections, cut-off
    downloads) says so, with the attempts made and that rerunning resumes
    (:func:`fmprep.retries.describe_exhausted`). botocore's messages name endpoints and
    buckets, never keys; they are kept short.
    """
    try:
        from botocore import exceptions as bx
    except ImportError:
        return None
    chain = [err]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
        if len(chain) > 10:
            break
    message = None
    if any(isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)) for e in chain):
        message = ("no AWS credentials found; configure them (aws configure, AWS_PROFILE or "
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or use local paths")
    elif (ssl := next((e for e in chain if isinstance(e, bx.SSLError)), None)) is not None:
        # Not transient: retrying a certificate that does not verify cannot help.
        where = str(ssl.kwargs.get("endpoint_url") or "the S3 endpoint").split("?", 1)[0]
        message = f"TLS failed with {where}; check AWS_ENDPOINT_URL and AWS_CA_BUNDLE"
    else:
        message = retries.describe_exhausted(err)
    if message is None:
        for e in chain:
            if isinstance(e, bx.ClientError):
                code = e.response.get("Error", {}).get("Code", "")
                message = (f"S3 refused the request ({code or 'error'}); check the bucket name, "
                           "region and your permissions")
                break
    if message is None and isinstance(err, PermissionError):
        message = (f"access denied ({str(err).splitlines()[0][:200]}); check permissions and "
                   "credentials")
    # One line, always: the CLI prints it after "fmprep: error: ".
    return " ".join(message.split()) if message else None
