#!/usr/bin/env python
"""Train, deploy, query and remove the Factorization Machines model: the user entry point.

``train | deploy | predict | undeploy`` on one of two backends:

* ``local`` (default): fmprep's own FM trainer writes OUTPUT/model; ``deploy`` starts
  ``python -m fmprep.serve`` in the background on 127.0.0.1 and records it in OUTPUT/endpoint.json.
* ``sagemaker``: a SageMaker training job on OUTPUT's S3 shards and a SageMaker endpoint, recorded
  in OUTPUT/sagemaker.json (see :mod:`fmprep.sagemaker`).

Errors a user can fix print one line, ``train_deploy: error: …``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pyarrow.parquet as pq

from fmprep import config, storage
from fmprep.config import MANIFEST
from fmprep.errors import FmprepError
from fmprep.freshness import check_model, read_manifest, stale_reason

PROG = "train_deploy"
EPILOG = """examples:
  # local backend: train on data/output, serve it, ask for one rating, stop the server
  python scripts/train_deploy.py train --epochs 3 --num-factors 64
  python scripts/train_deploy.py deploy --port 8080
  python scripts/train_deploy.py predict --customer 10001 --product B00ABC1234 --date 2015-08-31
  python scripts/train_deploy.py undeploy

  # SageMaker: OUTPUT must be on S3 (make data OUTPUT=s3://…)
  python scripts/train_deploy.py train --backend sagemaker --output s3://my-bucket/fm \\
      --role arn:aws:iam::123456789012:role/SageMakerRole --hp linear_lr=0.01
  python scripts/train_deploy.py deploy --backend sagemaker --output s3://my-bucket/fm \\
      --role arn:aws:iam::123456789012:role/SageMakerRole
  python scripts/train_deploy.py predict --backend sagemaker --output s3://my-bucket/fm \\
      --customer 10001 --product B00ABC1234
  python scripts/train_deploy.py undeploy --backend sagemaker --output s3://my-bucket/fm
"""

log = logging.getLogger(PROG)


# --- arguments ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scripts/train_deploy.py``.

    Its errors are one line naming the make variable and a fix (``train_deploy: error:
    PORT=abc is not a port number; …``), without argparse's usage block.
    """
    from fmprep.cli import UserArgumentParser, whole_number

    class Parser(UserArgumentParser):
        TOOL = PROG
        VARIABLES = {"--backend": "BACKEND", "--output": "OUTPUT", "--region": "REGION",
                     "--quiet": "QUIET", "--role": "ROLE", "--instance-type": "INSTANCE_TYPE",
                     "--instance-count": "INSTANCE_COUNT", "--image-uri": "IMAGE_URI",
                     "--hp": "HP", "--epochs": "EPOCHS", "--num-factors": "NUM_FACTORS",
                     "--predictor-type": "PREDICTOR_TYPE",
                     "--mini-batch-size": "MINI_BATCH_SIZE", "--port": "PORT",
                     "--customer": "CUSTOMER", "--product": "PRODUCT", "--date": "DATE",
                     "--work": "WORK", "--k": "K", "--artifact": "ARTIFACT",
                     "--model-dir": "MODEL_DIR", "--scheduler": "SCHEDULER",
                     "--input": "INPUT", "--scores": "SCORES", "--input-format": "INPUT_FORMAT",
                     "--part-size": "PART_SIZE"}

    def port(text: str) -> int:
        fix = f"use e.g. PORT={config.SERVE_PORT} (PORT=0: any free port)"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"PORT={text} is not a port number; {fix}") from None
        if not 0 <= value <= 65535:
            raise argparse.ArgumentTypeError(f"PORT={text} is not a port number (0 to 65535); "
                                             f"{fix}")
        return value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=("local", "sagemaker"),
                        default=os.environ.get("BACKEND") or "local",
                        help="where to train and serve (default: $BACKEND or local)")
    common.add_argument("--output", default=config.DEFAULT_OUTPUT,
                        help="OUTPUT directory of make data (default %(default)s)")
    common.add_argument("--region", help="AWS region (default: AWS config, else "
                                         f"{config.DEFAULT_REGION})")
    common.add_argument("-q", "--quiet", action="store_true", help="only print results and errors")

    parser = Parser(
        prog=PROG, description="Train, deploy, query and undeploy the FM model, locally or on "
        "SageMaker.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_, example):
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    def aws_options(p, what, instance_type, instance_count):
        g = p.add_argument_group("SageMaker options")
        g.add_argument("--role", help="IAM role ARN SageMaker assumes (required for sagemaker)")
        g.add_argument("--instance-type", help=f"{what} instance type (default {instance_type})")
        g.add_argument("--instance-count", type=whole_number("INSTANCE_COUNT", instance_count),
                       help=f"{what} instances (default {instance_count})")
        g.add_argument("--image-uri", help="FM container image (default: the region's "
                                           "factorization-machines:1)")
        return g

    p = add("train", "train the model (local FM trainer or a SageMaker training job)",
            "train_deploy.py train --epochs 5 --hp factors_lr=0.001")
    p.add_argument("--model-dir", help="local backend: where the model goes (default "
                                       "OUTPUT/model)")
    g = p.add_argument_group("hyperparameters (SageMaker FM names; defaults in fmprep/config.py)")
    g.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="any FM hyperparameter, repeatable: --hp linear_lr=0.01 --hp eps=1e-8")
    g.add_argument("--epochs", help="passes over the train channel")
    g.add_argument("--num-factors", help="length of each factor vector")
    g.add_argument("--predictor-type", choices=("regressor", "binary_classifier"))
    g.add_argument("--mini-batch-size", help="rows per update")
    g = aws_options(p, "training", config.TRAIN_INSTANCE_TYPE, config.TRAIN_INSTANCE_COUNT)
    g.add_argument("--no-wait", action="store_true", help="start the job and return")

    p = add("deploy", "serve the trained model (local HTTP server or a SageMaker endpoint)",
            "train_deploy.py deploy --port 8080")
    p.add_argument("--model-dir", help="local backend: model to serve (default OUTPUT/model)")
    p.add_argument("--host", default=config.SERVE_HOST, help="local server address "
                                                              "(default %(default)s)")
    p.add_argument("--port", type=port, default=config.SERVE_PORT,
                   help="local server port, 0 for any free one (default %(default)s)")
    aws_options(p, "endpoint", config.ENDPOINT_INSTANCE_TYPE, config.ENDPOINT_INSTANCE_COUNT)

    p = add("predict", "predict one customer's rating of one product",
            "train_deploy.py predict --customer 10001 --product B00ABC1234 --date 2015-08-31")
    p.add_argument("--customer", required=True, help="customer_id as in the source data")
    p.add_argument("--product", required=True, help="product_id as in the source data")
    p.add_argument("--date", help="date of the rating, YYYY-MM-DD (default: the latest review "
                   "date in the data; days outside those training saw are clipped to them)")
    p.add_argument("--work", help="WORK directory with the id maps (default: the manifest's)")

    p = add("score", "score every (customer_id, product_id[, review_date]) row of a CSV or "
            "Parquet file → OUTPUT/scores/ (Parquet parts, _manifest.json)",
            "train_deploy.py score --input pairs.csv")
    p.add_argument("--input", required=True,
                   help="CSV file or glob (header customer_id,product_id[,review_date]) or "
                        "Parquet file or directory; local or s3://")
    p.add_argument("--input-format", choices=("auto", "csv", "parquet"), default="auto",
                   help="default: by the name (.csv, .csv.gz, .parquet; a directory is Parquet)")
    p.add_argument("--scores", help="where the scores go (default OUTPUT/scores)")
    p.add_argument("--work", help="WORK directory with the id maps (default: the manifest's)")
    p.add_argument("--model-dir", help="local backend: the model (default OUTPUT/model)")
    p.add_argument("--part-size", help="CSV bytes per Dask partition (default 64MB)")
    p.add_argument("--scheduler", help="Dask scheduler, as for make data (default: threads)")
    aws_options(p, "transform", config.ENDPOINT_INSTANCE_TYPE, 1)

    add("undeploy", "stop the local server or delete the SageMaker endpoint, config and model",
        "train_deploy.py undeploy")
    p = add("evaluate", "test RMSE / MAE and HR@10 / NDCG@10 of the model against the train "
            "mean, biases-only and popularity baselines → OUTPUT/model/evaluation.json",
            "train_deploy.py evaluate")
    p.add_argument("--model-dir", help="model directory (default OUTPUT/model)")

    p = add("recommend", "top K products per customer from the ranking model → "
            "OUTPUT/recommendations/ (or one customer's list with --customer)",
            "train_deploy.py recommend --k 10   |   train_deploy.py recommend --customer 10001")
    p.add_argument("--k", type=whole_number("K", 10), default=10,
                   help="products per customer (default %(default)s)")
    p.add_argument("--customer", help="print this customer's list (customer_id as in the "
                                      "source) instead of writing every customer's")
    p.add_argument("--work", help="WORK directory with the id maps (default: the manifest's)")
    p.add_argument("--model-dir", help="model directory (default OUTPUT/model)")
    p.add_argument("--scheduler", help="Dask scheduler, as for make data (default: threads)")

    p = add("import-model", "read a SageMaker FM model.tar.gz into OUTPUT/model (default: the "
            "artifact of the SageMaker training job recorded in OUTPUT)",
            "train_deploy.py import-model --artifact s3://bucket/job/output/model.tar.gz")
    p.add_argument("--artifact", help="model.tar.gz path or s3:// URI")
    p.add_argument("--model-dir", help="where the model goes (default OUTPUT/model)")
    p.add_argument("--predictor-type", choices=("regressor", "binary_classifier"),
                   help="when the artifact's symbol.json does not say")
    return parser


def hyperparameters(ns) -> dict:
    """``--hp name=value`` pairs and the convenience flags, as strings (validated later)."""
    hp = {}
    for item in ns.hp:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise FmprepError(f"--hp {item!r} is not NAME=VALUE; e.g. --hp linear_lr=0.01")
        hp[name.strip()] = value.strip()
    for name in ("epochs", "num_factors", "predictor_type", "mini_batch_size"):
        value = getattr(ns, name)
        if value is not None:
            hp[name] = value
    return hp


def _manifest(output: str) -> dict:
    return read_manifest(output)


# --- train --------------------------------------------------------------------------------------

def cmd_train(ns) -> None:
    from fmprep import fm

    manifest = _manifest(ns.output)
    given = hyperparameters(ns)
    # Validate before any job starts: a typo must not cost a cluster start-up.
    hp = fm.validate_hyperparameters(given, manifest["feature_dim"])
    if ns.backend == "local":
        model_dir = ns.model_dir or storage.join(ns.output, config.LOCAL_MODEL_DIR)
        metrics = fm.train_from_output(ns.output, model_dir, hp)
        final = ", ".join(f"{k} = {v:.4f}" for k, v in metrics["final"].items())
        print(f"model saved to {model_dir} ({final or 'no test metrics'}, "
              f"{metrics['wall_seconds']:.1f} s)")
    else:
        from fmprep import sagemaker

        local_only = sorted(k for k in config.FM_LOCAL_OPTIONS if k in given)
        if local_only:
            log.warning("not sent to SageMaker (local trainer options): %s",
                        ", ".join(local_only))
        # What the user set, not the validated hp: unset names get fmprep's SageMaker defaults.
        sagemaker.train(ns.output, ns.role, given,
                        instance_type=ns.instance_type or config.TRAIN_INSTANCE_TYPE,
                        instance_count=ns.instance_count or config.TRAIN_INSTANCE_COUNT,
                        image_uri=ns.image_uri, wait=not ns.no_wait, region=ns.region)
    # The report gains the learning curve (local) or the job's final metrics (SageMaker).
    from fmprep.report import write_report

    try:
        print(f"report: {write_report(ns.output, model_dir=ns.model_dir)}")
    except FmprepError as err:
        log.warning("report not refreshed: %s", err)


# --- deploy / undeploy (local) ------------------------------------------------------------------

def _local_dir(output: str) -> str:
    if storage.is_remote(output):
        raise FmprepError(f"the local server keeps its state under OUTPUT, which is {output}; "
                          "use a local OUTPUT, or --backend sagemaker")
    return output


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that already exited
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, check the command line names fmprep.serve."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"fmprep.serve" in f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc") and _alive(pid)


def deploy_local(output: str, model_dir: str, host: str, port: int) -> dict:
    """Start ``python -m fmprep.serve`` detached and wait until it answers ``/ping``."""
    output = _local_dir(output)
    record_path = os.path.join(output, config.ENDPOINT_RECORD)
    running = storage.read_json(record_path)
    if running and _ping(running["url"]):
        raise FmprepError(f"a local server is already running at {running['url']} (pid "
                          f"{running['pid']}); run undeploy first")
    model_meta = storage.read_json(os.path.join(model_dir, "model.json"))
    if model_meta is None:
        raise FmprepError(f"no model in {model_dir}; run make train first (or pass --model-dir)")
    check_model(model_meta, _manifest(output), model_dir)
    log_path = os.path.join(output, config.SERVER_LOG)
    ready = os.path.join(output, ".serve-ready.json")
    if os.path.exists(ready):
        os.remove(ready)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fmprep.serve", "--model-dir", os.path.abspath(model_dir),
             "--host", host, "--port", str(port), "--ready-file", os.path.abspath(ready)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own session: it outlives this command and make
    deadline = time.monotonic() + config.SERVE_START_TIMEOUT_S
    url = None
    while url is None or not _ping(url):
        if proc.poll() is not None:
            raise FmprepError(f"the server exited with status {proc.returncode}: "
                              f"{_last_line(log_path)} (log: {log_path})")
        if time.monotonic() > deadline:
            proc.terminate()
            raise FmprepError(f"the server did not answer within {config.SERVE_START_TIMEOUT_S} "
                              f"s; see {log_path}")
        if url is None and os.path.exists(ready):
            url = storage.read_json(ready)["url"]
        time.sleep(0.1)
    os.remove(ready)
    record = {"backend": "local", "url": url, "pid": proc.pid,
              "model_dir": os.path.abspath(model_dir), "log": os.path.abspath(log_path),
              "data": model_meta.get("data")}
    storage.write_json(record_path, record)
    return record


def _last_line(path: str) -> str:
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def undeploy_local(output: str) -> str:
    """Stop the server recorded in OUTPUT/endpoint.json (SIGTERM) and remove the record."""
    record_path = os.path.join(_local_dir(output), config.ENDPOINT_RECORD)
    record = storage.read_json(record_path)
    if record is None:
        raise FmprepError(f"nothing to undeploy: no {record_path}")
    pid = int(record["pid"])
    if not _alive(pid) or not _is_our_server(pid):
        os.remove(record_path)
        return f"the server (pid {pid}) was not running; removed {record_path}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid):
        if time.monotonic() > deadline:
            raise FmprepError(f"server pid {pid} did not stop within 10 s after SIGTERM; stop it "
                              f"with kill {pid}")
        time.sleep(0.05)
    os.remove(record_path)
    return f"stopped the server at {record['url']} (pid {pid})"


def cmd_deploy(ns) -> None:
    if ns.backend == "local":
        model_dir = ns.model_dir or storage.join(ns.output, config.LOCAL_MODEL_DIR)
        record = deploy_local(ns.output, model_dir, ns.host, ns.port)
        print(f"serving {model_dir} at {record['url']} (pid {record['pid']}, log {record['log']})")
        return
    from fmprep import sagemaker

    endpoint = sagemaker.deploy(ns.output, ns.role,
                                instance_type=ns.instance_type or config.ENDPOINT_INSTANCE_TYPE,
                                instance_count=ns.instance_count or config.ENDPOINT_INSTANCE_COUNT,
                                image_uri=ns.image_uri, region=ns.region)
    print(f"endpoint {endpoint['name']} is {endpoint['status']}")


def cmd_undeploy(ns) -> None:
    if ns.backend == "local":
        print(undeploy_local(ns.output))
        return
    from fmprep import sagemaker

    deleted = sagemaker.undeploy(ns.output, region=ns.region)
    if not deleted:
        print("nothing was left to delete")


# --- predict ------------------------------------------------------------------------------------

def _parts(work: str, prepared: dict, stage: str) -> list[str]:
    return [storage.join(work, stage, p["file"]) for p in prepared["parts"][stage]]


def _rows(urls: list[str], column: str, value: str, columns: list[str]):
    """The rows of Parquet files where ``column == value`` (pushed down to each file)."""
    import pyarrow as pa

    tables = []
    for url in urls:
        with storage.open_file(url, "rb") as f:
            tables.append(pq.read_table(f, columns=columns, filters=[(column, "==", value)]))
    return pa.concat_tables(tables) if tables else None


def default_date(manifest: dict) -> dt.date:
    """predict's DATE when none is given: the latest review date in the data.

    Today would ask the model about a time it never saw (years past the data, for the public
    review sets); the data's last day is the latest date training knows about.
    """
    dates = manifest.get("review_dates")
    if not dates:
        raise FmprepError(f"{MANIFEST} predates review_dates; pass --date (DATE=YYYY-MM-DD) or "
                          "rerun make data FORCE=1")
    return dt.date.fromisoformat(dates[1])


def fm_row(output: str, work: str | None, customer: str, product: str,
           date: dt.date | None = None):
    """The FM feature row for (customer, product, date), from OUTPUT's manifest and WORK's maps.

    The days since the customer's first review are scaled as the training data was and clipped
    to the range the training rows span: an FM extrapolates a linear term without bound.

    Returns
    -------
    indices, values : list
        Keys ``[user, item, feature_dim - 1]`` and values ``[1, 1, days_since_first]``.
    info : dict
        ``feature_dim``, ``user``, ``item``, ``title``, ``first_review``, ``date`` (given or
        :func:`default_date`), ``days`` (unclipped), ``clipped_days`` (None when in range).
    """
    manifest = _manifest(output)
    date = date or default_date(manifest)
    work = work or manifest.get("work")
    prepared = storage.read_json(storage.join(work, MANIFEST)) if work else None
    if prepared is None:
        raise FmprepError(f"no finished prepare stage in WORK={work}; pass --work (WORK=) or run "
                          "make data")
    users = _rows(_parts(work, prepared, "users"), "customer_id", customer,
                  ["user", "first_review"])
    if users is None or users.num_rows == 0:
        raise FmprepError(f"customer {customer} is not in {storage.join(work, 'users')} (never "
                          "seen, or filtered out for too few ratings); pick another --customer "
                          "or lower MIN_CUSTOMER_RATINGS and re-run make data")
    items = _rows(_parts(work, prepared, "items"), "product_id", product, ["item", "product_title"])
    if items is None or items.num_rows == 0:
        raise FmprepError(f"product {product} is not in {storage.join(work, 'items')} (never "
                          "seen, or filtered out for too few ratings); pick another --product "
                          "or lower MIN_PRODUCT_RATINGS and re-run make data")
    first = users["first_review"][0].as_py()
    first = first.date() if isinstance(first, dt.datetime) else first
    days = (date - first).days
    feature_dim = int(manifest["feature_dim"])
    divisor = float(manifest["days_since_first"]["divisor"])
    scaled, clipped = days / divisor, None
    seen = manifest["days_since_first"].get("train_range")
    if seen and not seen[0] <= scaled <= seen[1]:
        scaled = min(max(scaled, seen[0]), seen[1])
        clipped = round(scaled * divisor)
    user, item = int(users["user"][0].as_py()), int(items["item"][0].as_py())
    info = {"feature_dim": feature_dim, "user": user, "item": item,
            "title": items["product_title"][0].as_py(), "first_review": str(first),
            "date": date, "days": days, "clipped_days": clipped,
            "seen_days": [round(v * divisor) for v in seen] if seen else None}
    return [user, item, feature_dim - 1], [1.0, 1.0, scaled], info


def _post_local(url: str, body: bytes) -> dict:
    req = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise FmprepError(f"the server answered {err.code}: {err.read().decode(errors='replace')}"
                          ) from None
    except OSError as err:
        raise FmprepError(f"no server answering at {url} ({err}); run make deploy") from None


def rating_text(raw: float, label_range: list | None) -> str:
    """The score on the rating scale (clipped to the ratings seen), the raw score beside it."""
    if not label_range:
        return f"score {raw:.4f}"
    lo, hi = label_range
    shown = min(max(raw, lo), hi)
    note = f", clipped to the rating range {lo:g}–{hi:g}" if shown != raw else ""
    return f"score {shown:.2f} (raw {raw:.4f}{note})"


def cmd_predict(ns) -> None:
    from fmprep.serve import sparse_json_body

    try:
        date = dt.date.fromisoformat(ns.date) if ns.date else None
    except ValueError:
        raise FmprepError(f"DATE={ns.date!r} (--date) is not a date; use YYYY-MM-DD") from None
    manifest = _manifest(ns.output)
    if ns.backend == "local":
        record = storage.read_json(os.path.join(_local_dir(ns.output), config.ENDPOINT_RECORD))
        if record is None:
            raise FmprepError(f"no local server recorded in {ns.output}; run make deploy first")
        reason = stale_reason(record.get("data"), manifest)
        if reason:
            raise FmprepError(f"the server at {record['url']} serves a model of earlier data "
                              f"({reason}); run make train, then make undeploy && make deploy")
    else:
        from fmprep import sagemaker

        record = sagemaker.read_record(ns.output)
        if not record.get("endpoint"):
            raise FmprepError(f"no endpoint recorded in {ns.output}; run make deploy "
                              "BACKEND=sagemaker first")
        reason = stale_reason(record["endpoint"].get("data"), manifest)
        if reason:
            raise FmprepError(f"endpoint {record['endpoint']['name']} serves a model of earlier "
                              f"data ({reason}); run make train BACKEND=sagemaker, then "
                              "undeploy and deploy")
    indices, values, info = fm_row(ns.output, ns.work, ns.customer, ns.product, date)
    date = info["date"]
    if info["clipped_days"] is not None:
        lo, hi = info["seen_days"]
        log.warning("DATE %s is %d days after customer %s's first review; training saw %d to %d "
                    "days, so the model is asked about %d days (it cannot extrapolate)",
                    date, info["days"], ns.customer, lo, hi, info["clipped_days"])
    body = sparse_json_body([0, len(indices)], indices, values, info["feature_dim"])
    if ns.backend == "local":
        answer = _post_local(record["url"], body)
    else:
        answer = sagemaker.predict(record["endpoint"]["name"], body,
                                   region=ns.region or record.get("region"))
    pred = answer["predictions"][0]
    if "predicted_label" in pred:  # binary_classifier: a probability, not a rating
        score = f"score {pred['score']:.4f}, predicted_label {pred['predicted_label']}"
    else:
        score = rating_text(pred["score"], manifest.get("label_range"))
    print(f"{score}: customer {ns.customer} (user {info['user']}), "
          f"product {ns.product} (item {info['item']}, {info['title']!r}), {date} = "
          f"{info['days']} days after their first review")


# --- main ---------------------------------------------------------------------------------------

def cmd_evaluate(ns) -> None:
    from fmprep.evaluate import evaluate_output
    from fmprep.report import write_report

    result = evaluate_output(ns.output, ns.model_dir)
    rating, ranking, k = result["rating"], result["ranking"], result["ranking"]["k"]
    for name in ("model", "biases", "global_mean"):
        print(f"{name:12s} test RMSE {rating[name]['rmse']:.4f}  MAE {rating[name]['mae']:.4f}")
    for name in ("recommender", "model", "popularity"):
        if name not in ranking:
            continue
        print(f"{name:12s} HR@{k} {ranking[name][f'hr@{k}']:.4f}  "
              f"NDCG@{k} {ranking[name][f'ndcg@{k}']:.4f}  ({ranking['customers']} customers)")
    try:
        write_report(ns.output, model_dir=ns.model_dir)  # logs its own path
    except FmprepError as err:
        log.warning("report not refreshed: %s", err)


def cmd_recommend(ns) -> None:
    from fmprep.recommend import recommend_customer, recommend_output

    if ns.customer is None:
        result = recommend_output(ns.output, ns.k, ns.work, ns.model_dir,
                                  scheduler=ns.scheduler)
        print(f"{result['rows']:,} recommendations for {result['customers']:,} customers → "
              f"{ns.output.rstrip('/')}/recommendations/")
        return
    recs = recommend_customer(ns.output, ns.customer, ns.k, ns.work, ns.model_dir)
    print(f"top {len(recs)} for customer {ns.customer}:")
    for row in recs.itertuples(index=False):
        print(f"{row.rank:3d}. {row.product_id}  {row.product_title}  (score {row.score:.3f})")


def cmd_import_model(ns) -> None:
    from fmprep.artifact import import_model

    result = import_model(ns.output, ns.artifact, ns.model_dir, ns.predictor_type)
    line = (f"imported {result['artifact']} → {result['model_dir']} (feature_dim "
            f"{result['feature_dim']:,}, {result['num_factors']} factors, "
            f"{result['predictor_type']})")
    if "evaluation" in result:
        line += f"; test RMSE {result['evaluation']['rating']['model']['rmse']:.4f}"
    print(line)


def cmd_score(ns) -> None:
    from fmprep.score import DEFAULT_BLOCKSIZE, SCORES_DIR, score_pairs

    result = score_pairs(ns.output, ns.input, work=ns.work, model_dir=ns.model_dir,
                         scores=ns.scores, backend=ns.backend, input_format=ns.input_format,
                         blocksize=ns.part_size or DEFAULT_BLOCKSIZE, scheduler=ns.scheduler,
                         role=ns.role, region=ns.region, instance_type=ns.instance_type,
                         instance_count=ns.instance_count, image_uri=ns.image_uri)
    where = ns.scores or storage.join(ns.output, SCORES_DIR)
    print(f"{result['rows']} rows scored → {where} ({result['unknown_customer_rows']} unknown "
          f"customers, {result['unknown_product_rows']} unknown products, "
          f"{result['bad_date_rows']} bad dates: flagged per row)")


COMMANDS = {"train": cmd_train, "deploy": cmd_deploy, "predict": cmd_predict,
            "undeploy": cmd_undeploy, "evaluate": cmd_evaluate, "recommend": cmd_recommend,
            "import-model": cmd_import_model, "score": cmd_score}


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and return 2."""
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or the parser's one-line error
        return done.code if isinstance(done.code, int) else 2 if done.code else 0
    logging.basicConfig(level=logging.WARNING if ns.quiet else logging.INFO,
                        format="%(name)s: %(message)s", stream=sys.stderr)
    from fmprep.logs import configure_libraries, verbose_from_env

    # botocore's INFO lines ("Found credentials in environment variables") only with VERBOSE=1.
    configure_libraries(verbose_from_env())
    try:
        COMMANDS[ns.command](ns)
    except FmprepError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
