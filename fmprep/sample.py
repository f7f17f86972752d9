"""Generated review data in the Amazon Customer Reviews TSV layout.

The bundled sample and every benchmark input come from :func:`generate_reviews`. The file looks
like a real ``amazon_reviews_us_*.tsv.gz`` (same 15 columns, same value shapes, the same kinds of
faults) and its ratings carry structure a Factorization Machines model can learn.

How the rows are made (all of it vectorized numpy per chunk, no state carried between chunks):

- Customers are ranked by activity. ``m[k]`` customers have more than ``k`` reviews, with ``m``
  a power law, so a few customers write many reviews and most write one. The review *slots*
  ``(customer, k)`` are enumerated level by level (every customer's first review, then every
  second review, ...), which makes slot -> (customer, k) a lookup in a small table.
- A keyed Feistel permutation maps each file position to a slot, so one customer's reviews are
  scattered through the whole file, as in the real files.
- Products have Zipf-like popularity. The k-th review of a customer with ``n`` reviews draws its
  product from residue class ``(k + rotation) mod n`` of the popularity ranks, so one customer
  never reviews the same product twice by accident; a small, exactly counted fraction of slots
  repeat the customer's previous product on purpose (real files have such duplicates).
- Every random value is a hash of ``(seed, stream, key)`` where the key is a file position, a
  slot, a customer or a product. The output therefore depends only on ``(rows, seed)``, never on
  the chunk size, and memory stays flat however many rows are written.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import uuid
import zlib
from functools import lru_cache

import fsspec
import numpy as np
from isal import igzip

from .config import SAMPLE_ROWS, SAMPLE_SEED, TSV_COLUMNS
from .errors import FmprepError

__all__ = ["generate_reviews", "CATEGORY", "FIRST_DATE", "LAST_DATE", "BAD_REASONS"]

CATEGORY = "Digital_Video_Download"
FIRST_DATE = "1999-01-01"
LAST_DATE = "2015-08-31"
BAD_REASONS = ("too_many_fields", "too_few_fields", "bad_rating")

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

# Faults, as slices of one uniform per slot so they are mutually exclusive.
_FAULT_RATES = (("too_many_fields", 0.0010), ("too_few_fields", 0.0006),
                ("bad_rating", 0.0006), ("quoted", 0.0030))
_BAD_RATINGS = ("five", "", "4 stars", "N/A")

_DAY0 = np.datetime64(FIRST_DATE, "D")
_NDAYS = int((np.datetime64(LAST_DATE, "D") - _DAY0).astype(int)) + 1

# --- hashing: splitmix64 on uint64 arrays -----------------------------------------------------
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1
_S30, _S27, _S31, _S32, _S11 = (_U64(s) for s in (30, 27, 31, 32, 11))


def _mix_inplace(x: np.ndarray) -> np.ndarray:
    # numpy wraps uint64 array arithmetic mod 2**64, which is what splitmix64 needs.
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def _mix_int(v: int) -> int:
    v &= _MASK64
    v ^= v >> 30
    v = (v * 0xBF58476D1CE4E5B9) & _MASK64
    v ^= v >> 27
    v = (v * 0x94D049BB133111EB) & _MASK64
    return v ^ (v >> 31)


class _Hasher:
    """Independent hash streams derived from one seed."""

    def __init__(self, seed: int):
        self.seed = seed
        self._salts: dict[str, np.uint64] = {}

    def salt(self, stream: str) -> np.uint64:
        s = self._salts.get(stream)
        if s is None:
            # crc32, not hash(): str hashing is randomized per process.
            s = _U64(_mix_int(_mix_int(self.seed * 0x9E3779B97F4A7C15 + 12345)
                              ^ zlib.crc32(stream.encode())))
            self._salts[stream] = s
        return s

    def bits(self, keys: np.ndarray, stream: str) -> np.ndarray:
        """64 random bits per key (uint64); distinct keys give distinct values."""
        x = keys.astype(np.uint64) * _GOLDEN
        x += self.salt(stream)
        return _mix_inplace(x)

    def uniform(self, keys: np.ndarray, stream: str) -> np.ndarray:
        """Uniform floats in [0, 1)."""
        return (self.bits(keys, stream) >> _S11) * (1.0 / (1 << 53))

    def normals(self, keys: np.ndarray, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """Two independent standard normals per key (Box-Muller on the two 32-bit halves)."""
        h = self.bits(keys, stream)
        u1 = ((h >> _S32).astype(np.float64) + 0.5) * (1.0 / 4294967296.0)
        u2 = (h & _U64(0xFFFFFFFF)).astype(np.float64) * (2.0 * math.pi / 4294967296.0)
        r = np.sqrt(-2.0 * np.log(u1))
        return r * np.cos(u2), r * np.sin(u2)

    def below(self, keys: np.ndarray, stream: str, n) -> np.ndarray:
        """Integers in [0, n) (``n`` scalar or array); the modulo bias is ~n / 2**64."""
        return (self.bits(keys, stream) % np.asarray(n, dtype=np.uint64)).astype(np.int64)


def _permute(x: np.ndarray, domain: int, salts) -> np.ndarray:
    """A keyed bijection of [0, domain): a Feistel network with cycle walking."""
    half = 1
    while (1 << (2 * half)) < max(domain, 2):
        half += 1
    w, mask, limit = _U64(half), _U64((1 << half) - 1), _U64(domain)

    def feistel(v):
        left, right = v >> w, v & mask
        for salt in salts:
            f = right * _GOLDEN
            f += salt
            left, right = right, left ^ (_mix_inplace(f) & mask)
        return (left << w) | right

    # The network permutes [0, 4**half); re-applying it to values outside [0, domain) walks
    # each cycle until it lands inside, which keeps the map a bijection on the domain.
    v = feistel(x.astype(np.uint64))
    out = v >= limit
    while out.any():
        v[out] = feistel(v[out])
        out[out] = v[out] >= limit
    return v.astype(np.int64)


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
        key = (customer << 21) | k
        u = self.h.uniform(key, "product")
        a1 = 1.0 - _PRODUCT_EXPONENT
        nf = n.astype(np.float64)
        beta = (cls + self.p_offset) / nf
        span = (self.products - cls) / nf
        g0 = beta ** a1
        x = (g0 + u * ((span + beta) ** a1 - g0)) ** (1.0 / a1) - beta
        q = np.clip(np.floor(x).astype(np.int64), 0, (self.products - 1 - cls) // n)
        return cls + n * q


# --- words ----------------------------------------------------------------------------------
_TITLE_ADJ = ("Dark", "Silent", "Lost", "Last", "Hidden", "Broken", "Golden", "Wild", "Secret",
              "Little", "Endless", "Frozen", "Burning", "Midnight", "Crimson", "Savage", "Quiet",
              "Lonely", "Electric", "Forgotten", "Brave", "Royal", "Deadly", "Perfect", "Final",
              "Strange", "Sweet", "Restless", "Eternal", "Hollow", "Wicked", "Distant")
_TITLE_NOUN = ("Road", "Empire", "Island", "River", "Kingdom", "Heart", "Storm", "Night", "Game",
               "Promise", "Frontier", "Legacy", "Garden", "Station", "Voyage", "Witness",
               "Shadow", "Harbor", "Winter", "Summer", "Detective", "Family", "Mountain",
               "Planet", "Secret", "Sisters", "Brothers", "Mission", "Horizon", "Café", "Dream",
               "Affair", "Escape", "Town", "Ocean", "Signal", "Crown", "Circus", "Machine")
_TITLE_NAME = ("Amélie", "Hélène", "José", "Zoë", "Renée", "Jack", "Emma", "Charlie", "Lucy",
               "Max", "Olivia", "Sam", "Grace", "Henry", "Nina", "Oscar", "Mia", "Leo", "Ruby",
               "Pokémon", "Dr. Blake", "Captain Rex", "Agent Cole")
_TITLE_PLACE = ("Paris", "Montréal", "Tokyo", "Texas", "Brooklyn", "Mars", "Avalon", "Rome",
                "the North", "São Paulo", "Alaska", "Berlin", "the Valley", "New Orleans")
_TITLE_SUFFIX = ("", "", "", " [HD]", " (Director’s Cut)", " (Extended Edition)", " [Blu-ray]",
                 " (Unrated)", " - The Complete Collection", " (Subtitled)")

_HEADLINES = {
    5: ("Five Stars", "Five Stars", "Five Stars", "Great movie!", "Loved it", "Excellent",
        "A must see", "Wonderful series", "Best show ever", "Highly recommend",
        "Absolutely wonderful", "Fantastic!", "Great show", "Awesome", "Amazing film",
        "One of my favorites", "Loved every episode", "Superb", "Great", "Brilliant!",
        "A true classic", "Can’t wait for the next season", "Très bien!"),
    4: ("Four Stars", "Four Stars", "Very good", "Good movie", "Enjoyed it", "Pretty good",
        "Worth watching", "Good show", "Solid", "Entertaining", "Good but not great",
        "Nice family movie", "Fun to watch", "Good series"),
    3: ("Three Stars", "Three Stars", "It was okay", "Just OK", "Average", "Meh",
        "Not bad", "Could have been better", "Mixed feelings", "So-so"),
    2: ("Two Stars", "Two Stars", "Disappointing", "Not great", "Boring", "Not worth it",
        "Expected more", "Weak plot", "Too slow"),
    1: ("One Star", "One Star", "Terrible", "Waste of money", "Awful", "Don’t bother",
        "Would not play", "Worst movie ever", "Horrible", "Very disappointed",
        "Stopped watching after 10 minutes"),
}

_POS = {
    "adj": ("great", "wonderful", "excellent", "fantastic", "funny", "moving", "beautiful",
            "brilliant", "charming", "gripping", "clever", "heartwarming", "entertaining",
            "well written", "superb", "delightful", "suspenseful", "touching"),
    "verb": ("loved", "enjoyed", "liked", "adored", "appreciated"),
    "react": ("laughed the whole time", "all cried at the end", "couldn’t stop watching",
              "watched it twice", "can't wait for more", "were on the edge of our seats"),
    "open": ("Great movie", "Loved it", "Highly recommended", "What a show", "Wow",
             "Just wonderful", "Five stars from me", "A real gem", "Bravo"),
}
_NEU = {
    "adj": ("okay", "average", "decent", "predictable", "a bit slow", "fine", "uneven",
            "watchable", "forgettable", "passable", "a little long"),
    "verb": ("didn't mind", "sort of liked", "half enjoyed", "tolerated", "watched"),
    "react": ("thought it was fine", "were mildly entertained", "fell asleep halfway",
              "might watch the sequel", "expected a bit more"),
    "open": ("It was okay", "Not bad", "Meh", "So-so", "Nothing special", "Fair enough"),
}
_NEG = {
    "adj": ("boring", "terrible", "awful", "dull", "confusing", "cheesy", "poorly acted",
            "a waste of time", "painful", "ridiculous", "clichéd", "disappointing"),
    "verb": ("hated", "disliked", "regretted buying", "couldn't stand", "gave up on"),
    "react": ("turned it off after 20 minutes", "wanted our money back", "were bored stiff",
              "couldn’t finish it", "kept checking our phones"),
    "open": ("Don't waste your money", "Terrible", "What a letdown", "Awful", "Skip this one",
             "Very disappointed", "Not worth it"),
}
_NOUN = ("movie", "film", "show", "series", "story", "plot", "cast", "ending", "script",
         "soundtrack", "season", "episode", "acting", "cinematography", "dialogue", "pilot",
         "finale", "documentary", "sequel", "remake", "video quality", "streaming")
_WHO = ("the lead actor", "the director", "the whole cast", "the writers", "the villain",
        "the narrator", "the kids in it", "the supporting actress", "the composer")
_FAMILY = ("my wife", "my husband", "the kids", "my family", "my mom", "friends", "my son",
           "my daughter", "my grandparents", "my roommate", "my girlfriend", "my boyfriend")
_EXTRA = ("The picture quality was fine on my Kindle Fire.", "Streaming was smooth on Prime.",
          "Arrived quickly and played without problems.", "The download took a while.",
          "Subtitles were available, which was nice.", "It’s rated PG-13 for some language.",
          "Watched it on my Roku.", "The price was right.", "Déjà vu all over again…",
          "There were a few glitches with the sound.", "Runtime is about two hours.",
          "I bought the HD version.", "Rented it for the weekend — no regrets.",
          "It had a certain je ne sais quoi.", "Saw it in theaters years ago.",
          "Not for young children.", "My rating: 10/10!", "It’s on my watch list again.")


def _sentence(rng: random.Random, w: dict) -> str:
    pick = rng.choice
    t = rng.randrange(9)
    if t == 0:
        return f"The {pick(_NOUN)} was {pick(w['adj'])}."
    if t == 1:
        return f"I {pick(w['verb'])} this {pick(_NOUN)} and {pick(_FAMILY)} did too."
    if t == 2:
        return f"Watched it with {pick(_FAMILY)} and we {pick(w['react'])}."
    if t == 3:
        return f"{pick(w['open'])}!"
    if t == 4:
        return (f"{pick(_WHO).capitalize()} made the {pick(_NOUN)} {pick(w['adj'])}, "
                f"and the {pick(_NOUN)} was {pick(w['adj'])}.")
    if t == 5:
        return pick(_EXTRA)
    if t == 6:
        return (f"I think the {pick(_NOUN)} is {pick(w['adj'])} but the {pick(_NOUN)} "
                f"felt {pick(w['adj'])}.")
    if t == 7:
        return f"{pick(w['open'])}, {pick(w['open']).lower()}."
    return (f"If you like {pick(_NOUN)}s that are {pick(w['adj'])}, this one is for you; "
            f"{pick(_FAMILY)} {pick(w['react'])}.")


_CORPUS_SENTENCES = 4000    # per sentiment


@lru_cache(maxsize=4)
def _corpus(seed: int):
    """One string of review sentences in three sentiment segments, and sentence bounds.

    A body is a run of consecutive sentences: a slice of this string, which is far cheaper per
    row than joining words. Separators (space or ``<br />``) sit between sentences.
    """
    rng = random.Random(seed * 1_000_003 + 71)
    parts, starts, ends, pos = [], [], [], 0
    for words in (_NEG, _NEU, _POS):
        for _ in range(_CORPUS_SENTENCES):
            s = _sentence(rng, words)
            starts.append(pos)
            pos += len(s)
            ends.append(pos)
            sep = rng.choices((" ", "<br /><br />", "<br />", "  "), (80, 12, 6, 2))[0]
            parts.append(s)
            parts.append(sep)
            pos += len(sep)
    text = "".join(parts)
    assert "\t" not in text and "\n" not in text and '"' not in text
    return text, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _headline_table():
    flat, offsets, counts = [], [], []
    for r in range(1, 6):
        offsets.append(len(flat))
        counts.append(len(_HEADLINES[r]))
        flat.extend(_HEADLINES[r])
    return np.array(flat, dtype=object), np.array(offsets), np.array(counts)


_HEADLINE_FLAT, _HEADLINE_OFF, _HEADLINE_CNT = _headline_table()


def _titles(plan: _Plan, ranks: np.ndarray) -> list[str]:
    """Product titles, a pure function of (seed, product rank)."""
    h = plan.h
    a = h.below(ranks, "title_a", 1 << 30).tolist()
    b = h.below(ranks, "title_b", 1 << 30).tolist()
    out = []
    for x, y in zip(a, b):
        adj, noun = _TITLE_ADJ[x % len(_TITLE_ADJ)], _TITLE_NOUN[(x >> 5) % len(_TITLE_NOUN)]
        noun2 = _TITLE_NOUN[(y >> 3) % len(_TITLE_NOUN)]
        suffix = _TITLE_SUFFIX[(y >> 9) % len(_TITLE_SUFFIX)]
        t = (x >> 12) % 8
        if t == 0:
            s = f"The {adj} {noun}"
        elif t == 1:
            s = f"{adj} {noun}: Season {1 + (y >> 14) % 9}"
        elif t == 2:
            s = f"The {noun} of {_TITLE_PLACE[(y >> 14) % len(_TITLE_PLACE)]}"
        elif t == 3:
            s = f"{_TITLE_NAME[(y >> 14) % len(_TITLE_NAME)]}’s {noun}"
        elif t == 4:
            s = f"{adj} {noun} ({1950 + (y >> 14) % 66})"
        elif t == 5:
            s = f"{noun} & {noun2}"
        elif t == 6:
            s = f"{adj} {noun} {2 + (y >> 14) % 4}: Return to {noun2}"
        else:
            s = f"{adj} {noun}"
        out.append(s + suffix)
    return out


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


# --- one chunk ----------------------------------------------------------------------------
def _chunk(plan: _Plan, start: int, stop: int, faults: bool, tally: dict,
           seen_customers: np.ndarray, seen_products: np.ndarray) -> list[str]:
    h = plan.h
    pos = np.arange(start, stop, dtype=np.int64)
    n_rows = len(pos)
    cust, k = plan.customer_and_level(plan.slots(pos))
    n = plan.review_count(cust)
    key = (cust << 21) | k

    # Deliberate duplicates: slot k repeats slot k-1's product; never two in a row, so every
    # duplicate pair has exactly two rows and can be counted without state.
    def is_dup(kk):
        return (kk >= 1) & (h.uniform((cust << 21) | kk, "dup") < _DUP_RATE)

    dup = is_dup(k) & ~is_dup(np.maximum(k - 1, 0))
    prod = plan.product(cust, np.where(dup, k - 1, k), n)

    # Faults: one uniform per slot cut into mutually exclusive ranges.
    fault = np.full(n_rows, -1, dtype=np.int8)
    if faults:
        def fault_of(keys):
            u = h.uniform(keys, "fault")
            f = np.full(len(keys), -1, dtype=np.int8)
            lo = 0.0
            for i, (_, rate) in enumerate(_FAULT_RATES):
                f[(u >= lo) & (u < lo + rate)] = i
                lo += rate
            return f
        fault = fault_of(key)
        bad = (fault >= 0) & (fault < 3)
        prev_bad = fault_of((cust << 21) | np.maximum(k - 1, 0))
        prev_bad = (prev_bad >= 0) & (prev_bad < 3)
    else:
        bad = prev_bad = np.zeros(n_rows, dtype=bool)
    good = ~bad
    tally["duplicate_pairs"] += int((dup & good & ~prev_bad).sum())
    seen_customers[cust[good]] = True
    seen_products[prod[good]] = True

    # Ratings from the latent model.
    cb, _ = h.normals(cust, "customer_bias")
    pb, _ = h.normals(prod, "product_bias")
    dot = np.zeros(n_rows)
    for i in range(_RANK // 2):
        ua, ub = h.normals(cust, f"customer_factor{i}")
        va, vb = h.normals(prod, f"product_factor{i}")
        dot += ua * va + ub * vb
    noise = h.normals(key, "noise")[0]
    x = (_MU + _SD_CUSTOMER_BIAS * cb + _SD_PRODUCT_BIAS * pb + _SD_FACTOR ** 2 * dot
         + _SD_NOISE * noise)
    x -= _PULL * np.maximum(0.0, _PULL_BELOW - x)
    rating = np.rint(np.clip(x, 1.0, 5.0)).astype(np.int64)

    # Dates: each customer is active over [first, first + span]; the first slot is at `first`.
    span = np.minimum(_NDAYS - 1, np.floor(-np.log1p(-h.uniform(cust, "span"))
                                           * (60.0 * np.sqrt(n) + 30.0))).astype(np.int64)
    room = (_NDAYS - 1 - span).astype(np.float64)
    # Later years are busier: truncated exponential back from the end of the range.
    g = -900.0 * np.log1p(-h.uniform(cust, "first") * -np.expm1(-room / 900.0))
    first = (_NDAYS - 1 - span) - np.minimum(np.floor(g), room).astype(np.int64)
    t = np.where(k == 0, 0.0, h.uniform(key, "date"))
    day = first + np.floor(t * (span + 1)).astype(np.int64).clip(0, span)

    # Votes: zero-inflated, long-tailed; helpful <= total.
    hv = h.uniform(key, "votes")
    total = np.where(hv < 0.55, 0, np.floor(np.expm1(-np.log1p(-h.uniform(key, "votes_n"))
                                                      * 1.3)) + 1).astype(np.int64)
    frac = h.uniform(key, "helpful") ** np.where(rating >= 4, 0.5, 2.0)
    helpful = np.floor(total * frac).astype(np.int64)
    flags = h.bits(key, "flags")
    yes_no = np.array(["N", "Y"], dtype=object)
    vine = yes_no[(flags % _U64(1000) < _U64(6)).astype(np.intp)].tolist()             # 0.6 %
    verified = yes_no[((flags >> _U64(20)) % _U64(1000) < _U64(780)).astype(np.intp)].tolist()

    # Text.
    corpus, s_start, s_end = _corpus(plan.h.seed)
    seg = np.where(rating <= 2, 0, np.where(rating == 3, 1, 2))
    lb = h.uniform(key, "body_len")
    nsent = np.where(lb < 0.3, 1,
                     1 + np.floor(np.log1p(-h.uniform(key, "body_len2")) / math.log(0.75)))
    nsent = np.minimum(nsent, 40).astype(np.int64)
    first_s = seg * _CORPUS_SENTENCES + np.floor(
        h.uniform(key, "body") * (_CORPUS_SENTENCES - nsent + 1)).astype(np.int64)
    bodies = [corpus[a:b] for a, b in zip(s_start[first_s].tolist(),
                                          s_end[first_s + nsent - 1].tolist())]
    hi = _HEADLINE_OFF[rating - 1] + h.below(key, "headline", _HEADLINE_CNT[rating - 1])
    headlines = _HEADLINE_FLAT[hi].tolist()

    uniq, inv = np.unique(prod, return_inverse=True)
    titles = np.array(_titles(plan, uniq), dtype=object)[inv].tolist()
    asins = np.array(_product_ids(plan, uniq), dtype=object)[inv].tolist()
    parents = (100_000_000 + h.below(uniq, "parent", 900_000_000))[inv].tolist()

    cust_ids = plan.customer_ids(cust).tolist()
    ratings = [str(r) for r in rating.tolist()]

    # Inject the faults (few rows: Python loops are fine here).
    truncate = {}
    if faults:
        fu = h.bits(key, "fault_detail")
        for i in np.flatnonzero(fault >= 0).tolist():
            f, d = int(fault[i]), int(fu[i])
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

    rep = itertools.repeat
    lines = list(map("\t".join, zip(
        rep("US"), map(str, cust_ids), _review_ids(plan, pos), asins, map(str, parents), titles,
        rep(CATEGORY), ratings, map(str, helpful.tolist()), map(str, total.tolist()), vine,
        verified, headlines, bodies, plan.day_strings[day].tolist())))
    for i, keep in truncate.items():
        line = lines[i]
        p = -1
        for _ in range(keep):
            p = line.index("\t", p + 1)
        nxt = line.find("\t", p + 1)
        lines[i] = line[:p + 1 + (nxt - p - 1) // 2]
    return lines


# --- public API -----------------------------------------------------------------------------
def generate_reviews(path, rows=SAMPLE_ROWS, seed=SAMPLE_SEED, faults=True, chunk_rows=200_000,
                     compresslevel=1, storage_options=None) -> dict:
    """Write a gzip TSV of generated reviews in the Amazon Customer Reviews layout.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, local or any fsspec URL (``s3://bucket/key.tsv.gz``). For local paths the
        parent directory is created and the file appears atomically (written to a temporary
        file beside it, then renamed), so a crash never leaves a file that looks complete.
    rows : int, default ``config.SAMPLE_ROWS``
        Data lines to write (bad lines included), after one header line.
    seed : int, default ``config.SAMPLE_SEED``
        The content depends only on ``(rows, seed)``.
    faults : bool, default True
        Inject the faults real files have, at small fixed rates: rows with a stray tab in the
        body (too many fields), truncated rows (too few fields), non-numeric star ratings, and
        valid rows whose title, headline or body opens with an unclosed ``"``.
    chunk_rows : int, default 200_000
        Rows built and written per step; bounds memory (~1.5 KB per row) and does not change
        the content.
    compresslevel : int, default 1
        ISA-L gzip level, 0 (fastest) to 3.
    storage_options : dict, optional
        Passed to :func:`fsspec.open`.

    Returns
    -------
    dict
        ``rows`` (data lines written), ``bad`` (lines a strict parser rejects, by reason:
        ``too_many_fields``, ``too_few_fields``, ``bad_rating``), ``quoted_fields`` (valid
        lines with a field opening with ``"``), ``duplicate_pairs`` (valid lines whose
        (customer_id, product_id) pair already occurs on another valid line), ``customers`` and
        ``products`` (distinct ids among valid lines), plus ``path`` and ``seed``.
        ``rows - sum(bad.values())`` lines parse.

    Raises
    ------
    FmprepError
        On an argument out of range.

    Notes
    -----
    Customers and products have long-tailed popularity and their numbers grow in proportion to
    ``rows``: with the reference filters (customers >= 5, products >= 10 ratings) 35-40 % of
    the rows survive at any size. Ratings follow
    ``round(clip(mean + b_customer + b_product + <u_customer, v_product> + noise, 1, 5))`` with
    rank-2 factors (interaction sd ~0.9 against noise sd 0.5), skewed toward 4 and 5 stars
    (about 60 % 5-star, more 1s than 2s). After the reference filters a Bayesian FM (myfm)
    beats the biases-only baseline by ~0.1 RMSE at 20 k and 1 M rows. A customer's review dates
    fall within one span of activity; ratings do not depend on dates.
    """
    for name, value, low in (("rows", rows, 0), ("seed", seed, 0), ("chunk_rows", chunk_rows, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise FmprepError(f"{name} must be an integer >= {low}, got {value!r}.")
    if not isinstance(compresslevel, (int, np.integer)) or not 0 <= compresslevel <= 3:
        raise FmprepError(f"compresslevel must be 0..3 (ISA-L levels), got {compresslevel!r}.")
    rows, seed, chunk_rows = int(rows), int(seed), int(chunk_rows)
    plan = _Plan(rows, seed)
    if plan.customers >= _CUSTOMER_IDS:
        raise FmprepError(f"rows={rows} is too many: customer ids would not fit in 8 digits; "
                          "generate several files with different seeds instead.")

    tally = dict.fromkeys([name for name, _ in _FAULT_RATES] + ["duplicate_pairs"], 0)
    seen_customers = np.zeros(max(plan.customers, 1), dtype=bool)
    seen_products = np.zeros(plan.products, dtype=bool)
    header = ("\t".join(TSV_COLUMNS) + "\n").encode("utf-8")

    def write(raw):
        # mtime=0 and the final name in the header: same input, same compressed bytes.
        name = os.path.basename(str(path))
        with igzip.IGzipFile(filename=name, mode="wb", compresslevel=compresslevel,
                             fileobj=raw, mtime=0) as gz:
            gz.write(header)
            for start in range(0, rows, chunk_rows):
                lines = _chunk(plan, start, min(rows, start + chunk_rows), faults, tally,
                               seen_customers, seen_products)
                # Encode a slice at a time: one string for the whole chunk would double the peak.
                for i in range(0, len(lines), 8192):
                    gz.write(("\n".join(lines[i:i + 8192]) + "\n").encode("utf-8"))
                del lines

    _write_stream_atomically(path, storage_options, write)

    return {
        "path": str(path),
        "seed": seed,
        "rows": rows,
        "bad": {name: tally[name] for name in BAD_REASONS},
        "quoted_fields": tally["quoted"],
        "duplicate_pairs": tally["duplicate_pairs"],
        "customers": int(seen_customers.sum()),
        "products": int(seen_products.sum()),
    }


# --- the Amazon Reviews 2023 JSON Lines layout (additive: reuses the rows above) -------------
DEFAULT_SAMPLE_2023 = "data/sample/reviews_2023_sample.jsonl.gz"
BAD_REASONS_2023 = ("bad_json", "missing_id", "bad_rating", "bad_timestamp")
_MAIN_CATEGORY_2023 = "Movies & TV"
# Faults of a JSON Lines file, as slices of one uniform per file position.
_FAULT_RATES_2023 = (("bad_json", 0.0008), ("missing_id", 0.0005), ("bad_rating", 0.0005),
                     ("bad_timestamp", 0.0005))
_MS_PER_DAY = 86_400_000

__all__ += ["generate_reviews_2023", "DEFAULT_SAMPLE_2023", "BAD_REASONS_2023"]


def _user_ids_2023(plan: _Plan, customer_ids: np.ndarray) -> list[str]:
    """28-character ``A…`` user ids like the 2023 dataset's, one per customer id (a bijection)."""
    hi = _digits(plan.h.bits(customer_ids, "user_id_2023"), 36, 13, _B36)
    lo = _digits(plan.h.bits(customer_ids, "user_id_2023_b"), 36, 14, _B36)
    out = np.empty((len(customer_ids), 28), dtype=np.uint8)
    out[:, 0] = ord("A")
    out[:, 1:14], out[:, 14:] = hi, lo
    return _as_str(out)


def _lines_2023(plan: _Plan, start: int, stop: int, faults: bool, tally: dict,
                seen_customers: np.ndarray, seen_products: np.ndarray) -> list[str]:
    """Rows ``start:stop`` of :func:`generate_reviews` (without its TSV faults) as 2023 JSON."""
    import json

    rows = [line.split("\t") for line in _chunk(plan, start, stop, False, tally,
                                                seen_customers, seen_products)]
    cols = dict(zip(TSV_COLUMNS, zip(*rows))) if rows else {c: () for c in TSV_COLUMNS}
    pos = np.arange(start, stop, dtype=np.int64)
    users = _user_ids_2023(plan, np.array(cols["customer_id"], dtype=np.int64))
    days = np.array(cols["review_date"], dtype="datetime64[D]").astype(np.int64)
    stamps = (days * _MS_PER_DAY + plan.h.below(pos, "time_of_day_2023", _MS_PER_DAY)).tolist()
    fault = np.full(len(pos), -1, dtype=np.int8)
    if faults:
        u = plan.h.uniform(pos, "fault_2023")
        lo = 0.0
        for i, (name, rate) in enumerate(_FAULT_RATES_2023):
            hit = (u >= lo) & (u < lo + rate)
            fault[hit] = i
            tally[name] += int(hit.sum())
            lo += rate
    out = []
    for i, (user, asin, stars, headline, body, votes, verified, ms) in enumerate(zip(
            users, cols["product_id"], cols["star_rating"], cols["review_headline"],
            cols["review_body"], cols["helpful_votes"], cols["verified_purchase"], stamps)):
        review = {"rating": float(stars), "title": headline, "text": body, "images": [],
                  "asin": asin, "parent_asin": asin, "user_id": user, "timestamp": ms,
                  "helpful_vote": int(votes), "verified_purchase": verified == "Y"}
        f = int(fault[i])
        if f == 1:
            review["user_id"] = ""
        elif f == 2:
            review["rating"] = (0.0, "five", None, 6.0)[i % 4]
        elif f == 3:      # seconds where milliseconds belong, or a string
            review["timestamp"] = (ms // 1000, str(ms))[i % 2]
        line = json.dumps(review, ensure_ascii=False)
        out.append(line[:len(line) // 2] if f == 0 else line)   # bad_json: a cut line
    return out


def _write_stream_atomically(path, storage_options, write) -> None:
    """Call ``write(raw)`` with a binary file that appears at ``path`` only once complete."""
    options = storage_options or {}
    fs, fs_path = fsspec.core.url_to_fs(str(path), **options)
    if "file" in fs.protocol or "local" in fs.protocol:
        parent = os.path.dirname(os.path.abspath(fs_path))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(fs_path)}.{uuid.uuid4().hex}.tmp")
        try:
            with fsspec.open(tmp, "wb") as raw:
                write(raw)
            os.replace(tmp, fs_path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        with fsspec.open(str(path), "wb", **options) as raw:
            write(raw)


def _gzip_lines(path, storage_options, compresslevel, chunks) -> None:
    """Write the lines of each list ``chunks`` yields as a reproducible gzip file."""
    def write(raw):
        with igzip.IGzipFile(filename=os.path.basename(str(path)), mode="wb",
                             compresslevel=compresslevel, fileobj=raw, mtime=0) as gz:
            for lines in chunks:
                for i in range(0, len(lines), 8192):
                    gz.write(("\n".join(lines[i:i + 8192]) + "\n").encode("utf-8"))

    _write_stream_atomically(path, storage_options, write)


def meta_path_2023(path) -> str:
    """Where :func:`generate_reviews_2023` puts the metadata file: ``meta_<name>`` beside it."""
    path = str(path)
    head, name = path.rsplit("/", 1) if "/" in path else ("", path)
    return f"{head}/meta_{name}" if head else f"meta_{name}"


def generate_reviews_2023(path, rows=SAMPLE_ROWS, seed=SAMPLE_SEED, faults=True, meta=True,
                          chunk_rows=200_000, compresslevel=1, storage_options=None) -> dict:
    """Write generated reviews in the Amazon Reviews 2023 JSON Lines layout, and their metadata.

    The reviews are those :func:`generate_reviews` writes for the same ``(rows, seed)`` with
    ``faults=False``, laid out as the 2023 dataset's ``<Category>.jsonl.gz``: one object per
    line with ``rating`` (float), ``title`` (the review's headline), ``text``, ``images``,
    ``asin`` and ``parent_asin`` (both the product id), ``user_id`` (a 28-character id derived
    from the customer id), ``timestamp`` (Unix ms: the review date plus a time of day),
    ``helpful_vote`` and ``verified_purchase``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``.jsonl.gz``), local or any fsspec URL; written atomically when local.
    rows, seed : int
        As for :func:`generate_reviews`.
    faults : bool, default True
        Replace a few lines, at fixed small rates, by the faults a JSON Lines reader must
        survive: a line cut in half (``bad_json``), an empty ``user_id`` (``missing_id``), a
        rating that is 0, 6, null or a string (``bad_rating``), a timestamp in seconds or as a
        string (``bad_timestamp``).
    meta : bool, default True
        Also write ``meta_<name>`` beside ``path`` (see :func:`meta_path_2023`): one line per
        product of the file, in the layout of the dataset's ``meta_<Category>.jsonl.gz``
        (``parent_asin``, ``title`` = the product title, and empty lists and objects for the
        other fields).
    chunk_rows, compresslevel, storage_options
        As for :func:`generate_reviews`.

    Returns
    -------
    dict
        ``path``, ``seed``, ``rows`` (lines written), ``bad`` (lines a strict reader rejects,
        by reason, see :data:`BAD_REASONS_2023`), ``customers`` and ``products`` (distinct ids
        over all lines, faulty ones included), and ``meta_path`` / ``meta_products`` when
        ``meta``.
    """
    for name, value, low in (("rows", rows, 0), ("seed", seed, 0), ("chunk_rows", chunk_rows, 1),
                             ("compresslevel", compresslevel, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise FmprepError(f"{name} must be an integer >= {low}, got {value!r}.")
    if compresslevel > 3:
        raise FmprepError(f"compresslevel must be 0..3 (ISA-L levels), got {compresslevel!r}.")
    rows, seed, chunk_rows = int(rows), int(seed), int(chunk_rows)
    plan = _Plan(rows, seed)
    if plan.customers >= _CUSTOMER_IDS:
        raise FmprepError(f"rows={rows} is too many: customer ids would not fit in 8 digits; "
                          "generate several files with different seeds instead.")
    tally = dict.fromkeys([name for name, _ in _FAULT_RATES] + ["duplicate_pairs"]
                          + list(BAD_REASONS_2023), 0)
    seen_customers = np.zeros(max(plan.customers, 1), dtype=bool)
    seen_products = np.zeros(plan.products, dtype=bool)
    _gzip_lines(path, storage_options, compresslevel, (
        _lines_2023(plan, start, min(rows, start + chunk_rows), faults, tally, seen_customers,
                    seen_products)
        for start in range(0, rows, chunk_rows)))
    summary = {"path": str(path), "seed": seed, "rows": rows,
               "bad": {name: tally[name] for name in BAD_REASONS_2023},
               "customers": int(seen_customers.sum()), "products": int(seen_products.sum())}
    if meta:
        import json

        ranks = np.flatnonzero(seen_products)

        def meta_lines():
            for i in range(0, len(ranks), chunk_rows):
                r = ranks[i:i + chunk_rows]
                yield [json.dumps({"main_category": _MAIN_CATEGORY_2023, "title": title,
                                   "features": [], "description": [], "price": None,
                                   "images": [], "videos": [], "store": "", "categories": [],
                                   "details": {}, "parent_asin": asin,
                                   "bought_together": None}, ensure_ascii=False)
                       for asin, title in zip(_product_ids(plan, r), _titles(plan, r))]

        summary["meta_path"] = meta_path_2023(path)
        _gzip_lines(summary["meta_path"], storage_options, compresslevel, meta_lines())
        summary["meta_products"] = len(ranks)
    return summary
