"""make data's semantics, checked record by record against an independent computation."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sagemaker.amazon.common import read_records

from fmprep import pipeline, prepare
from fmprep.config import PrepSettings
from fmprep.errors import FmprepError
from fmprep.keys import customer_buckets
from reference import expected_prep, parse_tsv


def decode_channel(output, manifest, channel):
    """Every record of a channel through the SDK's reader, as sorted (user, item, days, label)."""
    rows = []
    feature_dim = manifest["feature_dim"]
    for shard in manifest["channels"][channel]["shards"]:
        with open(os.path.join(output, shard["file"]), "rb") as f:
            records = read_records(io.BytesIO(f.read()))
        assert len(records) == shard["rows"]
        for r in records:
            t = r.features["values"].float32_tensor
            assert list(t.shape) == [feature_dim]
            keys, values = list(t.keys), list(t.values)
            assert keys[2] == feature_dim - 1 and values[:2] == [1.0, 1.0]
            assert keys[0] < manifest["num_users"] <= keys[1] < feature_dim - 1
            rows.append((keys[0], keys[1], values[2], r.label["values"].float32_tensor.values[0]))
    out = np.array(rows, dtype=float)
    return out[np.lexsort(out.T[::-1])]


def run(tmp_path, source, name="run", **settings):
    work, output = tmp_path / name / "work", tmp_path / name / "output"
    manifest = pipeline.run_data(source, str(work), str(output), PrepSettings(**settings))
    return manifest, str(work), str(output)


def test_records_match_independent_computation(tmp_path, sample_file):
    source, summary = sample_file
    # DAYS_SCALE=raw: the reference notebook's days, for exact parity.
    manifest, work, output = run(tmp_path, source, train_shards=4, days_scale="raw")
    want = expected_prep(parse_tsv(source))

    for channel in ("train", "test"):
        got = decode_channel(output, manifest, channel)
        assert got.shape == want[channel].shape
        np.testing.assert_array_equal(got, want[channel])
    assert manifest["num_users"] == len(want["users"])
    assert manifest["num_items"] == len(want["items"])
    assert manifest["feature_dim"] == len(want["users"]) + len(want["items"]) + 1
    for key, value in want["counts"].items():
        found = manifest["ingest"][key] if key == "rows_valid" else manifest["counts"][key]
        assert found == value, key
    # Nothing silently lost: every data line is valid or counted as rejected.
    assert manifest["ingest"]["rows_read"] == summary["rows"]
    assert manifest["ingest"]["rows_rejected"] == sum(summary["bad"].values())

    users = pd.read_parquet(os.path.join(work, "users"))
    assert dict(zip(users["customer_id"], users["user"])) == want["users"]
    items = pd.read_parquet(os.path.join(work, "items"))
    assert dict(zip(items["product_id"], items["item"])) == want["items"]
    assert items["product_title"].str.len().gt(0).all()


def test_one_partition_and_many_give_identical_shards(tmp_path, sample_file):
    source, _ = sample_file
    one, _, out_one = run(tmp_path, source, name="one", part_size="1GB")
    many, work_many, out_many = run(tmp_path, source, name="many", part_size="200kB")
    ingested = json.load(open(os.path.join(work_many, "reviews", "_manifest.json")))
    assert len(ingested["parts"]) > 5 and ingested["customer_buckets"] > 5
    # Row group j of every part holds exactly the customers of bucket j: what lets prepare
    # read a bucket's rows without a shuffle.
    n = ingested["customer_buckets"]
    for name in ingested["parts"]:
        part = pq.ParquetFile(os.path.join(work_many, "reviews", name))
        assert part.num_row_groups == n
        for j in range(n):
            ids = part.read_row_group(j, columns=["customer_id"]).column("customer_id")
            assert (customer_buckets(ids, n) == j).all()
    for channel in ("train", "test"):
        shards = one["channels"][channel]["shards"]
        assert [s["file"] for s in shards] == [s["file"] for s in many["channels"][channel]["shards"]]
        for s in shards:
            a = open(os.path.join(out_one, s["file"]), "rb").read()
            b = open(os.path.join(out_many, s["file"]), "rb").read()
            assert a == b, s["file"]


def test_kcore_leaves_every_customer_and_product_above_minimum(tmp_path, sample_file):
    source, _ = sample_file
    manifest, work, output = run(tmp_path, source, filter_mode="kcore", min_customer_ratings=5,
                                 min_product_ratings=10)
    rows = np.concatenate([decode_channel(output, manifest, c) for c in ("train", "test")])
    assert manifest["counts"]["filter_iterations"] > 1
    assert np.unique(rows[:, 0], return_counts=True)[1].min() >= 5
    assert np.unique(rows[:, 1], return_counts=True)[1].min() >= 10
    # The ratings distributions WORK keeps for the report are those before any filter round:
    # the same as a single-pass run's, and they add up to the deduplicated rows.
    single, single_work, _ = run(tmp_path, source, name="single", min_customer_ratings=5,
                                 min_product_ratings=10)
    dists = [json.load(open(os.path.join(w, "manifest.json")))["distributions"]
             for w in (work, single_work)]
    assert dists[0] == dists[1]
    deduped = single["counts"]["rows_in"] - single["counts"]["duplicates_removed"]
    for what in ("customers", "products"):
        assert sum(k * n for k, n in dists[0][what]) == deduped


def test_days_scale_years_divides_days(tmp_path, sample_file):
    source, _ = sample_file
    raw, _, out_raw = run(tmp_path, source, name="raw", days_scale="raw")
    years, _, out_years = run(tmp_path, source, name="years", days_scale="years")
    a = decode_channel(out_raw, raw, "train")
    b = decode_channel(out_years, years, "train")
    np.testing.assert_allclose(b[:, 2], (a[:, 2] / 365.25).astype(np.float32), rtol=1e-6)
    assert years["days_since_first"]["divisor"] == 365.25


def test_rerun_skips_finished_stages_and_settings_change_reruns(tmp_path, sample_file, caplog):
    source, _ = sample_file
    first, work, output = run(tmp_path, source)
    stamp = os.path.getmtime(os.path.join(output, "manifest.json"))
    caplog.set_level("INFO", logger="fmprep")
    again, _, _ = run(tmp_path, source)
    assert "ingest: up to date" in caplog.text and "encode: up to date" in caplog.text
    assert os.path.getmtime(os.path.join(output, "manifest.json")) == stamp
    caplog.clear()
    changed, _, _ = run(tmp_path, source, min_customer_ratings=3)
    assert "ingest: up to date" in caplog.text and "prepare: up to date" not in caplog.text
    assert changed["num_users"] > first["num_users"]


def test_prepare_refuses_reviews_of_an_earlier_layout(tmp_path, sample_file):
    source, _ = sample_file
    _, work, _ = run(tmp_path, source)
    path = os.path.join(work, "reviews", "_manifest.json")
    ingested = json.load(open(path))
    del ingested["customer_buckets"]  # as fmprep wrote it before parts were bucketed
    json.dump(ingested, open(path, "w"))
    with pytest.raises(FmprepError, match="written by an earlier fmprep; run make data again"):
        prepare.prepare(work, PrepSettings())


def test_shards_never_exceed_the_row_bound(tmp_path, sample_file, monkeypatch):
    # A shard is sorted whole by one task: more shards than asked once a channel outgrows
    # TRAIN_SHARDS × MAX_SHARD_ROWS, so that a task's memory does not grow with the data.
    bound = prepare.MAX_SHARD_ROWS
    assert prepare.capped_shards(PrepSettings(train_shards=2, test_shards=1),
                                 2 * bound + 1, bound + 1) == (3, 2)
    assert prepare.capped_shards(PrepSettings(train_shards=10, test_shards=1),
                                 2 * bound + 1, 7) == (10, 1)
    source, _ = sample_file
    monkeypatch.setattr(prepare, "MAX_SHARD_ROWS", 1000)
    manifest, _, output = run(tmp_path, source, train_shards=2, test_shards=1)
    train, test = (manifest["channels"][c] for c in ("train", "test"))
    assert len(train["shards"]) == -(-train["rows"] // 1000) > 2
    assert max(s["rows"] for s in train["shards"] + test["shards"]) <= 1000
    decoded = [decode_channel(output, manifest, c) for c in ("train", "test")]
    assert [len(d) for d in decoded] == [train["rows"], test["rows"]]
