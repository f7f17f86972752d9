"""The whole prep (ingest → prepare → encode), skipping stages whose inputs have not changed.

Each stage's manifest carries a ``key``: a hash of its input (the sources' sizes and stamps, or
the previous stage's key) and its settings. A rerun with the same key finds the stage done and
goes on; any change reruns that stage and the ones after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from . import encode as encode_stage
from . import ingest as ingest_stage
from . import prepare as prepare_stage
from . import owned, progress, storage
from .config import (INGEST_MANIFEST, MANIFEST, REJECTS_DIR, REJECTS_SAMPLE, REVIEWS_DIR,
                     PrepSettings)
from .errors import FmprepError
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
    """The metadata files ``META=`` names (a file, glob or directory), or a one-line error
    naming META=."""
    if not meta:
        return []
    return storage.expand_sources(meta, storage_options, role="META")


def claim_locations(work: str, output: str, storage_options=None) -> None:
    """Check, before any data is read, that WORK and OUTPUT are fmprep's to write.

    Raises
    ------
    FmprepError
        If they are the same place (each stage's manifest would overwrite the other's), or
        either holds files fmprep did not write (see :func:`fmprep.owned.claim`).
    """
    def where(url):
        fs, path = storage.filesystem(url, storage_options)
        return fs.protocol, path.rstrip("/")
    if where(work) == where(output):
        raise FmprepError(f"WORK and OUTPUT are both {output}; give them different directories "
                          "(e.g. WORK=data/work OUTPUT=data/output)")
    owned.claim(work, "WORK", storage_options)
    owned.claim(output, "OUTPUT", storage_options)


def _done(url: str, key: str, storage_options) -> dict | None:
    manifest = storage.read_json(url, storage_options)
    return manifest if manifest is not None and manifest.get("key") == key else None


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
        Source format (``FORMAT=``): ``auto`` sniffs each file, or one of
        :data:`fmprep.sources.FORMATS`.
    meta : str, optional
        Path, URL or glob of product metadata files (``META=``) giving titles to sources
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

    ingest_key = stage_key("ingest", fingerprints, settings.part_size, fmt, meta_fingerprints)
    ingest_url = storage.join(work, INGEST_MANIFEST)
    ingested = None if force else _done(ingest_url, ingest_key, storage_options)
    t0 = time.perf_counter()
    if ingested is None:
        log.info("ingest: %d file(s) → %s", len(sources), storage.join(work, REVIEWS_DIR))
        total = sum(f["size"] or 0 for f in fingerprints + meta_fingerprints)
        with progress.ingest_bytes(total, show_progress):
            ingested = ingest_stage.ingest(sources, work, settings.part_size, storage_options,
                                           key=ingest_key, fmt=fmt, meta=meta_files)
        t = ingested["totals"]
        log.info("ingest: %d rows read, %d rejected (%.1f s)", t["rows_read"],
                 t["rows_rejected"], time.perf_counter() - t0)
    else:
        log.info("ingest: up to date")

    prepare_key = stage_key("prepare", ingest_key, settings.to_dict())
    prepare_url = storage.join(work, MANIFEST)
    prepared = None if force else _done(prepare_url, prepare_key, storage_options)
    t0 = time.perf_counter()
    if prepared is None:
        log.info("prepare: dedupe, filter, ids, split")
        with progress.dask_tasks(show_progress):
            prepared = prepare_stage.prepare(work, settings, storage_options, key=prepare_key)
        c = prepared["counts"]
        log.info("prepare: %d users, %d items, %d train / %d test rows (%.1f s)",
                 prepared["num_users"], prepared["num_items"], c["train_rows"], c["test_rows"],
                 time.perf_counter() - t0)
    else:
        log.info("prepare: up to date")

    encode_key = stage_key("encode", prepare_key, output)
    output_url = storage.join(output, MANIFEST)
    encoded = None if force else _done(output_url, encode_key, storage_options)
    t0 = time.perf_counter()
    if encoded is None:
        log.info("encode: RecordIO-protobuf shards → %s", output)
        extra = {"key": encode_key, "sources": fingerprints,
                 **({"meta": meta_fingerprints} if meta_files else {}),
                 "ingest": {**ingested["totals"],
                            "rejects_samples": storage.join(work, REJECTS_DIR, f"*-{REJECTS_SAMPLE}")}}
        with progress.dask_tasks(show_progress):
            encoded = encode_stage.encode(work, output, storage_options, extra=extra)
        log.info("encode: %d train shards, %d test shards → %s (%.1f s)",
                 len(encoded["channels"]["train"]["shards"]),
                 len(encoded["channels"]["test"]["shards"]), output, time.perf_counter() - t0)
    else:
        log.info("encode: up to date")
    from .report import write_report

    write_report(output, storage_options, work=work)  # logs its own path
    for note in stale_notes(output, encoded, storage_options):
        log.warning("note: %s", note)
    return encoded
