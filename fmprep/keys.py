"""Stable 64-bit keys of id strings, and the customer buckets they define.

Ingest writes each part's rows grouped by :func:`customer_buckets`, and prepare works bucket by
bucket on the same keys: both must agree, so both take them from here. A key is the same on
every machine and in every run (no Python ``hash``), so a bucket's rows, and every result built
from them, do not depend on the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # pandas: 0.2 s to import, not needed before prepare
    import pandas as pd

CUSTOMER_SEED = 0x43   # different seeds: a customer and a product with one id get other keys
PRODUCT_SEED = 0x50
TITLE_SEED = 0x54
CHECK_SEED = 0x21  # a second, independent key of customer_id: see prepare.dedupe_order


@numba.njit(cache=True, nogil=True)
def _hash_utf8(offsets, data, seed, out):  # pragma: no cover - compiled
    # FNV-1a over the bytes, then MurmurHash3's 64-bit finalizer to spread the low bits.
    prime = np.uint64(1099511628211)
    for i in range(out.shape[0]):
        h = np.uint64(14695981039346656037) ^ seed
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * prime
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
        out[i] = h


def string_keys(values: pd.Series, seed: int) -> np.ndarray:
    """Stable 64-bit keys of the UTF-8 strings in ``values`` (same on every machine and run).

    Parameters
    ----------
    values : pandas.Series or pyarrow.Array or pyarrow.ChunkedArray
        Strings without nulls.
    seed : int
        Mixed into every key, so that two kinds of ids with equal text get different keys.

    Returns
    -------
    numpy.ndarray of uint64
    """
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out = np.empty(len(arr), dtype=np.uint64)
    start = 0
    for chunk in chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            chunk = chunk.cast(pa.string())
        _, offsets, data = chunk.buffers()
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(offsets, dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(1, np.uint8)
        _hash_utf8(offsets.astype(np.int64), data, np.uint64(seed), out[start:start + len(chunk)])
        start += len(chunk)
    return out


def customer_buckets(customer_ids, n_buckets: int) -> np.ndarray:
    """The bucket (0..n_buckets-1) of each customer id: its customer key modulo ``n_buckets``.

    Parameters
    ----------
    customer_ids : pandas.Series or pyarrow.Array or pyarrow.ChunkedArray
        Strings without nulls.
    n_buckets : int
        Number of buckets, at least 1.

    Returns
    -------
    numpy.ndarray of int64
    """
    return bucket_of(string_keys(customer_ids, CUSTOMER_SEED), n_buckets)


def bucket_of(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    """``keys`` modulo ``n_buckets``, as int64 bucket numbers."""
    return (keys % np.uint64(n_buckets)).astype(np.int64)
