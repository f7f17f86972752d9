"""fmprep.recordio against the SageMaker SDK v2, the format's reference writer and reader."""

import io
import os
import struct

import numpy as np
import pytest
import scipy.sparse

from fmprep import recordio
from fmprep.recordio import MAGIC, decode_records, encode_csr, encode_fm_rows

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sdk = pytest.importorskip("sagemaker.amazon.common")

# Column indices whose varints take 1..9 bytes, each at the edge of a length.
BOUNDARY_KEYS = [0, 1, 127, 128, 2**14 - 1, 2**14, 2**21, 2**28 - 1, 2**35, 2**42, 2**49,
                 2**56 - 1, 2**56, 2**62, 2**63 - 2]
N_COLS_CHOICES = [1, 2, 128, 129, 2**14 + 1, 60_000, 2**21 + 3, 2**35, 2**49 + 1, 2**63 - 1]


# --- helpers -----------------------------------------------------------------------------------

def sdk_sparse(indptr, indices, values, labels, n_cols):
    """What the SDK writes for the float32 CSR matrix built from these arrays."""
    matrix = scipy.sparse.csr_matrix(
        (np.asarray(values), np.asarray(indices), np.asarray(indptr)),
        shape=(len(indptr) - 1, n_cols), dtype=np.float32)
    f = io.BytesIO()
    sdk.write_spmatrix_to_sparse_tensor(
        f, matrix, None if labels is None else np.asarray(labels, np.float32))
    return f.getvalue()


def sdk_dense(array, labels=None):
    f = io.BytesIO()
    sdk.write_numpy_to_dense_tensor(f, array, labels)
    return f.getvalue()


def random_values(rng, n):
    """float32 values mixing ordinary, negative, zero, -0.0, denormal and extreme magnitudes."""
    pool = np.array([0.0, -0.0, 1.0, -1.5, 1e-45, -1e-40, 1.17e-38, 3.4e38, -3.4e38, 5.0],
                    np.float32)
    values = rng.standard_normal(n).astype(np.float32) * np.float32(10) ** rng.integers(-3, 4, n)
    pick = rng.random(n) < 0.3
    values[pick] = rng.choice(pool, int(pick.sum()))
    return values.astype(np.float32)


def random_csr(rng, n_rows, n_cols, max_nnz):
    """Sorted, unique column indices; some rows empty; keys near varint-length edges."""
    special = [k for k in BOUNDARY_KEYS if k < n_cols] + [n_cols - 1]
    rows = []
    for _ in range(n_rows):
        k = 0 if rng.random() < 0.2 else int(rng.integers(1, max_nnz + 1))
        cols = rng.integers(0, n_cols, size=k, dtype=np.int64, endpoint=False)
        cols = np.concatenate([cols, rng.choice(special, size=min(k, 2))]).astype(np.int64)
        rows.append(np.unique(cols))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows + [np.zeros(0, np.int64)])
    return indptr, indices, random_values(rng, indices.size)


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number, wire, body):
    """A protobuf field: tag, then a length prefix for wire type 2."""
    return varint(number << 3 | wire) + (varint(len(body)) if wire == 2 else b"") + body


def frame(payload, pad=True):
    padding = b"\0" * (-len(payload) % 4) if pad else b""
    return struct.pack("<II", MAGIC, len(payload)) + payload + padding


def entry(tensor_body, key=b"values", value_field=2):
    """A map entry {key, Value{<value_field>: tensor}}."""
    return field(1, 2, key) + field(2, 2, field(value_field, 2, tensor_body))


def f32_tensor(values=None, keys=None, shape=None):
    body = b""
    if values is not None:
        body += field(1, 2, np.asarray(values, "<f4").tobytes())
    if keys is not None:
        body += field(2, 2, b"".join(varint(k) for k in keys))
    if shape is not None:
        body += field(3, 2, b"".join(varint(s) for s in shape))
    return body


def assert_same_csr(got, indptr, indices, values, labels, n_cols):
    np.testing.assert_array_equal(got.indptr, indptr)
    np.testing.assert_array_equal(got.indices, indices)
    # Bitwise, so -0.0 and denormals count.
    np.testing.assert_array_equal(got.values.view(np.uint32),
                                  np.asarray(values, np.float32).view(np.uint32))
    if labels is None or len(indptr) == 1:
        assert got.labels is None
    else:
        np.testing.assert_array_equal(got.labels, np.asarray(labels, np.float32))
    assert got.shape == (n_cols if len(indptr) > 1 else 0)  # no records state no dimension
    assert got.indptr.dtype == np.int64 and got.indices.dtype == np.int64
    assert got.values.dtype == np.float32


def assert_sdk_reads(buf, indptr, indices, values, labels, n_cols):
    records = sdk.read_records(io.BytesIO(bytes(buf)))
    assert len(records) == len(indptr) - 1
    for i, record in enumerate(records):
        tensor = record.features["values"].float32_tensor
        a, b = indptr[i], indptr[i + 1]
        assert list(tensor.keys) == indices[a:b].tolist()
        np.testing.assert_array_equal(np.array(tensor.values, np.float32), values[a:b])
        assert list(tensor.shape) == [n_cols]
        if labels is None:
            assert "values" not in record.label
        else:
            assert list(record.label["values"].float32_tensor.values) == [labels[i]]


# --- encoding: byte identity with the SDK ------------------------------------------------------

def test_empty_row_and_explicit_zero_are_written_like_the_sdk():
    # Row 0 is empty: the SDK leaves empty packed fields out and keeps only the shape.
    # Row 1 stores an explicit 0.0: getrow() keeps it, so the SDK writes it.
    indptr, indices, values = [0, 0, 2], [1, 3], np.array([0.0, 2.0], np.float32)
    expected = sdk_sparse(indptr, indices, values, [1.0, 2.0], 5)
    assert expected[:28].hex(" ") == (
        "0a 23 d7 ce 25 00 00 00 0a 0f 0a 06 76 61 6c 75 65 73 12 05 12 03 1a 01 05 12 12 0a")
    buf = encode_csr(indptr, indices, values, [1.0, 2.0], 5)
    assert buf.dtype == np.uint8
    assert buf.tobytes() == expected
    got = decode_records(buf)
    assert_same_csr(got, indptr, indices, values, [1.0, 2.0], 5)


@pytest.mark.parametrize("with_labels", [True, False])
def test_random_csr_matches_sdk_and_round_trips(with_labels):
    rng = np.random.default_rng(20240 + with_labels)
    for trial in range(60):
        n_rows = int(rng.integers(0, 12))
        n_cols = int(rng.choice(N_COLS_CHOICES))
        indptr, indices, values = random_csr(rng, n_rows, n_cols, max_nnz=int(rng.integers(1, 40)))
        labels = random_values(rng, n_rows) if with_labels else None
        expected = sdk_sparse(indptr, indices, values, labels, n_cols)
        buf = encode_csr(indptr, indices, values, labels, n_cols)
        assert buf.tobytes() == expected, f"trial {trial}: {n_rows} rows, n_cols={n_cols}"
        assert_sdk_reads(buf, indptr, indices, values, labels, n_cols)
        assert_same_csr(decode_records(expected), indptr, indices, values, labels, n_cols)


@pytest.mark.parametrize("key", BOUNDARY_KEYS)
def test_every_varint_length_matches_sdk(key):
    for n_cols in (key + 1, 2**63 - 1):
        expected = sdk_sparse([0, 1], [key], [1.5], [4.0], n_cols)
        assert encode_csr([0, 1], [key], [1.5], [4.0], n_cols).tobytes() == expected


def test_float64_and_int32_inputs_are_cast_like_the_sdk():
    rng = np.random.default_rng(3)
    indptr, indices, values = random_csr(rng, 20, 1000, 8)
    values64 = rng.standard_normal(values.size) * 1e5  # needs rounding to float32
    labels64 = rng.standard_normal(20)
    expected = sdk_sparse(indptr, indices, values64, labels64, 1000)
    got = encode_csr(indptr.astype(np.int32), indices.astype(np.int32), values64, labels64, 1000)
    assert got.tobytes() == expected


def test_no_rows_gives_an_empty_buffer():
    assert encode_csr([0], [], [], [], 10).size == 0
    assert encode_fm_rows([], [], [], [], 10).size == 0
    got = decode_records(b"")
    assert got.indptr.tolist() == [0] and got.indices.size == 0
    assert got.labels is None and got.shape == 0


def fm_triples(user, item, days, feature_dim):
    n = len(user)
    indices = np.stack([user, item, np.full(n, feature_dim - 1)], axis=1).ravel()
    values = np.stack([np.ones(n), np.ones(n), days], axis=1).ravel().astype(np.float32)
    return np.arange(0, 3 * n + 1, 3), indices, values


@pytest.mark.parametrize("feature_dim", [4, 130, 20_000, 3_000_000, 2**30, 2**40 + 7])
def test_fm_rows_match_sdk(feature_dim):
    rng = np.random.default_rng(feature_dim % 1000)
    n = 300
    n_users = max(1, feature_dim // 3)
    user = rng.integers(0, n_users, n)
    item = rng.integers(n_users, feature_dim - 1, n)
    days = rng.integers(0, 4000, n).astype(np.float64)
    days[::3] = 0.0  # an explicit zero the SDK still writes
    labels = rng.integers(1, 6, n).astype(np.float32)
    indptr, indices, values = fm_triples(user, item, days, feature_dim)
    expected = sdk_sparse(indptr, indices, values, labels, feature_dim)
    assert encode_fm_rows(user, item, days, labels, feature_dim).tobytes() == expected
    unlabeled = sdk_sparse(indptr, indices, values, None, feature_dim)
    assert encode_fm_rows(user, item, days, None, feature_dim).tobytes() == unlabeled
    assert_same_csr(decode_records(expected), indptr, indices, values, labels, feature_dim)


# --- encoding: argument errors -----------------------------------------------------------------

@pytest.mark.parametrize("args, match", [
    (([0, 1], [5], [1.0], None, 5), r"row 0: column index 5 is outside \[0, n_cols=5\)"),
    (([0, 1], [-1], [1.0], None, 5), r"column index -1 is outside"),
    (([0, 2], [3, 1], [1.0, 1.0], None, 5), r"row 0: .*strictly ascending"),
    (([0, 2], [1, 1], [1.0, 1.0], None, 5), r"strictly ascending"),
    (([0, 2, 1, 2], [1, 2], [1.0, 1.0], None, 5), r"indptr decreases at row 1"),
    (([1, 2], [1, 2], [1.0, 1.0], None, 5), r"indptr must start with 0"),
    (([0, 1], [1, 2], [1.0, 1.0], None, 5), r"indptr ends at 1 but there are 2 indices"),
    (([0, 1], [1], [1.0, 2.0], None, 5), r"values has 2 entries, expected 1"),
    (([0, 1], [1], [1.0], [1.0, 2.0], 5), r"labels has 2 entries, expected 1"),
    (([0, 1], [1.0], [1.0], None, 5), r"indices must hold integers"),
    (([0, 1], [1], [1.0], None, -1), r"n_cols must be in"),
    (([0, 1], [1], ["a"], None, 5), r"values must hold real numbers"),
])
def test_encode_csr_rejects_bad_arrays(args, match):
    with pytest.raises(ValueError, match=match):
        encode_csr(*args)


@pytest.mark.parametrize("user, item, match", [
    ([0, 5], [3, 2], r"row 1: need 0 <= user < item < feature_dim - 1 = 9, got user=5, item=2"),
    ([0], [9], r"got user=0, item=9"),
    ([-1], [3], r"got user=-1"),
])
def test_encode_fm_rows_rejects_a_broken_layout(user, item, match):
    with pytest.raises(ValueError, match=match):
        encode_fm_rows(user, item, [0.0] * len(user), [1.0] * len(user), 10)


def test_encode_fm_rows_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="days has 1 entries, expected 2"):
        encode_fm_rows([0, 1], [2, 3], [0.0], [1.0, 2.0], 10)


def test_payload_limit_is_enforced(monkeypatch):
    # A real 2**29-byte row needs ~1 GB of input; a lowered limit exercises the same check.
    monkeypatch.setattr(recordio, "MAX_PAYLOAD", 64)
    encode_csr([0, 3], [0, 1, 2], [1.0, 1.0, 1.0], None, 10)
    with pytest.raises(ValueError, match=r"row 1: record payload of \d+ bytes reaches .* 64 bytes"):
        encode_csr([0, 1, 11], np.r_[0, 0:10], np.ones(11), None, 10)


# --- decoding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [None, np.array([1.0, -2.0, 0.0], np.float32)])
def test_decode_dense_records_from_sdk(labels):
    array = np.array([[1.0, 0.0, -3.5, 2.0], [0.0, 0.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]],
                     np.float32)
    got = decode_records(sdk_dense(array, labels))
    np.testing.assert_array_equal(got.indptr, [0, 4, 8, 12])
    np.testing.assert_array_equal(got.indices, np.tile(np.arange(4), 3))
    np.testing.assert_array_equal(got.values, array.ravel())
    assert got.shape == 4
    if labels is None:
        assert got.labels is None
    else:
        np.testing.assert_array_equal(got.labels, labels)


def test_decode_dense_with_matching_shape_and_zero_width():
    payload = field(1, 2, entry(f32_tensor(values=[1.0, 2.0], shape=[2])))
    assert decode_records(frame(payload)).shape == 2
    got = decode_records(sdk_dense(np.zeros((2, 0), np.float32)))
    assert got.indptr.tolist() == [0, 0, 0] and got.shape == 0


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array", "readonly array"])
def test_decode_accepts_any_byte_buffer(kind):
    raw = sdk_sparse([0, 2, 3], [1, 4, 0], [1.0, 2.0, 3.0], [7.0, 8.0], 6)
    buf = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw),
           "array": np.frombuffer(raw, np.uint8).copy(),
           "readonly array": np.frombuffer(raw, np.uint8)}[kind]
    assert_same_csr(decode_records(buf), [0, 2, 3], [1, 4, 0], [1.0, 2.0, 3.0], [7.0, 8.0], 6)


def test_decode_marks_missing_labels_with_nan():
    labeled = sdk_sparse([0, 1], [2], [1.0], [3.0], 5)
    unlabeled = sdk_sparse([0, 1], [4], [2.0], None, 5)
    got = decode_records(labeled + unlabeled + labeled)
    assert got.labels[0] == 3.0 and np.isnan(got.labels[1]) and got.labels[2] == 3.0


def test_decode_skips_unknown_fields_and_other_keys():
    tensor = (field(9, 0, varint(300))                                  # unknown varint
              + field(1, 5, struct.pack("<f", 1.5))                     # unpacked value
              + field(2, 0, varint(2**40))                              # unpacked key
              + field(10, 1, b"\x01" * 8)                               # unknown fixed64
              + f32_tensor(values=[2.5], keys=[2**41], shape=[2**42])  # packed, merged after
              + field(11, 5, b"\x02" * 4))                              # unknown fixed32
    payload = (field(3, 2, b"uid-1")                                    # Record.uid
               + field(1, 2, entry(f32_tensor(values=[9.0], keys=[0], shape=[7]), key=b"other"))
               + field(1, 2, entry(tensor))
               + field(2, 2, entry(f32_tensor(values=[4.0])))
               + field(20, 0, varint(1)))
    buf = frame(payload)
    record = sdk.read_records(io.BytesIO(buf))[0]  # the SDK's protobuf parser agrees
    assert list(record.features["values"].float32_tensor.keys) == [2**40, 2**41]
    assert_same_csr(decode_records(buf), [0, 2], [2**40, 2**41], [1.5, 2.5], [4.0], 2**42)


def test_decode_last_entry_wins_and_missing_padding_is_tolerated():
    payload = (field(1, 2, entry(f32_tensor(values=[1.0], keys=[1], shape=[300])))
               + field(1, 2, entry(f32_tensor(values=[2.0], keys=[2], shape=[3]))))
    assert len(payload) % 4 != 0
    got = decode_records(frame(payload) + frame(payload, pad=False))
    assert got.indices.tolist() == [2, 2] and got.values.tolist() == [2.0, 2.0]


def float64_labels():
    return sdk_dense(np.ones((1, 2), np.float32), np.ones(1, np.float64))


@pytest.mark.parametrize("make_buf, match", [
    (lambda: b"\x00" * 8, r"bad magic number at byte 0 \(record 0\)"),
    (lambda: sdk_dense(np.ones((2, 2), np.float32)) + b"\x0a\x23\xd7", r"truncated.*record 2"),
    (lambda: sdk_dense(np.ones((2, 2), np.float32))[:-9], r"truncated RecordIO: record 1"),
    (lambda: sdk_dense(np.ones((1, 2), np.float64)), r"record 0: .*only Float32 tensors"),
    (lambda: sdk_dense(np.ones((1, 2), np.int64)), r"only Float32 tensors"),
    (float64_labels, r"only Float32 tensors"),
    (lambda: frame(field(1, 2, entry(b"", value_field=9))), r"only Float32 tensors"),
    (lambda: frame(b"\x0b\x0c"), r"unsupported protobuf wire type"),
    (lambda: frame(b"\x0a\x7f\x00"), r"malformed protobuf"),
    (lambda: frame(b"\x08" + b"\xff" * 11), r"malformed protobuf"),
    (lambda: frame(b"\x00\x00"), r"malformed protobuf"),
    (lambda: frame(field(2, 2, entry(f32_tensor(values=[1.0])))), r"no features\[\"values\"\]"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0, 2.0], keys=[1], shape=[5])))),
     r"different numbers of keys and values"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0], keys=[1])))), r"no shape"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0], keys=[5], shape=[5])))),
     r"key outside \[0, shape\)"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0], keys=[2**63], shape=[5])))),
     r"above 2\*\*63 - 1"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0, 2.0], shape=[3])))),
     r"dense tensor whose shape differs"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0], shape=[2, 2])))),
     r"more than one dimension"),
    (lambda: frame(field(1, 2, entry(field(1, 2, b"\0\0\0")))), r"malformed protobuf"),
    (lambda: frame(field(1, 2, entry(f32_tensor(values=[1.0], shape=[1])))
                   + field(2, 2, entry(f32_tensor(values=[1.0, 2.0])))), r"not a single value"),
    (lambda: sdk_sparse([0, 1], [1], [1.0], None, 5) + sdk_sparse([0, 1], [1], [1.0], None, 6),
     r"records disagree on the feature dimension: record 0 has 5, record 1 has 6"),
    (lambda: np.zeros(8, np.int32), r"buffer array must be uint8"),
    (lambda: "text", r"expected a bytes-like buffer"),
])
def test_decode_rejects_malformed_input(make_buf, match):
    with pytest.raises(ValueError, match=match):
        decode_records(make_buf())


def test_decode_survives_corruption():
    """Random bit flips, truncations and garbage payloads: a result or a ValueError, never a crash
    or a hang."""
    rng = np.random.default_rng(7)
    indptr, indices, values = random_csr(rng, 6, 2**40, 5)
    good = encode_csr(indptr, indices, values, random_values(rng, 6), 2**40)
    outcomes = {"ok": 0, "error": 0}
    for trial in range(600):
        buf = good.copy()
        if trial % 3 == 0:
            flips = rng.integers(0, buf.size, int(rng.integers(1, 4)))
            buf[flips] ^= rng.integers(1, 256, flips.size).astype(np.uint8)
        elif trial % 3 == 1:
            buf = buf[: int(rng.integers(0, buf.size))]
        else:
            buf = np.frombuffer(frame(rng.bytes(int(rng.integers(0, 40)))), np.uint8)
        try:
            got = decode_records(buf)
        except ValueError as err:
            assert "\n" not in str(err)
            outcomes["error"] += 1
        else:
            assert got.indptr[-1] == got.indices.size == got.values.size
            assert (got.indices >= 0).all() and (got.indices < max(got.shape, 1)).all()
            outcomes["ok"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0
