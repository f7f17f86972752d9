"""Id strings: review ids, ASIN-like product ids and the 2023 layout's user ids.

Each id is a bijection of its key (file position, product rank, customer id) written in base 36
or 10, so ids are unique without any table of ids already issued.
"""

from __future__ import annotations

import numpy as np

from .hashing import _U64
from .model import _Plan

_B36 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_DEC = _B36[:10]


def _digits(values: np.ndarray, base: int, width: int, table: np.ndarray) -> np.ndarray:
    """(n, width) uint8 characters of ``values`` in ``base``, most significant first."""
    v = values.astype(np.uint64)
    out = np.empty((len(v), width), dtype=np.uint8)
    b = _U64(base)
    for i in range(width - 1, -1, -1):
        out[:, i] = table[(v % b).astype(np.intp)]
        v //= b
    return out


def _as_str(chars: np.ndarray) -> list[str]:
    # 'S' drops trailing NULs, so rows padded with 0 come out shorter.
    return chars.view(f"S{chars.shape[1]}").ravel().astype(f"U{chars.shape[1]}").tolist()


def _product_ids(plan: _Plan, p: np.ndarray) -> list[str]:
    """ASIN-like ids: ``B00`` + 7 base-36 chars, or 10 digits starting with 0 or 1 (ISBN-like).

    Each kind maps ranks through a bijection, and kinds differ in their first character, so ids
    are unique.
    """
    kind = plan.h.below(p, "asin_kind", 100)
    out = np.empty((len(p), 10), dtype=np.uint8)
    out[:, :3] = np.frombuffer(b"B00", dtype=np.uint8)
    out[:, 3:] = _digits((p * 2_654_435_761 + 97_531) % 36 ** 7, 36, 7, _B36)
    isbn = kind < 22
    if isbn.any():
        body = _digits((p[isbn] * 387_420_489 + 123_456_789) % 10 ** 9, 10, 9, _DEC)
        out[isbn, 0] = np.where(kind[isbn] < 18, ord("0"), ord("1"))
        out[isbn, 1:] = body
    return _as_str(out)


def _review_ids(plan: _Plan, positions: np.ndarray) -> list[str]:
    """``R`` + 13 (mostly) or 12 base-36 chars; a bijection of the position keeps them unique."""
    m62 = _U64((1 << 62) - 1)
    x = positions.astype(np.uint64) ^ (plan.h.salt("review_id") & m62)
    x = (x * _U64(0x5DEECE66D1)) & m62       # odd multiplier: invertible mod 2**62
    x ^= x >> _U64(31)
    x = (x * _U64(0x2545F4914F6CDD1D)) & m62
    x ^= x >> _U64(29)
    tail = _digits(x, 36, 12, _B36)
    lead = plan.h.below(positions, "review_lead", 20)
    out = np.zeros((len(positions), 14), dtype=np.uint8)
    out[:, 0] = ord("R")
    long_ = lead < 18
    out[long_, 1] = ord("1") + lead[long_] % 3
    out[long_, 2:] = tail[long_]
    out[~long_, 1:13] = tail[~long_]
    return _as_str(out)



def _user_ids_2023(plan: _Plan, customer_ids: np.ndarray) -> list[str]:
    """28-character ``A…`` user ids like the 2023 dataset's, one per customer id (a bijection)."""
    hi = _digits(plan.h.bits(customer_ids, "user_id_2023"), 36, 13, _B36)
    lo = _digits(plan.h.bits(customer_ids, "user_id_2023_b"), 36, 14, _B36)
    out = np.empty((len(customer_ids), 28), dtype=np.uint8)
    out[:, 0] = ord("A")
    out[:, 1:14], out[:, 14:] = hi, lo
    return _as_str(out)
