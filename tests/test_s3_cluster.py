"""The prep with source, WORK and OUTPUT on a moto S3 server, on a multi-process Dask cluster."""

from __future__ import annotations

import json
import os

import pytest
from distributed import Client, LocalCluster

from fmprep import pipeline
from fmprep.config import PrepSettings


@pytest.mark.cluster
def test_s3_on_process_cluster_equals_local_threads(tmp_path, s3, sample_file):
    source, _ = sample_file
    settings = PrepSettings(train_shards=4, part_size="500kB")
    local = pipeline.run_data(source, str(tmp_path / "work"), str(tmp_path / "out"), settings)

    s3.put(source, "fmprep-test/raw/reviews_part1.tsv.gz")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit="2GiB") as cluster, \
            Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = pipeline.run_data("s3://fmprep-test/raw/*.tsv.gz", "s3://fmprep-test/work",
                                   "s3://fmprep-test/out", settings)

    assert json.loads(s3.cat("fmprep-test/out/manifest.json")) == remote
    assert remote["feature_dim"] == local["feature_dim"]
    assert remote["counts"] == local["counts"]
    for channel in ("train", "test"):
        shards = local["channels"][channel]["shards"]
        assert [s["file"] for s in remote["channels"][channel]["shards"]] == \
            [s["file"] for s in shards]
        for shard in shards:
            want = open(os.path.join(tmp_path, "out", shard["file"]), "rb").read()
            assert s3.cat(f"fmprep-test/out/{shard['file']}") == want
    # The id maps landed on S3 too.
    assert s3.ls("fmprep-test/work/users") and s3.ls("fmprep-test/work/items")
