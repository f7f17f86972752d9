"""Bad input: one line naming the fix, exit status 2, and no output that looks complete."""

from __future__ import annotations

import gzip
import os

import pytest

from conftest import review_line, write_tsv_gz
from fmprep.cli import main


def run_cli(capsys, *args):
    code = main(["data", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, [l for l in err if l.startswith("fmprep: error:")]


def good_lines(n_customers=6, n_products=12):
    lines = []
    for c in range(n_customers):
        for p in range(n_products):
            lines.append(review_line(f"{c:05d}", f"B{p:09d}", 1 + (c + p) % 5,
                                     f"2014-0{1 + p % 9}-1{c % 9}", f"R{c:04d}{p:04d}"))
    return lines


@pytest.fixture
def dirs(tmp_path):
    return ["--work", str(tmp_path / "work"), "--output", str(tmp_path / "out")]


def assert_no_output(tmp_path):
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_missing_source(tmp_path, capsys, dirs):
    code, errors = run_cli(capsys, "--source", str(tmp_path / "nope.tsv.gz"), *dirs)
    assert code == 2 and len(errors) == 1
    assert "source not found" in errors[0] and "SOURCE=" in errors[0]
    assert_no_output(tmp_path)


def test_empty_file(tmp_path, capsys, dirs):
    (tmp_path / "empty.tsv.gz").write_bytes(b"")
    code, errors = run_cli(capsys, "--source", str(tmp_path / "empty.tsv.gz"), *dirs)
    assert code == 2 and "is empty" in errors[0]
    assert_no_output(tmp_path)


def test_header_only(tmp_path, capsys, dirs):
    src = write_tsv_gz(tmp_path / "h.tsv.gz", [])
    code, errors = run_cli(capsys, "--source", src, *dirs)
    assert code == 2 and "header but no rows" in errors[0]
    assert_no_output(tmp_path)


def test_wrong_header(tmp_path, capsys, dirs):
    src = tmp_path / "w.tsv.gz"
    with gzip.open(src, "wt") as f:
        f.write("user\titem\trating\n1\t2\t3\n")
    code, errors = run_cli(capsys, "--source", str(src), *dirs)
    assert code == 2 and "not the Amazon Customer Reviews header" in errors[0]
    assert_no_output(tmp_path)


def test_truncated_gzip(tmp_path, capsys, dirs):
    full = write_tsv_gz(tmp_path / "full.tsv.gz", good_lines(60, 40))
    data = open(full, "rb").read()
    (tmp_path / "cut.tsv.gz").write_bytes(data[: len(data) * 2 // 3])
    code, errors = run_cli(capsys, "--source", str(tmp_path / "cut.tsv.gz"), *dirs)
    assert code == 2 and "truncated or corrupt" in errors[0]
    assert_no_output(tmp_path)


def test_not_gzip_but_named_gz(tmp_path, capsys, dirs):
    (tmp_path / "plain.tsv.gz").write_bytes(b"this is not gzip at all\n")
    code, errors = run_cli(capsys, "--source", str(tmp_path / "plain.tsv.gz"), *dirs)
    assert code == 2 and "not gzip" in errors[0]


def test_no_rows_left_after_filtering(tmp_path, capsys, dirs):
    src = write_tsv_gz(tmp_path / "few.tsv.gz", good_lines(3, 3))
    code, errors = run_cli(capsys, "--source", src, *dirs)
    assert code == 2 and "no rows left after filtering" in errors[0]
    assert "MIN_CUSTOMER_RATINGS" in errors[0]
    assert_no_output(tmp_path)


def test_unwritable_output(tmp_path, capsys):
    src = write_tsv_gz(tmp_path / "ok.tsv.gz", good_lines())
    (tmp_path / "afile").write_text("x")
    code, errors = run_cli(capsys, "--source", src, "--work", str(tmp_path / "afile" / "work"),
                           "--output", str(tmp_path / "out"))
    assert code == 2 and "cannot write to" in errors[0] and "WORK=" in errors[0]


def test_bad_setting_is_rejected_before_reading(tmp_path, capsys, dirs):
    code, errors = run_cli(capsys, "--source", str(tmp_path / "nope"), "--train-shards", "0",
                           *dirs)
    assert code == 2 and "TRAIN_SHARDS" in errors[0]


def test_small_valid_file_runs(tmp_path, capsys, dirs):
    lines = good_lines(12, 12) + ["US\t123\tR1\tB1", review_line("9", "B1", "five", "2014-01-01", "R9")]
    src = write_tsv_gz(tmp_path / "ok.tsv.gz", lines)
    code, errors = run_cli(capsys, "--source", src, *dirs)
    assert code == 0 and errors == []
    assert os.path.exists(tmp_path / "out" / "manifest.json")
    rejects = open(tmp_path / "work" / "rejects" / "0000-rejects.jsonl").read()
    assert "too_few_fields" in rejects and "bad_rating" in rejects
