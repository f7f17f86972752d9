"""Counter-based randomness: splitmix64 hash streams and a keyed permutation.

Every random value of the generated files is a hash of ``(seed, stream, key)``, so any row can
be made on its own, in any chunk, without state carried from the rows before it.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

# --- splitmix64 on uint64 arrays ---------------------------------------------------------------
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
