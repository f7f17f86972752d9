"""Stage 1, ingest: review TSV(s) → typed Parquet parts, streamed, with every reject counted.

One task per source file (a gzip stream cannot be split). Each task decompresses with ISA-L,
parses with Arrow's streaming CSV reader (quoting off, only the used columns, all as bytes so
that one bad byte cannot abort a whole block), validates every row, and rolls a new Parquet
part every ``part_size`` uncompressed bytes. Memory per task is a few parse blocks, whatever
the file's size.
"""

from __future__ import annotations

import json
import os
import zlib

import dask
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from dask.utils import parse_bytes
from isal import igzip

from . import progress, storage
from .config import (MANIFEST, MANIFEST_FORMAT, REJECTS_SAMPLE, REJECTS_SAMPLE_SIZE,
                     TSV_COLUMNS, USED_COLUMNS)
from .errors import FmprepError

REVIEWS_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("review_id", pa.string()),
    ("product_id", pa.string()),
    ("product_title", pa.string()),
    ("star_rating", pa.int8()),
    ("review_date", pa.date32()),
])
REJECT_REASONS = ("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                  "repeated_header", "bad_rating", "bad_date")
BLOCK_SIZE = 16 << 20  # Arrow parse block; also the longest line accepted
MIN_BLOCK_SIZE = 256 << 10  # smaller parts (tests) parse in smaller blocks to roll parts on time
GZIP_MAGIC = b"\x1f\x8b"


class _CountingReader:
    """File-like wrapper that counts the (decompressed) bytes handed to the parser."""

    def __init__(self, f):
        self._f = f
        self.count = 0
        self.closed = False

    def read(self, n=-1):
        try:
            data = self._f.read(n)
        except (EOFError, OSError, zlib.error) as err:
            # isal raises these for truncated or corrupt gzip; Arrow would wrap them opaquely.
            raise _CorruptInput(str(err)) from err
        self.count += len(data)
        return data

    def readable(self):
        return True

    def seekable(self):
        return False

    def close(self):
        self.closed = True


class _CorruptInput(Exception):
    pass


class _Rejects:
    """Counts rejected rows by reason and keeps the first few of each as a sample."""

    def __init__(self):
        self.counts = dict.fromkeys(REJECT_REASONS, 0)
        self.samples = []
        self._kept = dict.fromkeys(REJECT_REASONS, 0)

    def add(self, reason: str, text: str, n: int = 1):
        self.counts[reason] += n
        if self._kept[reason] < REJECTS_SAMPLE_SIZE:
            self._kept[reason] += 1
            self.samples.append({"reason": reason, "text": text[:1000]})

    def on_invalid_row(self, row) -> str:
        reason = "too_many_fields" if row.actual_columns > row.expected_columns else "too_few_fields"
        self.add(reason, row.text)
        return "skip"


def _open_stream(url: str, storage_options: dict | None):
    """Open ``url`` and return a decompressed binary stream; gzip is sniffed, not assumed."""
    raw = storage.open_file(url, "rb", storage_options).open()
    head = raw.read(2)
    raw.seek(0)
    if not head:
        raw.close()
        raise FmprepError(f"{url} is empty; point SOURCE= at a review TSV (.tsv or .tsv.gz)")
    if head == GZIP_MAGIC:
        return raw, igzip.GzipFile(fileobj=raw, mode="rb")
    if url.endswith(".gz"):
        raw.close()
        raise FmprepError(f"{url} is named .gz but is not gzip data; re-download it or "
                          "rename it if it is plain TSV")
    return raw, raw


def _check_header(url: str, stream) -> None:
    try:
        line = stream.readline(1 << 16)
    except (EOFError, OSError, zlib.error) as err:
        raise FmprepError(f"{url}: cannot decompress ({err}); the file is truncated or "
                          "corrupt, re-download it")
    fields = line.rstrip(b"\r\n").split(b"\t")
    if tuple(f.decode("utf-8", "replace") for f in fields) != TSV_COLUMNS:
        shown = line[:120].decode("utf-8", "replace").rstrip()
        raise FmprepError(f"{url}: first line is not the Amazon Customer Reviews header "
                          f"(got {shown!r}); expected the 15 tab-separated columns "
                          f"{', '.join(TSV_COLUMNS[:3])}, …, review_date")


def _decode_column(values: pa.Array, rejects_mask: np.ndarray) -> pa.Array:
    """Cast a binary column to string; rows with invalid UTF-8 are flagged in ``rejects_mask``."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        # Rare: fall back to row by row for this one batch only.
        out = []
        for i, v in enumerate(values.to_pylist()):
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                rejects_mask[i] = True
                out.append("")
        return pa.array(out, pa.string())


def clean_batch(batch: pa.RecordBatch, rejects: _Rejects) -> pa.Table:
    """Validate and type one parsed batch; count and sample the rows it rejects.

    Parameters
    ----------
    batch : pyarrow.RecordBatch
        Binary columns named as in :data:`fmprep.config.USED_COLUMNS`.
    rejects : _Rejects
        Collects counts and samples of rejected rows.

    Returns
    -------
    pyarrow.Table
        The valid rows in :data:`REVIEWS_SCHEMA`.
    """
    n = batch.num_rows
    bad_utf8 = np.zeros(n, dtype=bool)
    cols = {name: _decode_column(batch.column(name), bad_utf8) for name in USED_COLUMNS}
    ids_ok = np.ones(n, dtype=bool)
    for name in ("customer_id", "product_id", "review_id"):
        ids_ok &= pc.greater(pc.utf8_length(cols[name]), 0).to_numpy(zero_copy_only=False)
    rating_ok = pc.match_substring_regex(cols["star_rating"], r"^[1-5]$").to_numpy(
        zero_copy_only=False)
    dates = pc.strptime(cols["review_date"], format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls impossible days over (2014-02-30 → 03-02): a date must print back as read.
    date_ok = pc.fill_null(pc.equal(pc.strftime(dates, format="%Y-%m-%d"), cols["review_date"]),
                           False).to_numpy(zero_copy_only=False)
    header = pc.equal(cols["star_rating"], "star_rating").to_numpy(zero_copy_only=False)

    # Each rejected row gets the first reason that applies, so counts add up to the rejects.
    ok = ~bad_utf8
    reasons = [("invalid_utf8", bad_utf8), ("missing_id", ok & ~ids_ok),
               ("repeated_header", ok & ids_ok & header),
               ("bad_rating", ok & ids_ok & ~header & ~rating_ok),
               ("bad_date", ok & ids_ok & rating_ok & ~date_ok)]
    keep = ok & ids_ok & rating_ok & date_ok
    for reason, mask in reasons:
        idx = np.flatnonzero(mask)
        if len(idx):
            rows = batch.take(pa.array(idx[:REJECTS_SAMPLE_SIZE]))
            for i in range(rows.num_rows):
                text = "\t".join(rows.column(c)[i].as_py().decode("utf-8", "replace")
                                 for c in USED_COLUMNS)
                rejects.add(reason, text, 0)
            rejects.counts[reason] += len(idx)
    keep_idx = pa.array(np.flatnonzero(keep))
    return pa.table({
        "customer_id": cols["customer_id"].take(keep_idx),
        "review_id": cols["review_id"].take(keep_idx),
        "product_id": cols["product_id"].take(keep_idx),
        "product_title": cols["product_title"].take(keep_idx),
        "star_rating": pc.cast(cols["star_rating"].take(keep_idx), pa.int8()),
        "review_date": dates.take(keep_idx).cast(pa.date32()),
    }, schema=REVIEWS_SCHEMA)


class _LineTooLong(Exception):
    pass


MAX_BLOCK_SIZE = 1 << 30


def ingest_file(url: str, index: int, out_dir: str, part_size: int,
                storage_options: dict | None = None) -> dict:
    """Stream one source file into Parquet parts under ``out_dir``.

    Parameters
    ----------
    url : str
        Local path or URL of a review TSV, gzip-compressed or plain.
    index : int
        Position of the file among the sources; part names start with it.
    out_dir : str
        Directory (local or URL) for the parts and the rejects sample.
    part_size : int
        Uncompressed bytes of source per Parquet part.
    storage_options : dict, optional
        Passed to fsspec for both reading and writing.

    Returns
    -------
    dict
        ``source``, ``rows_read``, ``rows_valid``, ``rejected`` (counts by reason),
        ``bytes_read`` (uncompressed) and ``parts`` (file name and row count each).
    """
    block_size = max(MIN_BLOCK_SIZE, min(BLOCK_SIZE, part_size))
    while True:
        try:
            return _ingest_stream(url, index, out_dir, part_size, block_size, storage_options)
        except _LineTooLong as err:
            # A line longer than a parse block: start the file again with larger blocks.
            for name in err.args[0]:
                storage.remove(storage.join(out_dir, name), storage_options)
            if block_size >= MAX_BLOCK_SIZE:
                raise FmprepError(f"{url}: a line is longer than {MAX_BLOCK_SIZE >> 20} MiB; "
                                  "clean the file") from None
            block_size *= 4


def _ingest_stream(url, index, out_dir, part_size, block_size, storage_options) -> dict:
    raw, stream = _open_stream(url, storage_options)
    rejects = _Rejects()
    # Arrow reads ahead, so bytes pulled from the stream run ahead of the rows parsed; a batch
    # is one parse block of source, so parts are rolled by counting batches instead.
    batches_per_part = max(1, part_size // block_size)
    parts, writer, part_file, part_rows, part_batches = [], None, None, 0, 0
    rows_valid, read_so_far = 0, 0
    try:
        _check_header(url, stream)
        counter = _CountingReader(stream)
        reader = pacsv.open_csv(
            counter,
            # One parse thread: the Python row handler called from Arrow's pool has aborted
            # the process at exit ("terminate called without an active exception"); decoding
            # and parsing still overlap with other files' tasks.
            read_options=pacsv.ReadOptions(column_names=list(TSV_COLUMNS), block_size=block_size,
                                           use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                             invalid_row_handler=rejects.on_invalid_row),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(USED_COLUMNS),
                column_types={c: pa.binary() for c in USED_COLUMNS},
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                progress.report_bytes(raw.tell() - read_so_far)
                break
            position = raw.tell()
            progress.report_bytes(position - read_so_far)
            read_so_far = position
            table = clean_batch(batch, rejects)
            if table.num_rows == 0:
                continue
            if writer is None:
                name = f"part-{index:04d}-{len(parts):05d}.parquet"
                part_file = storage.open_file(storage.join(out_dir, name), "wb",
                                              storage_options).open()
                writer = pq.ParquetWriter(part_file, REVIEWS_SCHEMA)
                parts.append({"file": name, "rows": 0})
            writer.write_table(table)
            part_rows += table.num_rows
            part_batches += 1
            rows_valid += table.num_rows
            if part_batches >= batches_per_part:
                writer.close(), part_file.close()
                parts[-1]["rows"], writer, part_rows, part_batches = part_rows, None, 0, 0
    except _CorruptInput as err:
        raise FmprepError(f"{url}: cannot decompress ({err}); the file is truncated or corrupt, "
                          "re-download it")
    except pa.ArrowInvalid as err:
        if "Empty CSV file" in str(err):
            raise FmprepError(f"{url} has a header but no rows; point SOURCE= at a file with "
                              "reviews")
        if "straddling" in str(err):
            raise _LineTooLong([p["file"] for p in parts]) from None
        if isinstance(err.__context__, _CorruptInput) or "decompress" in str(err):
            raise FmprepError(f"{url}: cannot decompress; the file is truncated or corrupt, "
                              "re-download it")
        raise
    finally:
        if writer is not None:
            writer.close(), part_file.close()
            parts[-1]["rows"] = part_rows
        stream.close(), raw.close()
    rows_rejected = sum(rejects.counts.values())
    if rows_valid + rows_rejected == 0:
        raise FmprepError(f"{url} has a header but no rows; point SOURCE= at a file with reviews")
    samples = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in rejects.samples)
    storage.write_bytes_atomic(storage.join(out_dir, f"{index:04d}-{REJECTS_SAMPLE}"),
                               samples.encode("utf-8"), storage_options)
    return {"source": url, "rows_read": rows_valid + rows_rejected, "rows_valid": rows_valid,
            "rejected": rejects.counts, "bytes_read": counter.count, "parts": parts}


def source_fingerprint(url: str, storage_options: dict | None = None) -> dict:
    """Size and modification stamp (or ETag) of a source, to tell whether it changed."""
    fs, path = storage.filesystem(url, storage_options)
    info = fs.info(path)
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified")
    return {"url": url, "size": info.get("size"), "stamp": str(stamp)}


def ingest(sources: list[str], work: str, part_size: str | int = "128MB",
           storage_options: dict | None = None, key: str | None = None) -> dict:
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

    Returns
    -------
    dict
        The manifest written to ``WORK/reviews/manifest.json``.
    """
    part_bytes = parse_bytes(part_size) if isinstance(part_size, str) else int(part_size)
    if part_bytes <= 0:
        raise FmprepError(f"part size must be positive, got {part_size!r}; use e.g. 128MB")
    out_dir = storage.join(work, "reviews")
    storage.reset_stage_dir(out_dir, storage_options)
    fingerprints = [source_fingerprint(u, storage_options) for u in sources]
    tasks = [dask.delayed(ingest_file, pure=False)(u, i, out_dir, part_bytes, storage_options)
             for i, u in enumerate(sources)]
    results = list(dask.compute(*tasks))
    totals = {"rows_read": sum(r["rows_read"] for r in results),
              "rows_valid": sum(r["rows_valid"] for r in results),
              "rejected": {k: sum(r["rejected"][k] for r in results) for k in REJECT_REASONS}}
    totals["rows_rejected"] = sum(totals["rejected"].values())
    if totals["rows_valid"] == 0:
        raise FmprepError(f"no valid rows in {', '.join(sources)} (all {totals['rows_read']} "
                          f"rejected: see {out_dir}); check that SOURCE= is a review TSV")
    manifest = {"format": MANIFEST_FORMAT, "stage": "ingest", "key": key, "sources": fingerprints,
                "part_size": part_bytes, "files": results, "totals": totals,
                "parts": [p["file"] for r in results for p in r["parts"]]}
    storage.write_json(storage.join(out_dir, MANIFEST), manifest, storage_options)
    return manifest
