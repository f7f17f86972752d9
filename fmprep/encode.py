"""Stage 3, encode: WORK/{train,test} Parquet parts → OUTPUT/{train,test}/*.pbr RecordIO shards.

Each prepared part is one shard; a worker reads it, encodes it in one vectorized call and writes
the shard straight to OUTPUT (no rows pass through the client). ``OUTPUT/manifest.json`` is
written last and is the only list of shards a consumer should trust.
"""

from __future__ import annotations

import datetime as dt

import dask
import numpy as np

from . import partio, recordio, storage
from .config import MANIFEST, MANIFEST_FORMAT, SHARD_SUFFIX
from .errors import FmprepError


def encode_part(part_url: str, shard_url: str, feature_dim: int,
                storage_options: dict | None = None) -> dict:
    """Encode one prepared Parquet part as one RecordIO-protobuf shard.

    Returns
    -------
    dict
        ``rows`` and ``bytes`` of the shard written.
    """
    df = partio.read_part(part_url, ["user", "item", "days_since_first", "star_rating"],
                          storage_options)
    buf = recordio.encode_fm_rows(df["user"].to_numpy(np.int64), df["item"].to_numpy(np.int64),
                                  df["days_since_first"].to_numpy(np.float32),
                                  df["star_rating"].to_numpy(np.float32), feature_dim)
    storage.write_bytes_atomic(shard_url, memoryview(buf), storage_options)
    return {"rows": len(df), "bytes": int(buf.nbytes)}


def encode(work: str, output: str, storage_options: dict | None = None,
           extra: dict | None = None) -> dict:
    """Write the train and test channels under ``output`` and the manifest last.

    Parameters
    ----------
    work : str
        WORK directory holding the prepare stage's manifest and parts.
    output : str
        OUTPUT directory (local or URL).
    storage_options : dict, optional
        fsspec options.
    extra : dict, optional
        More entries for the manifest (sources, ingest counts).

    Returns
    -------
    dict
        The manifest written to ``OUTPUT/manifest.json``.
    """
    prepared = storage.read_json(storage.join(work, MANIFEST), storage_options)
    if prepared is None:
        raise FmprepError(f"{work} has no finished prepare stage; run make data (or "
                          "`fmprep prepare`) first")
    storage.reset_stage_dir(output, storage_options)
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
        "days_since_first": {"column": feature_dim - 1,
                             "scale": prepared["settings"]["days_scale"],
                             "divisor": prepared["days_divisor"]},
        "label": "star_rating",
        "channels": {
            ch: {"rows": sum(r["rows"] for r in results[ch]),
                 "shards": [{"file": f"{ch}/{name}", **r}
                            for name, r in zip(channels[ch], results[ch])]}
            for ch in ("train", "test")},
        "counts": prepared["counts"], "settings": prepared["settings"],
        "work": work,
    }
    manifest.update(extra or {})
    storage.write_json(storage.join(output, MANIFEST), manifest, storage_options)
    return manifest
