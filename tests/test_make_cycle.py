"""The user's path through make: data → train → deploy → predict → undeploy (local backend)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def make(*args, timeout=300):
    # STAMP= : the suite already runs inside the environment make would create.
    done = subprocess.run(["make", "-s", "-C", str(ROOT), *args, "STAMP=", f"PY={sys.executable}"],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"make {args[0]} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


def test_make_data_train_deploy_predict_undeploy(tmp_path, sample_file):
    source, _ = sample_file
    paths = [f"SOURCE={source}", f"WORK={tmp_path / 'work'}", f"OUTPUT={tmp_path / 'out'}"]
    make("data", *paths, "DAYS_SCALE=years", "TRAIN_SHARDS=2")
    make("train", *paths, "EPOCHS=2", "NUM_FACTORS=8")
    metrics = json.loads((tmp_path / "out" / "model" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and all("test:rmse" in e for e in metrics["epochs"])

    make("deploy", *paths, "PORT=0")
    endpoint = json.loads((tmp_path / "out" / "endpoint.json").read_text())
    try:
        with urllib.request.urlopen(endpoint["url"] + "/ping", timeout=10) as reply:
            assert reply.status == 200
        users = pd.read_parquet(tmp_path / "work" / "users")
        items = pd.read_parquet(tmp_path / "work" / "items")
        customer = users.sort_values("user")["customer_id"].iloc[0]
        product = items.sort_values("item")["product_id"].iloc[0]
        out = make("predict", *paths, f"CUSTOMER={customer}", f"PRODUCT={product}",
                   "DATE=2015-08-31").stdout
        match = re.search(r"score (-?[0-9.]+)", out)
        assert match, out
        assert 0.0 < float(match.group(1)) < 6.0
    finally:
        make("undeploy", *paths)
    assert not (tmp_path / "out" / "endpoint.json").exists()
    assert not _alive(endpoint["pid"])


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_make_train_defaults_then_recommend(tmp_path, sample_file):
    """make data → make train (no settings) → make recommend / CUSTOMER= / evaluate."""
    source, _ = sample_file
    paths = [f"SOURCE={source}", f"WORK={tmp_path / 'work'}", f"OUTPUT={tmp_path / 'out'}"]
    make("data", *paths, "TRAIN_SHARDS=2")
    make("train", *paths)
    assert (tmp_path / "out" / "model" / "ranking" / "model.json").exists()
    out = make("recommend", *paths, "K=5").stdout
    assert "recommendations for" in out
    recs = pd.read_parquet(tmp_path / "out" / "recommendations")
    users = pd.read_parquet(tmp_path / "work" / "users")
    assert set(recs["customer_id"]) == set(users["customer_id"])
    assert (recs.groupby("customer_id").size() == 5).all()
    customer = users.sort_values("user")["customer_id"].iloc[0]
    one = make("recommend", *paths, f"CUSTOMER={customer}", "K=3").stdout
    expect = recs[recs["customer_id"] == customer].sort_values("rank")["product_id"].head(3)
    assert all(p in one for p in expect)
    evaluation = make("evaluate", *paths).stdout
    assert "recommender" in evaluation and "popularity" in evaluation
