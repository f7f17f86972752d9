"""JSON Lines: the wanted fields of every line of a block, bad lines counted by reason."""

from __future__ import annotations

import bisect
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from .rejects import Rejects, _printable

_BLANK_AFTER_NEWLINE = re.compile(rb"\n[ \t\r]*(?=\n)")
_JSON_SPACE = re.compile(rb"[ \t\r\n]*")


def _count_lines(block: bytes) -> int:
    """Non-blank lines of a block that ends with a newline (blank: JSON whitespace only)."""
    n = block.count(b"\n") - len(_BLANK_AFTER_NEWLINE.findall(block))
    first = block[:block.find(b"\n")]
    return n - (not first.strip(b" \t\r"))


def _json_value(obj: dict, field: pa.Field):
    """A field of a parsed line, typed the way Arrow's explicit schema reads it, else None.

    Arrow accepts only a JSON string for a string column and only an integer literal for an
    int64 column; anything else makes it fail the whole block. Here the same value becomes
    None, so a row is judged the same whichever path parsed its block.
    """
    v = obj.get(field.name)
    if field.type == pa.string():
        return v if isinstance(v, str) else None
    if isinstance(v, bool):
        return None
    if field.type == pa.int64():
        return v if type(v) is int and -2 ** 63 <= v < 2 ** 63 else None
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return None
    return None


def _arrow_json(data: bytes, schema: pa.Schema) -> pa.Table | None:
    """Arrow's parse of whole JSON lines starting with an object, or None if it fails.

    One internal block (``block_size`` > the data): pyarrow 26 crashes the process when an
    internal block starts with a ``null`` value (apache/arrow#47409), so callers only pass
    data whose first value is an object, and it must not be split further.
    """
    try:
        return pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pajson.ParseOptions(explicit_schema=schema,
                                              unexpected_field_behavior="ignore"))
    except (pa.ArrowException, ValueError):
        return None


def _from_arrow(data: bytes, schema: pa.Schema, rejects: Rejects, n_lines: int, get_lines):
    """Arrow's columns for ``data`` (``n_lines`` non-blank lines), or None if Arrow fails.

    Returns ``(columns, text_of)`` like :func:`parse_json_block`. Arrow must give one row per
    line. Two things it lets through are rejected here, as the line-by-line path rejects
    them: a ``null`` line (read as a row of nulls: ``bad_json``) and invalid UTF-8 inside a
    kept string (not checked by its JSON reader: ``invalid_utf8``). ``get_lines()`` lists the
    non-blank lines; it is only called for reject samples or a suspect row.
    """
    table = _arrow_json(data, schema)
    if table is None or table.num_rows != n_lines:
        return None
    cols = {f.name: table.column(f.name).combine_chunks() for f in schema}
    drop = {}
    empty = np.ones(n_lines, dtype=bool)
    for values in cols.values():
        empty &= values.is_null().to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(empty).tolist():
        if get_lines()[i].strip(b" \t\r") == b"null":
            drop[i] = "bad_json"
    for f in schema:
        if f.type != pa.string():
            continue
        try:
            cols[f.name].validate(full=True)
        except pa.ArrowInvalid:
            # Rare: find the rows row by row, for this one block only.
            for i, v in enumerate(cols[f.name].cast(pa.binary()).to_pylist()):
                try:
                    v is None or v.decode("utf-8")
                except UnicodeDecodeError:
                    drop.setdefault(i, "invalid_utf8")
    if not drop:
        return cols, lambda i: _printable(get_lines()[i])
    lines = get_lines()
    for i in sorted(drop):
        rejects.add(drop[i], _printable(lines[i]))
    keep = np.setdiff1d(np.arange(n_lines), list(drop))
    keep_idx = pa.array(keep)
    return ({k: v.take(keep_idx) for k, v in cols.items()},
            lambda i: _printable(lines[keep[i]]))


def _lines_in_python(lines: list, schema: pa.Schema, rejects: Rejects):
    """Typed values of JSON lines picked out one by one; bad lines counted and sampled."""
    values = {f.name: [] for f in schema}
    kept = []
    for raw in lines:
        # surrogateescape: bad bytes in a field that is skipped do not matter, as in Arrow.
        try:
            obj = json.loads(raw.decode("utf-8", "surrogateescape"))
        except ValueError:
            rejects.add("bad_json", _printable(raw))
            continue
        if not isinstance(obj, dict):
            rejects.add("bad_json", _printable(raw))
            continue
        row = [_json_value(obj, f) for f in schema]
        try:
            for v in row:
                if isinstance(v, str):
                    v.encode("utf-8")     # undecodable bytes or lone surrogates in a kept field
        except UnicodeEncodeError:
            rejects.add("invalid_utf8", _printable(raw))
            continue
        for f, v in zip(schema, row):
            values[f.name].append(v)
        kept.append(raw)
    return {f.name: pa.array(values[f.name], f.type) for f in schema}, kept


_PIECE_LINES = 128


def _parse_json_lines_slowly(block: bytes, schema: pa.Schema, rejects: Rejects):
    """Parse a block that Arrow could not, in pieces of :data:`_PIECE_LINES` lines.

    Arrow parses each piece again; only the pieces it fails on (those holding a bad line, or a
    value of the wrong type) are parsed line by line in Python. A few bad lines per block thus
    cost about one more Arrow pass, not a Python loop over every line (200 k rows with 0.2 %
    bad lines: 1.0 s this way, 1.7 s line by line; 0.4 s for the same file without them).
    """
    lines = [raw for raw in block.split(b"\n") if raw.strip(b" \t\r")]
    chunks = {f.name: [] for f in schema}
    starts, text_ofs = [], []             # first accepted row of each piece, its text_of
    n = 0
    for i in range(0, len(lines), _PIECE_LINES):
        piece = lines[i:i + _PIECE_LINES]
        got = None
        if piece[0].lstrip(b" \t\r").startswith(b"{"):
            got = _from_arrow(b"\n".join(piece) + b"\n", schema, rejects, len(piece),
                              lambda piece=piece: piece)
        if got is None:
            cols, good = _lines_in_python(piece, schema, rejects)
            got = cols, lambda j, good=good: _printable(good[j])
        starts.append(n)
        text_ofs.append(got[1])
        n += len(got[0][schema[0].name])
        for f in schema:
            chunks[f.name].append(got[0][f.name])
    columns = {f.name: pa.concat_arrays(chunks[f.name]) if chunks[f.name] else
               pa.array([], f.type) for f in schema}

    def text_of(i):
        k = bisect.bisect_right(starts, i) - 1
        return text_ofs[k](i - starts[k])

    return columns, text_of


def parse_json_block(block: bytes, schema: pa.Schema, rejects: Rejects):
    """The ``schema`` fields of every non-blank line of a block of JSON Lines.

    Parameters
    ----------
    block : bytes
        Whole lines, ending with a newline.
    schema : pyarrow.Schema
        Fields to keep (others are skipped unparsed); missing or wrongly typed values are null.
    rejects : Rejects
        Counts lines that are not JSON objects (``bad_json``) or hold invalid UTF-8 in a kept
        field (``invalid_utf8``).

    Returns
    -------
    columns : dict of pyarrow.Array
        One entry per field, one value per accepted line.
    text_of : callable
        ``text_of(i)`` is the text of accepted line ``i``, for reject samples.

    Notes
    -----
    Arrow's JSON reader parses a clean block in one call, as fast as the TSV path, but has no
    handler for bad lines: one bad line fails the block, which then goes through
    :func:`_parse_json_lines_slowly`. Its row count must equal the non-blank lines, else
    (e.g. two objects on one line) the slow path decides. A row is judged the same on either
    path.
    """
    start = _JSON_SPACE.match(block).end()
    if block[start:start + 1] == b"{":
        lines = []

        def get_lines():
            if not lines:
                lines.extend(raw for raw in block.split(b"\n") if raw.strip(b" \t\r"))
            return lines

        got = _from_arrow(block, schema, rejects, _count_lines(block), get_lines)
        if got is not None:
            return got
    return _parse_json_lines_slowly(block, schema, rejects)

