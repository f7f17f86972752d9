"""``amazon-tsv``: the Amazon Customer Reviews TSV, 15 tab-separated columns and a header."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import TSV_COLUMNS, USED_COLUMNS
from ..errors import FmprepError, setting
from .columns import (REVIEWS_SCHEMA, _decode_column, _nonempty, _np, one_digit_ratings,
                      parse_iso_dates)
from .delimited import _csv_batches
from .rejects import Rejects, _shown
from .streams import _Prefixed

HEADER = "\t".join(TSV_COLUMNS)


def sniff(line: bytes) -> bool:
    """Whether a first line is the TSV's header."""
    return line.startswith(b"marketplace\tcustomer_id\t")


def _check_tsv_header(url: str, line: bytes) -> None:
    fields = line.split(b"\t")
    if tuple(f.decode("utf-8", "replace") for f in fields) != TSV_COLUMNS:
        raise FmprepError(f"{url}: first line is not the Amazon Customer Reviews header "
                          f"(got {_shown(line)}); expected the 15 tab-separated columns "
                          f"{', '.join(TSV_COLUMNS[:3])}, …, review_date (or set "
                          f"{setting('format')})")


def clean_batch(batch: pa.RecordBatch, rejects: Rejects) -> pa.Table:
    """Validate and type one parsed batch of the Amazon TSV; count and sample its rejects.

    Parameters
    ----------
    batch : pyarrow.RecordBatch
        Binary columns named as in :data:`fmprep.config.USED_COLUMNS`.
    rejects : Rejects
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
        ids_ok &= _nonempty(cols[name])
    ratings, rating_ok = one_digit_ratings(cols["star_rating"])
    # Strict: Arrow's strptime would roll impossible days over (2014-02-30 → 03-02).
    dates, date_ok = parse_iso_dates(cols["review_date"])
    header = _np(pc.equal(cols["star_rating"], "star_rating"))

    def text_of(i):
        return "\t".join(batch.column(c)[i].as_py().decode("utf-8", "replace")
                         for c in USED_COLUMNS)

    keep = rejects.first_reason([("invalid_utf8", ~bad_utf8), ("missing_id", ids_ok),
                                 ("repeated_header", ~header), ("bad_rating", rating_ok),
                                 ("bad_date", date_ok)], text_of)
    keep_idx = pa.array(np.flatnonzero(keep))
    return pa.table({
        "customer_id": cols["customer_id"].take(keep_idx),
        "review_id": cols["review_id"].take(keep_idx),
        "product_id": cols["product_id"].take(keep_idx),
        "product_title": cols["product_title"].take(keep_idx),
        "star_rating": pa.array(ratings[keep]),
        "review_date": dates.take(keep_idx),
    }, schema=REVIEWS_SCHEMA)


def read(fmt, url, head, counter, block_size, rejects):
    """Validated tables of a TSV file, one per parse block (see :class:`fmprep.sources.Format`)."""
    line, _, rest = head.partition(b"\n")
    _check_tsv_header(url, line.rstrip(b"\r"))
    stream = _Prefixed(rest, counter)
    for batch in _csv_batches(url, stream, TSV_COLUMNS, "\t", block_size, rejects,
                              include=USED_COLUMNS):
        yield clean_batch(batch, rejects)
