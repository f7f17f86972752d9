"""Hostile input: every bad row counted and sampled, good rows intact, columns never shifted."""

from __future__ import annotations

import gzip
import json
import os

import pandas as pd
import pytest

from conftest import review_line
from fmprep import ingest
from fmprep.config import TSV_COLUMNS

HEADER = "\t".join(TSV_COLUMNS)


def build(tmp_path, long_body=10 << 20):
    good = [review_line(f"{c:05d}", f"B{p:09d}", 1 + (c + p) % 5, f"2014-01-1{c % 9}", f"R{c}-{p}")
            for c in range(12) for p in range(12)]
    hostile = {
        "crlf": review_line("1", "P1", 5, "2014-01-01", "RX1") + "\r",
        "quote_then_tab": review_line("2", "P1", 5, "2014-01-01", "RX2", title='"open\tquote'),
        "quote_inside": review_line("3", "P1", 4, "2014-01-01", "RX3", title='a "b" c', body='"x'),
        "rating_7": review_line("4", "P1", 7, "2014-01-01", "RX4"),
        "rating_0": review_line("5", "P1", 0, "2014-01-01", "RX5"),
        "rating_float": review_line("5", "P1", "4.5", "2014-01-01", "RX5b"),
        "empty_date": review_line("6", "P1", 5, "", "RX6"),
        "us_date": review_line("7", "P1", 5, "01/02/2014", "RX7"),
        "impossible_date": review_line("8", "P1", 5, "2014-02-30", "RX8"),
        "header_again": HEADER,
        "long_line": review_line("9", "P1", 3, "2014-01-01", "RX9", body="x" * long_body),
        "too_few": "US\t10\tRX10\tP1",
        "empty_customer": review_line("", "P1", 5, "2014-01-01", "RX11"),
    }
    text = HEADER + "\n" + "\n".join(good[:70] + list(hostile.values()) + good[70:]) + "\n"
    data = text.encode("utf-8").replace(b"RX12", b"")
    data += review_line("12", "P1", 5, "2014-01-01", "RX12").encode().replace(b"12\tRX", b"\xff\xfe\tRX") + b"\n"
    path = tmp_path / "hostile.tsv.gz"
    with gzip.open(path, "wb") as f:
        f.write(data)
    return str(path), len(good)


@pytest.mark.parametrize("part_size", [128 << 20, 256 << 10])
def test_hostile_rows_are_counted_sampled_and_never_shift_columns(tmp_path, part_size):
    source, n_good = build(tmp_path, long_body=(10 << 20) if part_size > 1 << 20 else 1 << 20)
    out = tmp_path / "out"
    result = ingest.ingest_file(source, 0, str(out), part_size)
    assert result["rejected"] == {"too_many_fields": 1, "too_few_fields": 1, "invalid_utf8": 1,
                                  "missing_id": 1, "repeated_header": 1, "bad_rating": 3,
                                  "bad_date": 3}
    valid = n_good + 3  # crlf, quote_inside, long_line
    assert result["rows_valid"] == valid
    assert result["rows_read"] == valid + sum(result["rejected"].values())
    rows = pd.concat(pd.read_parquet(out / p["file"]) for p in result["parts"])
    assert len(rows) == valid
    assert sorted(os.listdir(out)) == sorted([p["file"] for p in result["parts"]] +
                                             ["0000-rejects.jsonl"])
    by_id = rows.set_index("review_id")
    assert by_id.loc["RX1", "star_rating"] == 5 and str(by_id.loc["RX1", "review_date"]) == "2014-01-01"
    assert by_id.loc["RX3", "product_title"] == 'a "b" c' and by_id.loc["RX3", "star_rating"] == 4
    assert by_id.loc["RX9", "star_rating"] == 3 and by_id.loc["RX9", "product_id"] == "P1"
    # Good rows after the hostile block are intact too.
    assert set(rows["customer_id"].str.len()) <= {1, 5}
    samples = [json.loads(l) for l in open(out / "0000-rejects.jsonl")]
    assert {s["reason"] for s in samples} == {k for k, v in result["rejected"].items() if v}
    assert all(len(s["text"]) <= 1000 for s in samples)
