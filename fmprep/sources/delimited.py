"""Delimited text (the Amazon TSV, MovieLens ratings) through Arrow's streaming CSV reader."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import FmprepError
from .rejects import Rejects, _shown
from .streams import CorruptInput, LineTooLong, _prefetched, _Reader

# Arrow's CSV reader splits on one byte: a longer separator ("::" of ratings.dat) becomes this
# byte (which no MovieLens file contains) before parsing.
_UNIT_SEPARATOR = b"\x1f"


class _Replacing(_Reader):
    """Replaces ``old`` by ``new`` in the stream, also where ``old`` spans two reads.

    Only for ``old`` made of one repeated byte (``::``): a trailing run of that byte is held
    back until the next read, so runs pair up left to right exactly as ``bytes.split`` does.
    """

    def __init__(self, f, old: bytes, new: bytes):
        super().__init__(f)
        self._old, self._new, self._held = old, new, b""

    def read(self, n=-1):
        while True:
            data = self._f.read(n)
            if not data:
                out, self._held = self._held, b""
                return out.replace(self._old, self._new)
            data = self._held + data
            keep = len(data.rstrip(self._old[:1]))
            self._held = data[keep:]
            # Never return b"" before the end: readers take an empty read as end of file.
            if keep:
                return data[:keep].replace(self._old, self._new)


def _csv_batches(url: str, stream, names, delimiter: str, block_size: int, rejects: Rejects,
                 include=None):
    """Arrow's streaming CSV reader over ``stream`` (see :func:`_csv_batches_serial`), parsing
    in a background thread."""
    return _prefetched(_csv_batches_serial(url, stream, names, delimiter, block_size, rejects,
                                           include))


# Arrow names the row ("Row #2001: ") only when it knows it, which depends on where the block
# boundaries fall.
_UNSKIPPABLE_ROW = re.compile(
    r"CSV parse error: (?:Row #\d+: )?Expected (\d+) columns, got (\d+): (.*)", re.S)


def _csv_batches_serial(url: str, stream, names, delimiter: str, block_size: int,
                        rejects: Rejects, include=None):
    """Arrow's streaming CSV reader over ``stream``: quoting off, all columns as bytes."""
    include = list(include or names)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=list(names), block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False,
                                             escape_char=False,
                                             invalid_row_handler=rejects.on_invalid_row),
            convert_options=pacsv.ConvertOptions(
                include_columns=include, column_types={c: pa.binary() for c in include},
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
    except pa.ArrowInvalid as err:
        if "Empty CSV file" in str(err):
            return
        if "straddling" in str(err):
            raise LineTooLong() from None
        if isinstance(err.__context__, CorruptInput) or "decompress" in str(err):
            raise CorruptInput(str(err)) from None
        bad = _UNSKIPPABLE_ROW.match(str(err))
        if bad:
            # pyarrow decodes a bad row's text before our handler sees it; a row that is both
            # invalid UTF-8 and of the wrong length fails the read instead of being counted.
            text = bad[3].replace(_UNIT_SEPARATOR.decode(), "::")  # ratings.dat's separator
            raise FmprepError(
                f"{url}: a row has {bad[2]} fields instead of {bad[1]} and is not valid UTF-8 "
                f"({_shown(text)}), which cannot be skipped; delete that row or drop the bad "
                "bytes (iconv -c -f utf-8 -t utf-8) and rerun") from None
        raise

