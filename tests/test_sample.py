"""The generated review file: layout, determinism, faults, and the shape the prep relies on."""

from __future__ import annotations

import gzip
import os
import re
from collections import Counter

import pytest

from fmprep.config import TSV_COLUMNS
from fmprep.errors import FmprepError
from fmprep.sample import BAD_REASONS, FIRST_DATE, LAST_DATE, generate_reviews

COL = {name: i for i, name in enumerate(TSV_COLUMNS)}


def read_text(path) -> str:
    with gzip.open(path, "rb") as f:     # Python's own gzip must read what isal wrote
        return f.read().decode("utf-8")


def strict_parse(path):
    """Split on tabs with no quote handling, the way the source files are meant to be read.

    Returns the header, the 15-field lines with an integer rating, and bad-line counts by reason.
    """
    text = read_text(path)
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    header, good, bad = lines[0].split("\t"), [], Counter()
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) > 15:
            bad["too_many_fields"] += 1
        elif len(fields) < 15:
            bad["too_few_fields"] += 1
        elif not fields[COL["star_rating"]].isdigit():
            bad["bad_rating"] += 1
        else:
            good.append(fields)
    return header, good, bad, len(lines) - 1


def reference_filter(good, min_customer=5, min_product=10):
    """The reference notebook's single pass: count once, keep rows meeting both minimums."""
    per_c = Counter(f[COL["customer_id"]] for f in good)
    per_p = Counter(f[COL["product_id"]] for f in good)
    return [f for f in good
            if per_c[f[COL["customer_id"]]] >= min_customer
            and per_p[f[COL["product_id"]]] >= min_product]


@pytest.fixture(scope="module")
def parsed(sample_file):
    path, summary = sample_file
    return strict_parse(path), summary


def test_layout_and_values(parsed):
    (header, good, bad, n_lines), summary = parsed
    assert tuple(header) == TSV_COLUMNS
    assert n_lines == summary["rows"] == 20_000
    assert len(good) == n_lines - sum(bad.values())
    checks = {
        "marketplace": r"US",
        "customer_id": r"[1-9]\d{4,7}",
        "review_id": r"R[0-9A-Z]{12,13}",
        "product_id": r"[0-9A-Z]{10}",
        "product_parent": r"\d+",
        "product_category": r"Digital_Video_Download",
        "star_rating": r"[1-5]",
        "helpful_votes": r"\d+",
        "total_votes": r"\d+",
        "vine": r"[NY]",
        "verified_purchase": r"[NY]",
        "review_date": r"\d{4}-\d{2}-\d{2}",
    }
    for name, pattern in checks.items():
        rx = re.compile(pattern)
        values = [f[COL[name]] for f in good]
        assert all(rx.fullmatch(v) for v in values), name
    assert len({f[COL["review_id"]] for f in good}) == len(good)
    assert all(int(f[COL["helpful_votes"]]) <= int(f[COL["total_votes"]]) for f in good)
    dates = [f[COL["review_date"]] for f in good]
    assert FIRST_DATE <= min(dates) and max(dates) <= LAST_DATE
    for name in ("product_title", "review_headline", "review_body"):
        assert all(f[COL[name]] for f in good), name
    bodies = [f[COL["review_body"]] for f in good]
    assert any("<br />" in b for b in bodies)
    assert any(any(ord(ch) > 127 for ch in b) for b in bodies)
    assert len({len(b) for b in bodies}) > 50          # bodies of varying length


def test_reported_counts_match_a_strict_parse(parsed):
    (_, good, bad, _), summary = parsed
    assert summary["bad"] == {reason: bad[reason] for reason in BAD_REASONS}
    assert all(n > 0 for n in summary["bad"].values())
    quoted = sum(any(v.startswith('"') for v in f) for f in good)
    assert quoted == summary["quoted_fields"] > 0
    pairs = Counter((f[COL["customer_id"]], f[COL["product_id"]]) for f in good)
    assert sum(n - 1 for n in pairs.values()) == summary["duplicate_pairs"]
    assert 0 < summary["duplicate_pairs"] < 0.03 * len(good)
    assert len({f[COL["customer_id"]] for f in good}) == summary["customers"]
    assert len({f[COL["product_id"]] for f in good}) == summary["products"]


def test_quote_rows_are_valid_without_quoting_and_never_closed(parsed):
    (_, good, _, _), _ = parsed
    rows = [f for f in good if any(v.startswith('"') for v in f)]
    fields = {name for f in rows for name, v in zip(TSV_COLUMNS, f) if v.startswith('"')}
    assert fields <= {"product_title", "review_headline", "review_body"}
    # No closing quote anywhere on the row: a default-quoting parser swallows what follows.
    assert all(sum(v.count('"') for v in f) == 1 for f in rows)


def test_product_ids_with_leading_zeros_and_asins(parsed):
    (_, good, _, _), _ = parsed
    ids = {f[COL["product_id"]] for f in good}
    assert any(i.startswith("0") for i in ids)
    assert any(i.startswith("B0") for i in ids)


def test_long_tail_survives_the_reference_filter(parsed):
    (_, good, _, _), _ = parsed
    kept = reference_filter(good)
    assert len(kept) >= 2000
    assert len({f[COL["customer_id"]] for f in kept}) >= 200
    assert len({f[COL["product_id"]] for f in kept}) >= 100


def test_ratings_skewed_high_and_carry_customer_signal(parsed):
    (_, good, _, _), _ = parsed
    stars = Counter(int(f[COL["star_rating"]]) for f in good)
    assert stars[5] == max(stars.values()) and stars[4] + stars[5] > 0.6 * len(good)
    assert stars[1] > stars[2]          # the J shape of real ratings
    # A customer's (shrunk) mean on half of their reviews predicts the other half better
    # than the global mean does: the ratings have per-customer structure to learn.
    kept = reference_filter(good)
    mean = sum(int(f[COL["star_rating"]]) for f in kept) / len(kept)
    halves = {}
    for f in kept:
        half = int(f[COL["review_id"]][-1], 36) % 2
        halves.setdefault((f[COL["customer_id"]], half), []).append(int(f[COL["star_rating"]]))
    err_global = err_customer = 0.0
    for (cust, half), ratings in halves.items():
        other = halves.get((cust, 1 - half))
        if half == 1 and other:
            m = (sum(other) + 5 * mean) / (len(other) + 5)
            err_customer += sum((r - m) ** 2 for r in ratings)
            err_global += sum((r - mean) ** 2 for r in ratings)
    assert err_customer < 0.95 * err_global


def test_customer_dates_cluster_in_an_activity_span(parsed):
    (_, good, _, _), _ = parsed
    by_customer = {}
    for f in good:
        by_customer.setdefault(f[COL["customer_id"]], []).append(f[COL["review_date"]])
    spans = sorted(int(max(d)[:4]) - int(min(d)[:4]) for d in by_customer.values() if len(d) >= 5)
    assert spans and spans[len(spans) // 2] <= 3     # median span in years, range is 16


def test_deterministic_and_independent_of_chunk_size(tmp_path):
    a = generate_reviews(tmp_path / "a.tsv.gz", rows=3000, seed=3)
    b = generate_reviews(tmp_path / "b.tsv.gz", rows=3000, seed=3, chunk_rows=777)
    c = generate_reviews(tmp_path / "c.tsv.gz", rows=3000, seed=4)
    text = read_text(tmp_path / "a.tsv.gz")
    assert text == read_text(tmp_path / "b.tsv.gz")
    assert text != read_text(tmp_path / "c.tsv.gz")
    assert {k: v for k, v in a.items() if k != "path"} == {k: v for k, v in b.items()
                                                           if k != "path"}
    assert c["seed"] == 4
    # Same arguments, same compressed bytes too (fixed gzip header time and name).
    generate_reviews(tmp_path / "sub" / "a.tsv.gz", rows=3000, seed=3)
    assert (tmp_path / "sub" / "a.tsv.gz").read_bytes() == (tmp_path / "a.tsv.gz").read_bytes()


def test_faults_off_gives_only_clean_rows(tmp_path):
    path = tmp_path / "clean.tsv.gz"
    summary = generate_reviews(path, rows=4000, seed=1, faults=False)
    _, good, bad, n_lines = strict_parse(path)
    assert n_lines == 4000 and not bad and len(good) == 4000
    assert summary["bad"] == dict.fromkeys(BAD_REASONS, 0) and summary["quoted_fields"] == 0
    assert not any(v.startswith('"') for f in good for v in f)


def test_tiny_files_and_atomic_local_write(tmp_path):
    for rows in (0, 1, 17):
        path = tmp_path / "deep" / "dir" / f"r{rows}.tsv.gz"   # parent is created
        summary = generate_reviews(str(path), rows=rows)
        assert read_text(path).count("\n") == rows + 1 and summary["rows"] == rows
    # Only finished files: no temporary left beside them.
    assert sorted(os.listdir(tmp_path / "deep" / "dir")) == ["r0.tsv.gz", "r1.tsv.gz",
                                                            "r17.tsv.gz"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import fmprep.sample as sample

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sample, "_chunk", boom)
    with pytest.raises(RuntimeError):
        generate_reviews(tmp_path / "x.tsv.gz", rows=10)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs", [{"rows": -1}, {"rows": 1.5}, {"seed": -2},
                                    {"chunk_rows": 0}, {"compresslevel": 9}])
def test_bad_arguments_raise_user_errors(tmp_path, kwargs):
    with pytest.raises(FmprepError):
        generate_reviews(tmp_path / "x.tsv.gz", **kwargs)


def test_writes_to_s3(tmp_path, s3):
    summary = generate_reviews("s3://fmprep-test/in/reviews.tsv.gz", rows=500, seed=5)
    generate_reviews(tmp_path / "local.tsv.gz", rows=500, seed=5)
    with s3.open("fmprep-test/in/reviews.tsv.gz", "rb") as f:
        remote = gzip.decompress(f.read()).decode("utf-8")
    assert remote == read_text(tmp_path / "local.tsv.gz")
    assert summary["rows"] == 500


def test_default_quoting_loses_rows_that_quoting_off_keeps(sample_file):
    # The fault the reference notebook suffers from (docs/design.md §2), reproduced by the sample.
    import csv

    import pandas as pd

    path, summary = sample_file
    kw = dict(sep="\t", dtype=str, on_bad_lines="skip")
    quoted = pd.read_csv(path, **kw)
    plain = pd.read_csv(path, quoting=csv.QUOTE_NONE, **kw)
    assert len(plain) == summary["rows"] - summary["bad"]["too_many_fields"]
    assert len(quoted) < len(plain) - 1000
