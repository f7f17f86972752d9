"""prepare's scratch files: bucketed and whole Arrow IPC files, local and on S3."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pyarrow as pa
import pytest

from fmprep import partio


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "ckey": rng.integers(0, 2**63, n, dtype=np.uint64),
        "customer_id": pd.array([f"C{i % 7:08d}" for i in range(n)], dtype="str"),
        "star_rating": rng.integers(1, 6, n).astype("float32"),
        "review_date": pd.to_datetime(rng.integers(15000, 17000, n), unit="D").astype(
            "datetime64[ms]"),
    })


@pytest.mark.parametrize("remote", [False, True])
def test_buckets_round_trip_with_empty_buckets(tmp_path, remote, request):
    base = "s3://fmprep-test/scratch" if remote else str(tmp_path)
    if remote:
        request.getfixturevalue("s3")
    parts = [frame(50, seed=1), frame(30, seed=2)]
    # Bucket 1 receives no row from either part; bucket 3 only from the second.
    buckets = [np.array([0, 2] * 25), np.array([0, 2, 3] * 10)]
    urls = [f"{base}/part-{i}{partio.SCRATCH_SUFFIX}" for i in range(2)]
    counts = [partio.write_buckets(df, b, 4, url) for df, b, url in zip(parts, buckets, urls)]
    assert counts == [[25, 0, 25, 0], [10, 0, 10, 10]]
    for j in range(4):
        want = pd.concat([df[b == j] for df, b in zip(parts, buckets)], ignore_index=True)
        got = partio.read_bucket(urls, j)
        pdt.assert_frame_equal(got, want, check_dtype=True)


def test_scratch_part_round_trip_and_column_selection(tmp_path):
    df = frame(40)
    url = str(tmp_path / f"x{partio.SCRATCH_SUFFIX}")
    assert partio.write_scratch_part(df, url) == 40
    pdt.assert_frame_equal(partio.read_scratch_part(url), df)
    pdt.assert_frame_equal(partio.read_scratch_part(url, ["star_rating", "ckey"]),
                           df[["star_rating", "ckey"]])
    empty = df.iloc[:0]
    assert partio.write_scratch_part(empty, url) == 0
    pdt.assert_frame_equal(partio.read_scratch_part(url), empty)


def test_scratch_files_are_compressed_on_remote_storage_only(tmp_path, s3):
    df = frame(5000)  # customer_id repeats: LZ4 shrinks it
    local = str(tmp_path / f"x{partio.SCRATCH_SUFFIX}")
    remote = f"s3://fmprep-test/x{partio.SCRATCH_SUFFIX}"
    partio.write_scratch_part(df, local)
    partio.write_scratch_part(df, remote)
    assert s3.size(remote.removeprefix("s3://")) < 0.8 * (tmp_path / local).stat().st_size
    pdt.assert_frame_equal(partio.read_scratch_part(remote), df)


@pytest.mark.parametrize("remote", [False, True])
def test_bucketed_parquet_round_trip_with_empty_buckets(tmp_path, remote, request):
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = "s3://fmprep-test/parts" if remote else str(tmp_path)
    if remote:
        request.getfixturevalue("s3")
    blocks = [pa.Table.from_pandas(frame(50, seed=1), preserve_index=False),
              pa.Table.from_pandas(frame(30, seed=2), preserve_index=False)]
    buckets = [np.array([2, 0] * 25), np.array([0, 2, 3] * 10)]  # bucket 1: no row
    groups = partio.bucket_groups(blocks, buckets, 4)
    assert [g.num_rows for g in groups] == [35, 0, 35, 10]
    url = f"{base}/part-0.parquet"
    assert partio.write_bucketed_parquet(groups, url, {"compression": "none"}) == 80
    if not remote:
        assert pq.ParquetFile(url).num_row_groups == 4  # row group j is bucket j, empty or not
    for j in range(4):
        # Rows of a bucket keep their order: first block's, then the second's.
        want = pd.concat([b.to_pandas()[k == j] for b, k in zip(blocks, buckets)],
                         ignore_index=True)
        got = partio.read_parquet_bucket([url, url], j)
        pdt.assert_frame_equal(got, pd.concat([want, want], ignore_index=True),
                               check_dtype=True)
    assert list(partio.read_parquet_bucket([url], 3, ["star_rating"]).columns) == ["star_rating"]


def test_bucket_reads_given_the_footers_equal_reads_that_parse_them(tmp_path):
    table = pa.table({"k": np.arange(40, dtype=np.int64), "s": [f"r{i}" for i in range(40)]})
    buckets = [table.slice(0, 0), table.slice(0, 15), table.slice(15, 25)]
    urls = []
    for i in range(2):
        url = str(tmp_path / f"part-{i}.parquet")
        partio.write_bucketed_parquet(buckets, url, {"compression": "none"})
        urls.append(url)
    footers = partio.parquet_footers(urls)
    assert [f.num_row_groups for f in footers] == [3, 3]
    for j in range(3):
        assert partio.read_parquet_bucket(urls, j, arrow=True, footers=footers).equals(
            partio.read_parquet_bucket(urls, j, arrow=True))
