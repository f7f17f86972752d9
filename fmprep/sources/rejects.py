"""Rejected rows: counted by reason with a sample of each, and bad text shown in messages."""

from __future__ import annotations

import contextlib
import re
import sys
import threading

import numpy as np

from ..config import REJECTS_SAMPLE_SIZE

# Every reason, in report order; each format counts only the ones that can happen to it.
REJECT_REASONS = ("too_many_fields", "too_few_fields", "invalid_utf8", "bad_json", "missing_id",
                  "repeated_header", "bad_rating", "bad_date", "bad_timestamp")
TITLE_REASONS = ("too_few_fields", "invalid_utf8", "bad_json", "missing_id", "repeated_header",
                 "missing_title")


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

    def first_reason(self, checks, text_of) -> np.ndarray:
        """Count every row under the first check it fails; return the rows that pass them all.

        Parameters
        ----------
        checks : sequence of (str, numpy.ndarray)
            ``(reason, passed)`` in order of precedence: ``passed`` is True for the rows that
            pass that check.
        text_of : callable
            ``text_of(i)`` is the text of row ``i``, for the samples.

        Returns
        -------
        numpy.ndarray
            True for the rows that pass every check: the ones to keep.
        """
        # One reason a row, the first that applies, so the counts add up to the rejects.
        keep = np.ones(len(checks[0][1]), dtype=bool)
        masks = []
        for reason, passed in checks:
            masks.append((reason, keep & ~passed))
            keep = keep & passed
        self.add_masks(masks, text_of)
        return keep

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
    which :func:`fmprep.sources.delimited._csv_batches_serial` then reports as one line.
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


def _printable(raw: bytes) -> str:
    """A line's text for a reject sample: invalid UTF-8 shown as U+FFFD, never an error."""
    return raw.decode("utf-8", "replace")


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
