"""The model commands: train | deploy | predict | score | undeploy | evaluate | recommend |
import-model, on the local backend or SageMaker.

They are subcommands of the ``fmprep`` command (:mod:`fmprep.cli` registers them with
:func:`add_commands`) and the whole of ``scripts/train_deploy.py`` (:func:`build_parser` and
:func:`main` under the script's own name), with the same flags either way:

* ``local`` (default): fmprep's own FM trainer writes OUTPUT/model; ``deploy`` starts the
  local inference server (:mod:`fmprep.serving.local`), recorded in OUTPUT/endpoint.json.
* ``sagemaker``: a SageMaker training job on OUTPUT's S3 shards and a SageMaker endpoint,
  recorded in OUTPUT/sagemaker.json (:mod:`fmprep.serving.sagemaker`).

Errors a user can fix print one line, ``<program>: error: …``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys

from . import config, errors, storage
from .errors import FmprepError, aside, setting
from .freshness import read_manifest

DESCRIPTION = "Train, deploy, query and undeploy the FM model, locally or on SageMaker."

# The long options a make variable of the same name sets (--input-format: INPUT_FORMAT), for
# the one-line errors (see fmprep.cli.UserArgumentParser and fmprep.errors.render).
MODEL_SETTINGS = frozenset({
    "--backend", "--output", "--region", "--quiet", "--role", "--instance-type",
    "--instance-count", "--image-uri", "--hp", "--epochs", "--num-factors", "--predictor-type",
    "--mini-batch-size", "--port", "--customer", "--product", "--date", "--work", "--k",
    "--artifact", "--model-dir", "--scheduler", "--input", "--scores", "--input-format",
    "--part-size"})


# --- arguments ----------------------------------------------------------------------------------

def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port 0-65535, else one line naming the port setting and a
    fix (rendered by :meth:`fmprep.cli.UserArgumentParser.error`)."""
    port = setting("port")
    fix = f"use e.g. {port}{config.SERVE_PORT} ({port}0: any free port)"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{port}{text} is not a port number; {fix}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{port}{text} is not a port number (0 to 65535); "
                                         f"{fix}")
    return value


def _common(verbose_help: str | None) -> argparse.ArgumentParser:
    """The options every model command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=("local", "sagemaker"),
                        default=os.environ.get("BACKEND") or "local",
                        help="where to train and serve (default: $BACKEND or local)")
    common.add_argument("--output", default=config.DEFAULT_OUTPUT,
                        help="OUTPUT directory of make data (default %(default)s)")
    common.add_argument("--region", help="AWS region (default: AWS config, else "
                                         f"{config.DEFAULT_REGION})")
    if verbose_help is None:
        common.add_argument("-q", "--quiet", action="store_true",
                            help="only print results and errors")
    else:
        # Under fmprep the top-level parser owns -q/-v: SUPPRESS keeps `fmprep -q train` quiet.
        common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                            help="only print results and errors")
        common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                            help=verbose_help)
    return common


def add_commands(sub, prog: str, example_prog: str, verbose_help: str | None = None) -> None:
    """Add the model commands to a parser's subcommands.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        What ``add_subparsers`` returned.
    prog : str
        The program, for log lines (the commands log to the logger of this name).
    example_prog : str
        How the examples in each command's ``--help`` start (``fmprep``, ``train_deploy.py``).
    verbose_help : str, optional
        Given under ``fmprep``: -q/-v are also top-level options there, and this is -v's help.
    """
    from .cli import whole_number  # here: fmprep.cli imports this module at its top

    common = _common(verbose_help)

    def add(name, help_, example):
        p = sub.add_parser(name, parents=[common], help=help_, description=help_,
                           epilog=f"example:\n  {example.format(prog=example_prog)}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(logger_name=prog)
        return p

    def aws_options(p, what, instance_type, instance_count):
        g = p.add_argument_group("SageMaker options")
        g.add_argument("--role", help="IAM role ARN SageMaker assumes (required for sagemaker)")
        g.add_argument("--instance-type", help=f"{what} instance type (default {instance_type})")
        g.add_argument("--instance-count", type=whole_number("instance_count", instance_count),
                       help=f"{what} instances (default {instance_count})")
        g.add_argument("--image-uri", help="FM container image (default: the region's "
                                           "factorization-machines:1)")
        return g

    p = add("train", "train the model (local FM trainer or a SageMaker training job)",
            "{prog} train --epochs 5 --hp factors_lr=0.001")
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
            "{prog} deploy --port 8080")
    p.add_argument("--model-dir", help="local backend: model to serve (default OUTPUT/model)")
    p.add_argument("--host", default=config.SERVE_HOST, help="local server address "
                                                              "(default %(default)s)")
    p.add_argument("--port", type=port_number, default=config.SERVE_PORT,
                   help="local server port, 0 for any free one (default %(default)s)")
    aws_options(p, "endpoint", config.ENDPOINT_INSTANCE_TYPE, config.ENDPOINT_INSTANCE_COUNT)

    p = add("predict", "predict one customer's rating of one product",
            "{prog} predict --customer 10001 --product B00ABC1234 --date 2015-08-31")
    p.add_argument("--customer", required=True, help="customer_id as in the source data")
    p.add_argument("--product", required=True, help="product_id as in the source data")
    p.add_argument("--date", help="date of the rating, YYYY-MM-DD (default: the latest review "
                   "date in the data; days outside those training saw are clipped to them)")
    p.add_argument("--work", help="WORK directory with the id maps (default: the manifest's)")

    p = add("score", "score every (customer_id, product_id[, review_date]) row of a CSV or "
            "Parquet file → OUTPUT/scores/ (Parquet parts, _manifest.json)",
            "{prog} score --input pairs.csv")
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
        "{prog} undeploy")
    p = add("evaluate", "test RMSE / MAE and HR@10 / NDCG@10 of the model against the train "
            "mean, biases-only and popularity baselines → OUTPUT/model/evaluation.json",
            "{prog} evaluate")
    p.add_argument("--model-dir", help="model directory (default OUTPUT/model)")

    p = add("recommend", "top K products per customer from the ranking model → "
            "OUTPUT/recommendations/ (or one customer's list with --customer)",
            "{prog} recommend --k 10   |   {prog} recommend --customer 10001")
    p.add_argument("--k", type=whole_number("k", 10), default=10,
                   help="products per customer (default %(default)s)")
    p.add_argument("--customer", help="print this customer's list (customer_id as in the "
                                      "source) instead of writing every customer's")
    p.add_argument("--work", help="WORK directory with the id maps (default: the manifest's)")
    p.add_argument("--model-dir", help="model directory (default OUTPUT/model)")
    p.add_argument("--scheduler", help="Dask scheduler, as for make data (default: threads)")

    p = add("import-model", "read a SageMaker FM model.tar.gz into OUTPUT/model (default: the "
            "artifact of the SageMaker training job recorded in OUTPUT)",
            "{prog} import-model --artifact s3://bucket/job/output/model.tar.gz")
    p.add_argument("--artifact", help="model.tar.gz path or s3:// URI")
    p.add_argument("--model-dir", help="where the model goes (default OUTPUT/model)")
    p.add_argument("--predictor-type", choices=("regressor", "binary_classifier"),
                   help="when the artifact's symbol.json does not say")


def hyperparameters(ns) -> dict:
    """``--hp name=value`` pairs and the convenience flags, as strings (validated later).

    Parameters
    ----------
    ns : argparse.Namespace
        A parsed ``train`` command line (``hp``, ``epochs``, ``num_factors``,
        ``predictor_type``, ``mini_batch_size``).

    Returns
    -------
    dict
        Hyperparameter name → value as given; a convenience flag overrides the same --hp.
    """
    hp = {}
    for item in ns.hp:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            hp_ = setting("hp")
            raise FmprepError(f"{hp_}{item!r} is not NAME=VALUE; e.g. {hp_}linear_lr=0.01")
        hp[name.strip()] = value.strip()
    for name in ("epochs", "num_factors", "predictor_type", "mini_batch_size"):
        value = getattr(ns, name)
        if value is not None:
            hp[name] = value
    return hp


def _log(ns) -> logging.Logger:
    # The program's own logger: "train_deploy: …" from the script, "fmprep: …" from fmprep.
    return logging.getLogger(getattr(ns, "logger_name", "fmprep"))


def _refresh_report(ns, **kwargs) -> str | None:
    # A report that cannot be refreshed must not fail a model command: warn, go on.
    from .report import write_report

    try:
        return write_report(ns.output, model_dir=ns.model_dir, **kwargs)
    except FmprepError as err:
        _log(ns).warning("report not refreshed: %s", err)


# --- commands -----------------------------------------------------------------------------------

def cmd_train(ns) -> None:
    """``train``: validate the hyperparameters, then train locally or as a SageMaker job."""
    from .model.hyperparameters import validate_hyperparameters

    manifest = read_manifest(ns.output)
    given = hyperparameters(ns)
    # Validate before any job starts: a typo must not cost a cluster start-up.
    hp = validate_hyperparameters(given, manifest["feature_dim"])
    if ns.backend == "local":
        from .model.training import fit_output

        model_dir = ns.model_dir or storage.join(ns.output, config.LOCAL_MODEL_DIR)
        metrics = fit_output(ns.output, model_dir, hp, manifest)
        final = ", ".join(f"{k} = {v:.4f}" for k, v in metrics["final"].items())
        print(f"model saved to {model_dir} ({final or 'no test metrics'}, "
              f"{metrics['wall_seconds']:.1f} s)")
    else:
        from .serving import sagemaker

        local_only = sorted(k for k in config.FM_LOCAL_OPTIONS if k in given)
        if local_only:
            _log(ns).warning("not sent to SageMaker (local trainer options): %s",
                             ", ".join(local_only))
        # What the user set, not the validated hp: unset names get fmprep's SageMaker defaults.
        sagemaker.train(ns.output, ns.role, given,
                        instance_type=ns.instance_type or config.TRAIN_INSTANCE_TYPE,
                        instance_count=ns.instance_count or config.TRAIN_INSTANCE_COUNT,
                        image_uri=ns.image_uri, wait=not ns.no_wait, region=ns.region)
    # The report gains the learning curve (local) or the job's final metrics (SageMaker).
    path = _refresh_report(ns, manifest=manifest)
    if path is not None:
        print(f"report: {path}")


def cmd_deploy(ns) -> None:
    """``deploy``: start the local server, or create the SageMaker endpoint."""
    if ns.backend == "local":
        from .serving.local import deploy_local

        model_dir = ns.model_dir or storage.join(ns.output, config.LOCAL_MODEL_DIR)
        record = deploy_local(ns.output, model_dir, ns.host, ns.port)
        print(f"serving {model_dir} at {record['url']} (pid {record['pid']}, log {record['log']})")
        return
    from .serving import sagemaker

    endpoint = sagemaker.deploy(ns.output, ns.role,
                                instance_type=ns.instance_type or config.ENDPOINT_INSTANCE_TYPE,
                                instance_count=ns.instance_count or config.ENDPOINT_INSTANCE_COUNT,
                                image_uri=ns.image_uri, region=ns.region)
    print(f"endpoint {endpoint['name']} is {endpoint['status']}")


def cmd_undeploy(ns) -> None:
    """``undeploy``: stop the local server, or delete the endpoint, its config and model."""
    if ns.backend == "local":
        from .serving.local import undeploy_local

        print(undeploy_local(ns.output))
        return
    from .serving import sagemaker

    deleted = sagemaker.undeploy(ns.output, region=ns.region)
    if not deleted:
        print("nothing was left to delete")


def cmd_predict(ns) -> None:
    """``predict``: one customer's rating of one product from the deployed model."""
    from .serving.predict import deployment, fm_row, invoke, prediction_text
    from .serving.serve import sparse_json_body

    try:
        date = dt.date.fromisoformat(ns.date) if ns.date else None
    except ValueError:
        raise FmprepError(f"{setting('date')}{ns.date!r}{aside('date')} is not a date; use "
                          "YYYY-MM-DD") from None
    manifest = read_manifest(ns.output)
    record = deployment(ns.output, ns.backend, manifest)
    indices, values, info = fm_row(ns.output, ns.work, ns.customer, ns.product, date)
    date = info["date"]
    if info["clipped_days"] is not None:
        lo, hi = info["seen_days"]
        _log(ns).warning("%s%s is %d days after customer %s's first review; training saw %d "
                         "to %d days, so the model is asked about %d days (it cannot "
                         "extrapolate)", setting("date"), date, info["days"], ns.customer, lo,
                         hi, info["clipped_days"])
    body = sparse_json_body([0, len(indices)], indices, values, info["feature_dim"])
    answer = invoke(record, ns.backend, body, region=ns.region)
    score = prediction_text(answer["predictions"][0], manifest.get("label_range"))
    print(f"{score}: customer {ns.customer} (user {info['user']}), "
          f"product {ns.product} (item {info['item']}, {info['title']!r}), {date} = "
          f"{info['days']} days after their first review")


def cmd_evaluate(ns) -> None:
    """``evaluate``: rating and ranking metrics of the model against the baselines."""
    from .model.evaluate import evaluate_output

    result = evaluate_output(ns.output, ns.model_dir)
    rating, ranking, k = result["rating"], result["ranking"], result["ranking"]["k"]
    for name in ("model", "biases", "global_mean"):
        print(f"{name:12s} test RMSE {rating[name]['rmse']:.4f}  MAE {rating[name]['mae']:.4f}")
    for name in ("recommender", "model", "popularity"):
        if name not in ranking:
            continue
        print(f"{name:12s} HR@{k} {ranking[name][f'hr@{k}']:.4f}  "
              f"NDCG@{k} {ranking[name][f'ndcg@{k}']:.4f}  ({ranking['customers']} customers)")
    _refresh_report(ns)  # logs its own path


def cmd_recommend(ns) -> None:
    """``recommend``: top K per customer to OUTPUT/recommendations/, or one customer's list."""
    from .recommend import recommend_customer, recommend_output

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
    """``import-model``: a SageMaker model.tar.gz into OUTPUT/model."""
    from .model.artifact import import_model

    result = import_model(ns.output, ns.artifact, ns.model_dir, ns.predictor_type)
    line = (f"imported {result['artifact']} → {result['model_dir']} (feature_dim "
            f"{result['feature_dim']:,}, {result['num_factors']} factors, "
            f"{result['predictor_type']})")
    if "evaluation" in result:
        line += f"; test RMSE {result['evaluation']['rating']['model']['rmse']:.4f}"
    print(line)


def cmd_score(ns) -> None:
    """``score``: every row of a pairs file → OUTPUT/scores/, unknown ids flagged per row."""
    from .score import DEFAULT_BLOCKSIZE, SCORES_DIR, score_pairs

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


def run(ns) -> int:
    """Execute a parsed model command line; FmprepError propagates to the caller's main.

    Returns
    -------
    int
        0.
    """
    COMMANDS[ns.command](ns)
    return 0


# --- the stand-alone program (scripts/train_deploy.py) ------------------------------------------

def build_parser(prog: str, epilog: str, example_prog: str) -> argparse.ArgumentParser:
    """The parser of a program that has only the model commands.

    Its errors are one line naming the make variable and a fix (``<prog>: error: PORT=abc is
    not a port number; …``), without argparse's usage block.

    Parameters
    ----------
    prog : str
        Program name, before ``: error:`` and in usage lines.
    epilog : str
        Examples shown by ``--help``.
    example_prog : str
        How each command's example starts.
    """
    from .cli import UserArgumentParser

    class Parser(UserArgumentParser):
        TOOL = prog
        SETTINGS = MODEL_SETTINGS

    parser = Parser(prog=prog, description=DESCRIPTION, epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub, prog, example_prog)
    return parser


def main(argv: list[str] | None, prog: str, epilog: str, example_prog: str) -> int:
    """Run one model command as the program ``prog``; returns the exit status.

    0 on success, 2 after one ``<prog>: error: …`` line for anything the user can fix (bad
    arguments included), 130 when interrupted.
    """
    # Before parsing: argparse's errors name settings too (make variables under make).
    errors.use_spelling()
    try:
        ns = build_parser(prog, epilog, example_prog).parse_args(argv)
    except SystemExit as done:  # --help, or the parser's one-line error
        return done.code if isinstance(done.code, int) else 2 if done.code else 0
    from .logs import StderrHandler, configure_libraries, verbose_from_env

    # StderrHandler renders the settings log lines name, as errors are.
    logging.basicConfig(level=logging.WARNING if ns.quiet else logging.INFO,
                        format="%(name)s: %(message)s", handlers=[StderrHandler()])

    # botocore's INFO lines ("Found credentials in environment variables") only with VERBOSE=1.
    configure_libraries(verbose_from_env())
    try:
        return run(ns)
    except FmprepError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
