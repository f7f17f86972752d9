"""MovieLens: the ratings of ml-100k (``u.data``), ml-1m / ml-10m (``ratings.dat``) and
ml-latest / ml-25m (``ratings.csv``), and their movie lists (``u.item``, ``movies.dat``,
``movies.csv``) for titles.

The variants differ only in what their :class:`fmprep.sources.Format` records say: the field
``separator``, the ``header`` line of the CSV files and the ``encoding`` of the movie lists.
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FmprepError, setting
from .columns import (MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, TITLES_SCHEMA, _decode_column,
                      _nonempty, _np, canonical_table)
from .delimited import _UNIT_SEPARATOR, _csv_batches, _Replacing
from .rejects import Rejects, _printable, _shown
from .streams import LooksLikeMeta, _line_blocks, _Prefixed

MOVIELENS_CSV_HEADER = "userId,movieId,rating,timestamp"
MOVIELENS_MOVIES_CSV_HEADER = "movieId,title,genres"
MOVIELENS_COLUMNS = ("customer_id", "product_id", "star_rating", "timestamp")
# Whole or half stars from 0.5 to 5: "4", "4.0", "4.5", "0.5" — not "0", "5.5" or "4.25".
MOVIELENS_RATING = r"^(?:[1-5](?:\.0+)?|[0-4]\.50*)$"

# First lines of each file: a ratings row, or a movie id and its separator.
_ML_100K = re.compile(rb"^\d+\t\d+\t\d+(?:\.\d+)?\t\d+$")
_ML_1M = re.compile(rb"^\d+::\d+::\d+(?:\.\d+)?::\d+$")
_U_ITEM = re.compile(rb"^\d+\|")
_MOVIES_DAT = re.compile(rb"^\d+::")


def sniff_100k(line: bytes) -> bool:
    """Whether a first line is a ``u.data`` row."""
    return bool(_ML_100K.match(line))


def sniff_1m(line: bytes) -> bool:
    """Whether a first line is a ``ratings.dat`` row."""
    return bool(_ML_1M.match(line))


def sniff_csv(line: bytes) -> bool:
    """Whether a first line is the ``ratings.csv`` header; :class:`LooksLikeMeta` for
    ``movies.csv``'s."""
    if line.startswith(b"movieId,title"):
        raise LooksLikeMeta()
    return line.replace(b" ", b"") == MOVIELENS_CSV_HEADER.encode()


def _clean_movielens(batch: pa.RecordBatch, rejects: Rejects, fmt) -> pa.Table:
    """Validate one batch of MovieLens ratings (binary columns) into the canonical schema."""
    bad_utf8 = np.zeros(batch.num_rows, dtype=bool)
    cols = {name: _decode_column(batch.column(name), bad_utf8) for name in MOVIELENS_COLUMNS}
    ids_ok = _nonempty(cols["customer_id"]) & _nonempty(cols["product_id"])
    rating_ok = _np(pc.match_substring_regex(cols["star_rating"], MOVIELENS_RATING))
    # At most 11 significant digits: beyond the valid range anyway, and ×1000 cannot overflow.
    digits = _np(pc.match_substring_regex(cols["timestamp"], r"^0*[0-9]{1,11}$"))
    seconds = pc.if_else(pa.array(digits), cols["timestamp"], "0").cast(pa.int64())
    ms = pc.multiply(seconds, 1000)
    ts_ok = digits & _np(pc.and_(pc.greater_equal(ms, MIN_TIMESTAMP_MS),
                                 pc.less(ms, MAX_TIMESTAMP_MS)))
    checks = [("invalid_utf8", ~bad_utf8), ("missing_id", ids_ok)]
    if fmt.header:
        checks.append(("repeated_header", ~_np(pc.equal(cols["star_rating"], "rating"))))
    checks += [("bad_rating", rating_ok), ("bad_timestamp", ts_ok)]

    def text_of(i):
        return fmt.separator.join(batch.column(c)[i].as_py().decode("utf-8", "replace")
                                  for c in MOVIELENS_COLUMNS)

    idx = pa.array(np.flatnonzero(rejects.first_reason(checks, text_of)))
    return canonical_table(cols["customer_id"].take(idx), cols["product_id"].take(idx),
                           cols["star_rating"].take(idx).cast(pa.float32()), ms.take(idx))


def read_ratings(fmt, url, head, counter, block_size, rejects):
    """Validated rating tables, one per parse block (see :class:`fmprep.sources.Format`)."""
    if fmt.header:
        line, _, rest = head.partition(b"\n")
        if line.rstrip(b"\r").replace(b" ", b"") != fmt.header.encode():
            raise FmprepError(f"{url}: first line is not the MovieLens {fmt.file} header "
                              f"{fmt.header!r} (got {_shown(line)}); check "
                              f"{setting('source')} and {setting('format')}")
        stream = _Prefixed(rest, counter)
    else:
        stream = _Prefixed(head, counter)
    delimiter = fmt.separator
    if len(delimiter) > 1:
        stream = _Replacing(stream, delimiter.encode(), _UNIT_SEPARATOR)
        delimiter = _UNIT_SEPARATOR.decode()
    for batch in _csv_batches(url, stream, MOVIELENS_COLUMNS, delimiter, block_size, rejects):
        yield _clean_movielens(batch, rejects, fmt)


# --- movie lists (meta) ---------------------------------------------------------------------------

def sniff_u_item(line: bytes) -> bool:
    """Whether a first line is a ``u.item`` row."""
    return bool(_U_ITEM.match(line))


def sniff_movies_dat(line: bytes) -> bool:
    """Whether a first line is a ``movies.dat`` row."""
    return bool(_MOVIES_DAT.match(line))


def sniff_movies_csv(line: bytes) -> bool:
    """Whether a first line is the ``movies.csv`` header."""
    return line.startswith(b"movieId,title")


def _titles_table(ids: list, titles: list) -> pa.Table:
    return pa.table({"product_id": pa.array(ids, pa.string()),
                     "product_title": pa.array(titles, pa.string())}, schema=TITLES_SCHEMA)


_HELD_CR = "\ue000"


def _movielens_title(fmt, text: str, first: bool):
    """``(movie id, title)`` of one line of a MovieLens movie list, or a reject reason."""
    sep = fmt.separator
    if sep == ",":
        # Titles with commas are quoted. csv refuses a bare carriage return outside quotes
        # (movies.csv files edited on old Macs): it is held as a private-use character and put
        # back, so the title keeps it, as a quoted one or a u.item title does.
        fields = [f.replace(_HELD_CR, "\r")
                  for f in next(csv.reader([text.replace("\r", _HELD_CR)]))]
        if fields[:2] == ["movieId", "title"]:
            return None if first else "repeated_header"
        return fields[:2] if len(fields) >= 3 else "too_few_fields"
    pieces = text.split(sep)
    if len(pieces) < 3:
        return "too_few_fields"
    # movies.dat: id::title::genres, and a title could hold "::"; u.item: id|title|date|...
    return [pieces[0], sep.join(pieces[1:-1]) if sep == "::" else pieces[1]]


def read_titles(fmt, url, head, counter, block_size, rejects):
    """(movie id, title) tables of a movie list, one per block (see
    :class:`fmprep.sources.Format`).

    The lists are small (under 100 k lines): parsed line by line in Python.
    """
    first = True
    for block in _line_blocks(_Prefixed(head, counter), block_size):
        ids, titles = [], []
        for raw in block.split(b"\n"):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            try:
                text = raw.decode(fmt.encoding)
            except UnicodeDecodeError:
                rejects.add("invalid_utf8", _printable(raw))
                first = False
                continue
            if first and fmt.header and text.replace(" ", "") != fmt.header:
                raise FmprepError(f"{url}: first line is not the MovieLens {fmt.file} header "
                                  f"{fmt.header!r}; check {setting('meta')}")
            got = _movielens_title(fmt, text, first)
            first = False
            if got is None:
                continue
            if isinstance(got, str):
                rejects.add(got, text)
            elif not got[0]:
                rejects.add("missing_id", text)
            elif not got[1]:
                rejects.add("missing_title", text)
            else:
                ids.append(got[0])
                titles.append(got[1])
        yield _titles_table(ids, titles)
