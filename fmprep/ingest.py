"""Stage 1, ingest: review files → typed Parquet parts, streamed, with every reject counted.

One task per source file (a gzip stream cannot be split). Each task opens its file through the
source layer (:mod:`fmprep.sources`: ISA-L decompression, the format sniffed or forced, a
streaming parser per format that validates every row), collects the rows in the canonical
:data:`REVIEWS_SCHEMA` and writes a Parquet part every ``part_size`` uncompressed bytes. A part
has one row group per customer bucket (:func:`fmprep.keys.customer_buckets`), so prepare reads
each bucket's rows from every part without shuffling them again. Memory per task is one part,
whatever the file's size.

With product metadata (``meta``: Amazon Reviews 2023 ``meta_<Category>.jsonl``, MovieLens
``u.item`` / ``movies.dat`` / ``movies.csv``), one more task per metadata file streams its
(product_id, title) pairs to Parquet, and a Dask merge gives the review rows that have no
title (formats without titles) their product's title. Nothing passes through the client.
"""

from __future__ import annotations

import json
import logging
import os

import dask
import pyarrow as pa
from dask.utils import parse_bytes

from . import memory, owned, partio, progress, storage
from .config import (INGEST_MANIFEST, MANIFEST, MANIFEST_FORMAT, PARQUET_OPTIONS, REJECTS_DIR,
                     REJECTS_SAMPLE, REVIEWS_DIR)
from .errors import FmprepError, setting
from .keys import customer_buckets
from .sources import (AUTO, BLOCK_SIZE, MAX_BLOCK_SIZE, REJECT_REASONS, REVIEWS_SCHEMA,
                      TITLE_REASONS, LineTooLong, check_format, check_sources,
                      clean_batch, open_reviews, open_titles)

__all__ = ["REVIEWS_SCHEMA", "REJECT_REASONS", "clean_batch", "ingest", "ingest_file",
           "ingest_titles_file", "source_fingerprint"]

log = logging.getLogger(__name__)

MIN_BLOCK_SIZE = 256 << 10  # smaller parts (tests) parse in smaller blocks to roll parts on time
TITLES_DIR = "_titles"      # WORK/reviews/_titles: metadata titles, removed after the join
TITLES_PER_PARTITION = 1_000_000  # titles per partition of the join's right side
GZIP_RATIO = 3.2  # text / gzip bytes of review files (3.18 for the Amazon TSV, measured)
# What the parts are: bumped when it changes, so that the pipeline's stage key does too.
LAYOUT = "customer-buckets/1"
_HEADER_FORMATS = ("amazon-tsv", "movielens-csv")


def part_options(url: str) -> dict:
    """Parquet options of ingest's parts: uncompressed on local disk, Snappy remotely.

    Only prepare reads the parts, once, row group by row group. Locally Snappy cost more CPU
    (writing 1.2 s against 0.5 s at 4 M rows) than the bytes it saves; remotely bytes cost more.
    Column statistics are left out: nothing filters on them, and string min/max cost ~20 %.
    """
    return {**PARQUET_OPTIONS, "compression": "snappy" if storage.is_remote(url) else "none",
            "write_statistics": False}


def _write_part(tables: list[pa.Table], url: str, n_buckets: int, storage_options) -> int:
    """``tables`` as one part at ``url``: a row group per customer bucket (``n_buckets`` 0: one
    row group, for files without customers); returns its rows."""
    if n_buckets:
        buckets = [customer_buckets(t.column("customer_id"), n_buckets) for t in tables]
        groups = partio.bucket_groups(tables, buckets, n_buckets)
    else:
        groups = [pa.concat_tables(tables)]
    return partio.write_bucketed_parquet(groups, url, part_options(url), storage_options)


def _write_parts(src, tables, out_dir: str, prefix: str, part_size: int, storage_options,
                 parts: list, n_buckets: int) -> None:
    """Write ``tables`` (one per parse block of ``src``) as Parquet parts named ``prefix-N``.

    A part collects the blocks of ``part_size`` bytes of source, then is written with one row
    group per customer bucket (:func:`fmprep.partio.write_bucketed_parquet`; ``n_buckets`` 0:
    one row group, for files without customers). ``parts`` receives ``{"file", "rows"}`` per
    part before it is written, so that a caller can remove them if the file has to be read
    again.
    """
    # A table is one parse block of source, so parts are rolled by counting tables: bytes
    # pulled from the stream run ahead of the rows parsed (Arrow reads ahead).
    batches_per_part = max(1, part_size // src.block_size)
    pending, reported = [], 0

    def flush():
        name = f"{prefix}-{len(parts):05d}.parquet"
        parts.append({"file": name, "rows": 0})
        parts[-1]["rows"] = _write_part(pending, storage.join(out_dir, name), n_buckets,
                                        storage_options)
        pending.clear()
        memory.trim()  # the part's blocks are free now: see fmprep.memory

    for table in tables:
        position = src.position()
        progress.report_bytes(position - reported)
        reported = position
        if table.num_rows:
            pending.append(table)
        if len(pending) >= batches_per_part:
            flush()
    progress.report_bytes(src.position() - reported)
    if pending:
        flush()


def _write_rejects(url: str, rejects, storage_options) -> None:
    samples = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in rejects.samples)
    storage.write_bytes_atomic(url, samples.encode("utf-8"), storage_options)


def _block_size(part_size: int) -> int:
    return max(MIN_BLOCK_SIZE, min(BLOCK_SIZE, part_size))


def ingest_file(url: str, index: int, out_dir: str, part_size: int,
                storage_options: dict | None = None, fmt: str = AUTO,
                rejects_dir: str | None = None, n_buckets: int = 1) -> dict:
    """Stream one source file into Parquet parts under ``out_dir``.

    Parameters
    ----------
    url : str
        Local path or URL of a review file, gzip-compressed or plain.
    index : int
        Position of the file among the sources; part names start with it.
    out_dir : str
        Directory (local or URL) for the parts and the rejects sample.
    part_size : int
        Uncompressed bytes of source per Parquet part.
    storage_options : dict, optional
        Passed to fsspec for both reading and writing.
    fmt : str
        One of :data:`fmprep.sources.FORMAT_CHOICES`; ``auto`` sniffs the file.
    rejects_dir : str, optional
        Directory for the rejects sample ``NNNN-rejects.jsonl`` (default ``out_dir``).
    n_buckets : int
        Customer buckets: row group ``j`` of every part holds the rows whose customer is in
        bucket ``j`` (see :func:`fmprep.keys.customer_buckets`).

    Returns
    -------
    dict
        ``source``, ``format`` (the one used), ``rows_read``, ``rows_valid``, ``rejected``
        (counts by reason, the reasons of that format), ``bytes_read`` (uncompressed) and
        ``parts`` (file name and row count each).
    """
    block_size = _block_size(part_size)
    while True:
        parts = []
        try:
            return _ingest_stream(url, index, out_dir, part_size, block_size, storage_options,
                                  fmt, parts, rejects_dir or out_dir, n_buckets)
        except LineTooLong:
            # A line longer than a parse block: start the file again with larger blocks.
            for p in parts:
                storage.remove(storage.join(out_dir, p["file"]), storage_options)
            if block_size >= MAX_BLOCK_SIZE:
                raise FmprepError(f"{url}: a line is longer than {MAX_BLOCK_SIZE >> 20} MiB; "
                                  "clean the file") from None
            block_size *= 4


def _ingest_stream(url, index, out_dir, part_size, block_size, storage_options, fmt,
                   parts, rejects_dir, n_buckets) -> dict:
    with open_reviews(url, fmt, storage_options, block_size) as src:
        _write_parts(src, src.tables(), out_dir, f"part-{index:04d}", part_size,
                     storage_options, parts, n_buckets)
    rows_valid = sum(p["rows"] for p in parts)
    rejects = src.rejects
    if rows_valid + rejects.total == 0:
        header = "a header but " if src.format in _HEADER_FORMATS else ""
        raise FmprepError(f"{url} has {header}no rows; point {setting('source')} at a file "
                          "with reviews")
    _write_rejects(storage.join(rejects_dir, f"{index:04d}-{REJECTS_SAMPLE}"), rejects,
                   storage_options)
    return {"source": url, "format": src.format, "rows_read": rows_valid + rejects.total,
            "rows_valid": rows_valid, "rejected": rejects.counts, "bytes_read": src.bytes_read,
            "parts": parts}


def ingest_titles_file(url: str, index: int, out_dir: str, part_size: int,
                       storage_options: dict | None = None,
                       rejects_dir: str | None = None) -> dict:
    """Stream one product metadata file's (product_id, product_title) pairs into Parquet.

    Parameters
    ----------
    url : str
        ``meta_<Category>.jsonl(.gz)`` (Amazon Reviews 2023) or a MovieLens ``u.item``,
        ``movies.dat`` or ``movies.csv`` (see :func:`fmprep.sources.open_titles`).
    index : int
        Position of the file among the metadata files; part names start with it.
    out_dir : str
        Directory for the parts.
    part_size : int
        Uncompressed bytes of source per Parquet part.
    storage_options : dict, optional
        fsspec options.
    rejects_dir : str, optional
        Directory for the rejects sample ``meta-NNNN-rejects.jsonl`` (default ``out_dir``).

    Returns
    -------
    dict
        ``source``, ``format`` (layout), ``rows_read``, ``titles``, ``rejected`` and ``parts``.
    """
    parts = []
    with open_titles(url, storage_options, _block_size(part_size)) as src:
        _write_parts(src, src.tables(), out_dir, f"titles-{index:04d}", part_size,
                     storage_options, parts, 0)
    titles = sum(p["rows"] for p in parts)
    _write_rejects(storage.join(rejects_dir or out_dir, f"meta-{index:04d}-{REJECTS_SAMPLE}"),
                   src.rejects, storage_options)
    return {"source": url, "format": src.format, "rows_read": titles + src.rejects.total,
            "titles": titles, "rejected": src.rejects.counts, "parts": parts}


def _write_reviews_part(df, url: str, n_buckets: int, storage_options) -> int:
    """One joined partition as one part in :data:`REVIEWS_SCHEMA`, bucketed (none if empty)."""
    if len(df) == 0:
        return 0
    table = pa.Table.from_pandas(df[REVIEWS_SCHEMA.names], schema=REVIEWS_SCHEMA,
                                 preserve_index=False)
    return _write_part([table], url, n_buckets, storage_options)


def _fill_titles(df, titles):
    """Rows of one partition with an empty product_title get the metadata's title.

    ``titles`` (product_id, meta_title) is merged in first, unless ``df`` already has it.
    """
    merged = df if titles is None else df.merge(titles, on="product_id", how="left")
    meta = merged["meta_title"].fillna("")
    merged["product_title"] = merged["product_title"].where(merged["product_title"] != "", meta)
    return merged.drop(columns="meta_title")


def _shuffle_method() -> str | None:
    """Dask's shuffle for the titles join: p2p (its default) on a cluster, else in-memory tasks.

    Without a distributed client Dask falls back to a partd disk shuffle, which measured 2.5x
    slower than the task shuffle on the 2 M-row benchmark; the threaded scheduler holds the
    data in this process either way (use a cluster for bounded memory).
    """
    try:
        from distributed import default_client

        default_client()
        return None
    except (ImportError, ValueError):
        return "tasks"


def _join_titles(out_dir: str, parts: list[str], title_parts: list[str], n_titles: int,
                 n_buckets: int, storage_options) -> list[dict]:
    """Rewrite the review parts with titles from the metadata parts; return the new parts.

    One title per product whatever the partitioning: the smallest non-empty one, should a
    metadata file list a product twice. Up to :data:`TITLES_PER_PARTITION` titles the titles
    are one partition and every review part is joined with it where it stands; beyond, Dask
    hash-joins both sides (shuffling the reviews once).
    """
    method = _shuffle_method()
    with dask.config.set({"dataframe.shuffle.method": method} if method else {}):
        reviews = partio.read_parts([storage.join(out_dir, p) for p in parts],
                                    storage_options=storage_options)
        titles = partio.read_parts([storage.join(out_dir, TITLES_DIR, p) for p in title_parts],
                                   storage_options=storage_options)
        split_out = max(1, -(-n_titles // TITLES_PER_PARTITION))
        titles = (titles.groupby("product_id")["product_title"].min(split_out=split_out)
                  .rename("meta_title").reset_index())
        if split_out == 1:
            joined = reviews.map_partitions(_fill_titles, titles, meta=reviews._meta)
        else:
            joined = reviews.merge(titles, on="product_id", how="left").map_partitions(
                _fill_titles, None, meta=reviews._meta)
        names = [f"titled-{i:05d}.parquet" for i in range(joined.npartitions)]
        rows = dask.compute(*[
            dask.delayed(_write_reviews_part)(part, storage.join(out_dir, name), n_buckets,
                                              storage_options)
            for part, name in zip(joined.to_delayed(), names)])
    owned.remove_files(out_dir, list(parts) + [f"{TITLES_DIR}/{p}" for p in title_parts],
                       storage_options)
    return [{"file": n, "rows": r} for n, r in zip(names, rows) if r > 0]


def _check_title_coverage(out_dir: str, parts: list[str], meta: list[str],
                          storage_options) -> None:
    """Stop when the meta files titled none of the source's products; warn when it titled only some.

    Counted over the ingested parts, after the join: a product has a title when any of its
    rows has one.
    """
    rows = partio.read_parts([storage.join(out_dir, p) for p in parts],
                             ["product_id", "product_title"], storage_options)
    titled = rows.assign(titled=rows["product_title"] != "").groupby("product_id")["titled"].max()
    counts = titled.value_counts().compute()
    with_title, without = int(counts.get(True, 0)), int(counts.get(False, 0))
    names = ", ".join(os.path.basename(m) for m in meta[:3]) + (" …" if len(meta) > 3 else "")
    if with_title == 0:
        example = rows["product_id"].head(1).iloc[0]
        theirs = _first_title_id(meta[0], storage_options)
        seen = f"; META's look like {theirs!r}" if theirs is not None else ", and META has none"
        raise FmprepError(f"META ({names}) gives a title to none of the {without} products of "
                          f"SOURCE (whose ids look like {example!r}{seen}); set "
                          f"{setting('meta')} to the metadata file of the same dataset and "
                          "category as SOURCE")
    if without:
        log.warning("warning: META (%s) gave titles to %d of %d products; the other %d keep an "
                    "empty title (check that %s is the metadata of SOURCE's category)",
                    names, with_title, with_title + without, without, setting("meta"))


def _first_title_id(url: str, storage_options) -> str | None:
    """The first product id a metadata file lists, to show in a message."""
    with open_titles(url, storage_options, MIN_BLOCK_SIZE) as src:
        for table in src.tables():
            if table.num_rows:
                return table["product_id"][0].as_py()
    return None


def source_fingerprint(url: str, storage_options: dict | None = None) -> dict:
    """Size and modification stamp (or ETag) of a source, to tell whether it changed."""
    fs, path = storage.filesystem(url, storage_options)
    info = fs.info(path)
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified")
    return {"url": url, "size": info.get("size"), "stamp": str(stamp)}


def customer_bucket_count(fingerprints: list[dict], part_bytes: int) -> int:
    """Customer buckets for sources of these sizes: about one per ``part_bytes`` of text.

    A bucket is what one prepare task holds, so this bounds prepare's memory per task like
    ``part_size`` bounds ingest's. gzip sizes are scaled by :data:`GZIP_RATIO`; a wrong guess
    changes only how large the buckets are, never a result.
    """
    text_bytes = sum((f["size"] or 0) * (GZIP_RATIO if f["url"].endswith(".gz") else 1)
                     for f in fingerprints)
    return max(1, -(-int(text_bytes) // part_bytes))


def _sum_counts(results: list[dict], reasons) -> dict:
    """Counts by reason over files, in ``reasons`` order, for the reasons any file has."""
    present = {k for r in results for k in r["rejected"]}
    return {k: sum(r["rejected"].get(k, 0) for r in results) for k in reasons if k in present}


def ingest(sources: list[str], work: str, part_size: str | int = "128MB",
           storage_options: dict | None = None, key: str | None = None, fmt: str = AUTO,
           meta: list[str] | None = None, fingerprints: list[dict] | None = None,
           meta_fingerprints: list[dict] | None = None) -> dict:
    """Ingest every source file in parallel into ``WORK/reviews/`` and write its manifest last.

    Parameters
    ----------
    sources : list of str
        Files to read (see :func:`fmprep.storage.expand_sources`).
    work : str
        WORK directory, local or URL.
    part_size : str or int
        Uncompressed source bytes per Parquet part, e.g. ``"128MB"``.
    storage_options : dict, optional
        fsspec options for every read and write.
    key : str, optional
        Stored in the manifest so a rerun can tell whether this stage is up to date.
    fmt : str
        Source format for every file, or ``auto`` (each file sniffed on its own); see
        :mod:`fmprep.sources`.
    meta : list of str, optional
        Product metadata files whose titles fill the rows that have none.
    fingerprints, meta_fingerprints : list of dict, optional
        :func:`source_fingerprint` of ``sources`` and ``meta`` when the caller has them
        already (the pipeline computes them for the stage key).

    Returns
    -------
    dict
        The manifest written to ``WORK/reviews/manifest.json``; ``files`` holds each file's
        format and counts, ``meta`` (with ``meta``) the metadata files' counts.
    """
    check_format(fmt)
    part_bytes = parse_bytes(part_size) if isinstance(part_size, str) else int(part_size)
    if part_bytes <= 0:
        raise FmprepError(f"part size must be positive, got {part_size!r}; use e.g. 128MB")
    meta = list(meta or [])
    # Every file sniffed first: an unreadable one or a mix of formats stops the run before
    # WORK is touched.
    check_sources(sources, fmt, storage_options, meta=bool(meta))
    out_dir = storage.join(work, REVIEWS_DIR)
    rejects_dir = storage.join(work, REJECTS_DIR)
    clear(work, storage_options)
    if fingerprints is None:
        fingerprints = [source_fingerprint(u, storage_options) for u in sources]
    if meta_fingerprints is None:
        meta_fingerprints = [source_fingerprint(u, storage_options) for u in meta]
    n_buckets = customer_bucket_count(fingerprints, part_bytes)
    tasks = [dask.delayed(ingest_file, pure=False)(u, i, out_dir, part_bytes, storage_options,
                                                   fmt, rejects_dir, n_buckets)
             for i, u in enumerate(sources)]
    title_dir = storage.join(out_dir, TITLES_DIR)
    title_tasks = [dask.delayed(ingest_titles_file, pure=False)(u, i, title_dir, part_bytes,
                                                                storage_options, rejects_dir)
                   for i, u in enumerate(meta)]
    results, title_results = dask.compute(tasks, title_tasks)
    results, title_results = list(results), list(title_results)
    totals = {"rows_read": sum(r["rows_read"] for r in results),
              "rows_valid": sum(r["rows_valid"] for r in results),
              "rejected": _sum_counts(results, REJECT_REASONS)}
    totals["rows_rejected"] = sum(totals["rejected"].values())
    if totals["rows_valid"] == 0:
        raise FmprepError(f"no valid rows in {', '.join(sources)} (all {totals['rows_read']} "
                          f"rejected: see {out_dir}); check {setting('source')} and "
                          f"{setting('format')}")
    parts = [p for r in results for p in r["parts"]]
    manifest = {"format": MANIFEST_FORMAT, "stage": "ingest", "key": key, "layout": LAYOUT,
                "customer_buckets": n_buckets,
                "source_format": fmt, "sources": fingerprints, "part_size": part_bytes,
                "files": results, "totals": totals}
    if meta:
        n_titles = sum(r["titles"] for r in title_results)
        if n_titles:
            parts = _join_titles(out_dir, [p["file"] for p in parts],
                                 [p["file"] for r in title_results for p in r["parts"]],
                                 n_titles, n_buckets, storage_options)
        manifest["meta"] = {
            "sources": meta_fingerprints, "files": title_results,
            "totals": {"rows_read": sum(r["rows_read"] for r in title_results),
                       "titles": n_titles,
                       "rejected": _sum_counts(title_results, TITLE_REASONS)}}
    if meta:
        _check_title_coverage(out_dir, [p["file"] for p in parts], meta, storage_options)
    manifest["parts"] = [p["file"] for p in parts]
    rejects = [f"{REJECTS_DIR}/{i:04d}-{REJECTS_SAMPLE}" for i in range(len(sources))]
    rejects += [f"{REJECTS_DIR}/meta-{i:04d}-{REJECTS_SAMPLE}" for i in range(len(meta))]
    manifest["files"] = [f"{REVIEWS_DIR}/{p}" for p in manifest["parts"]] + rejects
    storage.write_json(storage.join(work, INGEST_MANIFEST), manifest, storage_options)
    return manifest


# fmprep's own names for what ingest writes under WORK (see fmprep.owned): a crashed run
# leaves no manifest listing them.
OWN_FILES = (f"{REVIEWS_DIR}/*.parquet", f"{REVIEWS_DIR}/{TITLES_DIR}/*.parquet",
             f"{REJECTS_DIR}/*-{REJECTS_SAMPLE}",
             # earlier fmprep versions kept these inside WORK/reviews
             f"{REVIEWS_DIR}/{MANIFEST}", f"{REVIEWS_DIR}/*-{REJECTS_SAMPLE}")


def clear(work: str, storage_options: dict | None = None) -> None:
    """Remove the ingest stage's earlier output from ``work``, manifest first.

    Only files that the previous run listed, or that carry ingest's own names in its own
    folders, are deleted (see :mod:`fmprep.owned`).
    """
    owned.claim(work, "work", storage_options)
    old = storage.read_json(storage.join(work, INGEST_MANIFEST), storage_options)
    owned.remove_files(work, [INGEST_MANIFEST], storage_options)
    owned.remove_files(work, owned.listed_files(old) + owned.fmprep_files(work, OWN_FILES,
                                                                          storage_options),
                       storage_options)
    owned.make_dirs(work, [REVIEWS_DIR, REJECTS_DIR], storage_options)
