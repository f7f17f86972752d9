"""scripts/train_deploy.py with the local backend: train → deploy → predict → undeploy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fmprep import config
from fmprep.config import PrepSettings
from fmprep.model.fm import FMModel
from fmprep.pipeline import run_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_deploy.py"
_spec = importlib.util.spec_from_file_location("train_deploy", SCRIPT)
train_deploy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_deploy)


@pytest.fixture(scope="module")
def prepped(sample_file, tmp_path_factory):
    """OUTPUT and WORK of make data on the 20 k-row sample (2 train shards)."""
    root = tmp_path_factory.mktemp("cli")
    work, output = str(root / "work"), str(root / "output")
    manifest = run_data(sample_file[0], work, output, PrepSettings(train_shards=2,
                                                                   days_scale="years"))
    users = pq.read_table(os.path.join(work, "users")).to_pandas()
    items = pq.read_table(os.path.join(work, "items")).to_pandas()
    return output, work, manifest, users, items


def run(capsys, *argv):
    code = train_deploy.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_runs_as_a_script():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for command in ("train", "deploy", "predict", "undeploy"):
        assert command in out
    assert "examples:" in out


def test_train_deploy_predict_undeploy(prepped, capsys):
    output, work, manifest, users, items = prepped
    code, out, _ = run(capsys, "train", "--output", output, "--epochs", "2",
                       "--num-factors", "8", "--hp", "seed=3", "--hp", "solver=sgd")
    assert code == 0 and "model saved" in out
    model_dir = os.path.join(output, config.LOCAL_MODEL_DIR)
    model = FMModel.load(model_dir)
    assert model.num_factors == 8 and model.feature_dim == manifest["feature_dim"]

    code, out, err = run(capsys, "deploy", "--output", output, "--port", "0")
    assert code == 0, err
    record = json.load(open(os.path.join(output, config.ENDPOINT_RECORD)))
    assert record["backend"] == "local" and record["url"].startswith("http://127.0.0.1:")
    try:
        code, _, err = run(capsys, "deploy", "--output", output, "--port", "0")
        assert code == 2 and "already running" in err

        customer, user = users.iloc[0][["customer_id", "user"]]
        product, item = items.iloc[0][["product_id", "item"]]
        code, out, err = run(capsys, "predict", "--output", output, "--customer", customer,
                             "--product", product, "--date", "2016-01-01")
        assert code == 0, err
        # The expected score: days since the customer's first train/test review, in years.
        rows = pd.concat([pq.read_table(os.path.join(work, ch)).to_pandas()
                          for ch in ("train", "test")])
        first = rows.loc[rows["user"] == user, "review_date"].min()
        days = (np.datetime64("2016-01-01") - np.datetime64(first.date())).astype(int)
        fdim = manifest["feature_dim"]
        expected = model.predict([0, 3], [user, item, fdim - 1],
                                 [1, 1, days / manifest["days_since_first"]["divisor"]])[0]
        # 1,437 days lies inside the days training saw: no clipping, the score is the model's.
        assert f"(raw {expected:.4f})" in out and "clipped" not in out
        assert f"user {user}" in out and f"item {item}" in out

        code, _, err = run(capsys, "predict", "--output", output, "--customer", "no-such-one",
                           "--product", product)
        assert code == 2 and "MIN_CUSTOMER_RATINGS" in err and len(err.splitlines()) == 1
        code, _, err = run(capsys, "predict", "--output", output, "--customer", customer,
                           "--product", "no-such-product")
        assert code == 2 and "MIN_PRODUCT_RATINGS" in err
        code, _, err = run(capsys, "predict", "--output", output, "--customer", customer,
                           "--product", product, "--date", "31/12/2015")
        assert code == 2 and "YYYY-MM-DD" in err
    finally:
        code, out, _ = run(capsys, "undeploy", "--output", output)
    assert code == 0 and "stopped" in out
    assert not os.path.exists(os.path.join(output, config.ENDPOINT_RECORD))
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)
    code, _, err = run(capsys, "undeploy", "--output", output)
    assert code == 2 and "nothing to undeploy" in err
    code, _, err = run(capsys, "predict", "--output", output, "--customer", customer,
                       "--product", product)
    assert code == 2 and "make deploy" in err


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--hp", "num_factor=8"], "num_factors"),
    (["train", "--hp", "epochs"], "NAME=VALUE"),
    (["train", "--epochs", "0"], "epochs"),
    (["train", "--backend", "sagemaker", "--role", "arn:aws:iam::1:role/r"], "OUTPUT=s3://"),
    (["deploy", "--model-dir", "/nonexistent/model", "--port", "0"], "make train"),
])
def test_user_errors_are_one_line_before_any_work(prepped, capsys, argv, fragment):
    output = prepped[0]
    code, _, err = run(capsys, *argv, "--output", output)
    assert code == 2
    assert err.startswith("train_deploy: error:") and fragment in err
    assert len(err.strip().splitlines()) == 1


def test_missing_output_names_make_data(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--output", str(tmp_path / "none"))
    assert code == 2 and "make data" in err


def test_sagemaker_backend_through_the_script(prepped, s3, moto_server, capsys, caplog):
    """The same four commands with --backend sagemaker against moto (OUTPUT copied to S3)."""
    import requests

    output, _, manifest, users, items = prepped
    s3.put(output.rstrip("/") + "/", "fmprep-test/out/", recursive=True)
    remote = "s3://fmprep-test/out"
    common = ["--backend", "sagemaker", "--output", remote, "--region", "us-east-1"]
    role = ["--role", "arn:aws:iam::123456789012:role/fmprep"]

    code, out, err = run(capsys, "train", *common, *role, "--epochs", "1", "--instance-count",
                         "2", "--hp", "seed=1")
    assert code == 0, err
    assert "not sent to SageMaker (local trainer options): seed" in caplog.text
    record = json.loads(s3.cat(f"{remote}/{config.SAGEMAKER_RECORD}"))
    assert record["training_job"]["hyperparameters"]["epochs"] == "1"
    assert "seed" not in record["training_job"]["hyperparameters"]
    assert record["training_job"]["instance_count"] == 2

    code, out, err = run(capsys, "deploy", *common, *role)
    assert code == 0 and "InService" in out, err

    requests.post(f"{moto_server}/moto-api/static/sagemaker/endpoint-results", timeout=10,
                  json={"results": [{"Body": '{"predictions": [{"score": 4.5}]}',
                                     "ContentType": "application/json"}]})
    code, out, err = run(capsys, "predict", *common, "--customer", users.iloc[0]["customer_id"],
                         "--product", items.iloc[0]["product_id"], "--date", "2016-01-01")
    assert code == 0 and out.startswith("score 4.50 (raw 4.5000)"), err

    code, out, err = run(capsys, "undeploy", *common)
    assert code == 0 and out.count("deleted") == 3, err


def test_default_train_then_evaluate(prepped, tmp_path, capsys):
    """make train with no settings (the sampler), then make evaluate on the same model."""
    output, *_ = prepped
    model_dir = str(tmp_path / "model")
    code, out, err = run(capsys, "train", "--output", output, "--model-dir", model_dir)
    assert code == 0, err
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert metrics["solver"] == "mcmc"
    code, out, err = run(capsys, "evaluate", "--output", output, "--model-dir", model_dir)
    assert code == 0, err
    evaluation = json.load(open(os.path.join(model_dir, "evaluation.json")))
    assert evaluation["rating"]["model"]["rmse"] == pytest.approx(metrics["final"]["test:rmse"])
    assert evaluation["rating"]["model"]["rmse"] < evaluation["rating"]["biases"]["rmse"]
    assert f"test RMSE {evaluation['rating']['model']['rmse']:.4f}" in out
    assert "HR@10" in out and "popularity" in out

