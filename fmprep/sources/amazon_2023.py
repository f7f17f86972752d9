"""``amazon-2023``: Amazon Reviews 2023 ``<Category>.jsonl`` and its ``meta_<Category>.jsonl``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import (MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, TITLES_SCHEMA, _nonempty, _np,
                      canonical_table)
from .jsonl import parse_json_block
from .rejects import Rejects
from .streams import LooksLikeMeta, _line_blocks, _Prefixed

REVIEW_FIELDS = pa.schema([("user_id", pa.string()), ("parent_asin", pa.string()),
                           ("rating", pa.float64()), ("timestamp", pa.int64())])
META_FIELDS = pa.schema([("parent_asin", pa.string()), ("title", pa.string())])


def sniff(line: bytes) -> bool:
    """Whether a first line is JSON Lines of reviews; :class:`LooksLikeMeta` for products."""
    if not line.lstrip(b" \t").startswith(b"{"):
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return True                       # a truncated or broken first line is still JSON Lines
    if isinstance(obj, dict) and "parent_asin" in obj and not (
            {"user_id", "rating"} & obj.keys()):
        raise LooksLikeMeta()
    return True


def _clean_2023(cols: dict, text_of, rejects: Rejects) -> pa.Table:
    """Validate parsed Amazon Reviews 2023 lines into the canonical schema."""
    user, product, rating, ms = (cols[k] for k in ("user_id", "parent_asin", "rating",
                                                   "timestamp"))
    ids_ok = _nonempty(user) & _nonempty(product)
    # NaN compares false: it is a bad rating like any other value outside 1-5.
    rating_ok = _np(pc.and_(pc.greater_equal(rating, 1.0), pc.less_equal(rating, 5.0)))
    ts_ok = _np(pc.and_(pc.greater_equal(ms, MIN_TIMESTAMP_MS), pc.less(ms, MAX_TIMESTAMP_MS)))
    keep = rejects.first_reason([("missing_id", ids_ok), ("bad_rating", rating_ok),
                                 ("bad_timestamp", ts_ok)], text_of)
    idx = pa.array(np.flatnonzero(keep))
    return canonical_table(user.take(idx), product.take(idx), rating.take(idx), ms.take(idx))


def read(fmt, url, head, counter, block_size, rejects):
    """Validated review tables, one per parse block (see :class:`fmprep.sources.Format`)."""
    for block in _line_blocks(_Prefixed(head, counter), block_size):
        cols, text_of = parse_json_block(block, REVIEW_FIELDS, rejects)
        yield _clean_2023(cols, text_of, rejects)


def sniff_meta(line: bytes) -> bool:
    """Whether a first line of a metadata file is JSON Lines."""
    return line.lstrip(b" \t").startswith(b"{")


def read_meta(fmt, url, head, counter, block_size, rejects):
    """(parent_asin, title) tables of a metadata file, one per parse block; every other field
    is skipped unparsed."""
    for block in _line_blocks(_Prefixed(head, counter), block_size):
        cols, text_of = parse_json_block(block, META_FIELDS, rejects)
        ids, titles = cols["parent_asin"], cols["title"]
        # A product without a title is counted; its reviews keep product_title "".
        has = rejects.first_reason([("missing_id", _nonempty(ids)),
                                    ("missing_title", _nonempty(titles))], text_of)
        idx = pa.array(np.flatnonzero(has))
        yield pa.table({"product_id": ids.take(idx), "product_title": titles.take(idx)},
                       schema=TITLES_SCHEMA)
