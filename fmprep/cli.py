"""Command line: ``fmprep`` / ``python -m fmprep`` with one subcommand per stage.

Errors a user can cause print one line (``fmprep: error: …``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import config, progress
from .config import PrepSettings
from .errors import FmprepError
from .sample import DEFAULT_SAMPLE_2023
from .sources import FORMAT_CHOICES

SAMPLE_LAYOUTS = ("amazon-tsv", "amazon-2023")

EPILOG = """examples:
  fmprep sample --out data/sample/reviews.tsv.gz --rows 20000
  fmprep data --source data/sample/reviews.tsv.gz --work data/work --output data/output
  fmprep data --source 's3://my-bucket/reviews/*.tsv.gz' --work s3://my-bucket/work \\
              --output s3://my-bucket/fm --scheduler tcp://10.0.0.5:8786
  fmprep data --source Movies_and_TV.jsonl.gz --meta meta_Movies_and_TV.jsonl.gz
  fmprep data --source ml-25m/ratings.csv --meta ml-25m/movies.csv --format movielens-csv
"""


def _settings_args(p: argparse.ArgumentParser) -> None:
    d = PrepSettings()
    g = p.add_argument_group("prep settings (defaults: the reference workflow)")
    g.add_argument("--min-customer-ratings", type=int, default=d.min_customer_ratings,
                   help="keep customers with at least this many ratings (default %(default)s)")
    g.add_argument("--min-product-ratings", type=int, default=d.min_product_ratings,
                   help="keep products with at least this many ratings (default %(default)s)")
    g.add_argument("--filter-mode", choices=PrepSettings.FILTER_MODES, default=d.filter_mode,
                   help="single: one counting pass like the reference; kcore: repeat until "
                        "every customer and product meets its minimum (default %(default)s)")
    g.add_argument("--train-shards", type=int, default=d.train_shards,
                   help="train channel shards, ≥ training instances (default %(default)s)")
    g.add_argument("--test-shards", type=int, default=d.test_shards,
                   help="test channel shards (default %(default)s)")
    g.add_argument("--days-scale", choices=PrepSettings.DAYS_SCALES, default=d.days_scale,
                   help="days_since_first as raw days, years, or unit (÷ max) "
                        "(default %(default)s)")
    g.add_argument("--part-size", default=d.part_size,
                   help="uncompressed source bytes per Parquet part / Dask partition "
                        "(default %(default)s)")


def _settings(ns) -> PrepSettings:
    return PrepSettings(min_customer_ratings=ns.min_customer_ratings,
                        min_product_ratings=ns.min_product_ratings, filter_mode=ns.filter_mode,
                        train_shards=ns.train_shards, test_shards=ns.test_shards,
                        days_scale=ns.days_scale, part_size=ns.part_size)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fmprep`` command."""
    parser = argparse.ArgumentParser(
        prog="fmprep", description="Turn Amazon-review ratings into SageMaker Factorization "
        "Machines RecordIO-protobuf shards.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_, example):
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: without it the subcommand's default would undo `fmprep -q data …`.
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only print errors")
        return p

    p = add("sample", "write generated reviews in the Amazon Customer Reviews TSV layout (or "
            "the Amazon Reviews 2023 JSON Lines layout)",
            "fmprep sample --rows 2000000 --out data/bench/reviews_2m.tsv.gz")
    p.add_argument("--layout", choices=SAMPLE_LAYOUTS, default=SAMPLE_LAYOUTS[0],
                   help="amazon-tsv: one .tsv.gz; amazon-2023: <name>.jsonl.gz and its "
                        "meta_<name>.jsonl.gz beside it (default %(default)s)")
    p.add_argument("--out", default=None,
                   help=f"file to write (default {config.DEFAULT_SAMPLE}, or "
                        f"{DEFAULT_SAMPLE_2023} for amazon-2023)")
    p.add_argument("--rows", type=int, default=config.SAMPLE_ROWS, help="rows (default %(default)s)")
    p.add_argument("--seed", type=int, default=config.SAMPLE_SEED, help="seed (default %(default)s)")
    p.add_argument("--no-faults", action="store_true", help="no malformed rows")
    p.add_argument("--no-meta", action="store_true",
                   help="amazon-2023: do not write the meta_<name> product file")

    for name, help_, example in (
            ("data", "run ingest, prepare and encode (skipping stages already done)",
             "fmprep data --source data/sample/reviews.tsv.gz"),
            ("ingest", "stream source TSV(s) into WORK/reviews Parquet",
             "fmprep ingest --source 'data/raw/*.tsv.gz' --work data/work"),
            ("prepare", "dedupe, filter, index and split WORK/reviews into WORK/{train,test}",
             "fmprep prepare --work data/work --min-customer-ratings 5"),
            ("encode", "write OUTPUT/{train,test} RecordIO-protobuf shards and the manifest",
             "fmprep encode --work data/work --output data/output")):
        p = add(name, help_, example)
        if name in ("data", "ingest"):
            p.add_argument("--source", default=config.DEFAULT_SAMPLE,
                           help="path, s3:// URI or glob of review files, .gz or plain "
                                "(default %(default)s)")
            p.add_argument("--format", choices=FORMAT_CHOICES, default=FORMAT_CHOICES[0],
                           help="source format; auto: from each file's first line, its name as "
                                "a hint (default %(default)s)")
            p.add_argument("--meta", default=None,
                           help="product titles for sources without them: Amazon Reviews 2023 "
                                "meta_<Category>.jsonl(.gz), MovieLens u.item, movies.dat or "
                                "movies.csv (path, s3:// URI or glob)")
        p.add_argument("--work", default=config.DEFAULT_WORK,
                       help="working directory, local or s3:// (default %(default)s)")
        if name in ("data", "encode"):
            p.add_argument("--output", default=config.DEFAULT_OUTPUT,
                           help="output directory, local or s3:// (default %(default)s)")
        if name in ("data", "ingest", "prepare"):
            _settings_args(p)
        p.add_argument("--scheduler", default=None,
                       help="Dask scheduler: tcp://host:port, a scheduler file, 'local' "
                            "(a LocalCluster) or 'threads' (default: $DASK_SCHEDULER_ADDRESS, "
                            "else threads)")
        if name == "data":
            p.add_argument("--force", action="store_true", help="rerun every stage")
    p = add("report", "write OUTPUT/report/index.html: rows funnel, distributions, cold start, "
            "model metrics", "fmprep report --output data/output")
    p.add_argument("--output", default=config.DEFAULT_OUTPUT,
                   help="output directory, local or s3:// (default %(default)s)")
    p.add_argument("--work", default=None,
                   help="WORK directory (default: the one in OUTPUT/manifest.json)")
    p.add_argument("--refresh", action="store_true",
                   help="re-read WORK even if report/stats.json is current")
    p.add_argument("--scheduler", default=None, help="Dask scheduler, as for data")
    return parser


def run(ns) -> int:
    """Execute a parsed command line."""
    from . import pipeline

    if ns.command == "sample":
        from .sample import generate_reviews, generate_reviews_2023

        if ns.layout == "amazon-2023":
            summary = generate_reviews_2023(ns.out or DEFAULT_SAMPLE_2023, rows=ns.rows,
                                            seed=ns.seed, faults=not ns.no_faults,
                                            meta=not ns.no_meta)
        else:
            summary = generate_reviews(ns.out or config.DEFAULT_SAMPLE, rows=ns.rows,
                                       seed=ns.seed, faults=not ns.no_faults)
        logging.getLogger("fmprep").info("sample: %s", json.dumps(summary))
        return 0

    from .cluster import dask_client

    with dask_client(ns.scheduler):
        if ns.command == "data":
            manifest = pipeline.run_data(ns.source, ns.work, ns.output, _settings(ns),
                                         force=ns.force,
                                         show_progress=progress.enabled(ns.quiet),
                                         fmt=ns.format, meta=ns.meta)
            _summary(manifest, ns.output)
        elif ns.command == "ingest":
            from . import ingest, storage

            pipeline.validate_settings(_settings(ns))
            sources = storage.expand_sources(ns.source)
            ingest.ingest(sources, ns.work, ns.part_size, fmt=ns.format,
                          meta=pipeline.expand_meta(ns.meta, None))
        elif ns.command == "prepare":
            from . import prepare

            pipeline.validate_settings(_settings(ns))
            prepare.prepare(ns.work, _settings(ns))
        elif ns.command == "report":
            from .report import write_report

            print(write_report(ns.output, work=ns.work, refresh=ns.refresh))
        elif ns.command == "encode":
            from . import encode

            _summary(encode.encode(ns.work, ns.output), ns.output)
    return 0


def _summary(manifest: dict, output: str) -> None:
    c = manifest["counts"]
    ing = manifest.get("ingest", {})
    log = logging.getLogger("fmprep")
    log.info("rows read %s, rejected %s, duplicates %s, removed by customer filter %s, by "
             "product filter %s", ing.get("rows_read", "?"), ing.get("rows_rejected", "?"),
             c["duplicates_removed"], c["removed_by_customer_filter"],
             c["removed_by_product_filter"])
    log.info("feature_dim %d (%d users + %d items + days); train %d rows in %d shards, test %d "
             "rows → %s", manifest["feature_dim"], manifest["num_users"], manifest["num_items"],
             manifest["channels"]["train"]["rows"], len(manifest["channels"]["train"]["shards"]),
             manifest["channels"]["test"]["rows"], output)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _setup_logging(quiet: bool) -> None:
    # Only fmprep's own loggers print; Dask's INFO chatter stays out of the user's terminal.
    logger = logging.getLogger("fmprep")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("fmprep: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fmprep`` console script."""
    ns = build_parser().parse_args(argv)
    _setup_logging(ns.quiet)
    try:
        return run(ns)
    except FmprepError as err:
        print(f"fmprep: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # only storage errors are explained; anything else is a bug
        from .storage import describe_storage_error

        message = describe_storage_error(err)
        if message is None:
            raise
        print(f"fmprep: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmprep: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
