"""Time fmprep's RecordIO-protobuf encoder against the SageMaker SDK v2 writer.

Builds fmprep's Factorization Machines layout (1.0 at the user column, 1.0 at the item column,
days_since_first at column feature_dim - 1, label = rating), writes it with
``sagemaker.amazon.common.write_spmatrix_to_sparse_tensor`` and with
:func:`fmprep.recordio.encode_fm_rows`, checks the bytes are identical and prints medians. The SDK
side encodes fewer rows by default (it does ~13 k rows/s); rows/s make the two comparable.

Run: ``.venv/bin/python benchmarks/bench_encoder.py [--rows N] [--sdk-rows N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

import numpy as np
import scipy.sparse

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


def fm_data(n, feature_dim, seed):
    """Random user/item/days/rating columns in fmprep's layout (users first, then items)."""
    rng = np.random.default_rng(seed)
    n_users = feature_dim // 3
    user = rng.integers(0, n_users, n)
    item = rng.integers(n_users, feature_dim - 1, n)
    days = rng.integers(0, 3000, n).astype(np.float64)
    days[rng.random(n) < 0.2] = 0.0  # first reviews: explicit zeros
    ratings = rng.integers(1, 6, n).astype(np.float32)
    return user, item, days, ratings


def sdk_encode(user, item, days, ratings, feature_dim):
    """The reference workflow: a float32 CSR with 3 stored entries per row, then the SDK writer."""
    from sagemaker.amazon.common import write_spmatrix_to_sparse_tensor

    n = user.size
    indices = np.stack([user, item, np.full(n, feature_dim - 1)], axis=1).ravel()
    data = np.stack([np.ones(n), np.ones(n), days], axis=1).ravel()
    indptr = np.arange(0, 3 * n + 1, 3)
    matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, feature_dim),
                                     dtype=np.float32)
    f = io.BytesIO()
    write_spmatrix_to_sparse_tensor(f, matrix, ratings)
    return f.getvalue()


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows encoded by fmprep")
    parser.add_argument("--sdk-rows", type=int, default=100_000,
                        help="rows encoded by the SDK (slow; capped at --rows)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per encoder")
    parser.add_argument("--feature-dim", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sdk_rows = min(args.sdk_rows, args.rows)

    from fmprep.recordio import encode_fm_rows

    user, item, days, ratings = fm_data(args.rows, args.feature_dim, args.seed)

    # The first call compiles the numba kernels (or loads them from the on-disk cache).
    compile_s, _ = timed(encode_fm_rows, user[:10], item[:10], days[:10], ratings[:10],
                         args.feature_dim)

    fm_times, sdk_times = [], []
    for _ in range(args.repeats):
        seconds, buf = timed(encode_fm_rows, user, item, days, ratings, args.feature_dim)
        fm_times.append(seconds)
    for _ in range(args.repeats):
        seconds, expected = timed(sdk_encode, user[:sdk_rows], item[:sdk_rows], days[:sdk_rows],
                                  ratings[:sdk_rows], args.feature_dim)
        sdk_times.append(seconds)

    # Records are independent, so the SDK's bytes must be a prefix of fmprep's.
    identical = buf[: len(expected)].tobytes() == expected

    fm_s, sdk_s = statistics.median(fm_times), statistics.median(sdk_times)
    fm_rate, sdk_rate = args.rows / fm_s, sdk_rows / sdk_s
    print(f"feature_dim={args.feature_dim}  repeats={args.repeats} (medians)  "
          f"bytes/row={buf.size / max(args.rows, 1):.1f}")
    print(f"{'encoder':<8} {'rows':>10} {'seconds':>9} {'rows/s':>12}")
    print(f"{'sdk':<8} {sdk_rows:>10,} {sdk_s:>9.3f} {sdk_rate:>12,.0f}")
    print(f"{'fmprep':<8} {args.rows:>10,} {fm_s:>9.3f} {fm_rate:>12,.0f}")
    print(f"speed ratio (rows/s fmprep / sdk): {fm_rate / sdk_rate:.1f}x")
    print(f"numba compile or cache load (first call): {compile_s:.2f} s")
    print(f"bytes identical on the first {sdk_rows:,} rows: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
