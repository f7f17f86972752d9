"""The generative model: who reviews what, when, and with how many stars.

Customers are ranked by activity. ``m[k]`` customers have more than ``k`` reviews, with ``m`` a
power law, so a few customers write many reviews and most write one. The review *slots*
``(customer, k)`` are enumerated level by level (every customer's first review, then every
second review, ...), which makes slot -> (customer, k) a lookup in a small table. A keyed
Feistel permutation maps each file position to a slot, so one customer's reviews are scattered
through the whole file, as in the real files.

Products have Zipf-like popularity. The k-th review of a customer with ``n`` reviews draws its
product from residue class ``(k + rotation) mod n`` of the popularity ranks, so one customer
never reviews the same product twice by accident; a small, exactly counted fraction of slots
repeat the customer's previous product on purpose (real files have such duplicates).

Ratings come from a low-rank latent model (biases plus ``<u, v>``), dates from one span of
activity per customer, votes and flags from per-slot hashes. Everything here is a pure
function of ``(rows, seed)`` and the keys it is given.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .hashing import _U64, _Hasher, _permute

FIRST_DATE = "1999-01-01"
LAST_DATE = "2015-08-31"

# --- shape of the data ---------------------------------------------------------------------
_CUSTOMER_TAIL = 1.4        # m[k] = C * (k+1)^-tau: customers with more than k reviews
_MAX_REVIEWS = 3000         # cap on one customer's reviews (real top reviewers: a few thousand)
_CUSTOMER_IDS = 99_990_000  # customer_id = 10000 + a permutation of the rank: 5 to 8 digits
_PRODUCTS_PER_ROW = 0.16    # distinct products grow linearly with rows
_PRODUCT_EXPONENT = 1.25    # popularity density ~ (rank + offset)^-a
_PRODUCT_OFFSET = 0.004     # offset as a fraction of the product count: flattens the head
_DUP_RATE = 0.02            # slots with k >= 1 that repeat the previous product

# Ratings: round(clip(mean + biases + <u, v> + noise)), stretched downward below _PULL_BELOW
# for the J shape of real ratings (many 5s, more 1s than 2s). The interaction is low-rank and
# strong so that it is learnable from the few ratings a filtered customer has (median 5 in
# train); at rank 6 (sd 0.74) with 65 % 5-stars a Bayesian FM gained under 0.02 RMSE over the
# biases baseline. _MU keeps ~60 % of ratings at 5 stars, not more: clipping hides <u, v>.
_RANK = 2                   # even: factors are drawn in pairs
_MU = 4.8
_SD_CUSTOMER_BIAS = 0.50
_SD_PRODUCT_BIAS = 0.40
_SD_FACTOR = 0.80           # per factor entry: <u, v> has sd 0.8^2 * sqrt(2) ~ 0.91
_SD_NOISE = 0.50
_PULL_BELOW, _PULL = 4.0, 2.0   # ~ 8/5/7/20/61 % for 1..5 stars, like the real files

_DAY0 = np.datetime64(FIRST_DATE, "D")
_NDAYS = int((np.datetime64(LAST_DATE, "D") - _DAY0).astype(int)) + 1


def _slot_key(customer: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The hash key of slot (customer, k); k < 2**21 since k < _MAX_REVIEWS."""
    return (customer << 21) | k


# --- the plan: population sizes and the slot table, fixed by (rows, seed) --------------------
class _Plan:
    def __init__(self, rows: int, seed: int):
        self.rows = rows
        self.h = _Hasher(seed)
        self.products = max(1, round(_PRODUCTS_PER_ROW * rows))
        # Residue classes need at least as many products as one customer has reviews.
        # The sqrt cap keeps the top customer near 1-3 % of a small file.
        kmax = max(1, min(_MAX_REVIEWS, self.products // 2, math.ceil(2 * math.sqrt(rows))))
        ks = np.arange(kmax, dtype=np.float64)
        ladder = (ks + 1.0) ** -_CUSTOMER_TAIL

        def levels(c):
            return np.floor(c * ladder + 1e-9).astype(np.int64)

        # Smallest customer count whose levels hold `rows` slots (levels(rows)[0] == rows).
        lo, hi = 1, max(1, rows)
        while lo < hi:
            mid = (lo + hi) // 2
            if levels(mid).sum() >= rows:
                hi = mid
            else:
                lo = mid + 1
        m = levels(lo) if rows else np.zeros(0, np.int64)
        bounds = np.concatenate([[0], np.cumsum(m)])
        top = int(np.searchsorted(bounds, rows, side="left"))  # levels 0..top-1 are used
        m = m[:top].copy()
        if top:
            m[-1] = rows - bounds[top - 1]       # the last level is cut to fit `rows` exactly
        self.level_sizes = m
        self.level_starts = np.concatenate([[0], np.cumsum(m)])[:-1]
        self.customers = int(m[0]) if top else 0
        self._ascending = m[::-1].copy()
        self.position_salts = [self.h.salt(f"position{i}") for i in range(4)]
        self.customer_salts = [self.h.salt(f"customer_id{i}") for i in range(4)]
        self.p_offset = _PRODUCT_OFFSET * self.products + 1.0
        self.day_strings = np.array(
            np.arange(_NDAYS).astype("timedelta64[D]") + _DAY0, dtype="U10").astype(object)

    # -- positions and slots
    def slots(self, positions: np.ndarray) -> np.ndarray:
        return _permute(positions, self.rows, self.position_salts)

    def customer_ids(self, customer: np.ndarray) -> np.ndarray:
        return _permute(customer, _CUSTOMER_IDS, self.customer_salts) + 10_000

    def customer_and_level(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.searchsorted(self.level_starts, slots, side="right") - 1
        return slots - self.level_starts[k], k

    def review_count(self, customer: np.ndarray) -> np.ndarray:
        # Levels are non-increasing in size: a customer has one review per level larger than it.
        return len(self._ascending) - np.searchsorted(self._ascending, customer, side="right")

    # -- products
    def product(self, customer, k, n) -> np.ndarray:
        """Popularity rank of the product in slot (customer, k) of a customer with n reviews."""
        rot = self.h.below(customer, "rotation", n)
        cls = (k + rot) % n
        key = _slot_key(customer, k)
        u = self.h.uniform(key, "product")
        a1 = 1.0 - _PRODUCT_EXPONENT
        nf = n.astype(np.float64)
        beta = (cls + self.p_offset) / nf
        span = (self.products - cls) / nf
        g0 = beta ** a1
        x = (g0 + u * ((span + beta) ** a1 - g0)) ** (1.0 / a1) - beta
        q = np.clip(np.floor(x).astype(np.int64), 0, (self.products - 1 - cls) // n)
        return cls + n * q


# --- one chunk's slots, and what the model says about them ----------------------------------
class _Slots(NamedTuple):
    """The review slots behind file positions ``pos``: one entry per row."""

    pos: np.ndarray     # file positions
    cust: np.ndarray    # customer (activity rank)
    k: np.ndarray       # the customer's k-th review
    n: np.ndarray       # the customer's number of reviews
    key: np.ndarray     # hash key of the slot
    dup: np.ndarray     # repeats the product of slot k - 1 on purpose
    prod: np.ndarray    # product (popularity rank)


def _review_slots(plan: _Plan, start: int, stop: int) -> _Slots:
    """Who reviews what at file positions ``start:stop``."""
    h = plan.h
    pos = np.arange(start, stop, dtype=np.int64)
    cust, k = plan.customer_and_level(plan.slots(pos))
    n = plan.review_count(cust)

    # Deliberate duplicates: slot k repeats slot k-1's product; never two in a row, so every
    # duplicate pair has exactly two rows and can be counted without state.
    def is_dup(kk):
        return (kk >= 1) & (h.uniform(_slot_key(cust, kk), "dup") < _DUP_RATE)

    dup = is_dup(k) & ~is_dup(np.maximum(k - 1, 0))
    prod = plan.product(cust, np.where(dup, k - 1, k), n)
    return _Slots(pos, cust, k, n, _slot_key(cust, k), dup, prod)


def _ratings(h: _Hasher, s: _Slots) -> np.ndarray:
    """Stars 1..5 (int64) from the latent model: biases, rank-2 interaction, noise."""
    cb, _ = h.normals(s.cust, "customer_bias")
    pb, _ = h.normals(s.prod, "product_bias")
    dot = np.zeros(len(s.pos))
    for i in range(_RANK // 2):
        ua, ub = h.normals(s.cust, f"customer_factor{i}")
        va, vb = h.normals(s.prod, f"product_factor{i}")
        dot += ua * va + ub * vb
    noise = h.normals(s.key, "noise")[0]
    x = (_MU + _SD_CUSTOMER_BIAS * cb + _SD_PRODUCT_BIAS * pb + _SD_FACTOR ** 2 * dot
         + _SD_NOISE * noise)
    x -= _PULL * np.maximum(0.0, _PULL_BELOW - x)
    return np.rint(np.clip(x, 1.0, 5.0)).astype(np.int64)


def _days(h: _Hasher, s: _Slots) -> np.ndarray:
    """Review dates as day offsets from FIRST_DATE (index into ``_Plan.day_strings``)."""
    cust, n = s.cust, s.n
    # Each customer is active over [first, first + span]; the first slot is at `first`.
    span = np.minimum(_NDAYS - 1, np.floor(-np.log1p(-h.uniform(cust, "span"))
                                           * (60.0 * np.sqrt(n) + 30.0))).astype(np.int64)
    room = (_NDAYS - 1 - span).astype(np.float64)
    # Later years are busier: truncated exponential back from the end of the range.
    g = -900.0 * np.log1p(-h.uniform(cust, "first") * -np.expm1(-room / 900.0))
    first = (_NDAYS - 1 - span) - np.minimum(np.floor(g), room).astype(np.int64)
    t = np.where(s.k == 0, 0.0, h.uniform(s.key, "date"))
    return first + np.floor(t * (span + 1)).astype(np.int64).clip(0, span)


def _votes(h: _Hasher, key: np.ndarray, rating: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(helpful, total)`` votes: zero-inflated, long-tailed, helpful <= total."""
    hv = h.uniform(key, "votes")
    total = np.where(hv < 0.55, 0, np.floor(np.expm1(-np.log1p(-h.uniform(key, "votes_n"))
                                                      * 1.3)) + 1).astype(np.int64)
    # Liked reviews draw more helpful votes: the fraction leans to 1 for 4 and 5 stars.
    frac = h.uniform(key, "helpful") ** np.where(rating >= 4, 0.5, 2.0)
    helpful = np.floor(total * frac).astype(np.int64)
    return helpful, total


def _vine_verified(h: _Hasher, key: np.ndarray) -> tuple[list[str], list[str]]:
    """The ``vine`` (0.6 % Y) and ``verified_purchase`` (78 % Y) flags as ``"Y"`` / ``"N"``."""
    flags = h.bits(key, "flags")
    yes_no = np.array(["N", "Y"], dtype=object)
    vine = yes_no[(flags % _U64(1000) < _U64(6)).astype(np.intp)].tolist()
    verified = yes_no[((flags >> _U64(20)) % _U64(1000) < _U64(780)).astype(np.intp)].tolist()
    return vine, verified
