"""The machine's floor for reading a review .tsv.gz: decompression alone, then parsing alone.

Measured on each file, one pass each, nothing validated or written (several files: one after
the other, every figure added up):

- ``decompress_isal``: ISA-L (``isal.igzip``, what fmprep reads with), 16 MB reads streamed to
  /dev/null; ``decompress_zlib``: the same through the standard library's ``gzip`` (zlib);
- ``parse_1thread``: ISA-L stream into Arrow's streaming CSV reader with fmprep's ingest options
  (tab, quoting off, the 6 used columns as bytes, the same block size) and ``use_threads``
  off: the single-thread decompress + parse floor fmprep is measured against;
- ``parse_threads``: the same with Arrow's threads on, as fmprep's ingest runs it.

MB/s are decompressed megabytes (10^6 bytes) per second.

Usage::

    python benchmarks/floor.py SOURCE.tsv.gz [MORE.tsv.gz ...] [--json] [--skip-zlib]
        [--skip-threads]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.csv as pacsv
from isal import igzip

from fmprep.config import TSV_COLUMNS, USED_COLUMNS
from fmprep.ingest import BLOCK_SIZE

READ_SIZE = 16 << 20


def decompress(path: str, opener) -> tuple[float, int]:
    """Seconds and decompressed bytes to stream ``path`` through ``opener`` into /dev/null."""
    t0 = time.perf_counter()
    total = 0
    with opener(path, "rb") as f, open(os.devnull, "wb") as sink:
        while chunk := f.read(READ_SIZE):
            sink.write(chunk)
            total += len(chunk)
    return time.perf_counter() - t0, total


def _skip_row(_row) -> str:
    # Rows with the wrong field count are skipped, as ingest does; counting them is validation.
    return "skip"


def parse(path: str, use_threads: bool) -> tuple[float, int]:
    """Seconds and rows to decompress and parse ``path`` the way fmprep's ingest parses it.

    Parameters
    ----------
    path : str
        A review .tsv.gz with a header line.
    use_threads : bool
        Arrow's ``ReadOptions.use_threads``; False gives the single-thread floor.

    Returns
    -------
    tuple of (float, int)
        Wall seconds and rows parsed (bad rows skipped).
    """
    t0 = time.perf_counter()
    rows = 0
    with igzip.open(path, "rb") as stream:
        stream.readline()  # the header: ingest checks it, then names the columns itself
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=list(TSV_COLUMNS),
                                           block_size=BLOCK_SIZE, use_threads=use_threads),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False,
                                             escape_char=False, invalid_row_handler=_skip_row),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(USED_COLUMNS),
                column_types={c: pa.binary() for c in USED_COLUMNS},
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False))
        for batch in reader:
            rows += batch.num_rows
    return time.perf_counter() - t0, rows


def run(path: str, zlib: bool = True, threads: bool = True) -> dict:
    """Measure every floor on ``path``.

    Parameters
    ----------
    path : str
        A review .tsv.gz.
    zlib, threads : bool
        Also measure the standard-library decompressor / Arrow with threads on.

    Returns
    -------
    dict
        ``gzip_bytes``, ``tsv_bytes`` (decompressed), ``rows_parsed``, ``floor_s`` (the
        single-thread decompress + parse time) and ``stages``: per measurement ``seconds`` and
        ``mb_per_s``.
    """
    stages = {}
    seconds, size = decompress(path, igzip.open)
    stages["decompress_isal"] = seconds
    if zlib:
        stages["decompress_zlib"], _ = decompress(path, gzip.open)
    stages["parse_1thread"], rows = parse(path, use_threads=False)
    if threads:
        stages["parse_threads"], _ = parse(path, use_threads=True)
    return {
        "tool": "floor", "source": path, "gzip_bytes": os.path.getsize(path), "tsv_bytes": size,
        "rows_parsed": rows, "floor_s": round(stages["parse_1thread"], 3),
        "stages": {k: {"seconds": round(v, 3), "mb_per_s": round(size / 1e6 / v, 1)}
                   for k, v in stages.items()},
    }


def run_files(paths: list[str], zlib: bool = True, threads: bool = True) -> dict:
    """:func:`run` on each file, one after the other, with every figure summed over them."""
    reports = [run(p, zlib=zlib, threads=threads) for p in paths]
    if len(reports) == 1:
        return reports[0]
    size = sum(r["tsv_bytes"] for r in reports)
    seconds = {k: sum(r["stages"][k]["seconds"] for r in reports) for k in reports[0]["stages"]}
    return {
        "tool": "floor", "source": paths, "gzip_bytes": sum(r["gzip_bytes"] for r in reports),
        "tsv_bytes": size, "rows_parsed": sum(r["rows_parsed"] for r in reports),
        "floor_s": round(seconds["parse_1thread"], 3),
        "stages": {k: {"seconds": round(v, 3), "mb_per_s": round(size / 1e6 / v, 1)}
                   for k, v in seconds.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="+",
                        help="review .tsv.gz; several files are measured one after the other "
                             "and their figures added up")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--skip-zlib", action="store_true", help="skip the zlib measurement")
    parser.add_argument("--skip-threads", action="store_true",
                        help="skip the parse with Arrow's threads on")
    args = parser.parse_args(argv)
    report = run_files(args.source, zlib=not args.skip_zlib, threads=not args.skip_threads)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{', '.join(args.source)}: {report['gzip_bytes'] / 1e6:.0f} MB gzip, "
              f"{report['tsv_bytes'] / 1e6:.0f} MB TSV, {report['rows_parsed']:,} rows parsed")
        for name, s in report["stages"].items():
            print(f"  {name:16s} {s['seconds']:7.2f} s  {s['mb_per_s']:7.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
