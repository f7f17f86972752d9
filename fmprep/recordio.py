"""SageMaker RecordIO-protobuf, encoded and decoded with vectorized numba kernels.

The format (docs/design.md §3): each record is the uint32 little-endian magic ``0xCED7230A``, the
uint32 little-endian payload length, the payload, and zero padding to a 4-byte boundary that the
length does not count. The payload is the protobuf message ``aialgs.data.Record``::

    Record        { map<string, Value> features = 1; map<string, Value> label = 2; ... }
    Value         { oneof { Float32Tensor float32_tensor = 2; Float64Tensor float64_tensor = 3;
                            Int32Tensor int32_tensor = 7; Bytes bytes = 9; } }
    Float32Tensor { repeated float values = 1 [packed]; repeated uint64 keys = 2 [packed];
                    repeated uint64 shape = 3 [packed]; }

The wire bytes are written by hand, without the protobuf runtime, and are byte-identical to what the
SageMaker Python SDK v2 (``write_spmatrix_to_sparse_tensor``) emits for the same float32 CSR matrix:

* fields are written in field-number order (features before label; values, keys, shape);
* empty packed fields are left out, so an empty row is ``float32_tensor{shape=[n_cols]}``;
* explicit zeros stored in the CSR are written like any other value;
* a record has a label map entry only when labels are given.

Both directions run in two numba passes: the first validates and sizes every record, the second
fills preallocated arrays (one uint8 buffer when encoding). Kernels report errors as codes, which
the Python wrappers raise as one-line ``ValueError`` messages.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numba
import numpy as np

__all__ = ["MAGIC", "MAX_PAYLOAD", "SparseRecords", "decode_records", "encode_csr",
           "encode_fm_rows"]

MAGIC = 0xCED7230A
#: A record's payload length must stay below this (MXNet's RecordIO keeps flags in the top bits).
MAX_PAYLOAD = 1 << 29

_INT64_MAX = np.iinfo(np.int64).max
_KEY = np.frombuffer(b"values", dtype=np.uint8)
_NAN32_BITS = 0x7FC00000

# Error codes the kernels return; Python turns them into messages (numba cannot format strings).
_OK = 0
_E_INDPTR = 1
_E_RANGE = 2
_E_ORDER = 3
_E_TOO_LONG = 4
_E_MAGIC = 10
_E_TRUNCATED = 11
_E_PROTO = 12
_E_WIRE = 13
_E_NOT_F32 = 14
_E_NO_FEATURES = 15
_E_SHAPE_DIM = 16
_E_KEYS_VALUES = 17
_E_NO_SHAPE = 18
_E_DENSE_SHAPE = 19
_E_LABEL = 20
_E_KEY_RANGE = 21
_E_BIG = 22


# ---------------------------------------------------------------------------------------------
# encoding


@numba.njit(cache=True)
def _vlen(x):
    """Bytes of the base-128 varint of the non-negative int64 ``x``."""
    n = 1
    while x >= 0x80:
        x >>= 7
        n += 1
    return n


@numba.njit(cache=True)
def _sizes(k, key_bytes, shape_bytes, has_label):
    """Lengths of the nested messages of a record with ``k`` entries.

    Returns (tensor, value, entry, payload) body lengths; the label field is a constant 20 bytes.
    """
    tensor = 2 + shape_bytes  # shape: tag, length (<= 10, one byte), the varint
    if k > 0:  # the SDK leaves empty packed fields out
        tensor += 1 + _vlen(4 * k) + 4 * k + 1 + _vlen(key_bytes) + key_bytes
    value = 1 + _vlen(tensor) + tensor
    entry = 8 + 1 + _vlen(value) + value  # key "values" (tag, length, 6 bytes) + value
    payload = 1 + _vlen(entry) + entry
    if has_label:
        payload += 20
    return tensor, value, entry, payload


@numba.njit(cache=True)
def _csr_offsets(indptr, indices, n_cols, has_label, max_payload):
    """Pass 1: validate the rows and return each record's start offset (n_rows + 1 entries)."""
    n = indptr.size - 1
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    shape_bytes = _vlen(n_cols)
    for i in range(n):
        a = indptr[i]
        b = indptr[i + 1]
        if b < a:
            return offsets, _E_INDPTR, i, b
        key_bytes = 0
        prev = -1
        for j in range(a, b):
            c = indices[j]
            if c < 0 or c >= n_cols:
                return offsets, _E_RANGE, i, c
            if c <= prev:
                return offsets, _E_ORDER, i, c
            key_bytes += _vlen(c)
            prev = c
        payload = _sizes(b - a, key_bytes, shape_bytes, has_label)[3]
        if payload >= max_payload:
            return offsets, _E_TOO_LONG, i, payload
        offsets[i + 1] = offsets[i] + 8 + ((payload + 3) & ~3)
    return offsets, _OK, 0, 0


@numba.njit(cache=True)
def _put_varint(out, pos, x):
    while x >= 0x80:
        out[pos] = (x & 0x7F) | 0x80
        x >>= 7
        pos += 1
    out[pos] = x
    return pos + 1


@numba.njit(cache=True)
def _put_u32(out, pos, x):
    out[pos] = x & 0xFF
    out[pos + 1] = (x >> 8) & 0xFF
    out[pos + 2] = (x >> 16) & 0xFF
    out[pos + 3] = (x >> 24) & 0xFF
    return pos + 4


@numba.njit(cache=True)
def _put_key(out, pos):
    """Write the map-entry key field: tag 1, length 6, "values"."""
    out[pos] = 0x0A
    out[pos + 1] = 6
    for t in range(6):
        out[pos + 2 + t] = _KEY[t]
    return pos + 8


@numba.njit(cache=True)
def _csr_fill(indptr, indices, bits, label_bits, n_cols, has_label, offsets):
    """Pass 2: write every record into one buffer laid out by ``offsets``."""
    out = np.empty(offsets[-1], np.uint8)
    shape_bytes = _vlen(n_cols)
    for i in range(indptr.size - 1):
        a = indptr[i]
        b = indptr[i + 1]
        k = b - a
        key_bytes = 0
        for j in range(a, b):
            key_bytes += _vlen(indices[j])
        tensor, value, entry, payload = _sizes(k, key_bytes, shape_bytes, has_label)
        pos = _put_u32(out, offsets[i], MAGIC)
        pos = _put_u32(out, pos, payload)
        out[pos] = 0x0A  # Record.features
        pos = _put_varint(out, pos + 1, entry)
        pos = _put_key(out, pos)
        out[pos] = 0x12  # entry.value
        pos = _put_varint(out, pos + 1, value)
        out[pos] = 0x12  # Value.float32_tensor
        pos = _put_varint(out, pos + 1, tensor)
        if k > 0:
            out[pos] = 0x0A  # values, packed
            pos = _put_varint(out, pos + 1, 4 * k)
            for j in range(a, b):
                pos = _put_u32(out, pos, bits[j])
            out[pos] = 0x12  # keys, packed
            pos = _put_varint(out, pos + 1, key_bytes)
            for j in range(a, b):
                pos = _put_varint(out, pos, indices[j])
        out[pos] = 0x1A  # shape, packed
        out[pos + 1] = shape_bytes
        pos = _put_varint(out, pos + 2, n_cols)
        if has_label:
            out[pos] = 0x12  # Record.label
            out[pos + 1] = 18
            pos = _put_key(out, pos + 2)
            out[pos] = 0x12
            out[pos + 1] = 8
            out[pos + 2] = 0x12
            out[pos + 3] = 6
            out[pos + 4] = 0x0A
            out[pos + 5] = 4
            pos = _put_u32(out, pos + 6, label_bits[i])
        for p in range(pos, offsets[i + 1]):
            out[p] = 0
    return out


def _int64_array(name, a):
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > _INT64_MAX:
        raise ValueError(f"{name} holds {a.max()}, above the int64 maximum {_INT64_MAX}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _dimension(name, n):
    n = operator.index(n)
    if not 0 <= n <= _INT64_MAX:
        raise ValueError(f"{name} must be in [0, 2**63 - 1], got {n}")
    return n


def _float32_bits(name, a, n=None):
    """Cast to contiguous float32 and return the uint32 view the kernels copy bit for bit."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} entries, expected {n}")
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def encode_csr(indptr, indices, values, labels, n_cols):
    """Encode CSR rows as framed RecordIO-protobuf sparse records.

    The output is byte-identical to ``sagemaker.amazon.common.write_spmatrix_to_sparse_tensor``
    writing ``scipy.sparse.csr_matrix((values, indices, indptr), shape=(n_rows, n_cols),
    dtype=numpy.float32)`` with float32 labels: one record per row, explicit zeros kept, an empty
    row written as a tensor holding only its shape.

    Parameters
    ----------
    indptr : array_like of int, shape (n_rows + 1,)
        Row pointers: row ``i`` holds entries ``indptr[i]:indptr[i + 1]``; ``indptr[0]`` must be 0
        and ``indptr[-1]`` the number of entries.
    indices : array_like of int, shape (nnz,)
        Column indices, strictly ascending within each row and in ``[0, n_cols)``.
    values : array_like of float, shape (nnz,)
        Entry values, cast to float32.
    labels : array_like of float, shape (n_rows,), or None
        One label per row, cast to float32. None writes no label map.
    n_cols : int
        The feature dimension, written as each record's shape.

    Returns
    -------
    numpy.ndarray of uint8
        All records, framed and padded, ready for ``fileobj.write(buf)``.

    Raises
    ------
    ValueError
        If the arrays are inconsistent, an index is out of range or not ascending within its row,
        or a record's payload would reach ``MAX_PAYLOAD`` bytes.
    """
    n_cols = _dimension("n_cols", n_cols)
    indptr = _int64_array("indptr", indptr)
    indices = _int64_array("indices", indices)
    if indptr.size == 0 or indptr[0] != 0:
        raise ValueError("indptr must start with 0 (it has n_rows + 1 entries)")
    if indptr[-1] != indices.size:
        raise ValueError(f"indptr ends at {indptr[-1]} but there are {indices.size} indices")
    bits = _float32_bits("values", values, indices.size)
    n_rows = indptr.size - 1
    has_label = labels is not None
    label_bits = _float32_bits("labels", labels, n_rows) if has_label else np.zeros(0, np.uint32)

    offsets, err, row, detail = _csr_offsets(indptr, indices, n_cols, has_label, MAX_PAYLOAD)
    if err == _E_INDPTR:
        raise ValueError(f"indptr decreases at row {row} (indptr[{row + 1}] = {detail})")
    if err == _E_RANGE:
        raise ValueError(f"row {row}: column index {detail} is outside [0, n_cols={n_cols})")
    if err == _E_ORDER:
        raise ValueError(f"row {row}: column indices must be strictly ascending, "
                         f"got {detail} after a larger or equal index; sort them first")
    if err == _E_TOO_LONG:
        raise ValueError(f"row {row}: record payload of {detail} bytes reaches the RecordIO limit "
                         f"of {MAX_PAYLOAD} bytes; split the row")
    return _csr_fill(indptr, indices, bits, label_bits, n_cols, has_label, offsets)


def encode_fm_rows(user, item, days, labels, feature_dim):
    """Encode fmprep's Factorization Machines rows as RecordIO-protobuf records.

    Row ``i`` has three entries: 1.0 at column ``user[i]``, 1.0 at column ``item[i]`` and
    ``days[i]`` at column ``feature_dim - 1`` (written even when it is 0.0), with label
    ``labels[i]``. The bytes are identical to the SageMaker SDK writing the float32 CSR matrix
    built from those triples.

    Parameters
    ----------
    user, item : array_like of int, shape (n,)
        Column of the user and of the item; ``0 <= user < item < feature_dim - 1``.
    days : array_like of float, shape (n,)
        Days since the customer's first review, cast to float32.
    labels : array_like of float, shape (n,), or None
        Star ratings, cast to float32; None writes no labels.
    feature_dim : int
        Number of columns: users + items + 1.

    Returns
    -------
    numpy.ndarray of uint8
        All records, framed and padded.

    Raises
    ------
    ValueError
        If the arrays differ in length or a row breaks ``0 <= user < item < feature_dim - 1``.
    """
    feature_dim = _dimension("feature_dim", feature_dim)
    user = _int64_array("user", user)
    item = _int64_array("item", item)
    n = user.size
    if item.size != n:
        raise ValueError(f"item has {item.size} entries, user has {n}")
    days_bits = _float32_bits("days", days, n)
    # Checked here too so the message names the FM layout rather than CSR internals.
    bad = (user < 0) | (user >= item) | (item >= feature_dim - 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"row {i}: need 0 <= user < item < feature_dim - 1 = {feature_dim - 1}, "
                         f"got user={user[i]}, item={item[i]}")
    indices = np.empty((n, 3), np.int64)
    indices[:, 0] = user
    indices[:, 1] = item
    indices[:, 2] = feature_dim - 1
    bits = np.empty((n, 3), np.uint32)
    bits[:, :2] = np.float32(1.0).view(np.uint32)
    bits[:, 2] = days_bits
    indptr = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
    return encode_csr(indptr, indices.ravel(), bits.ravel().view(np.float32), labels, feature_dim)


# ---------------------------------------------------------------------------------------------
# decoding


class SparseRecords(NamedTuple):
    """Records decoded into CSR arrays.

    Attributes
    ----------
    indptr : numpy.ndarray of int64, shape (n_records + 1,)
    indices : numpy.ndarray of int64, shape (nnz,)
        Column keys as stored (a dense record gets 0..len-1).
    values : numpy.ndarray of float32, shape (nnz,)
    labels : numpy.ndarray of float32, shape (n_records,), or None
        None when no record has a label; NaN for a record without one when others have.
    shape : int
        The feature dimension the records state (0 when there are no records).
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray | None
    shape: int


@numba.njit(cache=True)
def _u32(buf, p):
    return (np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16)
            | (np.int64(buf[p + 3]) << 24))


@numba.njit(cache=True)
def _varint(buf, pos, end):
    """Read a varint; returns (value as uint64, next position), position -1 if malformed."""
    result = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(10):
        if pos >= end:
            return np.uint64(0), -1
        b = buf[pos]
        pos += 1
        result |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += np.uint64(7)
    return np.uint64(0), -1


@numba.njit(cache=True)
def _len_field(buf, pos, end):
    """Read a length prefix; returns (start, stop) of the field body, start -1 if malformed."""
    n, pos = _varint(buf, pos, end)
    if pos < 0 or n > np.uint64(end - pos):
        return -1, -1
    return pos, pos + np.int64(n)


@numba.njit(cache=True)
def _skip(buf, pos, end, wire):
    """Skip an unknown field's body; returns the next position, -1 malformed, -2 bad wire type."""
    if wire == 0:
        pos = _varint(buf, pos, end)[1]
    elif wire == 1:
        pos += 8
    elif wire == 2:
        pos = _len_field(buf, pos, end)[1]
    elif wire == 5:
        pos += 4
    else:  # 3/4 are deprecated groups, 6/7 do not exist
        return -2
    if pos > end:
        return -1
    return pos


@numba.njit(cache=True)
def _tag(buf, pos, end):
    """Read a field tag; returns (field, wire, next position), position -1 if malformed."""
    t, pos = _varint(buf, pos, end)
    field = np.int64(t >> np.uint64(3))
    if pos < 0 or field == 0:
        return 0, 0, -1
    return field, np.int64(t & np.uint64(7)), pos


@numba.njit(cache=True)
def _fail(err):
    """The (error, n_values, n_keys, n_shape, shape) tuple of a failed tensor walk."""
    return err, 0, 0, 0, np.uint64(0)


@numba.njit(cache=True)
def _walk_tensor(buf, s, e, fill, vals, keys, nv, nk):
    """Walk a Float32Tensor body; counts entries, and with ``fill`` stores them from nv / nk.

    Repeated fields are accepted packed and unpacked and concatenate across occurrences, as in
    protobuf. Returns (error, n_values, n_keys, n_shape, first shape entry).
    """
    ns = 0
    shape0 = np.uint64(0)
    pos = s
    while pos < e:
        field, wire, pos = _tag(buf, pos, e)
        if pos < 0:
            return _fail(_E_PROTO)
        if field == 1 and (wire == 2 or wire == 5):
            if wire == 2:
                a, pos = _len_field(buf, pos, e)
                if a < 0 or (pos - a) % 4 != 0:
                    return _fail(_E_PROTO)
            else:
                a = pos
                pos += 4
                if pos > e:
                    return _fail(_E_PROTO)
            for p in range(a, pos, 4):
                if fill:
                    vals[nv] = _u32(buf, p)
                nv += 1
        elif (field == 2 or field == 3) and (wire == 2 or wire == 0):
            if wire == 2:
                a, stop = _len_field(buf, pos, e)
                if a < 0:
                    return _fail(_E_PROTO)
            else:
                a = pos
                stop = e
            pos = a
            while pos < stop:
                v, pos = _varint(buf, pos, stop)
                if pos < 0:
                    return _fail(_E_PROTO)
                if field == 2:
                    if fill:
                        keys[nk] = np.int64(v)
                    elif v > np.uint64(_INT64_MAX):
                        return _fail(_E_BIG)
                    nk += 1
                else:
                    if ns == 0:
                        shape0 = v
                    ns += 1
                if wire == 0:
                    break
        else:
            pos = _skip(buf, pos, e, wire)
            if pos < 0:
                return _fail(_E_WIRE if pos == -2 else _E_PROTO)
    return _OK, nv, nk, ns, shape0


@numba.njit(cache=True)
def _walk_entry(buf, s, e, fill, vals, keys, nv, nk):
    """Walk a map entry's Value message(s) down to the Float32Tensor; see ``_walk_tensor``."""
    ns = 0
    shape0 = np.uint64(0)
    pos = s
    while pos < e:
        field, wire, pos = _tag(buf, pos, e)
        if pos < 0:
            return _fail(_E_PROTO)
        if field == 2 and wire == 2:  # entry.value: a Value message
            a, pos = _len_field(buf, pos, e)
            if a < 0:
                return _fail(_E_PROTO)
            q = a
            while q < pos:
                vfield, vwire, q = _tag(buf, q, pos)
                if q < 0:
                    return _fail(_E_PROTO)
                if vfield == 2 and vwire == 2:
                    ta, q = _len_field(buf, q, pos)
                    if ta < 0:
                        return _fail(_E_PROTO)
                    err, nv, nk, ns1, s1 = _walk_tensor(buf, ta, q, fill, vals, keys, nv, nk)
                    if err != _OK:
                        return _fail(err)
                    if ns == 0:
                        shape0 = s1
                    ns += ns1
                elif vfield == 3 or vfield == 7 or vfield == 9:
                    return _fail(_E_NOT_F32)
                else:
                    q = _skip(buf, q, pos, vwire)
                    if q < 0:
                        return _fail(_E_WIRE if q == -2 else _E_PROTO)
        else:
            pos = _skip(buf, pos, e, wire)
            if pos < 0:
                return _fail(_E_WIRE if pos == -2 else _E_PROTO)
    return _OK, nv, nk, ns, shape0


@numba.njit(cache=True)
def _entry_is_values(buf, s, e):
    """1 if the map entry's key (its last key field, as protobuf merges) is "values", 0 if not,
    negative error code if malformed."""
    match = 0  # an absent key is the empty string
    pos = s
    while pos < e:
        field, wire, pos = _tag(buf, pos, e)
        if pos < 0:
            return -_E_PROTO
        if field == 1 and wire == 2:
            a, pos = _len_field(buf, pos, e)
            if a < 0:
                return -_E_PROTO
            match = 1 if pos - a == 6 else 0
            if match == 1:
                for t in range(6):
                    if buf[a + t] != _KEY[t]:
                        match = 0
        else:
            pos = _skip(buf, pos, e, wire)
            if pos < 0:
                return -(_E_WIRE if pos == -2 else _E_PROTO)
    return match


@numba.njit(cache=True)
def _count_records(buf):
    """Validate the framing; returns (error, byte offset, number of records)."""
    n = buf.size
    pos = 0
    count = 0
    while pos < n:
        if n - pos < 8:
            return _E_TRUNCATED, pos, count
        if _u32(buf, pos) != MAGIC:
            return _E_MAGIC, pos, count
        length = _u32(buf, pos + 4)
        if length > n - pos - 8:
            return _E_TRUNCATED, pos, count
        # The last record may omit its padding: it carries no data.
        pos = min(pos + 8 + ((length + 3) & ~3), n)
        count += 1
    return _OK, 0, count


@numba.njit(cache=True)
def _scan(buf, n_rec):
    """Pass 1 of decoding: find each record's feature and label entries and count their entries.

    Returns (error, record, spans (n_rec, 4), n_values, dense flags, dims, has_label).
    """
    spans = np.full((n_rec, 4), -1, np.int64)  # features start/stop, label start/stop
    nvals = np.zeros(n_rec, np.int64)
    dense = np.zeros(n_rec, np.bool_)
    dims = np.zeros(n_rec, np.int64)
    has_label = np.zeros(n_rec, np.bool_)
    none_u = np.zeros(0, np.uint32)
    none_i = np.zeros(0, np.int64)
    pos = 0
    for r in range(n_rec):
        length = _u32(buf, pos + 4)
        s = pos + 8
        e = s + length
        pos = min(s + ((length + 3) & ~3), buf.size)
        p = s
        while p < e:
            field, wire, p = _tag(buf, p, e)
            if p < 0:
                return _E_PROTO, r, spans, nvals, dense, dims, has_label
            if (field == 1 or field == 2) and wire == 2:
                a, p = _len_field(buf, p, e)
                if a < 0:
                    return _E_PROTO, r, spans, nvals, dense, dims, has_label
                m = _entry_is_values(buf, a, p)
                if m < 0:
                    return -m, r, spans, nvals, dense, dims, has_label
                if m == 1:  # a repeated map key: the last entry wins
                    spans[r, 2 * (field - 1)] = a
                    spans[r, 2 * (field - 1) + 1] = p
            else:
                p = _skip(buf, p, e, wire)
                if p < 0:
                    err = _E_WIRE if p == -2 else _E_PROTO
                    return err, r, spans, nvals, dense, dims, has_label
        if spans[r, 0] < 0:
            return _E_NO_FEATURES, r, spans, nvals, dense, dims, has_label
        err, nv, nk, ns, shape0 = _walk_entry(buf, spans[r, 0], spans[r, 1], False, none_u,
                                              none_i, 0, 0)
        if err == _OK:
            if ns > 1:
                err = _E_SHAPE_DIM
            elif ns == 1 and shape0 > np.uint64(_INT64_MAX):
                err = _E_BIG
            elif nk > 0 and nk != nv:
                err = _E_KEYS_VALUES
            elif nk > 0 and ns == 0:
                err = _E_NO_SHAPE
            elif nk == 0 and nv > 0 and ns == 1 and np.int64(shape0) != nv:
                err = _E_DENSE_SHAPE
        if err != _OK:
            return err, r, spans, nvals, dense, dims, has_label
        nvals[r] = nv
        # No keys: a dense vector, or an empty sparse row that still states its shape.
        dense[r] = nk == 0
        dims[r] = np.int64(shape0) if ns == 1 else nv
        if spans[r, 2] >= 0:
            err, lnv, lnk, _, _ = _walk_entry(buf, spans[r, 2], spans[r, 3], False, none_u,
                                              none_i, 0, 0)
            if err == _OK and (lnv != 1 or lnk != 0):
                err = _E_LABEL
            if err != _OK:
                return err, r, spans, nvals, dense, dims, has_label
            has_label[r] = True
    return _OK, 0, spans, nvals, dense, dims, has_label


@numba.njit(cache=True)
def _fill(buf, spans, indptr, dense, dims, has_label):
    """Pass 2 of decoding: store values, keys and labels; returns (error, record, ...arrays)."""
    n_rec = spans.shape[0]
    vals = np.empty(indptr[-1], np.uint32)
    keys = np.empty(indptr[-1], np.int64)
    labels = np.full(n_rec, _NAN32_BITS, np.uint32)
    one = np.empty(1, np.uint32)
    none_i = np.zeros(0, np.int64)
    for r in range(n_rec):
        a = indptr[r]
        b = indptr[r + 1]
        _walk_entry(buf, spans[r, 0], spans[r, 1], True, vals, keys, a, a)
        if dense[r]:
            for j in range(a, b):
                keys[j] = j - a
        else:
            for j in range(a, b):
                if keys[j] >= dims[r]:
                    return _E_KEY_RANGE, r, vals, keys, labels
        if has_label[r]:
            _walk_entry(buf, spans[r, 2], spans[r, 3], True, one, none_i, 0, 0)
            labels[r] = one[0]
    return _OK, 0, vals, keys, labels


_DECODE_ERRORS = {
    _E_PROTO: "malformed protobuf",
    _E_WIRE: "unsupported protobuf wire type (groups or 6/7)",
    _E_NOT_F32: "a tensor that is not Float32 (only Float32 tensors are supported)",
    _E_NO_FEATURES: 'no features["values"] tensor',
    _E_SHAPE_DIM: "a shape with more than one dimension (expected [feature_dim])",
    _E_KEYS_VALUES: "different numbers of keys and values",
    _E_NO_SHAPE: "sparse keys but no shape",
    _E_DENSE_SHAPE: "a dense tensor whose shape differs from its number of values",
    _E_LABEL: "a label that is not a single value (one float, no keys)",
    _E_KEY_RANGE: "a key outside [0, shape)",
    _E_BIG: "a key or shape above 2**63 - 1",
}


def _as_bytes(buf):
    """A read-only uint8 view: one array type, so the kernels compile once for every input kind."""
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.uint8:
            raise ValueError(f"buffer array must be uint8, got {buf.dtype}")
        data = np.ascontiguousarray(buf).reshape(-1).view()
        data.flags.writeable = False
        return data
    try:
        view = memoryview(buf).cast("B")
    except TypeError as err:
        raise ValueError(f"expected a bytes-like buffer, got {type(buf).__name__}: {err}") from None
    return np.frombuffer(view.toreadonly(), dtype=np.uint8)


def decode_records(buf):
    """Decode a buffer of RecordIO-protobuf records into CSR arrays.

    Sparse records (``features["values"]`` with keys and a shape) and dense records (values only;
    keys become ``0..len-1`` and the shape, if absent, is the number of values) are both read.
    Unknown fields are skipped as protobuf prescribes, feature-map keys other than ``"values"`` are
    ignored, and a final record may omit its padding.

    Parameters
    ----------
    buf : bytes, bytearray, memoryview or numpy.ndarray of uint8
        Whole records, as written by :func:`encode_csr` or the SageMaker SDK.

    Returns
    -------
    SparseRecords
        ``indptr``, ``indices``, ``values``, ``labels`` and ``shape`` of the records.

    Raises
    ------
    ValueError
        On a bad magic number, a truncated record, malformed protobuf, a tensor that is not
        Float32, a record without ``features["values"]``, keys outside the shape, a label that is
        not a single value, or records that disagree on the feature dimension.
    """
    data = _as_bytes(buf)
    err, offset, n_rec = _count_records(data)
    if err == _E_MAGIC:
        raise ValueError(f"not RecordIO: bad magic number at byte {offset} (record {n_rec})")
    if err == _E_TRUNCATED:
        raise ValueError(f"truncated RecordIO: record {n_rec} at byte {offset} is incomplete")
    err, rec, spans, nvals, dense, dims, has_label = _scan(data, n_rec)
    if err != _OK:
        raise ValueError(f"record {rec}: {_DECODE_ERRORS[err]}")
    if n_rec and (dims != dims[0]).any():
        r = int(np.argmax(dims != dims[0]))
        raise ValueError(f"records disagree on the feature dimension: record 0 has {dims[0]}, "
                         f"record {r} has {dims[r]}")
    indptr = np.zeros(n_rec + 1, np.int64)
    np.cumsum(nvals, out=indptr[1:])
    err, rec, vals, keys, labels = _fill(data, spans, indptr, dense, dims, has_label)
    if err != _OK:
        raise ValueError(f"record {rec}: {_DECODE_ERRORS[err]}")
    return SparseRecords(
        indptr=indptr,
        indices=keys,
        values=vals.view(np.float32),
        labels=labels.view(np.float32) if has_label.any() else None,
        shape=int(dims[0]) if n_rec else 0,
    )
