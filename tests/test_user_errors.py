"""Every error a user can cause: one line naming the setting and the fix, status 2, no traceback,
nothing that looks complete. Real files, real subprocesses (through make where the user goes
through make), real full and read-only filesystems (tmpfs mounts) and real permission denials.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import review_line, write_tsv_gz
from fmprep import ingest
from fmprep.cli import main
from fmprep.config import INGEST_MANIFEST, MANIFEST
from fmprep.errors import FmprepError
from fmprep.sample import generate_reviews_2023

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------

def fmprep(*args, timeout=300, prefix=()):
    """``python -m fmprep …`` as the Makefile runs it."""
    return subprocess.run([*prefix, sys.executable, "-m", "fmprep", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def make(*args, timeout=300):
    # STAMP= : the suite already runs inside the environment make would create. Without the
    # MAKE* variables of a `make test` around the suite, make prints what a user sees at a
    # shell ("make: ***", not "make[1]: ***").
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args, "STAMP=",
                           f"PY={sys.executable}"], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_error(done, *needles, tool="fmprep"):
    """The single error line of a finished command, after checking status and shape."""
    assert done.returncode == 2, done.stderr[-3000:]
    # make adds its own "make: *** [data] Error 2", and warnings may come first (they are
    # not errors); everything else must be our one line.
    # (make[1]: … when make itself runs under make, as `make test` does).
    lines = [l for l in done.stderr.splitlines()
             if l.strip() and not re.match(r"make(\[\d+\])?: ", l)
             and not l.startswith(f"{tool}: warning: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    assert line.startswith(f"{tool}: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def cli_error(capsys, *args):
    """``fmprep data …`` in this process: (status, the error lines, all of stderr)."""
    code = main(["data", *args])
    err = capsys.readouterr().err
    return code, [l for l in err.splitlines() if l.startswith("fmprep: error:")], err


def good_lines(n_customers=12, n_products=12, prefix=""):
    return [review_line(f"{prefix}{c:05d}", f"B{p:09d}", 1 + (c + p) % 5,
                        f"2014-0{1 + p % 9}-1{c % 9}", f"R{prefix}{c:04d}{p:04d}")
            for c in range(n_customers) for p in range(n_products)]


def dirs(tmp_path):
    return ["--work", str(tmp_path / "work"), "--output", str(tmp_path / "out")]


def assert_nothing_complete(work=None, output=None):
    """No manifest: nothing a later stage or a reader would take as finished."""
    if output is not None:
        assert not os.path.exists(os.path.join(output, MANIFEST))
    if work is not None:
        assert not os.path.exists(os.path.join(work, INGEST_MANIFEST))
        assert not os.path.exists(os.path.join(work, MANIFEST))


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is refused)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): a full "
                    "or read-only filesystem cannot be made without one")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def without_dac_override():
    """A command prefix under which root obeys file modes (CAP_DAC_* dropped after exec)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to drop CAP_DAC_OVERRIDE: as another user the "
                    "interpreter under /root is not readable")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


def hostile_ratings(path: Path, rows: int = 180_000) -> str:
    """A MovieLens ratings.dat of about 4 MB whose 2001st line is both invalid UTF-8 and short
    (pyarrow cannot hand that row to the invalid-row handler and fails the read)."""
    lines = [f"{1 + i // 60}::{1 + i % 60}::{1 + i % 5}::{978300760 + i}" for i in range(rows)]
    data = ("\n".join(lines[:2000]) + "\n").encode() + b"1::2\xff\xfe\n" + \
        ("\n".join(lines[2000:]) + "\n").encode()
    path.write_bytes(data)
    return str(path)


# --- arguments through make: one line, no usage block --------------------------------------------

@pytest.mark.parametrize("target, setting, needles", [
    ("data", "MIN_CUSTOMER_RATINGS=abc", ["MIN_CUSTOMER_RATINGS=abc is not a whole number",
                                          "use e.g. MIN_CUSTOMER_RATINGS=5"]),
    ("data", "MIN_PRODUCT_RATINGS=0", ["MIN_PRODUCT_RATINGS=0", "MIN_PRODUCT_RATINGS=10"]),
    ("data", "PART_SIZE=lots", ["PART_SIZE=lots is not a size; use e.g. PART_SIZE=128MB"]),
    ("data", "PART_SIZE=-5MB", ["PART_SIZE=-5MB must be more than 0 bytes"]),
    ("data", "PART_SIZE=12 lots", ["PART_SIZE=12 lots is not a size"]),  # one argument
    ("data", "TRAIN_SHARDS=0", ["TRAIN_SHARDS=0", "TRAIN_SHARDS=10"]),
    ("data", "TEST_SHARDS=two", ["TEST_SHARDS=two is not a whole number"]),
    ("data", "FILTER_MODE=both", ["FILTER_MODE=both is not one of single, kcore"]),
    ("data", "DAYS_SCALE=weeks", ["DAYS_SCALE=weeks", "raw, years, unit"]),
    ("data", "FORMAT=csv", ["FORMAT=csv is not one of auto,"]),
    ("sample", "ROWS=many", ["ROWS=many is not a whole number"]),
])
def test_bad_settings_through_make_are_one_line(tmp_path, target, setting, needles):
    done = make(target, f"SOURCE={tmp_path / 'none.tsv.gz'}", f"WORK={tmp_path / 'w'}",
                f"OUTPUT={tmp_path / 'o'}", f"OUT={tmp_path / 's.tsv.gz'}", setting)
    one_error(done, *needles)
    assert "usage:" not in done.stderr
    assert re.search(r"make: \*\*\* \[.*\] Error 2", done.stderr)
    assert not (tmp_path / "w").exists() and not (tmp_path / "s.tsv.gz").exists()


@pytest.mark.parametrize("target, setting, needles", [
    ("deploy", "PORT=abc", ["PORT=abc is not a port number", "PORT=8080"]),
    ("deploy", "PORT=70000", ["PORT=70000", "0 to 65535"]),
    ("train", "INSTANCE_COUNT=four", ["INSTANCE_COUNT=four is not a whole number"]),
    ("train", "BACKEND=cloud", ["BACKEND=cloud is not one of local, sagemaker"]),
    ("train", "PREDICTOR_TYPE=ranker", ["PREDICTOR_TYPE=ranker"]),
    ("predict", "CUSTOMER=1", ["PRODUCT= (--product) is required"]),
])
def test_bad_train_deploy_settings_through_make_are_one_line(tmp_path, target, setting,
                                                             needles):
    done = make(target, f"OUTPUT={tmp_path / 'o'}", setting)
    one_error(done, *needles, tool="train_deploy")
    assert "usage:" not in done.stderr


def test_parser_errors_name_the_flag_when_there_is_no_variable(capsys):
    assert main(["data", "--bogus"]) == 2
    assert capsys.readouterr().err.strip() == ("fmprep: error: unrecognized arguments: --bogus "
                                               "(see fmprep --help)")
    assert main(["frob"]) == 2
    assert "unknown command frob; use one of sample, data" in capsys.readouterr().err
    assert main(["data", "--part-size"]) == 2
    assert "--part-size needs a value: set PART_SIZE=" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "examples:" in capsys.readouterr().out


# --- a full disk, a read-only filesystem, permission denied --------------------------------------

def test_full_work_is_one_line_naming_work(tmp_path, sample_file):
    with tmpfs(tmp_path / "small", "256k") as small:
        work = small / "work"
        done = fmprep("data", "--source", sample_file[0], "--work", str(work),
                      "--output", str(tmp_path / "out"), "-q")
        # Raised inside ingest's Dask task while it wrote a Parquet part.
        line = one_error(done, "no space left on device writing to WORK=", str(work),
                         f"free space on WORK={work} or choose another WORK=")
        assert "MiB free" in line
        assert_nothing_complete(str(work), str(tmp_path / "out"))


def test_full_output_is_one_line_naming_output(tmp_path, sample_file):
    with tmpfs(tmp_path / "small", "128k") as small:
        out = small / "out"
        done = fmprep("data", "--source", sample_file[0], "--work", str(tmp_path / "work"),
                      "--output", str(out), "-q")
        one_error(done, "no space left on device writing to OUTPUT=", str(out),
                  "choose another OUTPUT=")
        assert_nothing_complete(output=str(out))


def test_full_disk_stops_the_parse_thread(tmp_path, sample_file):
    """In-process: ENOSPC while writing a part leaves no parse thread behind."""
    with tmpfs(tmp_path / "small", "256k") as small:
        with pytest.raises(OSError) as raised:
            ingest.ingest_file(sample_file[0], 0, str(small), 64 << 20)
        assert raised.value.errno == 28
    assert not [t for t in threading.enumerate() if t.name == "fmprep-parse"]


@pytest.mark.parametrize("which", ["WORK", "OUTPUT"])
def test_read_only_location_is_one_line(tmp_path, sample_file, which):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        places = {"WORK": str(tmp_path / "work"), "OUTPUT": str(tmp_path / "out")}
        places[which] = str(ro / "x") if which == "WORK" else str(ro)
        done = fmprep("data", "--source", sample_file[0], "--work", places["WORK"],
                      "--output", places["OUTPUT"], "-q")
        line = one_error(done, f"{which}=")
        assert "read-only" in line.lower()
        assert_nothing_complete(output=places["OUTPUT"])


def test_permission_denied_inside_a_task_names_work(tmp_path):
    prefix = without_dac_override()
    src = write_tsv_gz(tmp_path / "ok.tsv.gz", good_lines())
    work, out = tmp_path / "work", tmp_path / "out"
    assert fmprep("data", "--source", src, "--work", str(work), "--output", str(out),
                  "-q").returncode == 0
    # prepare's scratch folder, read-only: its Dask tasks are refused their first write.
    (work / "_kept").mkdir(mode=0o555)
    done = fmprep("data", "--source", src, "--work", str(work), "--output", str(out), "-q",
                  "--force", prefix=prefix)
    one_error(done, "permission denied writing", str(work / "_kept"), f"WORK={work}",
              "choose another WORK=")
    # Ingest finished; prepare is not marked done. OUTPUT still holds the earlier, complete run.
    assert (work / INGEST_MANIFEST).exists() and not (work / MANIFEST).exists()


def test_unreadable_source_names_source(tmp_path):
    prefix = without_dac_override()
    src = Path(write_tsv_gz(tmp_path / "ok.tsv.gz", good_lines()))
    src.chmod(0)
    done = fmprep("data", "--source", str(src), *dirs(tmp_path), "-q", prefix=prefix)
    one_error(done, "permission denied reading", str(src), "SOURCE=")


# --- binary input: escaped and cut short ---------------------------------------------------------

def _excerpt(line):
    shown = line.split("starts with ", 1)[1]
    return shown[:shown.index("); ")]


@pytest.mark.parametrize("name, gz", [("reviews.tsv", False), ("ratings.dat", False),
                                      ("random.bin", False), ("junk.tsv.gz", True)])
def test_binary_source_is_shown_escaped_and_short(tmp_path, capsys, name, gz):
    junk = random.Random(7).randbytes(200_000)
    path = tmp_path / name
    path.write_bytes(gzip.compress(junk) if gz else junk)
    code, errors, err = cli_error(capsys, "--source", str(path), *dirs(tmp_path))
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    line = errors[0]
    assert ("decompresses to binary data" if gz else "holds binary data") in line
    assert "SOURCE=" in line
    shown = _excerpt(line)
    assert len(shown) <= 61 and "\\x" in shown
    assert line.isascii() or "…" in line
    assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c == "\ufffd" for c in line)
    assert_nothing_complete(str(tmp_path / "work"), str(tmp_path / "out"))


def test_binary_meta_and_archives_name_the_fix(tmp_path, capsys):
    src = write_tsv_gz(tmp_path / "ok.tsv.gz", good_lines())
    (tmp_path / "meta_x.jsonl").write_bytes(b"\x00\x01" * 500)
    code, errors, _ = cli_error(capsys, "--source", src, "--meta", str(tmp_path / "meta_x.jsonl"),
                                *dirs(tmp_path))
    assert code == 2 and len(errors) == 1 and "META=" in errors[0] and "binary" in errors[0]
    twice = tmp_path / "twice.tsv.gz"
    twice.write_bytes(gzip.compress(gzip.compress(b"x" * 1000)))
    code, errors, _ = cli_error(capsys, "--source", str(twice), *dirs(tmp_path))
    assert code == 2 and "gzip-compressed twice" in errors[0]
    assert "decompress it once more" in errors[0]
    utf16 = tmp_path / "reviews.tsv"
    utf16.write_bytes("marketplace\tcustomer_id\n".encode("utf-16"))
    code, errors, _ = cli_error(capsys, "--source", str(utf16), *dirs(tmp_path))
    assert code == 2 and "UTF-16" in errors[0] and "save it as UTF-8" in errors[0]


def test_row_that_is_short_and_not_utf8_is_one_escaped_line(tmp_path, capsys):
    path = hostile_ratings(tmp_path / "ratings.dat", rows=5000)
    code, errors, err = cli_error(capsys, "--source", path, *dirs(tmp_path),
                                  "--part-size", "256kB")
    assert code == 2 and len(errors) == 1, err
    assert "Exception ignored" not in err and "Traceback" not in err
    assert "a row has 2 fields instead of 4" in errors[0] and "'1::2\\ufffd" in errors[0]
    assert_nothing_complete(str(tmp_path / "work"), str(tmp_path / "out"))


# --- SOURCE as a directory, and a glob of several formats -----------------------------------------

def test_source_directory_reads_the_review_files_in_it(tmp_path, capsys):
    d = tmp_path / "reviews"
    d.mkdir()
    write_tsv_gz(d / "a.tsv.gz", good_lines(12, 12, "a"))
    write_tsv_gz(d / "b.tsv", good_lines(12, 12, "b"))
    (d / "README.txt").write_text("where these came from\n")
    (d / "old").mkdir()
    write_tsv_gz(d / "old" / "c.tsv.gz", good_lines(12, 12, "c"))     # not recursive
    assert main(["data", "--source", str(d), *dirs(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"SOURCE={d}: reading a.tsv.gz, b.tsv; skipping README.txt" in err
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert [os.path.basename(s["url"]) for s in manifest["sources"]] == ["a.tsv.gz", "b.tsv"]
    assert manifest["ingest"]["rows_read"] == 2 * 144


def test_movielens_directory_reads_only_the_ratings(tmp_path, capsys):
    d = tmp_path / "ml-100k"
    d.mkdir()
    ratings = [f"{c}\t{p}\t{1 + (c + p) % 5}\t{881250949 + c * 100 + p}"
               for c in range(1, 15) for p in range(1, 15)]
    (d / "u.data").write_text("\n".join(ratings) + "\n")
    (d / "u1.base").write_text("\n".join(ratings[:50]) + "\n")     # a split: not a source
    (d / "u.item").write_text("".join(f"{p}|Movie {p} (1995)|01-Jan-1995||http://x|0|1\n"
                                      for p in range(1, 15)), encoding="latin-1")
    assert main(["data", "--source", str(d), *dirs(tmp_path), "--min-product-ratings", "3"]) == 0
    err = capsys.readouterr().err
    assert "reading u.data; skipping u.item, u1.base" in err
    # No META: the warning names the dataset's own movie list.
    assert f"set META={d / 'u.item'} (--meta)" in err


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_source_directory_without_review_files_is_an_error(tmp_path, capsys, content):
    d = tmp_path / "empty"
    d.mkdir()
    if content:
        (d / content).write_text("nothing here\n")
        (d / "movies.csv").write_text("movieId,title,genres\n")
    code, errors, _ = cli_error(capsys, "--source", str(d), *dirs(tmp_path))
    assert code == 2 and len(errors) == 1
    assert f"SOURCE={d} is a directory with no review files" in errors[0]
    assert ("holds movies.csv, notes.txt" if content else "it is empty") in errors[0]
    assert "ratings.dat" in errors[0]


def test_glob_mixing_formats_names_files_and_formats(tmp_path, capsys):
    write_tsv_gz(tmp_path / "a.tsv.gz", good_lines())
    (tmp_path / "u.data").write_text("".join(f"{c}\t{p}\t4\t881250949\n"
                                             for c in range(1, 9) for p in range(1, 9)))
    code, errors, _ = cli_error(capsys, "--source", str(tmp_path / "*"), *dirs(tmp_path))
    assert code == 2 and len(errors) == 1
    assert "SOURCE mixes formats (amazon-tsv: a.tsv.gz; movielens-100k: u.data)" in errors[0]
    # Checked before ingest wrote anything.
    assert not list((tmp_path / "work").rglob("*.parquet"))
    assert_nothing_complete(str(tmp_path / "work"), str(tmp_path / "out"))


# --- META that matches none, some, or is missing --------------------------------------------------

@pytest.fixture(scope="module")
def reviews_2023(tmp_path_factory):
    d = tmp_path_factory.mktemp("v2023")
    summary = generate_reviews_2023(str(d / "Video.jsonl.gz"), rows=3000, seed=3)
    return summary["path"], summary["meta_path"]


def test_meta_matching_no_product_is_an_error(tmp_path, capsys, reviews_2023):
    source, _ = reviews_2023
    meta = tmp_path / "meta_Books.jsonl"
    meta.write_text("".join(json.dumps({"parent_asin": f"ZZ{i}", "title": f"Book {i}"}) + "\n"
                            for i in range(20)))
    code, errors, _ = cli_error(capsys, "--source", source, "--meta", str(meta), *dirs(tmp_path))
    assert code == 2 and len(errors) == 1
    assert "META (meta_Books.jsonl) gives a title to none of the" in errors[0]
    assert "META's look like 'ZZ0'" in errors[0] and "set META= to the metadata" in errors[0]
    assert_nothing_complete(str(tmp_path / "work"), str(tmp_path / "out"))


def test_meta_matching_some_products_warns_with_counts(tmp_path, capsys, reviews_2023):
    source, meta = reviews_2023
    lines = gzip.open(meta).read().splitlines()
    half = tmp_path / "meta_half.jsonl"
    half.write_bytes(b"\n".join(lines[: len(lines) // 2]) + b"\n")
    assert main(["data", "--source", source, "--meta", str(half), *dirs(tmp_path),
                 "--min-product-ratings", "1", "--min-customer-ratings", "1"]) == 0
    err = capsys.readouterr().err
    warning = re.search(r"warning: META \(meta_half.jsonl\) gave titles to (\d+) of (\d+) "
                        r"products; the other (\d+) keep an empty title", err)
    assert warning, err
    titled, total, untitled = map(int, warning.groups())
    assert 0 < titled < total and titled + untitled == total


def test_no_meta_for_a_format_without_titles_warns(tmp_path, capsys, reviews_2023):
    source, meta = reviews_2023
    assert main(["data", "--source", source, *dirs(tmp_path),
                 "--min-product-ratings", "1", "--min-customer-ratings", "1"]) == 0
    err = capsys.readouterr().err
    assert ("warning: amazon-2023 files carry no product titles, so every item's title will be "
            f"empty; set META={meta} (--meta)") in err
    # With the right META: no warning at all.
    assert main(["data", "--source", source, "--meta", meta, *dirs(tmp_path),
                 "--min-product-ratings", "1", "--min-customer-ratings", "1"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_check_sources_is_the_api_check_too(tmp_path):
    write_tsv_gz(tmp_path / "a.tsv.gz", good_lines())
    (tmp_path / "b.jsonl").write_text('{"user_id": "1", "parent_asin": "P", "rating": 5.0, '
                                      '"timestamp": 1400000000000}\n')
    with pytest.raises(FmprepError, match="mixes formats"):
        ingest.ingest([str(tmp_path / "a.tsv.gz"), str(tmp_path / "b.jsonl")],
                      str(tmp_path / "work"))


# --- bounds: more shards than rows ----------------------------------------------------------------

def test_more_shards_than_rows_are_capped(tmp_path):
    src = write_tsv_gz(tmp_path / "tiny.tsv.gz", good_lines())
    out = tmp_path / "out"
    # The timeout is only a safety bound: uncapped, this ran for minutes.
    done = fmprep("data", "--source", src, "--work", str(tmp_path / "work"), "--output",
                  str(out), "--train-shards", "100000", "--test-shards", "100000",
                  "--min-customer-ratings", "1", "--min-product-ratings", "1", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning: TRAIN_SHARDS=100000 is more than the" in done.stderr
    assert "warning: TEST_SHARDS=100000 is more than the" in done.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    for channel in ("train", "test"):
        ch = manifest["channels"][channel]
        assert 1 <= len(ch["shards"]) <= ch["rows"]
        assert sum(s["rows"] for s in ch["shards"]) == ch["rows"]


# --- no aborts on the way out ---------------------------------------------------------------------

@pytest.mark.slow
def test_failing_run_never_aborts(tmp_path):
    """A file that fails in the parse thread while Arrow still reads ahead, 100 times.

    Leaving through the interpreter's finalization killed that read-ahead thread inside C++
    (``terminate called without an active exception``, status 134) in 6 of 200 such runs.
    """
    source = hostile_ratings(tmp_path / "ratings.dat")

    def once(i):
        return fmprep("data", "--source", source, "--work", str(tmp_path / f"w{i}"),
                      "--output", str(tmp_path / f"o{i}"), "--part-size", "256kB", "-q",
                      timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(once, range(100)))
    statuses = sorted({r.returncode for r in runs})
    aborted = [r.stderr for r in runs
               if "terminate called" in r.stderr or "Fatal Python" in r.stderr]
    assert aborted == [] and statuses == [2], (statuses, aborted[:1], runs[0].stderr[-2000:])
    one_error(runs[0], "a row has 2 fields instead of 4")
