"""Parquet parts ↔ Dask partitions, one file per partition, with names and row counts we control.

``dd.read_parquet`` may split or merge files; fmprep's stages rely on "one file = one partition"
(rows of a customer stay together), so they read with :func:`read_parts` and write with
:func:`write_parts`.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .config import PARQUET_OPTIONS


def read_part(url: str, columns: list[str] | None = None,
              storage_options: dict | None = None) -> pd.DataFrame:
    """Read one Parquet file into pandas, dates as ``datetime64`` (not Python objects)."""
    with storage.open_file(url, "rb", storage_options) as f:
        table = pq.read_table(f, columns=columns)
    return table.to_pandas(date_as_object=False)


def read_parts(urls: list[str], columns: list[str] | None = None,
               storage_options: dict | None = None) -> dd.DataFrame:
    """A Dask DataFrame with exactly one partition per file in ``urls``."""
    meta = read_part(urls[0], columns, storage_options).iloc[:0]
    return dd.from_map(read_part, urls, columns=columns, storage_options=storage_options,
                       meta=meta, enforce_metadata=False)


def write_part(df: pd.DataFrame, url: str, storage_options: dict | None = None) -> int:
    """Write one partition as one Parquet file (atomically for local paths); return its rows."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink, **PARQUET_OPTIONS)
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes(), storage_options)
    return len(df)


def write_parts_tasks(ddf: dd.DataFrame, out_dir: str, storage_options: dict | None = None,
                      prefix: str = "part") -> list:
    """Delayed writes of every partition of ``ddf`` to ``out_dir/prefix-NNNNN.parquet``.

    Returns delayed ``(file name, rows)`` pairs; compute them together with other stage outputs
    so that shared upstream work runs once.
    """
    tasks = []
    for i, part in enumerate(ddf.to_delayed()):
        name = f"{prefix}-{i:05d}.parquet"
        rows = dask.delayed(write_part)(part, storage.join(out_dir, name), storage_options)
        tasks.append(dask.delayed(tuple)([name, rows]))
    return tasks


# --- a shuffle through files ----------------------------------------------------------------
#
# prepare moves its rows between partitions through storage rather than memory: each map task
# writes its part as one Parquet file whose row group j holds the rows bound for partition j;
# reduce task j reads row group j of every such file. Memory per task is one part whatever the
# data's size, on threads as on a cluster (whose workers share WORK), and the files are
# checkpoints: a lost task reruns alone.

def write_buckets(df: pd.DataFrame, buckets: np.ndarray, n_buckets: int, url: str,
                  storage_options: dict | None = None) -> list[int]:
    """Write ``df`` to ``url`` with row group ``j`` = the rows whose bucket is ``j``.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows to write.
    buckets : numpy.ndarray of int
        Each row's destination, in ``0..n_buckets-1``.
    n_buckets : int
        Row groups in the file (empty ones included), so that group ``j`` is bucket ``j``.
    url : str
        Destination file, written atomically where the filesystem allows.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    list of int
        Rows per bucket.
    """
    order = np.argsort(buckets, kind="stable")
    counts = np.bincount(buckets, minlength=n_buckets)
    table = pa.Table.from_pandas(df.take(order), preserve_index=False)
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, **PARQUET_OPTIONS) as writer:
        start = 0
        for n in counts.tolist():
            writer.write_table(table.slice(start, n), row_group_size=max(n, 1))
            start += n
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes(), storage_options)
    return counts.tolist()


def read_bucket(urls: list[str], bucket: int, storage_options: dict | None = None) -> pd.DataFrame:
    """Row group ``bucket`` of every file in ``urls`` (see :func:`write_buckets`), as one frame."""
    tables = []
    for url in urls:
        with storage.open_file(url, "rb", storage_options) as f:
            tables.append(pq.ParquetFile(f).read_row_group(bucket))
    return pa.concat_tables(tables).to_pandas(date_as_object=False)
