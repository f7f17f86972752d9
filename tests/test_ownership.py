"""fmprep deletes or overwrites only what it wrote (issue 11, points 1, 2, 4 and 9).

Real runs of ``fmprep data`` on local disk and on a moto S3 server; real server processes for
deploy / undeploy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import dask.dataframe as dd
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fmprep import cli, config
from fmprep.clean import clean
from fmprep.errors import FmprepError
from fmprep.owned import MARKER

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_deploy.py"
_spec = importlib.util.spec_from_file_location("train_deploy_own", SCRIPT)
train_deploy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_deploy)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    from fmprep.sample import generate_reviews

    path = tmp_path_factory.mktemp("own") / "reviews.tsv.gz"
    generate_reviews(str(path), rows=5000, seed=11)
    return str(path)


def data(capsys, source, work, output, *more):
    code = cli.main(["data", "--source", source, "--work", str(work), "--output", str(output),
                     *more])
    out, err = capsys.readouterr()
    return code, err


def tree(root) -> dict:
    """Every file under ``root`` with its bytes."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


# --- local directories -------------------------------------------------------------------------

def test_output_holding_user_files_is_refused_and_untouched(small_source, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = tree(mine)
    code, err = data(capsys, small_source, tmp_path / "work", mine)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "OUTPUT=" in line and "did not write" in line and "notes.txt" in line
    assert tree(mine) == before
    # WORK is checked as well, before anything is read.
    code, err = data(capsys, small_source, mine, tmp_path / "out")
    assert code == 2 and "WORK=" in err and tree(mine) == before
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_refused(small_source, tmp_path, capsys):
    target = tmp_path / "results.parquet"
    target.write_bytes(b"PAR1 not really")
    code, err = data(capsys, small_source, tmp_path / "work", target)
    assert code == 2 and "is a file" in err and "OUTPUT" in err
    assert target.read_bytes() == b"PAR1 not really"


def test_work_and_output_must_differ(small_source, tmp_path, capsys):
    code, err = data(capsys, small_source, tmp_path / "same", tmp_path / "same")
    assert code == 2 and "WORK and OUTPUT" in err


def test_rerun_removes_only_listed_or_own_files(small_source, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    code, err = data(capsys, small_source, work, out, "--train-shards", "6")
    assert code == 0, err
    assert (out / MARKER).exists() and (work / MARKER).exists()
    # The user's files beside and inside fmprep's folders, a model and a deployment record.
    (out / "keep.txt").write_text("mine")
    (out / "train" / "mine.txt").write_text("mine")
    (out / "report" / "my-chart.png").write_bytes(b"png")
    (work / "notes.md").write_text("mine")
    (work / "reviews" / "README").write_text("mine")
    (out / "model").mkdir()
    (out / "model" / "model.json").write_text('{"feature_dim": 1}')
    (out / config.ENDPOINT_RECORD).write_text('{"url": "http://127.0.0.1:9", "pid": 1}')
    code, err = data(capsys, small_source, work, out, "--train-shards", "3", "--force")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(os.listdir(out / "train")) == ["mine.txt", "part-00000.pbr", "part-00001.pbr",
                                                 "part-00002.pbr"]
    assert manifest["files"] == [f"train/part-0000{i}.pbr" for i in range(3)] + \
        ["test/part-00000.pbr"]
    for p in (out / "keep.txt", out / "report" / "my-chart.png", work / "notes.md",
              work / "reviews" / "README", out / "model" / "model.json",
              out / config.ENDPOINT_RECORD):
        assert p.exists(), p
    # The model above has another feature_dim: make data says it is stale.
    assert "trained on earlier data" in err and "make train" in err


def test_crash_leftovers_with_fmprep_names_are_removed(small_source, tmp_path, capsys):
    """A run that died before its manifest leaves shards no manifest lists; the rerun removes
    those with fmprep's own names in fmprep's own folders, nothing else."""
    work, out = tmp_path / "work", tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / MARKER).write_text('{"format": "fmprep-owner/1"}')  # what claim() wrote first
    (out / "train" / "part-00042.pbr").write_bytes(b"half a shard")
    (out / "train" / "user.pbr").write_bytes(b"not fmprep's name")
    code, err = data(capsys, small_source, work, out)
    assert code == 0, err
    assert not (out / "train" / "part-00042.pbr").exists()
    assert (out / "train" / "user.pbr").read_bytes() == b"not fmprep's name"


def test_every_work_dataset_reads_as_a_dataset(tmp_path, capsys):
    """WORK/reviews and the prepared datasets hold only Parquet parts (point 9), here with the
    Amazon Reviews 2023 layout and its metadata file (titles joined in ingest)."""
    from fmprep.sample import generate_reviews_2023

    src = tmp_path / "Movies.jsonl.gz"
    generate_reviews_2023(str(src), rows=4000, seed=5)
    meta = tmp_path / "meta_Movies.jsonl.gz"
    assert meta.exists()
    work = tmp_path / "work"
    code, err = data(capsys, str(src), work, tmp_path / "out", "--meta", str(meta))
    assert code == 0, err
    manifest = json.loads((work / "reviews" / "_manifest.json").read_text())
    for name in ("reviews", "train", "test", "users", "items"):
        d = str(work / name)
        n = len(pd.read_parquet(d))
        assert n == pq.read_table(d).num_rows == len(dd.read_parquet(d)) > 0, name
    assert len(pd.read_parquet(str(work / "reviews"))) == manifest["totals"]["rows_valid"]
    assert sorted(os.listdir(work / "rejects")) == ["0000-rejects.jsonl",
                                                    "meta-0000-rejects.jsonl"]


# --- S3 (moto server on 127.0.0.1) ----------------------------------------------------------------

def _objects(bucket):
    s3 = boto3.client("s3")
    resp = s3.list_objects_v2(Bucket=bucket)
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in resp.get("Contents", [])}


def test_s3_bucket_root_and_prefix_with_user_objects_survive(s3, small_source, tmp_path, capsys):
    s3_client = boto3.client("s3")
    s3_client.put_object(Bucket="fmprep-test", Key="shared/keep.txt", Body=b"keep me")
    s3_client.put_object(Bucket="fmprep-test", Key="other/report.csv", Body=b"1,2")
    before = _objects("fmprep-test")
    for output in ("s3://fmprep-test", "s3://fmprep-test/", "s3://fmprep-test/shared"):
        code, err = data(capsys, small_source, tmp_path / "work", output)
        assert code == 2, output
        assert "did not write" in err and len(err.strip().splitlines()) == 1, err
        s3.invalidate_cache()
        assert _objects("fmprep-test") == before, output
    s3_client.head_bucket(Bucket="fmprep-test")


def test_s3_empty_bucket_root_is_a_directory_like_any_other(s3, small_source, tmp_path, capsys):
    s3_client = boto3.client("s3")
    s3_client.create_bucket(Bucket="fmprep-fresh")
    code, err = data(capsys, small_source, tmp_path / "work", "s3://fmprep-fresh",
                     "--train-shards", "4")
    assert code == 0, err
    s3_client.put_object(Bucket="fmprep-fresh", Key="train/mine.txt", Body=b"mine")
    s3_client.put_object(Bucket="fmprep-fresh", Key="keep.txt", Body=b"mine")
    code, err = data(capsys, small_source, tmp_path / "work", "s3://fmprep-fresh",
                     "--train-shards", "2", "--force")
    assert code == 0, err
    keys = set(_objects("fmprep-fresh"))
    assert {"train/mine.txt", "keep.txt", MARKER, "manifest.json", "train/part-00000.pbr",
            "train/part-00001.pbr", "test/part-00000.pbr"} <= keys
    assert "train/part-00002.pbr" not in keys and "train/part-00003.pbr" not in keys
    s3_client.head_bucket(Bucket="fmprep-fresh")


def test_s3_clean_removes_only_fmprep_objects(s3, small_source, tmp_path, capsys):
    s3_client = boto3.client("s3")
    for prefix, mine in (("fm", ["fm/keep.txt", "fm/train/mine.txt"]), ("fm2", [])):
        code, err = data(capsys, small_source, tmp_path / prefix, f"s3://fmprep-test/{prefix}")
        assert code == 0, err
        for key in mine:
            s3_client.put_object(Bucket="fmprep-test", Key=key, Body=b"mine")
        s3.invalidate_cache()
        summary = clean(None, f"s3://fmprep-test/{prefix}")
        left = sorted(k for k in _objects("fmprep-test") if k.startswith(prefix + "/"))
        assert left == (sorted(mine + [f"{prefix}/{MARKER}"]) if mine else []), left
        assert summary["output"]["kept"] == sorted(k[len(prefix) + 1:] for k in mine)
        assert summary["output"]["removed"] > 0
    s3_client.head_bucket(Bucket="fmprep-test")


# --- models and deployments outlive make data -----------------------------------------------------

def td(capsys, *argv):
    code = train_deploy.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_deploy_then_data_rerun_then_undeploy_leaves_no_server(small_source, tmp_path, capsys,
                                                                caplog):
    work, out = str(tmp_path / "work"), str(tmp_path / "out")
    assert data(capsys, small_source, work, out)[0] == 0
    code, _, err = td(capsys, "train", "--output", out, "--epochs", "1", "--num-factors", "4")
    assert code == 0, err
    code, _, err = td(capsys, "deploy", "--output", out, "--port", "0")
    assert code == 0, err
    record = json.load(open(os.path.join(out, config.ENDPOINT_RECORD)))
    pid = record["pid"]
    try:
        users = pd.read_parquet(os.path.join(work, "users"))
        items = pd.read_parquet(os.path.join(work, "items"))
        customer, product = users["customer_id"].iloc[0], items["product_id"].iloc[0]
        # Same data, FORCE=1: nothing is stale, the record and the model stay.
        code, err = data(capsys, small_source, work, out, "--force")
        assert code == 0 and "earlier data" not in err, err
        code, pred, err = td(capsys, "predict", "--output", out, "--customer", customer,
                             "--product", product)
        assert code == 0, err
        assert "(raw " in pred
        code, pred, err = td(capsys, "predict", "--output", out, "--customer", customer,
                             "--product", product, "--date", "2090-01-01")
        assert code == 0 and "cannot extrapolate" in caplog.text + err, err
        # Other settings: new ids. The record and the model stay, but both are stale now.
        code, err = data(capsys, small_source, work, out, "--min-customer-ratings", "3")
        assert code == 0, err
        assert "trained on earlier data" in err and "still serves" in err
        assert os.path.exists(os.path.join(out, config.ENDPOINT_RECORD))
        assert os.path.exists(os.path.join(out, config.LOCAL_MODEL_DIR, "model.json"))
        code, _, err = td(capsys, "predict", "--output", out, "--customer", customer,
                          "--product", product)
        assert code == 2 and "make train" in err and len(err.strip().splitlines()) == 1
    finally:
        code, msg, err = td(capsys, "undeploy", "--output", out)
    assert code == 0 and "stopped" in msg, err
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # deploy refuses the stale model until it is retrained.
    code, _, err = td(capsys, "deploy", "--output", out, "--port", "0")
    assert code == 2 and "make train" in err
    assert not os.path.exists(os.path.join(out, config.ENDPOINT_RECORD))


def test_make_undeploy_after_make_data_through_make(small_source, tmp_path):
    """The same cycle through make, as a user types it: no server is left behind."""
    root = Path(__file__).resolve().parents[1]
    common = [f"SOURCE={small_source}", f"WORK={tmp_path / 'work'}",
              f"OUTPUT={tmp_path / 'out'}", "QUIET=1", f"PYTHON={sys.executable}",
              f"VENV={Path(sys.executable).parents[1]}"]

    def make(*args):
        return subprocess.run(["make", "-s", "-C", str(root), *args, *common],
                              capture_output=True, text=True, timeout=300)

    for step in (["data"], ["train", "EPOCHS=1", "NUM_FACTORS=4"], ["deploy", "PORT=0"]):
        r = make(*step)
        assert r.returncode == 0, r.stderr
    pid = json.load(open(tmp_path / "out" / config.ENDPOINT_RECORD))["pid"]
    try:
        r = make("data", "FORCE=1")
        assert r.returncode == 0, r.stderr
    finally:
        r = make("undeploy")
    assert r.returncode == 0 and "stopped" in r.stdout, r.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # make clean: the data, the model and the server's log go, and WORK with them; OUTPUT
    # keeps the user's file (and the marker).
    assert (tmp_path / "out" / config.SERVER_LOG).exists()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    r = make("clean")
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["out"]
    assert sorted(tree(tmp_path / "out")) == [MARKER, "notes.txt"]


# --- make clean / fmprep clean: only what fmprep wrote -------------------------------------------

def test_clean_removes_every_fmprep_file_and_keeps_the_users(small_source, tmp_path, capsys):
    """After data, train, report, recommend and score, clean leaves exactly the user's files."""
    work, out = tmp_path / "work", tmp_path / "out"
    assert data(capsys, small_source, work, out, "--train-shards", "2")[0] == 0
    code, _, err = td(capsys, "train", "--output", str(out), "--epochs", "1",
                      "--num-factors", "4")
    assert code == 0, err
    assert cli.main(["report", "--output", str(out)]) == 0
    code, _, err = td(capsys, "recommend", "--output", str(out), "--k", "3")
    assert code == 0, err
    users = pd.read_parquet(work / "users")
    items = pd.read_parquet(work / "items")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("customer_id,product_id\n"
                     f"{users['customer_id'].iloc[0]},{items['product_id'].iloc[0]}\n")
    code, _, err = td(capsys, "score", "--output", str(out), "--input", str(pairs))
    assert code == 0, err
    capsys.readouterr()
    written = set(tree(out))
    assert {"report/index.html", "report/stats.json", "model/model.npz", "model/metrics.json",
            "model/evaluation.json", "model/ranking/ranking.json",
            "recommendations/_manifest.json", "scores/_manifest.json", f"scores/{MARKER}",
            "train/part-00001.pbr"} <= written, sorted(written)
    # The user's files: beside fmprep's, inside its folders, under names close to its own.
    mine = {work: ["notes.md", "train/README", "reviews/part-0000.parquet.bak"],
            out: ["report/my-chart.png", "model/notes.txt", "train/part-x.pbr.orig"]}
    for root, names in mine.items():
        for name in names:
            (root / name).write_text("mine")
    # What a killed write leaves (storage.open_atomic): fmprep's, so it goes.
    (out / "train" / "part-00000.pbr.tmp-0123abcd").write_bytes(b"half")
    work_files = len(tree(work)) - len(mine[work]) - 1   # the marker is not counted

    summary = clean(str(work), str(out))

    for root, names in mine.items():
        assert sorted(tree(root)) == sorted(names + [MARKER]), root
        assert all((root / n).read_text() == "mine" for n in names)
    assert summary["work"] == {"existed": True, "removed": work_files,
                               "kept": sorted(mine[work]), "gone": False}
    assert summary["output"]["kept"] == sorted(mine[out])
    assert not (out / "scores").exists()   # its own marker went with the scores
    # Again: nothing left of fmprep's; the user's files still stay.
    again = clean(str(work), str(out))
    assert again["work"]["removed"] == again["output"]["removed"] == 0
    assert sorted(tree(out)) == sorted(mine[out] + [MARKER])


def test_clean_without_foreign_files_removes_both_directories(small_source, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    assert data(capsys, small_source, work, out)[0] == 0
    assert cli.main(["report", "--output", str(out)]) == 0
    n_work, n_out = len(tree(work)) - 1, len(tree(out)) - 1
    summary = clean(str(work), str(out))
    assert os.listdir(tmp_path) == []
    assert summary == {"work": {"existed": True, "removed": n_work, "kept": [], "gone": True},
                       "output": {"existed": True, "removed": n_out, "kept": [], "gone": True}}


def test_clean_refuses_a_directory_fmprep_did_not_write(tmp_path, capsys):
    """No marker and no fmprep manifest: refused, even for files with fmprep's names, and the
    other directory is not touched either (every check comes first)."""
    mine, work = tmp_path / "mine", tmp_path / "work"
    (mine / "train").mkdir(parents=True)
    (mine / "manifest.json").write_text('{"files": ["train/part-00000.pbr"]}')
    (mine / "train" / "part-00000.pbr").write_bytes(b"mine")
    (work / "train").mkdir(parents=True)
    (work / MARKER).write_text('{"format": "fmprep-owner/1"}')
    (work / "train" / "part-00000.parquet").write_bytes(b"fmprep's")
    before = {mine: tree(mine), work: tree(work)}
    with pytest.raises(FmprepError, match="was not written by fmprep") as err:
        clean(str(work), str(mine))
    assert "OUTPUT=" in str(err.value) and MARKER in str(err.value)
    assert {mine: tree(mine), work: tree(work)} == before
    code = cli.main(["clean", "--work", str(work), "--output", str(mine)])
    line = capsys.readouterr().err.strip()
    assert code == 2 and len(line.splitlines()) == 1 and "remove it yourself" in line, line
    assert {mine: tree(mine), work: tree(work)} == before
    # A path that is a file is refused the same way.
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FmprepError, match="is a file"):
        clean(str(tmp_path / "file"), None)
    assert (tmp_path / "file").read_text() == "mine"
    # WORK and OUTPUT in one place, which make data never writes: refused too.
    with pytest.raises(FmprepError, match="both"):
        clean(str(work), str(work) + "/")
    assert tree(work) == before[work]


def test_clean_refuses_while_a_deployment_is_recorded(tmp_path):
    """Without its record, undeploy could no longer find a running server or endpoint."""
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text('{"format": "fmprep-owner/1"}')
    for record, body, fix in ((config.ENDPOINT_RECORD, {"url": "http://127.0.0.1:9", "pid": 1},
                               "make undeploy first"),
                              (config.SAGEMAKER_RECORD, {"endpoint": {"name": "fmprep-fm-1"}},
                               "make undeploy BACKEND=sagemaker first")):
        (out / record).write_text(json.dumps(body))
        before = tree(out)
        with pytest.raises(FmprepError, match=fix):
            clean(None, str(out))
        assert tree(out) == before
        (out / record).unlink()
    # A SageMaker record without an endpoint (a training job only) is fmprep's to remove.
    (out / config.SAGEMAKER_RECORD).write_text('{"training_job": {"name": "fmprep-fm-1"}}')
    assert clean(None, str(out))["output"]["gone"] and not out.exists()


def test_fmprep_clean_command(tmp_path, capsys):
    out, missing = tmp_path / "out", tmp_path / "missing"
    (out / "train").mkdir(parents=True)
    (out / MARKER).write_text('{"format": "fmprep-owner/1"}')
    (out / "manifest.json").write_text('{"format": "fmprep/1", "files": ["train/a.pbr"]}')
    (out / "train" / "a.pbr").write_bytes(b"listed in the manifest")
    (out / "train" / "part-00003.pbr").write_bytes(b"a crashed run's shard")
    (out / "notes.txt").write_text("mine")
    code = cli.main(["clean", "--work", str(missing), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"WORK={missing}: not there, nothing to remove" in err
    assert (f"OUTPUT={out}: removed 3 files; kept 1 file fmprep did not write: notes.txt"
            in err), err
    assert sorted(tree(out)) == [MARKER, "notes.txt"] and not missing.exists()
    (out / "notes.txt").unlink()
    assert cli.main(["clean", "--work", str(missing), "--output", str(out)]) == 0
    assert f"OUTPUT={out}: removed 0 files and the directory" in capsys.readouterr().err
    assert not out.exists()


# --- predict never extrapolates silently ----------------------------------------------------------

def test_predict_clips_dates_and_scores(small_source, tmp_path, capsys, caplog):
    work, out = str(tmp_path / "work"), str(tmp_path / "out")
    assert data(capsys, small_source, work, out)[0] == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    lo, hi = manifest["days_since_first"]["train_range"]
    assert 0 <= lo < hi
    users = pd.read_parquet(os.path.join(work, "users"))
    items = pd.read_parquet(os.path.join(work, "items"))
    customer, product = users["customer_id"].iloc[0], items["product_id"].iloc[0]
    # No DATE: the data's last review date; it lies inside the days training saw.
    _, values, info = train_deploy.fm_row(out, None, customer, product)
    assert str(info["date"]) == manifest["review_dates"][1]
    assert info["clipped_days"] is None or values[2] == hi
    # Far in the future: clipped to the largest days_since_first seen in training.
    _, values, info = train_deploy.fm_row(out, None, customer, product,
                                          train_deploy.dt.date(2090, 1, 1))
    divisor = manifest["days_since_first"]["divisor"]
    assert values[2] == hi and info["clipped_days"] == round(hi * divisor) > 0
    assert info["days"] > hi * divisor
    # Before the customer's first review: clipped to the smallest, not an error.
    _, values, info = train_deploy.fm_row(out, None, customer, product,
                                          train_deploy.dt.date(1990, 1, 1))
    assert values[2] == lo and info["days"] < 0
    # The score on the rating scale, raw beside it.
    assert train_deploy.rating_text(-8.55, [1.0, 5.0]) == \
        "score 1.00 (raw -8.5500, clipped to the rating range 1–5)"
    assert train_deploy.rating_text(4.8123, [1.0, 5.0]) == "score 4.81 (raw 4.8123)"


def test_sagemaker_endpoint_record_survives_and_stale_model_is_refused(s3, small_source, tmp_path,
                                                                       capsys):
    """On S3 with BACKEND=sagemaker (moto): make data keeps sagemaker.json; a model trained on
    earlier data is refused by deploy, and the billed endpoint is named in make data's note."""
    work, out = str(tmp_path / "work"), "s3://fmprep-test/fm"
    assert data(capsys, small_source, work, out)[0] == 0
    common = ["--backend", "sagemaker", "--output", out, "--region", "us-east-1"]
    role = ["--role", "arn:aws:iam::123456789012:role/fmprep"]
    code, _, err = td(capsys, "train", *common, *role, "--epochs", "1")
    assert code == 0, err
    code, _, err = td(capsys, "deploy", *common, *role)
    assert code == 0, err
    endpoint = json.loads(s3.cat(f"{out}/{config.SAGEMAKER_RECORD}"))["endpoint"]["name"]
    code, err = data(capsys, small_source, work, out, "--min-customer-ratings", "3")
    assert code == 0, err
    assert f"SageMaker endpoint {endpoint} still serves" in err
    s3.invalidate_cache()
    assert json.loads(s3.cat(f"{out}/{config.SAGEMAKER_RECORD}"))["endpoint"]["name"] == endpoint
    code, _, err = td(capsys, "predict", *common, "--customer", "x", "--product", "y")
    assert code == 2 and "earlier data" in err
    code, _, err = td(capsys, "undeploy", *common)
    assert code == 0, err
    code, _, err = td(capsys, "deploy", *common, *role)
    assert code == 2 and "make train" in err and len(err.strip().splitlines()) == 1
