"""The whole prep (ingest → prepare → encode), skipping stages whose inputs have not changed.

Each stage's manifest carries a ``key``: a hash of its input (the sources' sizes and stamps, or
the previous stage's key) and its settings. A rerun with the same key finds the stage done and
goes on; any change reruns that stage and the ones after it. One loop (:func:`run_stages`)
runs the stages, times them and records the seconds in each manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass

from . import encode as encode_stage
from . import ingest as ingest_stage
from . import prepare as prepare_stage
from . import owned, progress, storage
from .config import INGEST_MANIFEST, MANIFEST, REVIEWS_DIR, PrepSettings
from .errors import FmprepError, setting
from .freshness import stale_notes
from .sources import check_format

log = logging.getLogger(__name__)


def stage_key(*parts) -> str:
    """A short, stable hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def validate_settings(settings: PrepSettings) -> None:
    """Reject settings that cannot work, before any data is read.

    Raises
    ------
    FmprepError
        One line naming the make variable and a value that works (see
        :meth:`fmprep.config.PrepSettings.validate`).
    """
    settings.validate()


def expand_meta(meta: str | None, storage_options) -> list[str]:
    """The metadata files the ``meta`` setting names (a file, glob or directory), or a
    one-line error naming that setting."""
    if not meta:
        return []
    return storage.expand_sources(meta, storage_options, role="meta")


def claim_locations(work: str, output: str, storage_options=None) -> None:
    """Check, before any data is read, that WORK and OUTPUT are fmprep's to write.

    Raises
    ------
    FmprepError
        If they are the same place (each stage's manifest would overwrite the other's), or
        either holds files fmprep did not write (see :func:`fmprep.owned.claim`).
    """
    if storage.same_location(work, output, storage_options):
        raise FmprepError(f"WORK and OUTPUT are both {output}; give them different directories "
                          f"(e.g. {setting('work')}data/work {setting('output')}data/output)")
    owned.claim(work, "work", storage_options)
    owned.claim(output, "output", storage_options)


def _done(url: str, key: str, storage_options) -> dict | None:
    manifest = storage.read_json(url, storage_options)
    return manifest if manifest is not None and manifest.get("key") == key else None


@dataclass(frozen=True)
class Stage:
    """One prep stage as the loop in :func:`run_stages` runs it.

    Attributes
    ----------
    name : str
        ``ingest``, ``prepare`` or ``encode`` (the log lines' prefix).
    manifest : str
        URL of the manifest the stage writes last; holding ``key``, it means "done".
    key : str
        :func:`stage_key` of the stage's inputs and settings.
    start : str
        What the stage is about to do, for the log.
    run : callable
        ``run(done)`` runs the stage and returns the manifest it wrote; ``done`` maps the
        earlier stages' names to their manifests.
    summary : callable
        ``summary(manifest)``: the stage's totals in one line, for the log.
    progress : callable
        ``progress()``: the context manager drawing its progress (or doing nothing).
    """

    name: str
    manifest: str
    key: str
    start: str
    run: Callable[[dict], dict]
    summary: Callable[[dict], str]
    progress: Callable[[], ContextManager]


def run_stages(stages: list[Stage], force: bool, storage_options: dict | None) -> dict:
    """Run each stage whose manifest does not hold its key; return every stage's manifest.

    A stage that runs gets its wall seconds added to its manifest (``seconds``), which the
    benchmarks read; a stage found done keeps the manifest of the run that did it.
    """
    done: dict[str, dict] = {}
    for stage in stages:
        found = None if force else _done(stage.manifest, stage.key, storage_options)
        if found is not None:
            log.info("%s: up to date", stage.name)
            done[stage.name] = found
            continue
        log.info("%s: %s", stage.name, stage.start)
        t0 = time.perf_counter()
        with stage.progress():
            manifest = stage.run(done)
        manifest["seconds"] = round(time.perf_counter() - t0, 3)
        storage.write_json(stage.manifest, manifest, storage_options)
        log.info("%s: %s (%.1f s)", stage.name, stage.summary(manifest), manifest["seconds"])
        done[stage.name] = manifest
    return done


def run_data(source: str, work: str, output: str, settings: PrepSettings,
             storage_options: dict | None = None, force: bool = False,
             show_progress: bool = False, fmt: str = "auto", meta: str | None = None) -> dict:
    """Run every prep stage that is not already done for these inputs and settings.

    Parameters
    ----------
    source : str
        Path, URL or glob of review files (any format of :mod:`fmprep.sources`).
    work, output : str
        WORK and OUTPUT directories (local or URL).
    settings : PrepSettings
        Prep settings.
    storage_options : dict, optional
        fsspec options.
    force : bool
        Rerun every stage even if its manifest matches.
    show_progress : bool
        Draw progress bars on stderr (the CLI sets it for terminals).
    fmt : str
        Source format (the ``format`` setting): ``auto`` sniffs each file, or one of
        :data:`fmprep.sources.FORMATS`.
    meta : str, optional
        Path, URL or glob of product metadata files (the ``meta`` setting) giving titles to sources
        without them (Amazon Reviews 2023, MovieLens).

    Returns
    -------
    dict
        OUTPUT's manifest.
    """
    validate_settings(settings)
    check_format(fmt)
    claim_locations(work, output, storage_options)
    sources = storage.expand_sources(source, storage_options)
    fingerprints = [ingest_stage.source_fingerprint(u, storage_options) for u in sources]
    meta_files = expand_meta(meta, storage_options)
    meta_fingerprints = [ingest_stage.source_fingerprint(u, storage_options) for u in meta_files]
    ingest_key = stage_key("ingest", ingest_stage.LAYOUT, fingerprints, settings.part_size, fmt,
                           meta_fingerprints)
    prepare_key = stage_key("prepare", ingest_key, settings.to_dict())
    encode_key = stage_key("encode", prepare_key, output)
    total_bytes = sum(f["size"] or 0 for f in fingerprints + meta_fingerprints)


    stages = [
        Stage("ingest", storage.join(work, INGEST_MANIFEST), ingest_key,
              f"{len(sources)} file(s) → {storage.join(work, REVIEWS_DIR)}",
              lambda done: ingest_stage.ingest(
                  sources, work, settings.part_size, storage_options, key=ingest_key, fmt=fmt,
                  meta=meta_files, fingerprints=fingerprints,
                  meta_fingerprints=meta_fingerprints),
              lambda m: (f"{m['totals']['rows_read']} rows read, "
                         f"{m['totals']['rows_rejected']} rejected"),
              lambda: progress.ingest_bytes(total_bytes, show_progress)),
        Stage("prepare", storage.join(work, MANIFEST), prepare_key,
              "dedupe, filter, ids, split",
              lambda done: prepare_stage.prepare(work, settings, storage_options,
                                                 key=prepare_key),
              lambda m: (f"{m['num_users']} users, {m['num_items']} items, "
                         f"{m['counts']['train_rows']} train / {m['counts']['test_rows']} test "
                         "rows"),
              lambda: progress.dask_tasks(show_progress, "prepare")),
        Stage("encode", storage.join(output, MANIFEST), encode_key,
              f"RecordIO-protobuf shards → {output}",
              lambda done: encode_stage.encode(work, output, storage_options, key=encode_key),
              lambda m: (f"{len(m['channels']['train']['shards'])} train shards, "
                         f"{len(m['channels']['test']['shards'])} test shards → {output}"),
              lambda: progress.dask_tasks(show_progress, "encode")),
    ]
    encoded = run_stages(stages, force, storage_options)["encode"]
    from .report import write_report

    write_report(output, storage_options, work=work)  # logs its own path
    for note in stale_notes(output, encoded, storage_options):
        log.warning("note: %s", note)
    return encoded
