"""Stage 3, encode: WORK/{train,test} Parquet parts → OUTPUT/{train,test}/*.pbr RecordIO shards.

Each prepared part is one shard; a worker reads it, encodes it in one vectorized call and writes
the shard straight to OUTPUT (no rows pass through the client). ``OUTPUT/manifest.json`` is
written last and is the only list of shards a consumer should trust.
"""

from __future__ import annotations

import datetime as dt

import dask
import numpy as np

from . import owned, partio, recordio, storage
from .config import (INGEST_MANIFEST, MANIFEST, MANIFEST_FORMAT, REJECTS_DIR, REJECTS_SAMPLE,
                     SHARD_SUFFIX)
from .errors import FmprepError, command


def encode_part(part_url: str, shard_url: str, feature_dim: int,
                storage_options: dict | None = None) -> dict:
    """Encode one prepared Parquet part as one RecordIO-protobuf shard.

    Returns
    -------
    dict
        ``rows`` and ``bytes`` of the shard written, and the ranges its rows span:
        ``days`` (days_since_first as encoded), ``labels`` and ``dates`` ([min, max] each).
    """
    df = partio.read_part(part_url, ["user", "item", "days_since_first", "star_rating",
                                     "review_date"], storage_options)
    days = df["days_since_first"].to_numpy(np.float32)
    labels = df["star_rating"].to_numpy(np.float32)
    buf = recordio.encode_fm_rows(df["user"].to_numpy(np.int64), df["item"].to_numpy(np.int64),
                                  days, labels, feature_dim)
    storage.write_bytes_atomic(shard_url, memoryview(buf), storage_options)
    dates = df["review_date"]
    return {"rows": len(df), "bytes": int(buf.nbytes),
            "days": [float(days.min()), float(days.max())],
            "labels": [float(labels.min()), float(labels.max())],
            "dates": [str(dates.min().date()), str(dates.max().date())]}


def _span(results: list[dict], key: str) -> list | None:
    """[min, max] of the shards' ``key`` ranges (None without shards)."""
    if not results:
        return None
    return [min(r[key][0] for r in results), max(r[key][1] for r in results)]


# fmprep's own names for the shards (see fmprep.owned): a crashed run leaves no manifest
# listing them. OUTPUT's other files (report/, model/, deployment records) are not encode's.
OWN_FILES = tuple(f"{ch}/part-*{SHARD_SUFFIX}" for ch in ("train", "test"))


def clear(output: str, storage_options: dict | None = None) -> None:
    """Claim OUTPUT and remove the encode stage's earlier shards, manifest first.

    Only shards that the previous run listed, or that carry encode's own names, are deleted;
    a trained model, the report and deployment records beside them stay (see
    :mod:`fmprep.owned`).
    """
    owned.claim(output, "output", storage_options)
    old = storage.read_json(storage.join(output, MANIFEST), storage_options)
    owned.remove_files(output, [MANIFEST], storage_options)
    owned.remove_files(output, owned.listed_files(old) + owned.fmprep_files(
        output, OWN_FILES, storage_options), storage_options)
    owned.make_dirs(output, ("train", "test"), storage_options)


def encode(work: str, output: str, storage_options: dict | None = None,
           key: str | None = None) -> dict:
    """Write the train and test channels under ``output`` and the manifest last.

    Parameters
    ----------
    work : str
        WORK directory holding the prepare stage's manifest and parts.
    output : str
        OUTPUT directory (local or URL).
    storage_options : dict, optional
        fsspec options.
    key : str, optional
        Stored in the manifest so a rerun can tell whether this stage is up to date.

    Returns
    -------
    dict
        The manifest written to ``OUTPUT/manifest.json``.
    """
    prepared = storage.read_json(storage.join(work, MANIFEST), storage_options)
    if prepared is None:
        raise FmprepError(f"{work} has no finished prepare stage; run {command('data')} (or "
                          "`fmprep prepare`) first")
    clear(output, storage_options)
    feature_dim = prepared["feature_dim"]
    channels = {}
    tasks = {}
    for channel in ("train", "test"):
        parts = [p for p in prepared["parts"][channel] if p["rows"] > 0]  # no empty objects
        names = [f"part-{i:05d}{SHARD_SUFFIX}" for i in range(len(parts))]
        tasks[channel] = [
            dask.delayed(encode_part)(storage.join(work, channel, p["file"]),
                                      storage.join(output, channel, name), feature_dim,
                                      storage_options)
            for p, name in zip(parts, names)]
        channels[channel] = names
    (results,) = dask.compute(tasks)
    manifest = {
        "format": MANIFEST_FORMAT, "stage": "encode",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_dim": feature_dim,
        "num_users": prepared["num_users"], "num_items": prepared["num_items"],
        # train_range: the values training saw, to which predict clips a query's days.
        "days_since_first": {"column": feature_dim - 1,
                             "scale": prepared["settings"]["days_scale"],
                             "divisor": prepared["days_divisor"],
                             "train_range": _span(results["train"], "days")},
        "label": "star_rating",
        "label_range": _span(results["train"] + results["test"], "labels"),
        "review_dates": _span(results["train"] + results["test"], "dates"),
        "channels": {
            ch: {"rows": sum(r["rows"] for r in results[ch]),
                 "shards": [{"file": f"{ch}/{name}", "rows": r["rows"], "bytes": r["bytes"]}
                            for name, r in zip(channels[ch], results[ch])]}
            for ch in ("train", "test")},
        "counts": prepared["counts"], "settings": prepared["settings"],
        "work": work,
        "files": [f"{ch}/{name}" for ch in ("train", "test") for name in channels[ch]],
    }
    manifest.update(_provenance(work, key, storage_options))
    storage.write_json(storage.join(output, MANIFEST), manifest, storage_options)
    return manifest


def _provenance(work: str, key: str | None, storage_options: dict | None) -> dict:
    """Where OUTPUT's rows came from, for its manifest: the key, the source files' fingerprints
    and the ingest totals, as WORK's ingest manifest recorded them."""
    ingested = storage.read_json(storage.join(work, INGEST_MANIFEST), storage_options) or {}
    out = {"key": key, "sources": ingested.get("sources", [])}
    if "meta" in ingested:
        out["meta"] = ingested["meta"]["sources"]
    out["ingest"] = {**ingested.get("totals", {}),
                     "rejects_samples": storage.join(work, REJECTS_DIR, f"*-{REJECTS_SAMPLE}")}
    return out
