"""Review sources: every supported file layout, streamed into the one canonical review table.

=================  ========================================================================
format             file
=================  ========================================================================
``amazon-tsv``     Amazon Customer Reviews TSV, 15 tab-separated columns and a header line
``amazon-2023``    Amazon Reviews 2023 ``<Category>.jsonl(.gz)``, one JSON object per line
``movielens-100k`` ml-100k ``u.data``: ``user item rating timestamp``, tab-separated
``movielens-1m``   ml-1m / ml-10m ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``
``movielens-csv``  ml-latest / ml-25m ``ratings.csv``: header ``userId,movieId,rating,timestamp``
=================  ========================================================================

Every format becomes :data:`REVIEWS_SCHEMA` (customer_id, review_id, product_id, product_title,
star_rating as float32, review_date). ``auto`` picks the format from the first line after
decompression, with the file name as a hint when that line says nothing (see :func:`sniff`).

Formats without a review id get a derived one,
``<timestamp in ms, 13 digits>:<customer>:<product>``: unique per (customer, product, instant),
and, because the time comes first, a customer's same-day reviews tie-break in time order.
Formats without product titles get ``""``; the titles can come from a metadata file
(``--meta``, see :func:`open_titles`).

Each reader yields one validated table per parse block, so memory stays a few blocks whatever
the file's size, and counts every rejected row by reason with a sample of each
(:class:`Rejects`), like the TSV path always did.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import fnmatch
import json
import logging
import os
import queue
import re
import sys
import threading
import zlib

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from isal import igzip

from . import storage
from .config import REJECTS_SAMPLE_SIZE, TSV_COLUMNS, USED_COLUMNS
from .errors import FmprepError

log = logging.getLogger(__name__)

AUTO = "auto"
FORMATS = ("amazon-tsv", "amazon-2023", "movielens-100k", "movielens-1m", "movielens-csv")
FORMAT_CHOICES = (AUTO,) + FORMATS

REVIEWS_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("review_id", pa.string()),
    ("product_id", pa.string()),
    ("product_title", pa.string()),
    ("star_rating", pa.float32()),   # float: MovieLens half stars (4.5) must survive
    ("review_date", pa.date32()),
])
TITLES_SCHEMA = pa.schema([("product_id", pa.string()), ("product_title", pa.string())])

# Every reason, in report order; each format counts only the ones that can happen to it.
REJECT_REASONS = ("too_many_fields", "too_few_fields", "invalid_utf8", "bad_json", "missing_id",
                  "repeated_header", "bad_rating", "bad_date", "bad_timestamp")
FORMAT_REASONS = {
    "amazon-tsv": ("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                   "repeated_header", "bad_rating", "bad_date"),
    "amazon-2023": ("invalid_utf8", "bad_json", "missing_id", "bad_rating", "bad_timestamp"),
    "movielens-100k": ("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                       "bad_rating", "bad_timestamp"),
    "movielens-1m": ("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                     "bad_rating", "bad_timestamp"),
    "movielens-csv": ("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                      "repeated_header", "bad_rating", "bad_timestamp"),
}
TITLE_REASONS = ("too_few_fields", "invalid_utf8", "bad_json", "missing_id", "repeated_header",
                 "missing_title")
LAYOUT_REASONS = {
    "amazon-2023-meta": ("invalid_utf8", "bad_json", "missing_id", "missing_title"),
    "movielens-u.item": ("too_few_fields", "invalid_utf8", "missing_id", "missing_title"),
    "movielens-movies.dat": ("too_few_fields", "invalid_utf8", "missing_id", "missing_title"),
    "movielens-movies.csv": ("too_few_fields", "invalid_utf8", "missing_id", "repeated_header",
                             "missing_title"),
}

# Timestamps are accepted from 1973-03-03 to 2286-11-20 UTC. The lower bound is 10^11 ms:
# seconds written where milliseconds belong (or the reverse) fall outside and are rejected
# instead of becoming 1970 (or year-50000) dates; 13 digits keep the derived ids in time order.
MIN_TIMESTAMP_MS = 10 ** 11
MAX_TIMESTAMP_MS = 10 ** 13

MOVIELENS_CSV_HEADER = "userId,movieId,rating,timestamp"
MOVIELENS_COLUMNS = ("customer_id", "product_id", "star_rating", "timestamp")
# Whole or half stars from 0.5 to 5: "4", "4.0", "4.5", "0.5" — not "0", "5.5" or "4.25".
MOVIELENS_RATING = r"^(?:[1-5](?:\.0+)?|[0-4]\.50*)$"
_SEPARATORS = {"movielens-100k": "\t", "movielens-1m": "::", "movielens-csv": ","}
# ratings.dat separates fields with "::"; Arrow's CSV reader takes one byte, so "::" becomes
# this byte (which no MovieLens file contains) before parsing.
_UNIT_SEPARATOR = b"\x1f"

BLOCK_SIZE = 16 << 20       # parse block; also the longest line accepted before a retry
MAX_BLOCK_SIZE = 1 << 30
SNIFF_BYTES = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


# --- streams ------------------------------------------------------------------------------------

class CorruptInput(Exception):
    """The compressed stream is truncated or corrupt."""


class LineTooLong(Exception):
    """A line does not fit in one parse block; the caller retries with larger blocks."""


class _Reader:
    """The minimal read-only file interface Arrow's readers need, over another reader ``f``."""

    def __init__(self, f):
        self._f = f
        self.closed = False

    def readable(self):
        return True

    def seekable(self):
        return False

    def close(self):
        self.closed = True


class _CountingReader(_Reader):
    """Counts the (decompressed) bytes read through it."""

    def __init__(self, f):
        super().__init__(f)
        self.count = 0

    def read(self, n=-1):
        if self.closed:
            # Closed by the source on an error: Arrow's read-ahead thread may still ask for a
            # block; the end of the stream stops it without touching a closed file.
            return b""
        try:
            data = self._f.read(n)
        except (EOFError, OSError, zlib.error) as err:
            # isal raises these for truncated or corrupt gzip; Arrow would wrap them opaquely.
            raise CorruptInput(str(err)) from err
        self.count += len(data)
        return data


class _Prefixed(_Reader):
    """Hands out ``prefix`` (bytes already read, e.g. to sniff the format) before ``f``."""

    def __init__(self, prefix: bytes, f):
        super().__init__(f)
        self._prefix = prefix

    def read(self, n=-1):
        if not self._prefix:
            return self._f.read(n)
        if n is None or n < 0:
            out, self._prefix = self._prefix + self._f.read(), b""
        elif n <= len(self._prefix):
            out, self._prefix = self._prefix[:n], self._prefix[n:]
        else:
            # Fill the whole request, so parse blocks fall where they would without a prefix.
            out, self._prefix = self._prefix + self._f.read(n - len(self._prefix)), b""
        return out


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


def open_source(url: str, storage_options: dict | None = None, role: str = "SOURCE",
                block_size: int | None = None):
    """Open ``url`` and return ``(raw, stream)``: the file and its decompressed bytes.

    gzip is recognised by its magic bytes, not by the name. ``role`` names the setting to fix
    in error messages (``SOURCE`` or ``META``); ``block_size`` is the remote read size
    (s3fs's default of 50 MiB would download that much just to sniff a file).
    """
    if block_size is None:
        raw = storage.open_file(url, "rb", storage_options).open()
    else:
        fs, path = storage.filesystem(url, storage_options)
        raw = fs.open(path, "rb", block_size=block_size)
    head = raw.read(2)
    raw.seek(0)
    if not head:
        raw.close()
        raise FmprepError(f"{url} is empty; point {role}= at a review file (see FORMAT=)")
    if head == GZIP_MAGIC:
        return raw, igzip.GzipFile(fileobj=raw, mode="rb")
    if url.endswith(".gz"):
        raw.close()
        raise FmprepError(f"{url} is named .gz but is not gzip data; re-download it or "
                          "rename it if it is not compressed")
    return raw, raw


def _read_head(url: str, counter: _CountingReader) -> bytes:
    """The first bytes of the decompressed stream (up to :data:`SNIFF_BYTES`)."""
    try:
        head = counter.read(SNIFF_BYTES)
    except CorruptInput as err:
        raise FmprepError(f"{url}: cannot decompress ({err}); the file is truncated or "
                          "corrupt, re-download it") from None
    return head[len(_BOM):] if head.startswith(_BOM) else head


def _first_line(head: bytes) -> bytes:
    return head.split(b"\n", 1)[0].rstrip(b"\r")


SHOWN_CHARS = 60  # an excerpt of a file in an error message: enough to recognise it


# repr() of an undecodable byte kept by "surrogateescape" (\udcff), not preceded by a backslash
_SURROGATE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def _shown(data: bytes | str, limit: int = SHOWN_CHARS, binary: bool = False) -> str:
    """``data`` quoted for a one-line message: escaped and cut to about ``limit`` characters.

    Undecodable bytes show as ``\\xNN``, control characters as their escapes and Arrow's
    stand-in for bad bytes as ``\\ufffd``: binary junk can neither garble the terminal nor
    break the line, and readable text (accents included) stays readable. ``binary`` escapes
    every byte outside printable ASCII, as Python writes bytes.
    """
    text = data[:limit * 4]
    if binary:
        shown = repr(bytes(text))[1:]
    else:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "surrogateescape")
        shown = _SURROGATE.sub(r"\1\\x\2", repr(text).replace("\ufffd", "\\ufffd"))
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


# Magic bytes of formats people download reviews in, other than gzip.
_ARCHIVES = ((b"PK\x03\x04", "a zip archive"), (b"BZh", "bzip2-compressed"),
             (b"\xfd7zXZ\x00", "xz-compressed"), (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
             (b"PAR1", "a Parquet file"), (GZIP_MAGIC, "gzip-compressed twice"),
             (b"\xff\xfe", "UTF-16 text"), (b"\xfe\xff", "UTF-16 text"))
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\x0c")
_EXPECTED = {
    "SOURCE": "a review file (.tsv, .jsonl, u.data, ratings.dat, ratings.csv; plain or .gz, "
              "UTF-8 text)",
    "META": "a product metadata file (meta_<Category>.jsonl, u.item, movies.dat, movies.csv; "
            "plain or .gz)",
}


def looks_binary(head: bytes) -> bool:
    """True when the start of a decompressed file is not text.

    A NUL byte, or more than one character in ten that is invalid UTF-8 or a control
    character. Text with a few bad bytes (a Latin-1 title, a damaged row) is still text: its
    rows are read and the bad ones counted, not the whole file refused.
    """
    sample = head[:SNIFF_BYTES]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    text = sample.decode("utf-8", "replace")
    return controls + text.count("\ufffd") > len(text) // 10


def _check_text(url: str, head: bytes, compressed: bool, role: str) -> None:
    """A one-line error naming ``role`` when ``head`` is binary data rather than text."""
    if not looks_binary(head):
        return
    what = next((name for magic, name in _ARCHIVES if head.startswith(magic)), None)
    if what is not None:
        fix = ("decompress it once more" if what.startswith("gzip") else
               "save it as UTF-8" if what.startswith("UTF-16") else
               "fmprep reads plain or gzip text: extract or convert it first")
        raise FmprepError(f"{url} is {what} (it starts with {_shown(head, binary=True)}); "
                          f"{fix}, and point {role}= at the result")
    data = "decompresses to binary data" if compressed else "holds binary data"
    raise FmprepError(f"{url} {data}, not UTF-8 text (it starts with "
                      f"{_shown(head, binary=True)}); point {role}= at "
                      f"{_EXPECTED.get(role, 'a text file')}")


def _printable(raw: bytes) -> str:
    """A line's text for a reject sample: invalid UTF-8 shown as U+FFFD, never an error."""
    return raw.decode("utf-8", "replace")


# --- choosing the format ------------------------------------------------------------------------

_ML_100K = re.compile(rb"^\d+\t\d+\t\d+(?:\.\d+)?\t\d+$")
_ML_1M = re.compile(rb"^\d+::\d+::\d+(?:\.\d+)?::\d+$")
# (suffix after an optional .gz, format) — consulted only when the first line is not telling.
_NAME_HINTS = ((".tsv", "amazon-tsv"), (".jsonl", "amazon-2023"), (".json", "amazon-2023"),
               (".ndjson", "amazon-2023"), (".data", "movielens-100k"), (".base", "movielens-100k"),
               (".test", "movielens-100k"), (".dat", "movielens-1m"), (".csv", "movielens-csv"))
_META_HINT = ("looks like a product/movie metadata file; pass it as META= (--meta) and point "
              "SOURCE= at the ratings or reviews file")


def _sniff_content(line: bytes) -> str | None:
    """The format a first line identifies, None if it could be several or none."""
    if line.startswith(b"marketplace\tcustomer_id\t"):
        return "amazon-tsv"
    if line.lstrip(b" \t").startswith(b"{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return "amazon-2023"          # a truncated or broken first line is still JSON Lines
        if isinstance(obj, dict) and "parent_asin" in obj and not (
                {"user_id", "rating"} & obj.keys()):
            raise _LooksLikeMeta()
        return "amazon-2023"
    if line.replace(b" ", b"") == MOVIELENS_CSV_HEADER.encode():
        return "movielens-csv"
    if line.startswith(b"movieId,title"):
        raise _LooksLikeMeta()
    if _ML_1M.match(line):
        return "movielens-1m"
    if _ML_100K.match(line):
        return "movielens-100k"
    return None


class _LooksLikeMeta(Exception):
    pass


def _name_hint(name: str) -> str | None:
    base = os.path.basename(name.rstrip("/")).lower().removesuffix(".gz")
    for suffix, fmt in _NAME_HINTS:
        if base.endswith(suffix):
            return fmt
    return None


def _content_format(url: str, line: bytes) -> str | None:
    try:
        return _sniff_content(line)
    except _LooksLikeMeta:
        raise FmprepError(f"{url} {_META_HINT}") from None


def sniff(head: bytes, name: str) -> str | None:
    """Guess the format of a file from its first decompressed bytes and its name.

    Parameters
    ----------
    head : bytes
        The start of the decompressed file (at least its first line, if it is short).
    name : str
        Path or URL; its suffix (``.tsv``, ``.jsonl``, ``.data``, ``.dat``, ``.csv``, with or
        without ``.gz``) decides only when the first line matches no format.

    Returns
    -------
    str or None
        One of :data:`FORMATS`, or None when neither the content nor the name tells.

    Raises
    ------
    FmprepError
        When the file is a metadata file (``meta_*.jsonl``, ``movies.csv``) given as a source.
    """
    return _content_format(name, _first_line(head)) or _name_hint(name)


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a known format or ``auto``; else a one-line error with the fix."""
    if fmt not in FORMAT_CHOICES:
        raise FmprepError(f"unknown format {fmt!r}; set FORMAT= (--format) to one of "
                          f"{', '.join(FORMAT_CHOICES)}")
    return fmt


def choose_format(url: str, head: bytes, requested: str = AUTO) -> str:
    """The format to read ``url`` with: the requested one, checked against the content.

    A forced format that contradicts a first line which clearly belongs to another format is an
    error naming the right one; a forced format is trusted when the first line says nothing
    (e.g. it is itself malformed), and its rows are then validated as usual.
    """
    check_format(requested)
    line = _first_line(head)
    content = _content_format(url, line)
    if requested == AUTO:
        found = content or _name_hint(url)
        if found is None:
            raise FmprepError(f"{url}: cannot tell the format from its first line "
                              f"({_shown(line)}) or its name; set FORMAT= (--format) to one of "
                              f"{', '.join(FORMATS)}")
        return found
    if content is not None and content != requested:
        raise FmprepError(f"{url}: FORMAT={requested} does not match the file, whose first line "
                          f"({_shown(line)}) is {content}; set FORMAT={content} or FORMAT=auto")
    return requested


# --- rejects ------------------------------------------------------------------------------------

class Rejects:
    """Counts rejected rows by reason and keeps the first few of each as a sample.

    Parameters
    ----------
    reasons : sequence of str
        The reasons this source can produce; counts start at 0 for each.
    """

    def __init__(self, reasons=REJECT_REASONS):
        self.counts = dict.fromkeys(reasons, 0)
        self.samples = []
        self._kept = dict.fromkeys(reasons, 0)
        self._lock = threading.Lock()  # the parser's thread and the validating one both add

    def add(self, reason: str, text: str, n: int = 1):
        """Count ``n`` rows for ``reason``; keep ``text`` if that reason's sample has room."""
        with self._lock:
            self.counts[reason] += n
            if self._kept[reason] < REJECTS_SAMPLE_SIZE:
                self._kept[reason] += 1
                self.samples.append({"reason": reason, "text": text[:1000]})

    def add_masks(self, masks, text_of):
        """Count the rows flagged in each ``(reason, boolean mask)``; sample via ``text_of(i)``."""
        for reason, mask in masks:
            idx = np.flatnonzero(mask)
            if len(idx):
                room = REJECTS_SAMPLE_SIZE - self._kept[reason]
                for i in idx[:max(room, 0)].tolist():
                    self.add(reason, text_of(i), 0)
                self.add_count(reason, len(idx))

    def add_count(self, reason: str, n: int):
        """Count ``n`` rows for ``reason`` without a sample."""
        with self._lock:
            self.counts[reason] += n

    def on_invalid_row(self, row) -> str:
        """Arrow's ``invalid_row_handler``: count a row with the wrong number of fields."""
        many = row.actual_columns > row.expected_columns
        self.add("too_many_fields" if many else "too_few_fields", row.text)
        return "skip"

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextlib.contextmanager
def quiet_undecodable_rows():
    """Keep pyarrow's report of a row it could not decode for :meth:`Rejects.on_invalid_row`
    off stderr while the block runs.

    pyarrow decodes a row of the wrong length before calling the handler; when that row is
    not UTF-8 it prints the UnicodeDecodeError as "Exception ignored" and fails the read,
    which :func:`_csv_batches_serial` then reports as one line.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, UnicodeDecodeError) and
                getattr(unraisable.object, "__func__", None) is Rejects.on_invalid_row):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


# --- shared validation pieces -------------------------------------------------------------------

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
    ``<ms zero-padded to 13 digits>:<customer>:<product>`` (see the module docstring).
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


# --- amazon-tsv ---------------------------------------------------------------------------------

def _check_tsv_header(url: str, line: bytes) -> None:
    fields = line.split(b"\t")
    if tuple(f.decode("utf-8", "replace") for f in fields) != TSV_COLUMNS:
        raise FmprepError(f"{url}: first line is not the Amazon Customer Reviews header "
                          f"(got {_shown(line)}); expected the 15 tab-separated columns "
                          f"{', '.join(TSV_COLUMNS[:3])}, …, review_date (or set FORMAT=)")


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
    rating_ok = _np(pc.match_substring_regex(cols["star_rating"], r"^[1-5]$"))
    # Strict: Arrow's strptime would roll impossible days over (2014-02-30 → 03-02).
    dates, date_ok = parse_iso_dates(cols["review_date"])
    header = _np(pc.equal(cols["star_rating"], "star_rating"))

    # Each rejected row gets the first reason that applies, so counts add up to the rejects.
    ok = ~bad_utf8
    keep = ok & ids_ok & rating_ok & date_ok

    def text_of(i):
        return "\t".join(batch.column(c)[i].as_py().decode("utf-8", "replace")
                         for c in USED_COLUMNS)

    rejects.add_masks([("invalid_utf8", bad_utf8), ("missing_id", ok & ~ids_ok),
                       ("repeated_header", ok & ids_ok & header),
                       ("bad_rating", ok & ids_ok & ~header & ~rating_ok),
                       ("bad_date", ok & ids_ok & rating_ok & ~date_ok)], text_of)
    keep_idx = pa.array(np.flatnonzero(keep))
    return pa.table({
        "customer_id": cols["customer_id"].take(keep_idx),
        "review_id": cols["review_id"].take(keep_idx),
        "product_id": cols["product_id"].take(keep_idx),
        "product_title": cols["product_title"].take(keep_idx),
        "star_rating": pc.cast(cols["star_rating"].take(keep_idx), pa.float32()),
        "review_date": dates.take(keep_idx),
    }, schema=REVIEWS_SCHEMA)


def _prefetched(batches, depth: int = 2):
    """Iterate ``batches`` in a background thread, ``depth`` items ahead of the consumer.

    Decompressing and parsing (ISA-L and Arrow, which release the GIL) then overlap with
    validating and writing the previous block: ingest of one file uses two cores. Exceptions
    are raised in the consumer; closing the iterator stops the thread.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as err:  # handed to the consumer, raised there
            items.put((done, err))

    thread = threading.Thread(target=produce, name="fmprep-parse", daemon=True)
    thread.start()
    try:
        while True:
            item, err = items.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


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


def _read_amazon_tsv(url, head, counter, block_size, rejects):
    line, _, rest = head.partition(b"\n")
    _check_tsv_header(url, line.rstrip(b"\r"))
    stream = _Prefixed(rest, counter)
    for batch in _csv_batches(url, stream, TSV_COLUMNS, "\t", block_size, rejects,
                              include=USED_COLUMNS):
        yield clean_batch(batch, rejects)


# --- MovieLens ratings --------------------------------------------------------------------------

def _clean_movielens(batch: pa.RecordBatch, rejects: Rejects, fmt: str) -> pa.Table:
    """Validate one batch of MovieLens ratings (binary columns) into the canonical schema."""
    n = batch.num_rows
    bad_utf8 = np.zeros(n, dtype=bool)
    cols = {name: _decode_column(batch.column(name), bad_utf8) for name in MOVIELENS_COLUMNS}
    ids_ok = _nonempty(cols["customer_id"]) & _nonempty(cols["product_id"])
    rating_ok = _np(pc.match_substring_regex(cols["star_rating"], MOVIELENS_RATING))
    # At most 11 significant digits: beyond the valid range anyway, and ×1000 cannot overflow.
    digits = _np(pc.match_substring_regex(cols["timestamp"], r"^0*[0-9]{1,11}$"))
    seconds = pc.if_else(pa.array(digits), cols["timestamp"], "0").cast(pa.int64())
    ms = pc.multiply(seconds, 1000)
    ts_ok = digits & _np(pc.and_(pc.greater_equal(ms, MIN_TIMESTAMP_MS),
                                 pc.less(ms, MAX_TIMESTAMP_MS)))
    header = (_np(pc.equal(cols["star_rating"], "rating")) if fmt == "movielens-csv"
              else np.zeros(n, dtype=bool))
    ok = ~bad_utf8
    keep = ok & ids_ok & rating_ok & ts_ok
    sep = _SEPARATORS[fmt]

    def text_of(i):
        return sep.join(batch.column(c)[i].as_py().decode("utf-8", "replace")
                        for c in MOVIELENS_COLUMNS)

    rejects.add_masks([("invalid_utf8", bad_utf8), ("missing_id", ok & ~ids_ok),
                       ("repeated_header", ok & ids_ok & header),
                       ("bad_rating", ok & ids_ok & ~header & ~rating_ok),
                       ("bad_timestamp", ok & ids_ok & rating_ok & ~ts_ok)], text_of)
    idx = pa.array(np.flatnonzero(keep))
    return canonical_table(cols["customer_id"].take(idx), cols["product_id"].take(idx),
                           cols["star_rating"].take(idx).cast(pa.float32()), ms.take(idx))


def _read_movielens(url, head, counter, block_size, rejects, fmt):
    if fmt == "movielens-csv":
        line, _, rest = head.partition(b"\n")
        if line.rstrip(b"\r").replace(b" ", b"") != MOVIELENS_CSV_HEADER.encode():
            raise FmprepError(f"{url}: first line is not the MovieLens ratings.csv header "
                              f"{MOVIELENS_CSV_HEADER!r} (got {_shown(line)}); check SOURCE= "
                              "and FORMAT=")
        stream, delimiter = _Prefixed(rest, counter), ","
    elif fmt == "movielens-1m":
        stream = _Replacing(_Prefixed(head, counter), b"::", _UNIT_SEPARATOR)
        delimiter = _UNIT_SEPARATOR.decode()
    else:
        stream, delimiter = _Prefixed(head, counter), "\t"
    for batch in _csv_batches(url, stream, MOVIELENS_COLUMNS, delimiter, block_size, rejects):
        yield _clean_movielens(batch, rejects, fmt)


# --- JSON Lines (amazon-2023 reviews and their metadata) -----------------------------------------

_BLANK_AFTER_NEWLINE = re.compile(rb"\n[ \t\r]*(?=\n)")
_JSON_SPACE = re.compile(rb"[ \t\r\n]*")
REVIEW_FIELDS = pa.schema([("user_id", pa.string()), ("parent_asin", pa.string()),
                           ("rating", pa.float64()), ("timestamp", pa.int64())])
META_FIELDS = pa.schema([("parent_asin", pa.string()), ("title", pa.string())])


def _line_blocks(stream, block_size: int):
    """Chunks of whole lines of about ``block_size`` bytes, each ending with a newline."""
    rest = b""
    while True:
        data = stream.read(block_size)
        if not data:
            if rest:
                yield rest + b"\n"
            return
        data = rest + data if rest else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > MAX_BLOCK_SIZE:
                raise FmprepError(f"a line is longer than {MAX_BLOCK_SIZE >> 20} MiB; clean "
                                  "the file")
            rest = data                   # a line longer than a block: keep reading
            continue
        rest = data[cut:]
        yield data[:cut]


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


def _clean_2023(cols: dict, text_of, rejects: Rejects) -> pa.Table:
    """Validate parsed Amazon Reviews 2023 lines into the canonical schema."""
    user, product, rating, ms = (cols[k] for k in ("user_id", "parent_asin", "rating",
                                                   "timestamp"))
    ids_ok = _nonempty(user) & _nonempty(product)
    # NaN compares false: it is a bad rating like any other value outside 1-5.
    rating_ok = _np(pc.and_(pc.greater_equal(rating, 1.0), pc.less_equal(rating, 5.0)))
    ts_ok = _np(pc.and_(pc.greater_equal(ms, MIN_TIMESTAMP_MS), pc.less(ms, MAX_TIMESTAMP_MS)))
    rejects.add_masks([("missing_id", ~ids_ok), ("bad_rating", ids_ok & ~rating_ok),
                       ("bad_timestamp", ids_ok & rating_ok & ~ts_ok)], text_of)
    idx = pa.array(np.flatnonzero(ids_ok & rating_ok & ts_ok))
    return canonical_table(user.take(idx), product.take(idx), rating.take(idx), ms.take(idx))


def _read_amazon_2023(url, head, counter, block_size, rejects):
    for block in _line_blocks(_Prefixed(head, counter), block_size):
        cols, text_of = parse_json_block(block, REVIEW_FIELDS, rejects)
        yield _clean_2023(cols, text_of, rejects)


_READERS = {"amazon-tsv": _read_amazon_tsv, "amazon-2023": _read_amazon_2023}


# --- the public entry points -------------------------------------------------------------------

class _Source:
    """An open source file: its format, rejects and tables (one per parse block)."""

    def __init__(self, url, fmt, storage_options, block_size, role, layouts,
                 read_size=None):
        self.url = url
        self._generators = []
        self.raw, self._stream = open_source(url, storage_options, role, read_size)
        try:
            self.counter = _CountingReader(self._stream)
            self.head = _read_head(url, self.counter)
            _check_text(url, self.head, self._stream is not self.raw, role)
            self.format = layouts(url, self.head, fmt)
        except BaseException:
            self.close()
            raise
        self.block_size = block_size

    @property
    def bytes_read(self) -> int:
        """Decompressed bytes read so far."""
        return self.counter.count

    def position(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far, for progress."""
        return self.raw.tell()

    def close(self):
        """Stop reading: the parse thread is joined and the file closed, even mid-stream.

        On an error (a full disk while writing a part, a bad row) the tables may be left
        half-read; without this their parse thread would run on unseen, and Arrow's
        read-ahead would keep pulling blocks from this stream (it now gets the end of it).
        """
        counter = getattr(self, "counter", None)
        if counter is not None:
            counter.closed = True
        for gen in self._generators:
            try:
                gen.close()           # runs _prefetched's finally: stop, drain, join
            except ValueError:        # running in another thread: it stops at end of stream
                pass
        self._generators.clear()
        self._stream.close()
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _tables(self, reader):
        gen = self._guarded(reader)
        self._generators.append(gen)
        return gen

    def _guarded(self, reader):
        try:
            yield from reader
        except CorruptInput as err:
            raise FmprepError(f"{self.url}: cannot decompress ({err}); the file is truncated "
                              "or corrupt, re-download it") from None


class ReviewSource(_Source):
    """A review file opened for streaming; see :func:`open_reviews`."""

    def __init__(self, url, fmt=AUTO, storage_options=None, block_size=BLOCK_SIZE,
                 read_size=None):
        super().__init__(url, fmt, storage_options, block_size, "SOURCE", choose_format,
                         read_size)
        self.rejects = Rejects(FORMAT_REASONS[self.format])

    def tables(self):
        """Validated tables in :data:`REVIEWS_SCHEMA`, one per parse block."""
        args = (self.url, self.head, self.counter, self.block_size, self.rejects)
        if self.format in _READERS:
            reader = _READERS[self.format](*args)
        else:
            reader = _read_movielens(*args, self.format)
        return self._tables(reader)


def open_reviews(url: str, fmt: str = AUTO, storage_options: dict | None = None,
                 block_size: int = BLOCK_SIZE) -> ReviewSource:
    """Open a review file, decide its format and get ready to stream it.

    Parameters
    ----------
    url : str
        Local path or URL, gzip-compressed or plain.
    fmt : str
        One of :data:`FORMAT_CHOICES`; ``auto`` sniffs the first line (see :func:`sniff`).
    storage_options : dict, optional
        fsspec options.
    block_size : int
        Bytes per parse block; every table covers one block.

    Returns
    -------
    ReviewSource
        ``format``, ``rejects``, ``bytes_read``, ``position()``, ``tables()``; a context
        manager that closes the file.

    Raises
    ------
    FmprepError
        On an empty, corrupt or unrecognised file, or a format that contradicts the file.
    LineTooLong
        From ``tables()``, when a line does not fit in a block: retry with larger blocks.
    """
    return ReviewSource(url, fmt, storage_options, block_size)


# --- product titles (--meta) -------------------------------------------------------------------

TITLE_LAYOUTS = ("amazon-2023-meta", "movielens-u.item", "movielens-movies.dat",
                 "movielens-movies.csv")
MOVIELENS_MOVIES_CSV_HEADER = "movieId,title,genres"


def _title_layout(url: str, head: bytes, _requested=None) -> str:
    line = _first_line(head)
    name = os.path.basename(url).lower().removesuffix(".gz")
    if line.lstrip(b" \t").startswith(b"{"):
        return "amazon-2023-meta"
    if line.startswith(b"movieId,title"):
        return "movielens-movies.csv"
    if re.match(rb"^\d+::", line):
        return "movielens-movies.dat"
    if re.match(rb"^\d+\|", line):
        return "movielens-u.item"
    for suffix, layout in ((".jsonl", "amazon-2023-meta"), (".json", "amazon-2023-meta"),
                           ("u.item", "movielens-u.item"), (".dat", "movielens-movies.dat"),
                           (".csv", "movielens-movies.csv")):
        if name.endswith(suffix):
            return layout
    raise FmprepError(f"{url}: not a product metadata file (first line {_shown(line)}); META= "
                      "takes meta_<Category>.jsonl(.gz) for amazon-2023, u.item, movies.dat or "
                      "movies.csv for MovieLens")


def _titles_table(ids: list, titles: list) -> pa.Table:
    return pa.table({"product_id": pa.array(ids, pa.string()),
                     "product_title": pa.array(titles, pa.string())}, schema=TITLES_SCHEMA)


def _read_meta_2023(url, head, counter, block_size, rejects):
    for block in _line_blocks(_Prefixed(head, counter), block_size):
        cols, text_of = parse_json_block(block, META_FIELDS, rejects)
        ids, titles = cols["parent_asin"], cols["title"]
        ok = _nonempty(ids)
        has = ok & _nonempty(titles)
        # A product without a title is counted; its reviews keep product_title "".
        rejects.add_masks([("missing_id", ~ok), ("missing_title", ok & ~has)], text_of)
        idx = pa.array(np.flatnonzero(has))
        yield pa.table({"product_id": ids.take(idx), "product_title": titles.take(idx)},
                       schema=TITLES_SCHEMA)


def _movielens_title(layout: str, text: str, first: bool):
    """``(movie id, title)`` of one line of a MovieLens movie list, or a reject reason."""
    if layout == "movielens-movies.csv":
        fields = next(csv.reader([text]))       # titles with commas are quoted
        if fields[:2] == ["movieId", "title"]:
            return None if first else "repeated_header"
        return fields[:2] if len(fields) >= 3 else "too_few_fields"
    sep = "::" if layout == "movielens-movies.dat" else "|"
    pieces = text.split(sep)
    if len(pieces) < 3:
        return "too_few_fields"
    # movies.dat: id::title::genres, and a title could hold "::"; u.item: id|title|date|...
    return [pieces[0], sep.join(pieces[1:-1]) if sep == "::" else pieces[1]]


def _read_meta_movielens(url, head, counter, block_size, rejects, layout):
    """MovieLens movie lists are small (under 100 k lines): parsed line by line in Python."""
    latin1 = layout != "movielens-movies.csv"   # ml-100k and ml-1m ship Latin-1 titles
    first = True
    for block in _line_blocks(_Prefixed(head, counter), block_size):
        ids, titles = [], []
        for raw in block.split(b"\n"):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            try:
                text = raw.decode("latin-1" if latin1 else "utf-8")
            except UnicodeDecodeError:
                rejects.add("invalid_utf8", _printable(raw))
                first = False
                continue
            if first and layout == "movielens-movies.csv" and \
                    text.replace(" ", "") != MOVIELENS_MOVIES_CSV_HEADER:
                raise FmprepError(f"{url}: first line is not the MovieLens movies.csv header "
                                  f"{MOVIELENS_MOVIES_CSV_HEADER!r}; check META=")
            got = _movielens_title(layout, text, first)
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


class TitleSource(_Source):
    """A product metadata file opened for streaming; see :func:`open_titles`."""

    def __init__(self, url, storage_options=None, block_size=BLOCK_SIZE):
        super().__init__(url, None, storage_options, block_size, "META", _title_layout)
        self.rejects = Rejects(LAYOUT_REASONS[self.format])

    def tables(self):
        """Tables in :data:`TITLES_SCHEMA` (product_id, product_title), one per block."""
        args = (self.url, self.head, self.counter, self.block_size, self.rejects)
        if self.format == "amazon-2023-meta":
            return self._tables(_read_meta_2023(*args))
        return self._tables(_read_meta_movielens(*args, self.format))


def open_titles(url: str, storage_options: dict | None = None,
                block_size: int = BLOCK_SIZE) -> TitleSource:
    """Open a product metadata file (``--meta``) for streaming its (product_id, title) pairs.

    Parameters
    ----------
    url : str
        ``meta_<Category>.jsonl(.gz)`` of Amazon Reviews 2023 (``parent_asin``, ``title``;
        every other field is skipped unparsed), or MovieLens ``u.item`` (ml-100k, ``|``,
        Latin-1), ``movies.dat`` (ml-1m, ``::``, Latin-1) or ``movies.csv`` (ml-latest,
        quoted CSV, UTF-8). The layout is recognised from the first line.
    storage_options : dict, optional
        fsspec options.
    block_size : int
        Bytes per parse block (JSON Lines).

    Returns
    -------
    TitleSource
        Like :class:`ReviewSource`; ``format`` is one of :data:`TITLE_LAYOUTS`.
    """
    return TitleSource(url, storage_options, block_size)


# --- several files: the ones a directory holds, one format for all -------------------------------

# The files a directory given as SOURCE= or META= contributes, by name (each also as .gz). A
# MovieLens folder holds more than ratings (users.dat, tags.csv, and u1.base … ub.test, which
# are splits of u.data): only its ratings file is a source. Names starting with "." are skipped.
DIRECTORY_FILES = {
    "SOURCE": ("*.tsv", "*.jsonl", "*.json", "*.ndjson", "u.data", "ratings.dat",
               "ratings.csv"),
    "META": ("meta_*.jsonl", "meta_*.json", "meta_*.ndjson", "u.item", "movies.dat",
             "movies.csv"),
}
# The titles that formats without product titles can take from META=, by format.
TITLE_FILES = {"amazon-2023": "meta_<Category>.jsonl(.gz)", "movielens-100k": "u.item",
               "movielens-1m": "movies.dat", "movielens-csv": "movies.csv"}
SNIFF_READ_SIZE = 1 << 20   # remote bytes fetched to sniff a file (s3fs reads 50 MiB by default)


def _base_name(url: str) -> str:
    return os.path.basename(url.rstrip("/"))


def _is_role_file(name: str, role: str) -> bool:
    base = _base_name(name).lower().removesuffix(".gz")
    if base.startswith(".") or (role == "SOURCE" and base.startswith("meta_")):
        return False
    return any(fnmatch.fnmatchcase(base, pattern.lower()) for pattern in DIRECTORY_FILES[role])


def directory_files(directory: str, names: list[str], role: str = "SOURCE") -> list[str]:
    """The files of a directory that ``role`` (``SOURCE`` or ``META``) reads, sorted.

    Parameters
    ----------
    directory : str
        The directory as the user gave it, for messages.
    names : list of str
        The paths of the files directly inside it (not its subdirectories).
    role : {"SOURCE", "META"}
        Review files (:data:`DIRECTORY_FILES` ``["SOURCE"]``) or product metadata files.

    Returns
    -------
    list of str
        The paths whose names match; the others are logged as skipped.

    Raises
    ------
    FmprepError
        When no file matches, naming the setting and the names it looks for.
    """
    picked = sorted(n for n in names if _is_role_file(n, role))
    skipped = sorted(_base_name(n) for n in set(names).difference(picked))
    if not picked:
        found = f" (it holds {_listed(skipped)})" if skipped else " (it is empty)"
        raise FmprepError(f"{role}={directory} is a directory with no "
                          f"{'review' if role == 'SOURCE' else 'metadata'} files{found}; put "
                          f"{', '.join(p + '(.gz)' for p in DIRECTORY_FILES[role])} files in it, "
                          f"or set {role}= to a file or glob")
    log.info("%s=%s: reading %s%s", role, directory, _listed([_base_name(n) for n in picked]),
             f"; skipping {_listed(skipped)}" if skipped else "")
    return picked


def _listed(names: list[str], most: int = 3) -> str:
    """``a, b, c and 4 more``: a list of names short enough for one line."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def check_sources(urls: list[str], fmt: str = AUTO, storage_options: dict | None = None,
                  meta: bool = False) -> list[str]:
    """Sniff every review file before anything is written; return each one's format.

    Parameters
    ----------
    urls : list of str
        The review files (SOURCE= expanded).
    fmt : str
        ``FORMAT=``: ``auto`` or one of :data:`FORMATS`.
    storage_options : dict, optional
        fsspec options; only the first :data:`SNIFF_READ_SIZE` bytes of a file are fetched.
    meta : bool
        Whether META= gives product titles; without it, a format that has none gets a
        warning that names the metadata file to pass.

    Returns
    -------
    list of str
        The format of each file, in order.

    Raises
    ------
    FmprepError
        On the first unreadable file (empty, binary, unknown format …), or when the files
        are of more than one format: one line naming the formats and files.
    """
    formats = []
    for url in urls:
        with ReviewSource(url, fmt, storage_options, read_size=SNIFF_READ_SIZE) as src:
            formats.append(src.format)
    by_format = {}
    for url, found in zip(urls, formats):
        by_format.setdefault(found, []).append(_base_name(url))
    if len(by_format) > 1:
        mix = "; ".join(f"{found}: {_listed(names)}" for found, names in by_format.items())
        raise FmprepError(f"SOURCE mixes formats ({mix}); point SOURCE= at files of one "
                          "format (run make data once per dataset)")
    if formats and not meta and formats[0] in TITLE_FILES:
        log.warning("warning: %s files carry no product titles, so every item's title will be "
                    "empty; set META=%s (--meta) to add them", formats[0],
                    _sibling_meta(urls[0], formats[0], storage_options) or
                    f"<the dataset's {TITLE_FILES[formats[0]]}>")
    return formats


def _sibling_meta(url: str, fmt: str, storage_options: dict | None) -> str | None:
    """The metadata file the dataset ships beside ``url``, if it is there."""
    folder, name = url[:len(url) - len(_base_name(url))], _base_name(url)
    if fmt == "amazon-2023":
        candidates = [folder + "meta_" + name]
    else:
        candidates = [folder + TITLE_FILES[fmt] + ext for ext in ("", ".gz")]
    fs, _ = storage.filesystem(url, storage_options)
    for candidate in candidates:
        try:
            if fs.exists(storage.filesystem(candidate, storage_options)[1]):
                return candidate
        except OSError:               # a listing refused: only a hint is lost
            return None
    return None
