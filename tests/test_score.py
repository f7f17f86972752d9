"""make score (fmprep.score): scores per row against FMModel.predict on rows built here, row by
row, from WORK's maps; unknown ids, dates, input kinds, partitions, SCORES ownership, and the
SageMaker batch transform against a moto server."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import review_line, write_tsv_gz
from fmprep import config, recordio, score, storage
from fmprep.serving import sagemaker, transform as sagemaker_transform
from fmprep.config import PrepSettings
from fmprep.errors import FmprepError
from fmprep.model.fm import FMModel
from fmprep.freshness import data_stamp
from fmprep.owned import MARKER
from fmprep.pipeline import run_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_deploy.py"
_spec = importlib.util.spec_from_file_location("train_deploy_score", SCRIPT)
train_deploy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_deploy)

ROLE = "arn:aws:iam::123456789012:role/fmprep-sagemaker"
S3_OUTPUT = "s3://fmprep-test/fm"


# --- data: inline reviews → make data's pipeline → a model with random weights ---------------

def _source(path) -> str:
    """40 customers (ids with leading zeros) rating 8 of 25 products each over two years."""
    rng = np.random.default_rng(5)
    lines, n = [], 0
    for c in range(40):
        start = dt.date(2013, 1, 1) + dt.timedelta(days=int(rng.integers(0, 300)))
        for k, p in enumerate(rng.choice(25, size=8, replace=False)):
            day = start + dt.timedelta(days=int(45 * k + rng.integers(0, 40)))
            lines.append(review_line(f"{c:06d}", f"P{p:04d}", int(rng.integers(1, 6)),
                                     day.isoformat(), f"R{n}", title=f"Product {p}"))
            n += 1
    return write_tsv_gz(path, lines)


def _random_model(manifest, seed=3) -> FMModel:
    rng = np.random.default_rng(seed)
    F = manifest["feature_dim"]
    return FMModel(w0=3.4, w=rng.normal(0, 0.6, F), V=rng.normal(0, 0.5, (F, 4)),
                   predictor_type="regressor")


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    """OUTPUT and WORK of make data on the inline reviews, a model in OUTPUT/model, the maps."""
    root = tmp_path_factory.mktemp("score")
    work, output = str(root / "work"), str(root / "output")
    manifest = run_data(_source(root / "reviews.tsv.gz"), work, output,
                        PrepSettings(min_customer_ratings=2, min_product_ratings=2,
                                     train_shards=2))
    model = _random_model(manifest)
    model.save(os.path.join(output, config.LOCAL_MODEL_DIR), data=data_stamp(manifest))
    users = pq.read_table(os.path.join(work, "users")).to_pandas()
    items = pq.read_table(os.path.join(work, "items")).to_pandas()
    return {"output": output, "work": work, "manifest": manifest, "model": model,
            "users": users, "items": items}


def _pairs(d, n=60, seed=9) -> pd.DataFrame:
    """Known and unknown customers and products; dates in range, before the first review, far
    after it, missing and unparseable. Ids keep their leading zeros."""
    rng = np.random.default_rng(seed)
    customers = list(d["users"]["customer_id"]) + ["999999", "7", ""]
    products = list(d["items"]["product_id"]) + ["P9999", "0042"]
    dates = ["2014-03-01", "2013-06-15", "2015-01-20", "2001-01-01", "2030-12-31", "",
             "2014-02-30", "someday"]
    rows = pd.DataFrame({"customer_id": rng.choice(customers, n),
                         "product_id": rng.choice(products, n),
                         "review_date": rng.choice(dates, n, p=[.25, .2, .2, .1, .1, .1, .03,
                                                                .02])})
    # Rows every run needs, whatever the draw: unknown customer / product / both, a bad date.
    known_c, known_p = d["users"]["customer_id"].iloc[0], d["items"]["product_id"].iloc[0]
    extra = pd.DataFrame({"customer_id": ["000000", "123456", known_c, "123456", known_c],
                          "product_id": [known_p, known_p, "P9999", "P9999", known_p],
                          "review_date": ["2014-05-05", "2014-05-05", "", "2014-05-05", "bad"]})
    return pd.concat([extra, rows], ignore_index=True)


def _expected(d, pairs: pd.DataFrame) -> pd.DataFrame:
    """Each row's FM row built here, one at a time, and the model's score of it."""
    manifest, model = d["manifest"], d["model"]
    F = manifest["feature_dim"]
    users = {c: (u, f.date()) for c, u, f in zip(d["users"]["customer_id"], d["users"]["user"],
                                                 d["users"]["first_review"])}
    items = dict(zip(d["items"]["product_id"], d["items"]["item"]))
    divisor = manifest["days_since_first"]["divisor"]
    lo, hi = manifest["days_since_first"]["train_range"]
    out = []
    for c, p, text in pairs[["customer_id", "product_id", "review_date"]].itertuples(index=False):
        try:
            date = dt.date.fromisoformat(text or manifest["review_dates"][1])
        except ValueError:
            date = None
        keys, vals = [], []
        if c in users:
            keys.append(users[c][0])
            vals.append(1.0)
        if p in items:
            keys.append(items[p])
            vals.append(1.0)
        days = (date - users[c][1]).days if c in users and date else 0
        scaled = days / divisor
        keys.append(F - 1)
        vals.append(min(max(scaled, lo), hi))
        raw = float(model.predict([0, len(keys)], keys, vals)[0])
        out.append({"customer_id": c, "product_id": p, "known_customer": c in users,
                    "known_product": p in items, "date_ok": date is not None,
                    "review_date": date, "days_clipped": date is not None and not lo <= scaled <= hi,
                    "raw_score": raw if date else np.nan,
                    "score": min(max(raw, 1.0), 5.0) if date else np.nan,
                    "keys": keys, "vals": vals})
    return pd.DataFrame(out)


def _read(scores_dir) -> pd.DataFrame:
    """The parts in name order, concatenated (the input's order)."""
    names = sorted(n for n in os.listdir(scores_dir) if n.startswith("part-"))
    return pd.concat([pq.read_table(os.path.join(scores_dir, n)).to_pandas() for n in names],
                     ignore_index=True)


def _compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want)
    for col in ("customer_id", "product_id", "known_customer", "known_product", "date_ok",
                "days_clipped"):
        assert got[col].tolist() == want[col].tolist(), col
    assert got["review_date"].tolist() == want["review_date"].tolist()
    for col in ("raw_score", "score"):
        np.testing.assert_allclose(got[col].to_numpy(np.float64), want[col].to_numpy(np.float64),
                                   rtol=1e-6, atol=1e-6, err_msg=col)


def _csv(pairs: pd.DataFrame, path) -> str:
    pairs.to_csv(path, index=False)
    return str(path)


# --- local backend ------------------------------------------------------------------------------

def test_scores_equal_the_model_on_rows_built_independently(prepped, tmp_path):
    pairs = _pairs(prepped)
    out = tmp_path / "scores"
    result = score.score_pairs(prepped["output"], _csv(pairs, tmp_path / "pairs.csv"),
                               scores=str(out), blocksize=200)
    want = _expected(prepped, pairs)
    got = _read(out)
    _compare(got, want)  # also: the parts in name order are the input rows in order
    assert len(result["parts"]) > 2 and result["files"] == [p["file"] for p in result["parts"]]
    # The data make the check meaningful: every kind of row is there.
    assert want["days_clipped"].any() and (~want["date_ok"]).any()
    assert (want["known_customer"] & want["known_product"] & want["date_ok"]).sum() > 10
    assert (got["raw_score"] != got["score"]).any()  # some clipped to the rating range
    manifest = json.loads((out / score.MANIFEST_NAME).read_text())
    assert manifest == json.loads(json.dumps(result))
    assert manifest["rows"] == len(pairs)
    assert manifest["unknown_customer_rows"] == int((~want["known_customer"]).sum())
    assert manifest["unknown_product_rows"] == int((~want["known_product"]).sum())
    assert manifest["unknown_both_rows"] == int((~want["known_customer"]
                                                 & ~want["known_product"]).sum())
    assert manifest["bad_date_rows"] == int((~want["date_ok"]).sum())
    assert manifest["clipped_days_rows"] == int(want["days_clipped"].sum())
    assert manifest["model"]["dir"] == os.path.join(prepped["output"], "model")
    assert manifest["input"] == str(tmp_path / "pairs.csv")
    assert sum(p["rows"] for p in manifest["parts"]) == len(pairs)


def test_known_rows_score_like_make_predict(prepped, tmp_path):
    """The rows predict's fm_row builds (scripts/train_deploy.py) score the same."""
    users, items = prepped["users"], prepped["items"]
    pairs = pd.DataFrame({"customer_id": users["customer_id"].iloc[:4].tolist(),
                          "product_id": items["product_id"].iloc[3:7].tolist(),
                          "review_date": ["2014-01-01", "2015-06-01", "2012-01-01", ""]})
    out = tmp_path / "scores"
    score.score_pairs(prepped["output"], _csv(pairs, tmp_path / "p.csv"), scores=str(out))
    got = _read(out)
    for row, (c, p, d) in enumerate(pairs.itertuples(index=False)):
        indices, values, _ = train_deploy.fm_row(prepped["output"], None, c, p,
                                                 dt.date.fromisoformat(d) if d else None)
        raw = prepped["model"].predict([0, 3], indices, values)[0]
        assert got["raw_score"][row] == pytest.approx(raw, rel=1e-6)


def test_unknown_ids_are_flagged_and_scored_without_their_one_hot(prepped, tmp_path):
    model, F = prepped["model"], prepped["manifest"]["feature_dim"]
    user = prepped["users"].iloc[2]
    item = prepped["items"].iloc[1]
    pairs = pd.DataFrame({"customer_id": ["new-customer", user["customer_id"], "new-customer"],
                          "product_id": [item["product_id"], "new-product", "new-product"],
                          "review_date": ["2014-06-01"] * 3})
    out = tmp_path / "scores"
    score.score_pairs(prepped["output"], _csv(pairs, tmp_path / "p.csv"), scores=str(out))
    got = _read(out)
    assert got["known_customer"].tolist() == [False, True, False]
    assert got["known_product"].tolist() == [True, False, False]
    # Unknown customer: global bias + the product's weight (days 0: a first review).
    assert got["raw_score"][0] == pytest.approx(model.w0 + model.w[item["item"]], rel=1e-6)
    # Unknown product: the row without the item's one-hot.
    days = (dt.date(2014, 6, 1) - user["first_review"].date()).days / 365.25
    lo, hi = prepped["manifest"]["days_since_first"]["train_range"]
    alone = model.predict([0, 2], [user["user"], F - 1], [1.0, min(max(days, lo), hi)])[0]
    assert got["raw_score"][1] == pytest.approx(alone, rel=1e-6)
    # Neither known: the global bias.
    assert got["raw_score"][2] == pytest.approx(model.w0, rel=1e-6)


def test_parquet_file_and_directory_give_the_csv_result(prepped, tmp_path):
    pairs = _pairs(prepped, n=40, seed=2)
    want = _expected(prepped, pairs)
    pairs.to_parquet(tmp_path / "pairs.parquet", index=False)
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(pairs)), 4)):
        pairs.iloc[chunk].to_parquet(folder / f"chunk-{i}.parquet", index=False)
    for name, source in (("file", tmp_path / "pairs.parquet"), ("dir", folder)):
        out = tmp_path / f"scores-{name}"
        result = score.score_pairs(prepped["output"], str(source), scores=str(out))
        assert result["input_format"] == "parquet"
        _compare(_read(out), want)
    assert len(os.listdir(tmp_path / "scores-dir")) - 2 == 4  # parts + manifest + marker


def test_parquet_typed_columns(prepped, tmp_path):
    """Integer ids become their digits, Parquet dates are dates, a null date is the default."""
    user = prepped["users"].iloc[0]
    item = prepped["items"].iloc[0]
    pairs = pd.DataFrame({"customer_id": pd.array([int(user["customer_id"]), None], "Int64"),
                          "product_id": [item["product_id"]] * 2,
                          "review_date": [dt.date(2014, 6, 1), None]})
    pairs.to_parquet(tmp_path / "typed.parquet", index=False)
    out = tmp_path / "scores"
    score.score_pairs(prepped["output"], str(tmp_path / "typed.parquet"), scores=str(out))
    got = _read(out)
    # An id like "000012" stored as an integer cannot get its zeros back: "12", unknown.
    assert got["customer_id"][0] == str(int(user["customer_id"])) and pd.isna(
        got["customer_id"][1])
    assert not got["known_customer"].any() and got["known_product"].all()
    assert got["review_date"].tolist() == [dt.date(2014, 6, 1), dt.date.fromisoformat(
        prepped["manifest"]["review_dates"][1])]
    assert got["date_ok"].all()


def test_many_small_partitions_equal_one(prepped, tmp_path):
    pairs = _pairs(prepped, n=80, seed=4)
    source = _csv(pairs, tmp_path / "pairs.csv")
    one = score.score_pairs(prepped["output"], source, scores=str(tmp_path / "one"),
                            blocksize=None)
    many = score.score_pairs(prepped["output"], source, scores=str(tmp_path / "many"),
                             blocksize=256)
    assert len(one["parts"]) == 1 and len(many["parts"]) > 5
    pd.testing.assert_frame_equal(_read(tmp_path / "one"), _read(tmp_path / "many"))
    keys = ("rows", "unknown_customer_rows", "unknown_product_rows", "bad_date_rows")
    assert {k: one[k] for k in keys} == {k: many[k] for k in keys}


def test_gzip_csv_and_a_glob(prepped, tmp_path):
    pairs = _pairs(prepped, n=30, seed=6)
    pairs.iloc[:10].to_csv(tmp_path / "a.csv.gz", index=False)
    pairs.iloc[10:].to_csv(tmp_path / "b.csv.gz", index=False)
    out = tmp_path / "scores"
    result = score.score_pairs(prepped["output"], str(tmp_path / "*.csv.gz"), scores=str(out))
    assert len(result["parts"]) == 2
    _compare(_read(out), _expected(prepped, pairs))


# --- SCORES belongs to fmprep -----------------------------------------------------------------

@pytest.fixture
def own_output(prepped, tmp_path):
    """A copy of OUTPUT (its manifest still names the shared WORK) for tests of OUTPUT/scores."""
    output = tmp_path / "output"
    shutil.copytree(prepped["output"], output)
    return output


def test_foreign_file_in_scores_is_refused_and_left_intact(prepped, own_output, tmp_path):
    (own_output / "scores").mkdir()
    mine = own_output / "scores" / "my-scores.csv"
    mine.write_text("customer_id,score\n1,5\n")
    source = _csv(_pairs(prepped, n=5), tmp_path / "p.csv")
    with pytest.raises(FmprepError) as err:
        score.score_pairs(str(own_output), source)
    message = str(err.value)
    assert "SCORES=" in message and "did not write" in message and "\n" not in message
    assert sorted(os.listdir(own_output / "scores")) == ["my-scores.csv"]
    assert mine.read_text() == "customer_id,score\n1,5\n"


def test_rerun_replaces_its_own_files_only(prepped, own_output, tmp_path):
    source = _csv(_pairs(prepped, n=40), tmp_path / "p.csv")
    first = score.score_pairs(str(own_output), source, blocksize=300)
    scores_dir = own_output / "scores"
    assert len(first["parts"]) > 2 and (scores_dir / MARKER).exists()
    (scores_dir / "notes.txt").write_text("mine")  # the user's, in a directory fmprep owns
    second = score.score_pairs(str(own_output), source, blocksize=None)
    assert sorted(os.listdir(scores_dir)) == [MARKER, score.MANIFEST_NAME, "notes.txt",
                                              "part-00000.parquet"]
    assert (scores_dir / "notes.txt").read_text() == "mine"
    assert second["files"] == ["part-00000.parquet"] and second["rows"] == first["rows"]
    assert len(_read(scores_dir)) == first["rows"]
    # Scoring the scores would clear them before reading them: refused, nothing touched.
    before = sorted(os.listdir(scores_dir))
    with pytest.raises(FmprepError, match="inside SCORES="):
        score.score_pairs(str(own_output), str(scores_dir))
    assert sorted(os.listdir(scores_dir)) == before


# --- user errors: one line, nothing written --------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("customer_id,review_date\n000001,2014-01-01\n", "no column product_id"),
    ("customer,product\n1,2\n", "no column customer_id"),
    ("customer_id,product_id,review_date\n000001,P0001,08/31/2014\n000002,P0002,31.8.2014\n",
     "review_date"),
])
def test_bad_input_is_one_line(prepped, tmp_path, text, fragment):
    (tmp_path / "bad.csv").write_text(text)
    out = tmp_path / "scores"
    with pytest.raises(FmprepError, match=fragment) as err:
        score.score_pairs(prepped["output"], str(tmp_path / "bad.csv"), scores=str(out))
    assert "\n" not in str(err.value) and "INPUT=" in str(err.value)
    assert not out.exists()


def test_other_user_errors(prepped, tmp_path):
    source = _csv(_pairs(prepped, n=3), tmp_path / "p.csv")
    cases = [
        (dict(input=str(tmp_path / "nope.csv")), "not found"),
        (dict(input=str(tmp_path / "p.txt")), "INPUT_FORMAT"),
        (dict(model_dir=str(tmp_path / "no-model")), "make train"),
        (dict(work=str(tmp_path)), "WORK="),
        (dict(backend="sagemaker"), "s3://"),
        (dict(backend="cloud"), "BACKEND="),
        (dict(blocksize="lots"), "PART_SIZE="),
        (dict(input_format="tsv"), "INPUT_FORMAT="),
    ]
    (tmp_path / "p.txt").write_text("customer_id,product_id\n1,2\n")
    for kwargs, fragment in cases:
        args = {"output": prepped["output"], "input": source, "scores": str(tmp_path / "s")}
        args.update(kwargs)
        with pytest.raises(FmprepError, match=fragment) as err:
            score.score_pairs(**args)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "s").exists()


def test_stale_model_is_refused(prepped, tmp_path):
    model_dir = tmp_path / "model"
    prepped["model"].save(str(model_dir), data={"key": "other", "feature_dim": 3})
    with pytest.raises(FmprepError, match="make train"):
        score.score_pairs(prepped["output"], _csv(_pairs(prepped, n=3), tmp_path / "p.csv"),
                          model_dir=str(model_dir), scores=str(tmp_path / "s"))


def test_train_deploy_score_command_when_wired(prepped, tmp_path, capsys):
    """The CLI wiring the lead adds to scripts/train_deploy.py (see the helper's notes)."""
    if "score" not in getattr(train_deploy, "COMMANDS", {}):
        pytest.skip("scripts/train_deploy.py has no score command yet")
    pairs = _pairs(prepped, n=10)
    source = _csv(pairs, tmp_path / "p.csv")
    code = train_deploy.main(["score", "--output", prepped["output"], "--input", source,
                              "--scores", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(_read(tmp_path / "s")) == len(pairs) and "rows scored" in out
    code = train_deploy.main(["score", "--output", prepped["output"], "--input",
                              str(tmp_path / "none.csv")])
    out, err = capsys.readouterr()
    assert code == 2 and "INPUT=" in err and len(err.strip().splitlines()) == 1


# --- BACKEND=sagemaker: a batch transform job on moto -----------------------------------------

def _quiet(_line):
    pass


@pytest.fixture
def s3_prepped(s3, tmp_path):
    """OUTPUT on (moto) S3 with a completed (moto) training job; WORK local."""
    work = str(tmp_path / "work")
    manifest = run_data(_source(tmp_path / "reviews.tsv.gz"), work, S3_OUTPUT,
                        PrepSettings(min_customer_ratings=2, min_product_ratings=2))
    sagemaker.train(S3_OUTPUT, ROLE, {"epochs": 1, "num_factors": 4}, poll_seconds=0,
                    echo=_quiet)
    return {"output": S3_OUTPUT, "work": work, "manifest": manifest, "fs": s3,
            "model": _random_model(manifest, seed=8),
            "users": pq.read_table(os.path.join(work, "users")).to_pandas(),
            "items": pq.read_table(os.path.join(work, "items")).to_pandas()}


def _container(d, monkeypatch, calls):
    """Stand in for the FM container: when the job is polled, score every input object with the
    test's model and write ``<object>.out`` JSON lines, as SageMaker would."""
    real = sagemaker_transform._wait_transform
    fs = d["fs"]

    def wait(sm, name, poll_seconds, echo):
        desc = sm.describe_transform_job(TransformJobName=name)
        src = desc["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        dst = desc["TransformOutput"]["S3OutputPath"]
        fs.invalidate_cache()
        for key in sorted(fs.find(src)):
            records = recordio.decode_records(fs.cat(key))
            calls.append((os.path.basename(key), records))
            scores = d["model"].predict(records.indptr, records.indices, records.values)
            body = "".join(json.dumps({"score": float(s)}) + "\n" for s in scores)
            fs.pipe(f"{dst.rstrip('/')}/{os.path.basename(key)}.out", body.encode())
        return real(sm, name, poll_seconds, echo)

    monkeypatch.setattr(sagemaker_transform, "_wait_transform", wait)


def test_sagemaker_transform_job_request_recordio_and_scores(s3_prepped, monkeypatch, tmp_path):
    d = s3_prepped
    pairs = _pairs(d, n=30, seed=12)
    source = f"{S3_OUTPUT}-inputs/pairs.csv"  # the input may be on S3 too
    d["fs"].pipe(source.replace("s3://", ""), pairs.to_csv(index=False).encode())
    calls = []
    _container(d, monkeypatch, calls)
    result = score.score_pairs(S3_OUTPUT, source, backend="sagemaker", role=ROLE, blocksize=150,
                               poll_seconds=0, echo=_quiet)
    want = _expected(d, pairs)

    # The request.
    sm = boto3.client("sagemaker", region_name="us-east-1")
    job = json.loads(d["fs"].cat(f"{S3_OUTPUT}/{config.SAGEMAKER_RECORD}"))["transform_job"]
    desc = sm.describe_transform_job(TransformJobName=job["name"])
    scores_uri = f"{S3_OUTPUT}/scores"
    assert desc["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                        "S3Uri": f"{scores_uri}/transform-input/"}},
        "ContentType": "application/x-recordio-protobuf", "CompressionType": "None",
        "SplitType": "RecordIO"}
    assert desc["TransformOutput"] == {"S3OutputPath": f"{scores_uri}/transform-output/",
                                       "Accept": "application/jsonlines", "AssembleWith": "Line"}
    assert desc["TransformResources"] == {"InstanceType": "ml.m4.xlarge", "InstanceCount": 1}
    assert desc["BatchStrategy"] == "MultiRecord" and desc["MaxPayloadInMB"] == 6
    assert desc["ModelName"] == job["name"] and job["model_created"] and \
        job["status"] == "Completed"
    # The model made for the job is gone once the job has ended.
    assert sm.list_models()["Models"] == []

    # The RecordIO the job read: the rows built here, in input order, no labels.
    assert len(calls) == len(result["parts"]) > 1
    decoded_rows = []
    for _, records in calls:
        assert records.labels is None and records.shape == d["manifest"]["feature_dim"]
        for a, b in zip(records.indptr[:-1], records.indptr[1:]):
            decoded_rows.append((records.indices[a:b].tolist(), records.values[a:b].tolist()))
    ok = want["date_ok"].to_numpy()
    built = [(k, np.float32(v).tolist()) for k, v in zip(want["keys"], want["vals"])]
    assert [r for r, good in zip(decoded_rows, ok) if good] == \
        [r for r, good in zip(built, ok) if good]
    assert [r[0] for r in decoded_rows] == [r[0] for r in built]

    # The scores joined back to their rows.
    local = tmp_path / "scores"
    d["fs"].get(f"{scores_uri}/", str(local), recursive=True)
    _compare(_read(local), want)
    assert not any(k.startswith("transform-rows/part") for k in result["files"])
    assert sorted(result["files"]) == sorted(
        [p["file"] for p in result["parts"]]
        + [f"transform-input/{p['file'][:-len('.parquet')]}.pbr" for p in result["parts"]]
        + [f"transform-output/{p['file'][:-len('.parquet')]}.pbr.out" for p in result["parts"]])
    assert result["model"]["transform_job"] == job["name"]


def test_sagemaker_reuses_the_deployed_model(s3_prepped, monkeypatch):
    d = s3_prepped
    endpoint = sagemaker.deploy(S3_OUTPUT, ROLE, poll_seconds=0, echo=_quiet)
    pairs = _pairs(d, n=5)
    source = f"{S3_OUTPUT}-inputs/p.csv"
    d["fs"].pipe(source.replace("s3://", ""), pairs.to_csv(index=False).encode())
    _container(d, monkeypatch, [])
    score.score_pairs(S3_OUTPUT, source, backend="sagemaker", poll_seconds=0, echo=_quiet)
    job = json.loads(d["fs"].cat(f"{S3_OUTPUT}/{config.SAGEMAKER_RECORD}"))["transform_job"]
    assert job["model"] == endpoint["model"] and not job["model_created"]
    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [endpoint["model"]]
    sagemaker.undeploy(S3_OUTPUT, echo=_quiet)


def test_sagemaker_job_without_output_is_one_line(s3_prepped):
    """moto completes the job at once and writes nothing: the missing results are named."""
    d = s3_prepped
    source = f"{S3_OUTPUT}-inputs/p.csv"
    d["fs"].pipe(source.replace("s3://", ""), _pairs(d, n=5).to_csv(index=False).encode())
    with pytest.raises(FmprepError, match="wrote no part-00000.pbr.out") as err:
        score.score_pairs(S3_OUTPUT, source, backend="sagemaker", role=ROLE, poll_seconds=0,
                          echo=_quiet)
    assert "\n" not in str(err.value)
    assert not d["fs"].exists(f"{S3_OUTPUT}/scores/{score.MANIFEST_NAME}")


def test_sagemaker_needs_a_trained_job_and_s3_scores(s3, tmp_path):
    work = str(tmp_path / "work")
    run_data(_source(tmp_path / "r.tsv.gz"), work, S3_OUTPUT,
             PrepSettings(min_customer_ratings=2, min_product_ratings=2))
    source = str(tmp_path / "p.csv")
    Path(source).write_text("customer_id,product_id\n000001,P0001\n")
    with pytest.raises(FmprepError, match="make train BACKEND=sagemaker"):
        score.score_pairs(S3_OUTPUT, source, backend="sagemaker", role=ROLE)
    with pytest.raises(FmprepError, match="SCORES"):
        score.score_pairs(S3_OUTPUT, source, backend="sagemaker", scores=str(tmp_path / "s"))
    assert storage.read_json(f"{S3_OUTPUT}/scores/{score.MANIFEST_NAME}") is None
