"""Command line: ``fmprep`` / ``python -m fmprep`` with one subcommand per stage.

Errors a user can cause print one line (``fmprep: error: …``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import re
import sys

from . import config, errors, progress
from .cli_model import MODEL_SETTINGS
from .config import PrepSettings
from .errors import FmprepError, aside, render, setting

SAMPLE_LAYOUTS = ("amazon-tsv", "amazon-2023")

EPILOG = """examples:
  fmprep sample --out data/sample/reviews.tsv.gz --rows 20000
  fmprep data --source data/sample/reviews.tsv.gz --work data/work --output data/output
  fmprep data --source 's3://my-bucket/reviews/*.tsv.gz' --work s3://my-bucket/work \\
              --output s3://my-bucket/fm --scheduler tcp://10.0.0.5:8786
  fmprep data --source Movies_and_TV.jsonl.gz --meta meta_Movies_and_TV.jsonl.gz
  fmprep data --source ml-25m/ratings.csv --meta ml-25m/movies.csv --format movielens-csv
  fmprep train --epochs 3 && fmprep deploy --port 8080
  fmprep predict --customer 10001 --product B00ABC1234 && fmprep undeploy
"""


class UserArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the setting and the fix.

    Through make, ``--min-customer-ratings abc`` came from ``MIN_CUSTOMER_RATINGS=abc``: the
    message names that variable (the option when run directly: :func:`fmprep.errors.render`),
    and there is no usage block to bury it. Subclasses set :attr:`TOOL` (the name before
    ``: error:``) and :attr:`SETTINGS`; subcommand parsers share the class (argparse builds
    them with their parent's).
    """

    TOOL = "fmprep"
    SETTINGS: frozenset[str] = frozenset()  # long options a make variable of the same name sets

    def error(self, message: str):
        """Print ``TOOL: error: <one line>`` to stderr and exit with status 2."""
        self.exit(2, f"{self.TOOL}: error: {render(self.explain(message))}\n")

    def _setting(self, flag: str) -> str | None:
        """The :func:`~fmprep.errors.setting` token of a long option, None without a variable."""
        return setting(flag[2:].replace("-", "_")) if flag in self.SETTINGS else None

    def explain(self, message: str) -> str:
        """argparse's ``message`` in the words of the setting, with a fix (still to render)."""
        found = re.match(r"argument (\S+): (.*)", message, re.S)
        if found is None:
            return self._general(message)
        names, detail = found.groups()
        flag = next((n for n in names.split("/") if n.startswith("--")), names)
        var = self._setting(flag)
        choice = re.match(r"invalid choice: (.*) \(choose from (.*)\)$", detail, re.S)
        if choice:
            value, choices = (re.sub(r"'([^']*)'", r"\1", g) for g in choice.groups())
            first = choices.split(",")[0].strip()
            if not flag.startswith("-"):
                return f"unknown command {value}; use one of {choices} (see {self.prog} --help)"
            given = f"{var}{value}" if var else f"{flag} {value}"
            fix = f"{var}{first}" if var else f"{flag} {first}"
            return f"{given} is not one of {choices}; use e.g. {fix}"
        if detail.startswith("expected "):
            # Under make the variable is what to set; as an option, the flag says it all.
            named = var and errors.current_spelling() == "make"
            return f"{flag} needs a value" + (f": set {var}" if named else "")
        if detail.startswith("invalid ") and " value: " in detail:
            value = detail.split(" value: ", 1)[1].strip("'")
            return f"{var or flag + '='}{value} is not valid ({detail})"
        return detail  # an ArgumentTypeError of ours: already names the setting and the fix

    def _general(self, message: str) -> str:
        required = re.match(r"the following arguments are required: (.*)", message)
        if required:
            names = [n.strip() for n in required[1].split(",")]
            if names == ["COMMAND"]:
                return f"a command is required (see {self.prog} --help)"
            shown = [f"{self._setting(n)}{aside(n[2:].replace('-', '_'))}" if self._setting(n)
                     else n for n in names]
            listed = " and ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
            return (f"{listed} {'is' if len(names) == 1 else 'are'} required; set "
                    f"{'it' if len(names) == 1 else 'them'} (see {self.prog} --help)")
        return f"{message} (see {self.prog} --help)"


def whole_number(name: str, example: int, minimum: int = 1):
    """An argparse ``type``: an int ≥ ``minimum``, else one line naming setting ``name`` and a
    fix (rendered by :meth:`UserArgumentParser.error`)."""
    var = setting(name)

    def parse(text: str) -> int:
        fix = f"use e.g. {var}{example}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{var}{text} is not a whole number; {fix}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{var}{text} must be a whole number ≥ {minimum}; "
                                             f"{fix}")
        return value
    return parse


def _size(text: str) -> str:
    # Checked here so a bad part size stops before anything runs; kept as given (the stage
    # keys hash the text).
    try:
        PrepSettings(part_size=text).part_bytes()
    except FmprepError as err:
        raise argparse.ArgumentTypeError(err.args[0]) from None  # tokens: error() renders
    return text


class FmprepArgumentParser(UserArgumentParser):
    """The ``fmprep`` command's parser: one-line errors naming the Makefile's variables."""

    TOOL = "fmprep"
    SETTINGS = MODEL_SETTINGS | {"--source", "--work", "--output", "--format", "--meta",
                                 "--scheduler", "--force", "--quiet", "--out", "--rows",
                                 "--seed", "--layout"} | \
        {errors.flag(f.name) for f in dataclasses.fields(PrepSettings)}


def _settings_args(p: argparse.ArgumentParser) -> None:
    d = PrepSettings()
    g = p.add_argument_group("prep settings (defaults: the reference workflow)")
    g.add_argument("--min-customer-ratings", default=d.min_customer_ratings,
                   type=whole_number("min_customer_ratings", d.min_customer_ratings),
                   help="keep customers with at least this many ratings (default %(default)s)")
    g.add_argument("--min-product-ratings", default=d.min_product_ratings,
                   type=whole_number("min_product_ratings", d.min_product_ratings),
                   help="keep products with at least this many ratings (default %(default)s)")
    g.add_argument("--filter-mode", choices=PrepSettings.FILTER_MODES, default=d.filter_mode,
                   help="single: one counting pass like the reference; kcore: repeat until "
                        "every customer and product meets its minimum (default %(default)s)")
    g.add_argument("--train-shards", default=d.train_shards,
                   type=whole_number("train_shards", d.train_shards),
                   help="train channel shards, ≥ training instances; at most one per train "
                        "row (default %(default)s)")
    g.add_argument("--test-shards", default=d.test_shards,
                   type=whole_number("test_shards", d.test_shards),
                   help="test channel shards (default %(default)s)")
    g.add_argument("--days-scale", choices=PrepSettings.DAYS_SCALES, default=d.days_scale,
                   help="days_since_first as raw days, years, or unit (÷ max) "
                        "(default %(default)s)")
    g.add_argument("--part-size", default=d.part_size, type=_size,
                   help="uncompressed source bytes per Parquet part / Dask partition, e.g. "
                        "64MB or 1GiB (default %(default)s)")


def _settings(ns) -> PrepSettings:
    return PrepSettings(min_customer_ratings=ns.min_customer_ratings,
                        min_product_ratings=ns.min_product_ratings, filter_mode=ns.filter_mode,
                        train_shards=ns.train_shards, test_shards=ns.test_shards,
                        days_scale=ns.days_scale, part_size=ns.part_size)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fmprep`` command (errors: see :class:`UserArgumentParser`)."""
    from .sample import DEFAULT_SAMPLE_2023
    from .sources import FORMAT_CHOICES

    parser = FmprepArgumentParser(
        prog="fmprep", description="Turn Amazon-review ratings into SageMaker Factorization "
        "Machines RecordIO-protobuf shards.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_, example):
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: without it the subcommand's default would undo `fmprep -q data …`.
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only print errors")
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=VERBOSE_HELP)
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
    p.add_argument("--rows", type=whole_number("rows", config.SAMPLE_ROWS, minimum=0),
                   default=config.SAMPLE_ROWS, help="rows (default %(default)s)")
    p.add_argument("--seed", type=whole_number("seed", config.SAMPLE_SEED, minimum=0),
                   default=config.SAMPLE_SEED, help="seed (default %(default)s)")
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
                           help="path, s3:// URI, glob or directory of review files, .gz or "
                                "plain; one format for all; a directory gives its *.tsv, "
                                "*.jsonl, u.data, ratings.dat or ratings.csv files (default "
                                "%(default)s)")
            p.add_argument("--format", choices=FORMAT_CHOICES, default=FORMAT_CHOICES[0],
                           help="source format; auto: from each file's first line, its name as "
                                "a hint (default %(default)s)")
            p.add_argument("--meta", default=None,
                           help="product titles for sources without them: Amazon Reviews 2023 "
                                "meta_<Category>.jsonl(.gz), MovieLens u.item, movies.dat or "
                                "movies.csv (path, s3:// URI, glob or directory)")
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
    p = add("clean", "remove the files fmprep wrote to WORK and OUTPUT (and each directory, "
            "once nothing else is in it); files you put there stay",
            "fmprep clean --work data/work --output data/output")
    p.add_argument("--work", default=config.DEFAULT_WORK,
                   help="working directory, local or s3:// (default %(default)s)")
    p.add_argument("--output", default=config.DEFAULT_OUTPUT,
                   help="output directory, local or s3:// (default %(default)s)")
    # train | deploy | predict | score | undeploy | evaluate | recommend | import-model: the
    # flags of scripts/train_deploy.py (fmprep.cli_model), after the data commands.
    from .cli_model import add_commands

    add_commands(sub, "fmprep", "fmprep", verbose_help=VERBOSE_HELP)
    return parser


def run(ns) -> int:
    """Execute a parsed command line."""
    from . import cli_model, pipeline

    if ns.command in cli_model.COMMANDS:  # they open their own Dask client where they use one
        return cli_model.run(ns)

    if ns.command == "sample":
        from .sample import DEFAULT_SAMPLE_2023, generate_reviews, generate_reviews_2023

        if ns.layout == "amazon-2023":
            summary = generate_reviews_2023(ns.out or DEFAULT_SAMPLE_2023, rows=ns.rows,
                                            seed=ns.seed, faults=not ns.no_faults,
                                            meta=not ns.no_meta)
        else:
            summary = generate_reviews(ns.out or config.DEFAULT_SAMPLE, rows=ns.rows,
                                       seed=ns.seed, faults=not ns.no_faults)
        logging.getLogger("fmprep").info("sample: %s", json.dumps(summary))
        return 0

    if ns.command == "clean":
        from .clean import clean, describe

        summary = clean(ns.work, ns.output)
        for name in ("work", "output"):
            logging.getLogger("fmprep").info("clean: %s", describe(name, getattr(ns, name),
                                                                   summary[name]))
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


VERBOSE_HELP = ("also print the libraries' log lines: botocore's credentials and retries, "
                "Dask's (VERBOSE=1, FMPREP_VERBOSE=1)")


def _setup_logging(quiet: bool, verbose: bool) -> None:
    # Only fmprep's own loggers print; Dask's INFO chatter stays out of the user's terminal,
    # and botocore's and distributed's too (fmprep.logs) unless -v or FMPREP_VERBOSE=1.
    from .logs import StderrHandler, configure_libraries, verbose_from_env

    logger = logging.getLogger("fmprep")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("fmprep: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    configure_libraries(verbose or verbose_from_env(), handler=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fmprep`` console script; returns the exit status.

    0 on success, 2 after one ``fmprep: error: …`` line for anything the user can fix (bad
    arguments included), 130 when interrupted. Anything else is a bug and raises.
    """
    # Before parsing: argparse's errors name settings too (make variables under make).
    errors.use_spelling()
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or the parser's one-line error
        return done.code if isinstance(done.code, int) else 2 if done.code else 0
    _setup_logging(ns.quiet, getattr(ns, "verbose", False))
    from .sources import quiet_undecodable_rows

    try:
        with quiet_undecodable_rows():
            return run(ns)
    except FmprepError as err:
        print(f"fmprep: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # only storage errors are explained; anything else is a bug
        from .storage import describe_storage_error

        message = describe_os_error(err, _locations(ns)) or describe_storage_error(err)
        if message is None:
            raise
        print(f"fmprep: error: {render(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmprep: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


# --- full disks and refused writes ---------------------------------------------------------------

_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_REFUSED = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EROFS: "read-only file system"}
_WRITTEN = ("work", "output", "out")  # the settings naming places fmprep writes


def _locations(ns) -> dict[str, str]:
    """The local paths a command line names, by setting (work, output, source …)."""
    from .storage import is_remote

    found = {}
    for name in ("work", "output", "out", "source", "meta"):
        value = getattr(ns, name, None)
        if value and not is_remote(value):
            found[name] = value
    return found


def _os_error(err: BaseException) -> OSError | None:
    """The first OSError of ``err``'s chain that is a full disk or a refused access."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and (err.errno in _NO_SPACE or err.errno in _REFUSED):
            return err
        err = err.__cause__ or err.__context__
    return None


def _root(value: str) -> str:
    """The real directory a path or glob names (a glob: the part before its first wildcard)."""
    plain = re.split(r"[*?\[]", value, maxsplit=1)[0]
    if plain != value:
        plain = os.path.dirname(plain)
    return os.path.realpath(plain or ".")


def _owner(path: str, locations: dict[str, str]) -> str | None:
    """The setting whose location holds ``path`` (the deepest one, should they nest)."""
    real = os.path.realpath(path)
    best = None
    for var, value in locations.items():
        root = _root(value)
        if (real == root or real.startswith(root.rstrip(os.sep) + os.sep)) and \
                (best is None or len(root) > len(_root(locations[best]))):
            best = var
    return best


def _free(value: str) -> tuple[int, int] | None:
    """``(device, free bytes)`` of the filesystem that holds (or would hold) ``value``."""
    probe = os.path.abspath(value)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        st = os.statvfs(probe)
        return os.stat(probe).st_dev, st.f_bavail * st.f_frsize
    except OSError:
        return None


def describe_os_error(err: BaseException, locations: dict[str, str]) -> str | None:
    """One line for a full disk or a refused write or read, naming the setting and the fix
    (with :func:`~fmprep.errors.setting` tokens: render it).

    Parameters
    ----------
    err : BaseException
        What the run raised; its chain is searched for an OSError with errno ENOSPC,
        EDQUOT, EACCES, EPERM or EROFS (Dask re-raises a task's own exception).
    locations : dict
        Local paths by setting (``work``, ``output``, ``source`` …).

    Returns
    -------
    str or None
        The message, or None when ``err`` is none of these.
    """
    found = _os_error(err)
    if found is None:
        return None
    path = found.filename if isinstance(found.filename, str) else None
    var = _owner(path, locations) if path else None
    if found.errno in _NO_SPACE:
        what = _NO_SPACE[found.errno]
        full = [var] if var else []
        if path is None:
            # A write() that failed carries no file name: blame the fullest place we write
            # (both, if WORK and OUTPUT share that disk).
            space = {v: _free(locations[v]) for v in _WRITTEN if v in locations}
            space = {v: f for v, f in space.items() if f is not None}
            if space:
                device = min(space.values(), key=lambda f: f[1])[0]
                full = [v for v, f in space.items() if f[0] == device]
        if not full:
            return (f"{what} writing {path or 'a file'}; free space there (temporary files "
                    "follow TMPDIR)")
        free = _free(locations[full[0]])
        left = f" ({free[1] / 2**20:.1f} MiB free)" if free else ""
        where = " and ".join(f"{setting(v)}{locations[v]}" for v in full)
        return (f"{what} writing to {where}{left}; free space on {where} or choose another "
                f"{' / '.join(setting(v) for v in full)}")
    if path is None:
        return None  # e.g. S3's AccessDenied: storage.describe_storage_error names credentials
    reason = _REFUSED[found.errno]
    if var is None:
        return f"{reason}: {path}; fix its permissions or choose another location"
    if found.errno == errno.EROFS:
        return (f"{setting(var)}{locations[var]} is on a {reason} ({path}); choose another "
                f"{setting(var)} or remount it read-write")
    if var in _WRITTEN:
        return (f"{reason} writing {path} ({setting(var)}{locations[var]}); fix its permissions "
                f"or choose another {setting(var)}")
    return f"{reason} reading {path} ({setting(var)}{locations[var]}); make it readable or copy it"
