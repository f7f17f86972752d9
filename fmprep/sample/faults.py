"""Fault injection: the malformed rows real files have, at small fixed rates.

Which row gets which fault is a slice of one uniform per key, so faults are mutually exclusive
and each row's fault is known without looking at other rows. The TSV layout draws per review
slot (so a slot and its predecessor can be compared for the duplicate count); the 2023 JSON
Lines layout draws per file position.
"""

from __future__ import annotations

import numpy as np

from .hashing import _Hasher
from .model import _slot_key

# --- TSV -------------------------------------------------------------------------------------
BAD_REASONS = ("too_many_fields", "too_few_fields", "bad_rating")
# Indices 0..2 are the BAD_REASONS (a strict parser rejects the line); 3 leaves a valid line
# with an unclosed quote, which only breaks readers that honour quotes.
_FAULT_RATES = (("too_many_fields", 0.0010), ("too_few_fields", 0.0006),
                ("bad_rating", 0.0006), ("quoted", 0.0030))
_BAD_RATINGS = ("five", "", "4 stars", "N/A")

# --- JSON Lines (2023) ----------------------------------------------------------------------
BAD_REASONS_2023 = ("bad_json", "missing_id", "bad_rating", "bad_timestamp")
_FAULT_RATES_2023 = (("bad_json", 0.0008), ("missing_id", 0.0005), ("bad_rating", 0.0005),
                     ("bad_timestamp", 0.0005))


def _fault_slices(u: np.ndarray, rates) -> np.ndarray:
    """Fault index per uniform in ``u`` (-1: none): ``rates`` cut [0, 1) into slices."""
    f = np.full(len(u), -1, dtype=np.int8)
    lo = 0.0
    for i, (_, rate) in enumerate(rates):
        f[(u >= lo) & (u < lo + rate)] = i
        lo += rate
    return f


def _slot_faults(h: _Hasher, cust: np.ndarray, k: np.ndarray, key: np.ndarray,
                 faults: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fault, bad, prev_bad)`` of TSV slots: the fault index per row (-1: none), whether the
    row is rejected by a strict parser, and whether the customer's previous slot is.
    """
    if not faults:
        none = np.zeros(len(key), dtype=bool)
        return np.full(len(key), -1, dtype=np.int8), none, none

    def fault_of(keys):
        return _fault_slices(h.uniform(keys, "fault"), _FAULT_RATES)

    fault = fault_of(key)
    bad = (fault >= 0) & (fault < 3)
    # The previous slot's fault decides whether a deliberate duplicate still forms a pair.
    prev_bad = fault_of(_slot_key(cust, np.maximum(k - 1, 0)))
    prev_bad = (prev_bad >= 0) & (prev_bad < 3)
    return fault, bad, prev_bad


def _inject_tsv_faults(h: _Hasher, key: np.ndarray, fault: np.ndarray, tally: dict,
                       bodies: list, ratings: list, titles: list,
                       headlines: list) -> dict[int, int]:
    """Spoil the fields of faulty rows in place and count the faults in ``tally``.

    Returns ``{row: fields to keep}`` for the truncated rows, which can only be cut once the
    line is joined (see :func:`_truncate_lines`).
    """
    # Few rows: Python loops are fine here.
    truncate = {}
    detail = h.bits(key, "fault_detail")
    for i in np.flatnonzero(fault >= 0).tolist():
        f, d = int(fault[i]), int(detail[i])
        if f == 0:      # stray tab inside the body: 16 fields
            b = bodies[i]
            cut = b.find(" ", len(b) // 2)
            bodies[i] = (b[:cut] + "\t" + b[cut + 1:] if cut >= 0
                         else b[:len(b) // 2] + "\t" + b[len(b) // 2:])
        elif f == 1:    # truncated row: keep 2..13 fields and half of the next one
            truncate[i] = 2 + d % 12
        elif f == 2:
            ratings[i] = _BAD_RATINGS[d % len(_BAD_RATINGS)]
        else:           # a field opening with '"' and never closing it
            which = d % 3
            if which == 0:
                titles[i] = '"' + titles[i]
            elif which == 1:
                headlines[i] = '"' + headlines[i]
            else:
                bodies[i] = '"' + bodies[i]
    for i, (name, _) in enumerate(_FAULT_RATES):
        tally[name] += int((fault == i).sum())
    return truncate


def _truncate_lines(lines: list[str], truncate: dict[int, int]) -> None:
    """Cut ``lines[i]`` after ``keep`` fields and half of the next one, in place."""
    for i, keep in truncate.items():
        line = lines[i]
        p = -1
        for _ in range(keep):
            p = line.index("\t", p + 1)
        nxt = line.find("\t", p + 1)
        lines[i] = line[:p + 1 + (nxt - p - 1) // 2]


def _faults_2023(h: _Hasher, pos: np.ndarray, faults: bool, tally: dict) -> np.ndarray:
    """Fault index per JSON line at file positions ``pos`` (-1: none), counted in ``tally``."""
    if not faults:
        return np.full(len(pos), -1, dtype=np.int8)
    fault = _fault_slices(h.uniform(pos, "fault_2023"), _FAULT_RATES_2023)
    for i, (name, _) in enumerate(_FAULT_RATES_2023):
        tally[name] += int((fault == i).sum())
    return fault


def _spoil_review_2023(review: dict, fault: int, i: int) -> None:
    """Apply fault ``fault`` (1..3) to one review object in place; row ``i`` picks the variant.

    ``bad_json`` (0) acts on the serialized line instead: see :func:`_cut_line`.
    """
    if fault == 1:
        review["user_id"] = ""
    elif fault == 2:
        review["rating"] = (0.0, "five", None, 6.0)[i % 4]
    elif fault == 3:      # seconds where milliseconds belong, or a string
        ms = review["timestamp"]
        review["timestamp"] = (ms // 1000, str(ms))[i % 2]


def _cut_line(line: str) -> str:
    """A JSON line cut in half: what a reader sees of a ``bad_json`` row."""
    return line[:len(line) // 2]
