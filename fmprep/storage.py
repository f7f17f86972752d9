"""I/O at the edges: paths that may be local or remote (s3://), JSON manifests, stage directories.

Every function takes ``storage_options`` like dask's own I/O; S3 endpoints, credentials and
profiles come from the usual AWS environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE`` …), which
s3fs and boto3 both honour.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid

import fsspec
from fsspec.core import url_to_fs

from .config import MANIFEST
from .errors import FmprepError


def is_remote(url: str) -> bool:
    """True for URLs with a scheme other than ``file``."""
    return "://" in url and not url.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for remote URLs and the OS separator for local paths."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def filesystem(url: str, storage_options: dict | None = None):
    """Return ``(fs, path)`` for ``url``; a missing S3 dependency or bad option is a user error."""
    try:
        return url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as err:
        raise FmprepError(f"cannot open {url}: {err}; check the URL scheme and storage options")


def expand_sources(source: str, storage_options: dict | None = None) -> list[str]:
    """Expand a path, URL or glob into a sorted list of existing files.

    Raises
    ------
    FmprepError
        If nothing matches, with the pattern in the message.
    """
    fs, path = filesystem(source, storage_options)
    if any(ch in path for ch in "*?["):
        paths = sorted(p for p in fs.glob(path) if fs.isfile(p))
    else:
        # info(), not isfile(): isfile() turns missing credentials into "not a file".
        try:
            paths = [path] if fs.info(path)["type"] == "file" else []
        except FileNotFoundError:
            paths = []
    if not paths:
        raise FmprepError(f"source not found: {source}; set SOURCE= to an existing file, "
                          "s3:// URI or glob")
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


def write_bytes_atomic(url: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    Local files go to a temporary name and are renamed; S3 objects appear only when the upload
    completes, so they are written directly.
    """
    fs, path = filesystem(url, storage_options)
    if is_remote(url):
        with fs.open(path, "wb") as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise FmprepError(f"cannot write to {url}: {reason}; choose a writable location "
                          "(WORK= / OUTPUT=) or check credentials and permissions")


def to_url(fs, path: str) -> str:
    """Turn an ``fs`` path back into a URL that :func:`filesystem` understands."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def open_file(url: str, mode: str = "rb", storage_options: dict | None = None):
    """``fsspec.open`` with fmprep's storage options (no compression: callers sniff it)."""
    return fsspec.open(url, mode, **(storage_options or {}))


def describe_storage_error(err: BaseException) -> str | None:
    """A one-line, credential-free explanation of an S3/network error, or None if not one.

    botocore's messages name endpoints and buckets, never keys; they are kept short.
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
    for e in chain:
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return ("no AWS credentials found; configure them (aws configure, AWS_PROFILE or "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or use local paths")
        if isinstance(e, bx.EndpointConnectionError):
            return (f"cannot reach {e.kwargs.get('endpoint_url', 'the S3 endpoint')}; check the "
                    "network, AWS_ENDPOINT_URL and the region")
        if isinstance(e, bx.ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            return (f"S3 refused the request ({code or 'error'}); check the bucket name, "
                    "region and your permissions")
    if isinstance(err, PermissionError):
        return (f"access denied ({str(err).splitlines()[0][:200]}); check permissions and "
                "credentials")
    return None
