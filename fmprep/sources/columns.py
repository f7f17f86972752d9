"""Typed columns from raw fields (UTF-8, ids, dates, timestamps) and the canonical tables."""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REVIEWS_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("review_id", pa.string()),
    ("product_id", pa.string()),
    ("product_title", pa.string()),
    ("star_rating", pa.float32()),   # float: MovieLens half stars (4.5) must survive
    ("review_date", pa.date32()),
])
TITLES_SCHEMA = pa.schema([("product_id", pa.string()), ("product_title", pa.string())])

# Timestamps are accepted from 1973-03-03 to 2286-11-20 UTC. The lower bound is 10^11 ms:
# seconds written where milliseconds belong (or the reverse) fall outside and are rejected
# instead of becoming 1970 (or year-50000) dates; 13 digits keep the derived ids in time order.
MIN_TIMESTAMP_MS = 10 ** 11
MAX_TIMESTAMP_MS = 10 ** 13


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


def _np(mask) -> np.ndarray:
    """A boolean Arrow array (nulls as False) as a numpy bool array."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _nonempty(values: pa.Array) -> np.ndarray:
    """True where a string is not empty (nulls count as empty)."""
    if not (isinstance(values, pa.StringArray) and values.null_count == 0):
        return _np(pc.greater(pc.utf8_length(values), 0))
    # From the offsets: utf8_length walks every string (it was a third of clean_batch).
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    offsets = offsets[values.offset:values.offset + len(values) + 1]
    return offsets[1:] > offsets[:-1]


@numba.njit(cache=True, nogil=True)
def _iso_dates(offsets, data, days, ok):  # pragma: no cover - compiled
    # Strict YYYY-MM-DD (a real calendar day) → days since 1970-01-01; ~50x faster than Arrow's
    # strptime + strftime round trip that the check needs otherwise.
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    for i in range(days.shape[0]):
        s = offsets[i]
        ok[i] = False
        days[i] = 0
        if offsets[i + 1] - s != 10 or data[s + 4] != 45 or data[s + 7] != 45:
            continue
        digits = True
        for j in (0, 1, 2, 3, 5, 6, 8, 9):
            if data[s + j] < 48 or data[s + j] > 57:
                digits = False
        if not digits:
            continue
        y = ((data[s] - 48) * 1000 + (data[s + 1] - 48) * 100 + (data[s + 2] - 48) * 10
             + data[s + 3] - 48)
        m = (data[s + 5] - 48) * 10 + data[s + 6] - 48
        d = (data[s + 8] - 48) * 10 + data[s + 9] - 48
        if y < 1 or m < 1 or m > 12 or d < 1:
            continue
        leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
        if d > month_days[m - 1] + (1 if (m == 2 and leap) else 0):
            continue
        # days from civil (proleptic Gregorian), shifted so 1970-01-01 is 0
        yy = y - 1 if m <= 2 else y
        era = yy // 400
        yoe = yy - era * 400
        doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
        doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
        days[i] = era * 146097 + doe - 719468
        ok[i] = True


def one_digit_ratings(values: pa.Array, low: int = 1, high: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Ratings written as one digit from ``low`` to ``high`` → (float32 ratings, valid mask).

    Read off the string bytes: a regex check and a string-to-float cast cost 15x more. Other
    values (empty, longer, nulls) are invalid and get 0.
    """
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + n + 1]
    data = values.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    digit = data[np.minimum(offsets[:-1], len(data) - 1)].astype(np.int16) - ord("0")
    ok = (np.diff(offsets) == 1) & (digit >= low) & (digit <= high)
    if values.null_count:
        ok &= ~_np(values.is_null())
    return np.where(ok, digit, 0).astype(np.float32), ok


def parse_iso_dates(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Strict ``YYYY-MM-DD`` strings or bytes → (date32 array, valid mask); invalid days are 0."""
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + n + 1]
    data = values.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(1, np.uint8)
    days = np.empty(n, dtype=np.int32)
    ok = np.empty(n, dtype=np.bool_)
    _iso_dates(offsets, data, days, ok)
    return pa.Array.from_buffers(pa.date32(), n, [None, pa.py_buffer(days)]), ok


def _empty_strings(n: int) -> pa.Array:
    """``n`` empty strings without materialising them (all offsets 0)."""
    return pa.StringArray.from_buffers(n, pa.py_buffer(np.zeros(n + 1, np.int32)),
                                       pa.py_buffer(b""))


def canonical_table(customer, product, rating, ms, title=None) -> pa.Table:
    """Rows of a timestamped source in :data:`REVIEWS_SCHEMA`.

    Parameters
    ----------
    customer, product : pyarrow.Array of string
        Non-empty ids.
    rating : pyarrow.Array
        Star ratings (cast to float32).
    ms : pyarrow.Array of int64
        Unix time in milliseconds, within [MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS).
    title : pyarrow.Array of string, optional
        Product titles; ``""`` for every row when not given.

    Notes
    -----
    ``review_date`` is the UTC date of ``ms``; ``review_id`` is
    ``<ms zero-padded to 13 digits>:<customer>:<product>`` (see :mod:`fmprep.sources`).
    """
    stamp = pc.utf8_lpad(ms.cast(pa.string()), width=13, padding="0")
    return pa.table({
        "customer_id": customer,
        "review_id": pc.binary_join_element_wise(stamp, customer, product, ":"),
        "product_id": product,
        "product_title": _empty_strings(len(customer)) if title is None else title,
        "star_rating": rating.cast(pa.float32()),
        "review_date": ms.cast(pa.timestamp("ms")).cast(pa.date32()),
    }, schema=REVIEWS_SCHEMA)
