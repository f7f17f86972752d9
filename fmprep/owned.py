"""What fmprep may delete: only files it wrote, in directories it has claimed.

A stage writes into WORK or OUTPUT only after :func:`claim` has made that directory fmprep's:
it must be absent, empty, or already marked by fmprep (the marker file :data:`MARKER`, or a
manifest of an older fmprep that wrote no marker). Anything else — a directory holding a user's
files, an existing file, a bucket with objects — is refused with one line, and nothing is
touched.

Inside a claimed directory a stage removes stale output with :func:`remove_files`: the files
its previous run listed in its manifest and, for a run that crashed before writing its
manifest, files with fmprep's own names in fmprep's own sub-folders (:func:`fmprep_files`).
Nothing here deletes a directory tree or a bucket.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable

from . import storage
from .errors import FmprepError, setting

MARKER = ".fmprep.json"   # a dot file: Parquet readers (pandas, pyarrow, Dask) skip it
MARKER_FORMAT = "fmprep-owner/1"
# Manifests that fmprep versions without a marker left at the top of WORK or OUTPUT.
_LEGACY_MANIFESTS = ("manifest.json", "reviews/manifest.json")


def _join(path: str, *parts: str) -> str:
    return posixpath.join(path, *parts)


def _is_fmprep_manifest(fs, path: str) -> bool:
    try:
        with fs.open(path, "rb") as f:
            doc = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("format", "")).startswith("fmprep/")


def _has_legacy_manifest(fs, path: str, remote: bool) -> bool:
    return any(_is_fmprep_manifest(fs, _join(path, m) if remote else os.path.join(path, m))
               for m in _LEGACY_MANIFESTS)


def is_claimed(url: str, storage_options: dict | None = None) -> bool:
    """True when ``url`` is a directory fmprep wrote: it holds :data:`MARKER`, or a manifest of
    an older fmprep that wrote no marker."""
    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/") or path
    fs.invalidate_cache(path)
    remote = storage.is_remote(url)
    marker = _join(path, MARKER) if remote else os.path.join(path, MARKER)
    return fs.exists(marker) or _has_legacy_manifest(fs, path, remote)


def claim(url: str, name: str, storage_options: dict | None = None) -> None:
    """Make ``url`` a directory fmprep may write and clean, or refuse with one line.

    Parameters
    ----------
    url : str
        WORK or OUTPUT (local path or URL; a bucket root is a directory like any other).
    name : str
        The setting that named it (``work``, ``output`` or ``scores``), for the message.
    storage_options : dict, optional
        fsspec options.

    Raises
    ------
    FmprepError
        If ``url`` is an existing file, or a directory holding files fmprep did not write.
    """
    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/") or path
    fs.invalidate_cache(path)
    marker = _join(path, MARKER) if storage.is_remote(url) else os.path.join(path, MARKER)
    variable = setting(name)
    try:
        if fs.exists(marker):
            return
        kind = fs.info(path)["type"]
    except FileNotFoundError:
        kind = None
    except NotADirectoryError:
        raise FmprepError(f"cannot write to {url}: a folder on its path is a file; choose "
                          f"another {variable}") from None
    if kind == "file":
        raise FmprepError(f"{variable}{url} is a file; it must be a directory: choose a new "
                          "or empty one (fmprep never overwrites files it did not write)")
    if kind is not None:
        entries = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
        entries = [e for e in entries if e and not e.startswith(".fmprep-write-test-")]
        legacy = _has_legacy_manifest(fs, path, storage.is_remote(url))
        if entries and not legacy:
            shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
            raise FmprepError(
                f"{variable}{url} holds files fmprep did not write ({shown}); choose a new or "
                f"empty directory for {variable} (fmprep deletes only what it wrote)")
    note = {"format": MARKER_FORMAT,
            "note": "this directory is written by fmprep; fmprep deletes only files it wrote here"}
    try:
        storage.write_json(storage.join(url, MARKER), note, storage_options)
    except OSError as err:
        if storage.describe_storage_error(err) and storage.is_remote(url):
            raise  # the CLI explains S3 errors (credentials, network) in one line
        raise FmprepError(f"cannot write to {url}: {getattr(err, 'strerror', None) or err}; "
                          f"choose a writable location for {variable} or fix its "
                          "permissions") from None


def fmprep_files(base: str, patterns: Iterable[str],
                 storage_options: dict | None = None) -> list[str]:
    """Files under ``base`` matching fmprep's own name patterns, relative to ``base``.

    Patterns are relative globs such as ``"train/part-*.pbr"``; ``*`` does not cross ``/``.
    """
    fs, path = storage.filesystem(base, storage_options)
    path = path.rstrip("/") or path
    fs.invalidate_cache(path)
    found = set()
    for pattern in patterns:
        for p in fs.glob(_join(path, pattern)):
            if fs.isfile(p):
                found.add(posixpath.relpath(p, path) if storage.is_remote(base)
                          else os.path.relpath(p, path))
    return sorted(found)


def remove_files(base: str, names: Iterable[str], storage_options: dict | None = None) -> None:
    """Delete the files ``names`` (relative to ``base``) that exist; never a directory tree.

    Local sub-folders left empty by the deletion are removed too (an object store has none).
    """
    fs, path = storage.filesystem(base, storage_options)
    names = sorted(set(n for n in names if n))
    if not names:
        return
    if storage.is_remote(base):
        targets = [_join(path.rstrip("/"), n) for n in names]
        fs.invalidate_cache(path)
        existing = [t for t in targets if fs.exists(t)]
        if existing:
            fs.rm(existing)  # one bulk request per 1,000 keys; keys only, never the bucket
        fs.invalidate_cache(path)
        return
    folders = set()
    for n in names:
        target = os.path.join(path, n)
        if os.path.isfile(target) or os.path.islink(target):
            os.remove(target)
        folders.add(os.path.dirname(target))
    for folder in sorted(folders, key=len, reverse=True):
        while os.path.abspath(folder) != os.path.abspath(path):
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                break
            folder = os.path.dirname(folder)


def make_dirs(base: str, names: Iterable[str], storage_options: dict | None = None) -> None:
    """Create local sub-folders ``names`` of ``base`` (object stores need none), then check that
    ``base`` is writable."""
    if not storage.is_remote(base):
        for n in names:
            try:
                os.makedirs(os.path.join(base, n), exist_ok=True)
            except OSError as err:
                raise FmprepError(f"cannot write to {base}: {err.strerror or err}; choose a "
                                  f"writable location ({setting('work')} / {setting('output')}) "
                                  "or fix its permissions")
    storage.check_writable(base, storage_options)


def listed_files(manifest: dict | None, key: str = "files") -> list[str]:
    """The relative file names a stage's manifest lists under ``key`` (none without one)."""
    if not manifest:
        return []
    return [str(f) for f in manifest.get(key) or []]
