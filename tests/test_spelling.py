"""Settings in messages are spelled for the command line the user typed: make variables under
make (``SOURCE=``), long options for ``fmprep`` run directly (``--source``); and the library
below the command line spells neither (fmprep.errors)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fmprep import errors, storage
from fmprep.cli import _setup_logging, main
from fmprep.config import PrepSettings
from fmprep.errors import FmprepError, aside, command, render, setting
from fmprep.logs import StderrHandler
from fmprep.prepare import capped_shards

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fmprep"
CLI_LAYER = {PACKAGE / "cli.py", PACKAGE / "cli_model.py"}
MAKE_SPELLING = re.compile(r"\b[A-Z][A-Z_]{2,}=")


@pytest.fixture
def spelled():
    """Choose a spelling for one test; the suite's (make, tests/conftest.py) comes back after."""
    yield errors.use_spelling
    errors.use_spelling("make")


def fmprep(*args, spelling=None):
    """``python -m fmprep …`` with FMPREP_SPELLING as given (None: not in its environment)."""
    env = {k: v for k, v in os.environ.items() if k != "FMPREP_SPELLING"}
    if spelling is not None:
        env["FMPREP_SPELLING"] = spelling
    return subprocess.run([sys.executable, "-m", "fmprep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def error_line(done):
    """The one ``fmprep: error:`` line of a command that failed with status 2."""
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("fmprep: error: "), done.stderr[-3000:]
    return lines[0]


# --- the library's errors -------------------------------------------------------------------------

def test_library_error_names_the_setting_in_either_spelling(tmp_path, spelled):
    with pytest.raises(FmprepError) as raised:
        storage.expand_sources(str(tmp_path / "none.tsv.gz"))
    spelled("make")
    assert "set SOURCE= to an existing file" in str(raised.value)
    spelled("cli")
    assert "set --source to an existing file" in str(raised.value)
    assert "SOURCE=" not in str(raised.value)
    # The spelling is chosen when the message is shown, not when it is raised.
    assert "\u27e8" not in str(raised.value)


def test_a_value_after_the_setting(spelled):
    with pytest.raises(FmprepError) as raised:
        PrepSettings(days_scale="weeks").validate()
    spelled("make")
    assert str(raised.value) == ("DAYS_SCALE=weeks is not one of raw, years, unit; use e.g. "
                                 "DAYS_SCALE=raw")
    spelled("cli")
    assert str(raised.value) == ("--days-scale=weeks is not one of raw, years, unit; use e.g. "
                                 "--days-scale=raw")
    text = f"prep with {setting('days_scale')}years."
    assert render(text, "cli") == "prep with --days-scale=years."
    assert render(text, "make") == "prep with DAYS_SCALE=years."


def test_render_punctuation_switches_commands_and_asides():
    text = (f"set {setting('meta')}{aside('meta')}, or {setting('meta')}/d/u.item{aside('meta')}; "
            f"rerun {command('data')} {setting('force')}1 (or {setting('output')}) with "
            f"{setting('input')}'a b/*.csv'")
    assert render(text, "make") == ("set META= (--meta), or META=/d/u.item (--meta); rerun make "
                                    "data FORCE=1 (or OUTPUT=) with INPUT='a b/*.csv'")
    assert render(text, "cli") == ("set --meta, or --meta=/d/u.item; rerun fmprep data --force "
                                   "(or --output) with --input='a b/*.csv'")


def test_use_spelling_reads_the_environment(monkeypatch, spelled):
    monkeypatch.delenv("FMPREP_SPELLING", raising=False)
    assert spelled() == "cli"
    monkeypatch.setenv("FMPREP_SPELLING", "make")
    assert spelled() == "make"
    monkeypatch.setenv("FMPREP_SPELLING", "bogus")
    assert spelled() == "cli"


# --- the command line ---------------------------------------------------------------------------

def test_fmprep_run_directly_names_the_flag():
    line = error_line(fmprep("data", "--part-size", "lots"))
    assert "--part-size=lots is not a size; use e.g. --part-size=128MB" in line
    assert "PART_SIZE" not in line


def test_fmprep_under_make_names_the_variable():
    line = error_line(fmprep("data", "--part-size", "lots", spelling="make"))
    assert "PART_SIZE=lots is not a size; use e.g. PART_SIZE=128MB" in line


def test_argparse_errors_follow_the_spelling(monkeypatch, capsys, spelled):
    monkeypatch.delenv("FMPREP_SPELLING", raising=False)
    assert main(["data", "--train-shards", "0"]) == 2
    err = capsys.readouterr().err
    assert "--train-shards=0 must be a whole number ≥ 1; use e.g. --train-shards=10" in err
    assert main(["predict", "--customer", "1"]) == 2
    assert "fmprep: error: --product is required" in capsys.readouterr().err
    monkeypatch.setenv("FMPREP_SPELLING", "make")
    assert main(["data", "--train-shards", "0"]) == 2
    assert "TRAIN_SHARDS=0 must be a whole number" in capsys.readouterr().err
    assert main(["predict", "--customer", "1"]) == 2
    assert "PRODUCT= (--product) is required" in capsys.readouterr().err


# --- log lines ------------------------------------------------------------------------------------

def test_warnings_through_the_stderr_handler_render(capsys, spelled):
    _setup_logging(quiet=False, verbose=False)  # the fmprep command's handler
    spelled("cli")
    capped_shards(PrepSettings(train_shards=5), 2, 1)
    err = capsys.readouterr().err
    assert "fmprep: warning: --train-shards=5 is more than the 2 rows" in err
    assert "(use --train-shards=2 or less)" in err
    spelled("make")
    capped_shards(PrepSettings(train_shards=5), 2, 1)
    assert "fmprep: warning: TRAIN_SHARDS=5 is more than the 2 rows" in capsys.readouterr().err


@pytest.mark.parametrize("spelling, shown", [(None, "--days-scale=years"),
                                             ("make", "DAYS_SCALE=years")])
def test_train_deploy_log_lines_render(tmp_path, spelling, shown):
    """scripts/train_deploy.py's logging (fmprep.cli_model.main) renders what it prints, and
    keeps its handler after configuring the libraries' loggers."""
    code = ("import logging; from fmprep import cli_model; from fmprep.errors import setting; "
            f"cli_model.main(['undeploy', '--output', {str(tmp_path)!r}], 'train_deploy', '', "
            "'train_deploy.py'); "
            "logging.getLogger('train_deploy').warning('prep with %s%s', setting('days_scale'), "
            "'years')")
    env = {k: v for k, v in os.environ.items() if k != "FMPREP_SPELLING"}
    if spelling is not None:
        env["FMPREP_SPELLING"] = spelling
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"train_deploy: prep with {shown}\n" in done.stderr, done.stderr


def test_any_stderr_handler_renders(capsys, spelled):
    logger = logging.getLogger("test_spelling.handler")
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        spelled("cli")
        logger.warning("prep with %s%s", setting("days_scale"), "years")
        assert capsys.readouterr().err == "test_spelling.handler: prep with --days-scale=years\n"
    finally:
        logger.removeHandler(handler)


# --- below the command line: no make variables --------------------------------------------------

def test_the_library_spells_no_make_variables():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path not in CLI_LAYER
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for _ in MAKE_SPELLING.finditer(line)]
    assert len(found) <= 3, "\n".join(found)
