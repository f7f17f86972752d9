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
decompression, with the file name as a hint when that line says nothing (see
:func:`choose_format`).

Formats without a review id get a derived one,
``<timestamp in ms, 13 digits>:<customer>:<product>``: unique per (customer, product, instant),
and, because the time comes first, a customer's same-day reviews tie-break in time order.
Formats without product titles get ``""``; the titles can come from a metadata file
(``--meta``, see :func:`open_titles`).

Each reader yields one validated table per parse block, so memory stays a few blocks whatever
the file's size, and counts every rejected row by reason with a sample of each
(:class:`Rejects`), like the TSV path always did.

Each format is a :class:`Format` record in :data:`REGISTRY`; its code is one module per family
(:mod:`.amazon_tsv`, :mod:`.amazon_2023`, :mod:`.movielens`, each with its metadata files) on
shared pieces: :mod:`.streams` (opening and streaming a file), :mod:`.delimited` and
:mod:`.jsonl` (parsing), :mod:`.columns` (typed columns, the canonical tables) and
:mod:`.rejects` (counting rejected rows). A new format is a module with a ``sniff`` and a
``read`` function, and one entry in :data:`REGISTRY`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa

from .. import storage
from ..errors import FmprepError, aside, command, setting
from . import amazon_2023, amazon_tsv, movielens
from .amazon_2023 import META_FIELDS, REVIEW_FIELDS
from .amazon_tsv import clean_batch
from .columns import (MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, REVIEWS_SCHEMA, TITLES_SCHEMA,
                      canonical_table, parse_iso_dates)
from .jsonl import parse_json_block
from .movielens import (MOVIELENS_COLUMNS, MOVIELENS_CSV_HEADER, MOVIELENS_MOVIES_CSV_HEADER,
                        MOVIELENS_RATING)
from .rejects import (REJECT_REASONS, SHOWN_CHARS, TITLE_REASONS, Rejects, _shown,
                      quiet_undecodable_rows)
from .streams import (BLOCK_SIZE, GZIP_MAGIC, MAX_BLOCK_SIZE, SNIFF_BYTES, CorruptInput,
                      LineTooLong, LooksLikeMeta, _first_line, _Source, looks_binary,
                      open_source)
# Helpers the tests reach through the package.
from .amazon_2023 import _clean_2023  # noqa: F401
from .delimited import _Replacing  # noqa: F401
from .streams import _prefetched  # noqa: F401

__all__ = [
    "AUTO", "BLOCK_SIZE", "DIRECTORY_FILES", "FORMATS", "FORMAT_CHOICES", "FORMAT_REASONS",
    "Format", "GZIP_MAGIC", "LAYOUT_REASONS", "LineTooLong", "MAX_BLOCK_SIZE",
    "MAX_TIMESTAMP_MS", "META_FIELDS", "MIN_TIMESTAMP_MS", "MOVIELENS_COLUMNS",
    "MOVIELENS_CSV_HEADER", "MOVIELENS_MOVIES_CSV_HEADER", "MOVIELENS_RATING", "REGISTRY",
    "REJECT_REASONS", "REVIEWS_SCHEMA", "REVIEW_FIELDS", "Rejects", "ReviewSource",
    "SHOWN_CHARS", "SNIFF_BYTES", "SNIFF_READ_SIZE", "TITLES_SCHEMA", "TITLE_FILES",
    "TITLE_LAYOUTS", "TITLE_REASONS", "TitleSource", "CorruptInput", "canonical_table",
    "check_format", "check_sources", "choose_format", "clean_batch", "directory_files",
    "looks_binary", "open_reviews", "open_source", "open_titles", "parse_iso_dates",
    "parse_json_block", "quiet_undecodable_rows",
]

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class Format:
    """One file layout fmprep reads: how it is recognised, read and its rows rejected.

    A review format (the ``format`` setting) or the metadata layout (of the ``meta`` file) that
    gives one its product titles.

    Parameters
    ----------
    name : str
        The ``format`` setting's value, or the layout name of a metadata file.
    reasons : tuple of str
        The reject reasons its rows can get, in report order (a part of
        :data:`REJECT_REASONS`, or of :data:`TITLE_REASONS` for a metadata layout).
    sniff : callable
        ``sniff(line) -> bool``: whether a first line (decompressed, without BOM or line end)
        is one of this format's; it raises :class:`LooksLikeMeta` for the first line of the
        format's metadata file. Formats are tried in :data:`REGISTRY` order, so no two
        should accept the same line.
    read : callable
        ``read(fmt, url, head, counter, block_size, rejects)``, a generator of validated
        tables, one per parse block (:data:`REVIEWS_SCHEMA`, or :data:`TITLES_SCHEMA` for a
        metadata layout): ``fmt`` is this record, ``head`` the bytes read to sniff the file,
        ``counter`` the decompressed stream after them; it counts rejects in ``rejects``.
    name_hints : tuple of str
        Name endings (after an optional ``.gz``) that pick this format when no format
        recognises the first line.
    directory_files : tuple of str
        Name patterns (case-insensitive, each also as ``.gz``) of the files it reads from a
        directory given as ``source`` or ``meta``.
    file : str
        How messages name its file (``ratings.csv``, ``u.item`` …).
    separator : str, optional
        Between the fields of delimited text; reject samples are joined with it.
    header : str, optional
        The header line the file starts with, if any.
    encoding : str
        Of the text (ml-100k and ml-1m ship Latin-1 movie titles).
    titles : Format, optional
        The metadata layout (of the ``meta`` file) giving this format its product titles.
    siblings : tuple of str
        Of a metadata layout: the names it has beside the review file ``{name}`` of its
        dataset, suggested when ``meta`` is not set.
    """

    name: str
    reasons: tuple[str, ...]
    sniff: Callable[[bytes], bool]
    read: Callable[..., Iterator[pa.Table]]
    name_hints: tuple[str, ...] = ()
    directory_files: tuple[str, ...] = ()
    file: str = ""
    separator: str | None = None
    header: str | None = None
    encoding: str = "utf-8"
    titles: Format | None = None
    siblings: tuple[str, ...] = ()


# Every review format by its name (the format setting), in the order they are sniffed and listed.
REGISTRY = {f.name: f for f in (
    Format("amazon-tsv",
           reasons=("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                    "repeated_header", "bad_rating", "bad_date"),
           sniff=amazon_tsv.sniff, read=amazon_tsv.read, name_hints=(".tsv",),
           directory_files=("*.tsv",), file=".tsv", separator="\t",
           header=amazon_tsv.HEADER),
    Format("amazon-2023",
           reasons=("invalid_utf8", "bad_json", "missing_id", "bad_rating", "bad_timestamp"),
           sniff=amazon_2023.sniff, read=amazon_2023.read,
           name_hints=(".jsonl", ".json", ".ndjson"),
           directory_files=("*.jsonl", "*.json", "*.ndjson"), file="<Category>.jsonl",
           titles=Format("amazon-2023-meta",
                         reasons=("invalid_utf8", "bad_json", "missing_id", "missing_title"),
                         sniff=amazon_2023.sniff_meta, read=amazon_2023.read_meta,
                         name_hints=(".jsonl", ".json"),
                         directory_files=("meta_*.jsonl", "meta_*.json", "meta_*.ndjson"),
                         file="meta_<Category>.jsonl(.gz)", siblings=("meta_{name}",))),
    Format("movielens-100k",
           reasons=("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                    "bad_rating", "bad_timestamp"),
           sniff=movielens.sniff_100k, read=movielens.read_ratings,
           name_hints=(".data", ".base", ".test"), directory_files=("u.data",),
           file="u.data", separator="\t",
           titles=Format("movielens-u.item",
                         reasons=("too_few_fields", "invalid_utf8", "missing_id",
                                  "missing_title"),
                         sniff=movielens.sniff_u_item, read=movielens.read_titles,
                         name_hints=("u.item",), directory_files=("u.item",), file="u.item",
                         separator="|", encoding="latin-1",
                         siblings=("u.item", "u.item.gz"))),
    Format("movielens-1m",
           reasons=("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                    "bad_rating", "bad_timestamp"),
           sniff=movielens.sniff_1m, read=movielens.read_ratings, name_hints=(".dat",),
           directory_files=("ratings.dat",), file="ratings.dat", separator="::",
           titles=Format("movielens-movies.dat",
                         reasons=("too_few_fields", "invalid_utf8", "missing_id",
                                  "missing_title"),
                         sniff=movielens.sniff_movies_dat, read=movielens.read_titles,
                         name_hints=(".dat",), directory_files=("movies.dat",),
                         file="movies.dat", separator="::", encoding="latin-1",
                         siblings=("movies.dat", "movies.dat.gz"))),
    Format("movielens-csv",
           reasons=("too_many_fields", "too_few_fields", "invalid_utf8", "missing_id",
                    "repeated_header", "bad_rating", "bad_timestamp"),
           sniff=movielens.sniff_csv, read=movielens.read_ratings, name_hints=(".csv",),
           directory_files=("ratings.csv",), file="ratings.csv", separator=",",
           header=MOVIELENS_CSV_HEADER,
           titles=Format("movielens-movies.csv",
                         reasons=("too_few_fields", "invalid_utf8", "missing_id",
                                  "repeated_header", "missing_title"),
                         sniff=movielens.sniff_movies_csv, read=movielens.read_titles,
                         name_hints=(".csv",), directory_files=("movies.csv",),
                         file="movies.csv", separator=",", header=MOVIELENS_MOVIES_CSV_HEADER,
                         siblings=("movies.csv", "movies.csv.gz"))),
)}

# Views of the registry, by the names the rest of fmprep knows them by.
FORMATS = tuple(REGISTRY)
FORMAT_CHOICES = (AUTO,) + FORMATS
FORMAT_REASONS = {name: f.reasons for name, f in REGISTRY.items()}
_TITLE_FORMATS = {f.titles.name: f.titles for f in REGISTRY.values() if f.titles}
TITLE_LAYOUTS = tuple(_TITLE_FORMATS)
LAYOUT_REASONS = {name: f.reasons for name, f in _TITLE_FORMATS.items()}
# The titles that formats without product titles can take from the meta file, by format.
TITLE_FILES = {name: f.titles.file for name, f in REGISTRY.items() if f.titles}
# The files a directory given as source or meta contributes, by name (each also as .gz). A
# MovieLens folder holds more than ratings (users.dat, tags.csv, and u1.base … ub.test, which
# are splits of u.data): only its ratings file is a source. Names starting with "." are skipped.
DIRECTORY_FILES = {
    "source": tuple(p for f in REGISTRY.values() for p in f.directory_files),
    "meta": tuple(p for f in _TITLE_FORMATS.values() for p in f.directory_files),
}
SNIFF_READ_SIZE = 1 << 20   # remote bytes fetched to sniff a file (s3fs reads 50 MiB by default)


# --- choosing the format ------------------------------------------------------------------------

_META_HINT = (f"looks like a product/movie metadata file; pass it as {setting('meta')}"
              f"{aside('meta')} and point {setting('source')} at the ratings or reviews file")


def _sniffed(url: str, line: bytes, formats) -> Format | None:
    """The format whose ``sniff`` accepts the first line, None if none does."""
    try:
        return next((f for f in formats if f.sniff(line)), None)
    except LooksLikeMeta:
        raise FmprepError(f"{url} {_META_HINT}") from None


def _named(name: str, formats) -> Format | None:
    """The format the ending of a file's base name hints at (``.gz`` aside), None if none."""
    name = name.lower().removesuffix(".gz")
    return next((f for f in formats for suffix in f.name_hints if name.endswith(suffix)), None)


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a known format or ``auto``; else a one-line error with the fix."""
    if fmt not in FORMAT_CHOICES:
        raise FmprepError(f"unknown format {fmt!r}; set {setting('format')}{aside('format')} to "
                          f"one of {', '.join(FORMAT_CHOICES)}")
    return fmt


def choose_format(url: str, head: bytes, requested: str = AUTO) -> str:
    """The format to read ``url`` with: the requested one, checked against the content.

    Parameters
    ----------
    url : str
        Path or URL; with ``auto``, its name (``.tsv``, ``.jsonl``, ``.data``, ``.dat``,
        ``.csv``, with or without ``.gz`` …) decides when the first line matches no format.
    head : bytes
        The start of the decompressed file (at least its first line, if it is short).
    requested : str
        The ``format`` setting: ``auto`` or one of :data:`FORMATS`.

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    FmprepError
        When neither the first line nor the name tells the format (``auto``); when a forced
        format contradicts a first line that clearly belongs to another format (naming the
        right one; a forced format is trusted when the first line says nothing, e.g. it is
        itself malformed, and its rows are then validated as usual); or when the file is a
        metadata file (``meta_*.jsonl``, ``movies.csv``) given as a source.
    """
    check_format(requested)
    line = _first_line(head)
    content = _sniffed(url, line, REGISTRY.values())
    if requested == AUTO:
        found = content or _named(_base_name(url), REGISTRY.values())
        if found is None:
            raise FmprepError(f"{url}: cannot tell the format from its first line "
                              f"({_shown(line)}) or its name; set {setting('format')}"
                              f"{aside('format')} to one of {', '.join(FORMATS)}")
        return found.name
    if content is not None and content.name != requested:
        fmt = setting("format")
        raise FmprepError(f"{url}: {fmt}{requested} does not match the file, whose first line "
                          f"({_shown(line)}) is {content.name}; set {fmt}{content.name} or "
                          f"{fmt}auto")
    return requested


def _review_format(url: str, head: bytes, requested: str) -> Format:
    return REGISTRY[choose_format(url, head, requested)]


def _title_format(url: str, head: bytes, _requested=None) -> Format:
    """The metadata layout of ``url``: from its first line, else from its name."""
    line = _first_line(head)
    found = (_sniffed(url, line, _TITLE_FORMATS.values()) or
             _named(os.path.basename(url), _TITLE_FORMATS.values()))
    if found is None:
        raise FmprepError(f"{url}: not a product metadata file (first line {_shown(line)}); "
                          f"{setting('meta')} takes meta_<Category>.jsonl(.gz) for amazon-2023, "
                          "u.item, movies.dat or movies.csv for MovieLens")
    return found


# --- opening one file ---------------------------------------------------------------------------

class ReviewSource(_Source):
    """A review file opened for streaming; see :func:`open_reviews`."""

    def __init__(self, url, fmt=AUTO, storage_options=None, block_size=BLOCK_SIZE,
                 read_size=None):
        super().__init__(url, fmt, storage_options, block_size, "source", _review_format,
                         read_size)


def open_reviews(url: str, fmt: str = AUTO, storage_options: dict | None = None,
                 block_size: int = BLOCK_SIZE) -> ReviewSource:
    """Open a review file, decide its format and get ready to stream it.

    Parameters
    ----------
    url : str
        Local path or URL, gzip-compressed or plain.
    fmt : str
        One of :data:`FORMAT_CHOICES`; ``auto`` sniffs the first line (see :func:`choose_format`).
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



class TitleSource(_Source):
    """A product metadata file opened for streaming; see :func:`open_titles`."""

    def __init__(self, url, storage_options=None, block_size=BLOCK_SIZE):
        super().__init__(url, None, storage_options, block_size, "meta", _title_format)


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

def _base_name(url: str) -> str:
    return os.path.basename(url.rstrip("/"))


def _is_role_file(name: str, role: str) -> bool:
    base = _base_name(name).lower().removesuffix(".gz")
    if base.startswith(".") or (role == "source" and base.startswith("meta_")):
        return False
    return any(fnmatch.fnmatchcase(base, pattern.lower()) for pattern in DIRECTORY_FILES[role])


def directory_files(directory: str, names: list[str], role: str = "source") -> list[str]:
    """The files of a directory that the setting ``role`` (``source`` or ``meta``) reads, sorted.

    Parameters
    ----------
    directory : str
        The directory as the user gave it, for messages.
    names : list of str
        The paths of the files directly inside it (not its subdirectories).
    role : {"source", "meta"}
        Review files (:data:`DIRECTORY_FILES` ``["source"]``) or product metadata files.

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
        raise FmprepError(f"{setting(role)}{directory} is a directory with no "
                          f"{'review' if role == 'source' else 'metadata'} files{found}; put "
                          f"{', '.join(p + '(.gz)' for p in DIRECTORY_FILES[role])} files in it, "
                          f"or set {setting(role)} to a file or glob")
    log.info("%s%s: reading %s%s", setting(role), directory,
             _listed([_base_name(n) for n in picked]),
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
        The review files (the ``source`` setting expanded).
    fmt : str
        The ``format`` setting: ``auto`` or one of :data:`FORMATS`.
    storage_options : dict, optional
        fsspec options; only the first :data:`SNIFF_READ_SIZE` bytes of a file are fetched.
    meta : bool
        Whether the ``meta`` setting gives product titles; without it, a format that has none gets a
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
        raise FmprepError(f"SOURCE mixes formats ({mix}); point {setting('source')} at files of "
                          f"one format (run {command('data')} once per dataset)")
    if formats and not meta and formats[0] in TITLE_FILES:
        log.warning("warning: %s files carry no product titles, so every item's title will be "
                    "empty; set %s%s%s to add them", formats[0], setting("meta"),
                    _sibling_meta(urls[0], formats[0], storage_options) or
                    f"<the dataset's {TITLE_FILES[formats[0]]}>", aside("meta"))
    return formats


def _sibling_meta(url: str, fmt: str, storage_options: dict | None) -> str | None:
    """The metadata file the dataset ships beside ``url``, if it is there."""
    folder, name = url[:len(url) - len(_base_name(url))], _base_name(url)
    candidates = [folder + sibling.format(name=name) for sibling in REGISTRY[fmt].titles.siblings]
    fs, _ = storage.filesystem(url, storage_options)
    for candidate in candidates:
        try:
            if fs.exists(storage.filesystem(candidate, storage_options)[1]):
                return candidate
        except OSError:               # a listing refused: only a hint is lost
            return None
    return None
