"""``fmprep clean`` (``make clean``): remove the files fmprep wrote to WORK and OUTPUT, nothing else.

A directory is cleaned only if fmprep claimed it (:func:`fmprep.owned.is_claimed`). Removed are
the files its manifests list and every file with one of fmprep's own names
(:data:`WORK_FILES`, :data:`OUTPUT_FILES`, built from the constants of the modules that write
them), through :func:`fmprep.owned.remove_files`: file by file, never a tree. A directory left
holding only its marker goes as well; one holding files fmprep did not write keeps its marker,
and those files are reported.
"""

from __future__ import annotations

import contextlib
import os
import posixpath

from . import config, encode, ingest, owned, prepare, recommend, score, storage
from .errors import FmprepError, command, setting
from .model import fm, ranking, training
from .report import IMAGES, INDEX, OLD_IMAGES, REPORT_DIR, STATS
from .serving import local, sagemaker

__all__ = ["OUTPUT_FILES", "WORK_FILES", "clean", "describe"]


def _under(folder: str, names) -> tuple[str, ...]:
    return tuple(f"{folder}/{n}" for n in names)


# fmprep's own names in WORK: ingest's and prepare's manifests, parts, rejects and scratch files.
WORK_FILES = (config.INGEST_MANIFEST, config.MANIFEST, *ingest.OWN_FILES, *prepare.OWN_FILES)

# … and in OUTPUT. endpoint.json is not among them: clean refuses while it exists (undeploy
# removes it), so that no server is left running without its record.
OUTPUT_FILES = (
    config.MANIFEST, *encode.OWN_FILES,
    *_under(REPORT_DIR, (INDEX, STATS, *IMAGES, *OLD_IMAGES)),
    # train, evaluate, import-model (local models), and the ranking model beside them
    *_under(config.LOCAL_MODEL_DIR, (*fm.MODEL_FILES, training.METRICS, training.EVALUATION)),
    *_under(f"{config.LOCAL_MODEL_DIR}/{ranking.RANKING_SUBDIR}",
            (*fm.MODEL_FILES, ranking.RANKING_METRICS)),
    sagemaker.ARTIFACT_FILES, config.SAGEMAKER_RECORD,
    config.SERVER_LOG, local.READY_FILE,
    *_under(recommend.RECOMMENDATIONS_DIR, (recommend.MANIFEST_NAME, recommend.PART_PATTERN)),
    *_under(score.SCORES_DIR, (score.MANIFEST_NAME, *score.OWN_FILES)),
)

# Manifests that list the files their command wrote, and the folder those names are relative to.
WORK_MANIFESTS = ((config.INGEST_MANIFEST, ""), (config.MANIFEST, ""))
OUTPUT_MANIFESTS = (
    (config.MANIFEST, ""),
    (f"{recommend.RECOMMENDATIONS_DIR}/{recommend.MANIFEST_NAME}", recommend.RECOMMENDATIONS_DIR),
    (f"{score.SCORES_DIR}/{score.MANIFEST_NAME}", score.SCORES_DIR),
)


def _read(url: str, storage_options: dict | None) -> dict | None:
    # A damaged manifest lists nothing; fmprep's own names still find the files.
    try:
        doc = storage.read_json(url, storage_options)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _relative(name: str) -> bool:
    # A manifest is data: a name that leaves the directory is never followed.
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith(("/", "\\")) and ":" not in parts[0] \
        and ".." not in parts


def _check(url: str, name: str, storage_options: dict | None) -> bool:
    """True if ``url`` is a directory of fmprep's to clean, False if there is nothing to do;
    an error when it is not fmprep's."""
    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/") or path
    fs.invalidate_cache(path)
    try:
        kind = fs.info(path)["type"]
    except FileNotFoundError:
        return False
    where = f"{setting(name)}{url}"
    if kind != "directory":
        raise FmprepError(f"{where} is a file, not a directory fmprep wrote; nothing was "
                          "removed (remove it yourself if you mean to)")
    if owned.is_claimed(url, storage_options):
        return True
    if not fs.ls(path, detail=False):
        return False  # empty: nothing of fmprep's, nothing of anyone's
    raise FmprepError(f"{where} was not written by fmprep (no {owned.MARKER}); nothing was "
                      "removed (remove it yourself if you mean to)")


def _check_deployments(output: str, storage_options: dict | None) -> None:
    """Refuse while OUTPUT records a deployment: without its record, undeploy could not find it."""
    record = storage.join(output, config.ENDPOINT_RECORD)
    server = _read(record, storage_options)
    if server is not None:
        raise FmprepError(f"{record} records a local server (pid {server.get('pid')}); run "
                          f"{command('undeploy')} first, then {command('clean')}")
    record = storage.join(output, config.SAGEMAKER_RECORD)
    endpoint = (_read(record, storage_options) or {}).get("endpoint")
    if endpoint:
        raise FmprepError(f"{record} records SageMaker endpoint {endpoint.get('name')}, which "
                          f"is billed; run {command('undeploy')} {setting('backend')}sagemaker "
                          f"first, then {command('clean')}")


def _entries(fs, path: str) -> tuple[list[str], list[str]]:
    """Files and empty folders under ``path``, relative (folders end with ``/``)."""
    fs.invalidate_cache(path)
    found = {posixpath.relpath(p, path): info["type"]
             for p, info in fs.find(path, withdirs=True, detail=True).items()}
    parents = {posixpath.dirname(n) for n in found}
    files = sorted(n for n, kind in found.items() if kind != "directory")
    empty = sorted(n + "/" for n, kind in found.items()
                   if kind == "directory" and n != "." and n not in parents)
    return files, empty


def _folders(patterns) -> list[str]:
    """The folders named in ``patterns`` (up to a wildcard), deepest first."""
    found = set()
    for pattern in patterns:
        parts = pattern.split("/")[:-1]
        for i, part in enumerate(parts):
            if any(c in part for c in "*?["):
                break
            found.add("/".join(parts[:i + 1]))
    return sorted(found, key=lambda f: f.count("/"), reverse=True)


def _clean_dir(url: str, patterns: tuple[str, ...], manifests, storage_options) -> dict:
    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/") or path
    before = [f for f in _entries(fs, path)[0] if posixpath.basename(f) != owned.MARKER]
    listed = []
    for manifest, folder in manifests:
        names = owned.listed_files(_read(storage.join(url, manifest), storage_options))
        listed += [posixpath.join(folder, n) for n in names if _relative(n)]
    # Manifests first: an interrupted clean never leaves one listing removed files.
    owned.remove_files(url, [m for m, _ in manifests], storage_options)
    if not storage.is_remote(url):
        # a local write killed mid-way leaves <name>.tmp-<hex> (storage.open_atomic)
        patterns = patterns + tuple(p + storage.TMP_INFIX + "*" for p in patterns)
    owned.remove_files(url, listed + owned.fmprep_files(url, patterns, storage_options),
                       storage_options)
    if not storage.is_remote(url):
        # fmprep creates its folders before writing (owned.make_dirs): some may have stayed empty
        for folder in _folders(patterns):
            with contextlib.suppress(OSError):  # only succeeds when empty
                os.rmdir(os.path.join(path, folder))

    files, empty = _entries(fs, path)
    markers = [f for f in files if posixpath.basename(f) == owned.MARKER]
    kept = [f for f in files if f not in markers] + empty
    # A sub-folder claimed on its own (SCORES=OUTPUT/scores) goes once nothing else is in it.
    for m in markers:
        folder = posixpath.dirname(m)
        if folder and not any(k.startswith(folder + "/") for k in kept):
            owned.remove_files(url, [m], storage_options)
    gone = not kept
    if gone:
        owned.remove_files(url, [owned.MARKER], storage_options)
        if not storage.is_remote(url):  # an object store has no folder to remove (nor a bucket)
            with contextlib.suppress(OSError):
                os.rmdir(path)
            gone = not os.path.exists(path)
    return {"existed": True, "removed": len(set(before) - set(files)), "kept": kept,
            "gone": gone}


def clean(work: str | None, output: str | None, storage_options: dict | None = None) -> dict:
    """Remove the files fmprep wrote to ``work`` and ``output``; keep everything else.

    Both directories are checked before anything is removed.

    Parameters
    ----------
    work, output : str or None
        WORK and OUTPUT (local paths or URLs); None skips one. A directory that does not exist
        is fine: there is nothing to remove.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    dict
        Per directory given (``work``, ``output``): ``existed`` (before the clean), ``removed``
        (files removed, the marker not counted), ``kept`` (files fmprep did not write, relative;
        empty folders end with ``/``) and ``gone`` (whether the directory no longer exists).

    Raises
    ------
    FmprepError
        If a directory exists but was not written by fmprep (no marker, no fmprep manifest), is
        a file, or OUTPUT records a deployment still running (undeploy first).
    """
    dirs = {"work": (work, WORK_FILES, WORK_MANIFESTS),
            "output": (output, OUTPUT_FILES, OUTPUT_MANIFESTS)}
    dirs = {name: d for name, d in dirs.items() if d[0]}
    if len(dirs) == 2 and storage.same_location(work, output, storage_options):
        # fmprep never writes both to one place (make data refuses it): nothing here is sure
        raise FmprepError(f"WORK and OUTPUT are both {output}; nothing was removed (clean them "
                          f"one at a time: {setting('work')}… or {setting('output')}…)")
    summary, todo = {}, []
    for name, (url, _, _) in dirs.items():  # every check first: a refusal removes nothing
        if _check(url, name, storage_options):
            if name == "output":
                _check_deployments(url, storage_options)
            todo.append(name)
        else:
            fs, path = storage.filesystem(url, storage_options)
            existed = fs.exists(path.rstrip("/") or path)  # empty, and not fmprep's: left alone
            summary[name] = {"existed": existed, "removed": 0, "kept": [], "gone": not existed}
    for name in todo:
        summary[name] = _clean_dir(*dirs[name], storage_options)
    return summary


def describe(name: str, url: str, result: dict, shown: int = 5) -> str:
    """One line for the user about what :func:`clean` did in one directory."""
    where = f"{setting(name)}{url}"
    if not result["existed"]:
        return f"{where}: not there, nothing to remove"
    line = f"{where}: removed {_files(result['removed'])}"
    kept = result["kept"]
    if result["gone"]:
        return line + " and the directory"
    if kept:
        more = ", …" if len(kept) > shown else ""
        line += f"; kept {_files(len(kept))} fmprep did not write: {', '.join(kept[:shown])}{more}"
    return line


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")
