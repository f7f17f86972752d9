"""Bring-your-own sources: every format to the canonical rows, rejects counted, shards equal."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import random

import numpy as np
import pandas as pd
import pytest

from conftest import review_line, write_tsv_gz
from fmprep import ingest, pipeline, report, sources
from fmprep.cli import main
from fmprep.config import PrepSettings
from fmprep.errors import FmprepError
from fmprep.sample import generate_reviews, generate_reviews_2023
from test_prep import decode_channel

MS_PER_DAY = 86_400_000
EPOCH = dt.date(1970, 1, 1)


def write(path, lines, encoding="utf-8", gz=None):
    """Write text lines (or bytes) to ``path``, gzip-compressed when it ends with .gz."""
    data = b"".join((l if isinstance(l, bytes) else l.encode(encoding)) + b"\n" for l in lines)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(data)
    return str(path)


def review_2023(user, product, rating, ms, **extra):
    return json.dumps({"rating": rating, "title": "Great", "text": "Loved it.", "images": [],
                       "asin": product, "parent_asin": product, "user_id": user,
                       "timestamp": ms, "helpful_vote": 0, "verified_purchase": True, **extra})


def ingest_one(tmp_path, source, fmt="auto", part_size=1 << 20):
    out = tmp_path / "out"
    result = ingest.ingest_file(str(source), 0, str(out), part_size, None, fmt)
    rows = (pd.concat([pd.read_parquet(out / p["file"]) for p in result["parts"]])
            if result["parts"] else pd.DataFrame())
    samples = [json.loads(l) for l in open(out / "0000-rejects.jsonl")]
    return result, rows, samples


def check_counts(result, samples, want):
    got = {k: v for k, v in result["rejected"].items() if v}
    assert got == want
    assert result["rows_read"] == result["rows_valid"] + sum(want.values())
    assert {s["reason"] for s in samples} == set(want)


# --- each format: counts and samples of its rejects --------------------------------------------

GOOD_2023 = [review_2023(f"U{i}", f"P{i % 7}", float(1 + i % 5), 1_400_000_000_000 + i)
             for i in range(40)]
HOSTILE_2023 = {
    "bad_json": [b'{"user_id": "U1", "parent_asin": "P1", "rating": 5.0, "timest',
                 b"null", b"[1, 2]", b'"a string"', b'{"a": 1}{"b": 2}'],
    "missing_id": [review_2023("", "P1", 5.0, 1_400_000_000_000),
                   review_2023(17, "P1", 5.0, 1_400_000_000_000),      # not a string
                   '{"parent_asin": "P1", "rating": 5.0, "timestamp": 1400000000000}'],
    "bad_rating": [review_2023("U", "P1", "5", 1_400_000_000_000),
                   review_2023("U", "P1", 0.0, 1_400_000_000_000),
                   review_2023("U", "P1", 5.5, 1_400_000_000_000),
                   review_2023("U", "P1", None, 1_400_000_000_000),
                   review_2023("U", "P1", True, 1_400_000_000_000)],
    "bad_timestamp": [review_2023("U", "P1", 4.0, 1_400_000_000),      # seconds, not ms
                      review_2023("U", "P1", 4.0, "1400000000000"),
                      review_2023("U", "P1", 4.0, 1.4e12),
                      '{"user_id": "U", "parent_asin": "P1", "rating": 4.0}'],
    "invalid_utf8": [b'{"user_id": "U\xff", "parent_asin": "P1", "rating": 4.0, '
                     b'"timestamp": 1400000000000}'],
}
ODD_BUT_VALID_2023 = [
    b'{"user_id": "Ubytes", "parent_asin": "P1", "rating": 4.0, "timestamp": 1400000000000, '
    b'"text": "a \xff in a field that is not read"}',
    review_2023("Uhalf", "P1", 4.5, 1_400_000_000_000),
    '{"user_id": "X", "user_id": "Udup", "parent_asin": "P1", "rating": 4.0, '
    '"timestamp": 1400000000000}',                                    # json.loads: last wins
    review_2023("Ucrlf", "P1", 2.0, 1_400_000_000_000) + "\r",
    "", "   ",                                                         # blank: not rows
]


@pytest.mark.parametrize("order", ["mixed", "hostile_first"])
def test_amazon_2023_rejects_are_counted_and_sampled(tmp_path, order):
    hostile = [l for ls in HOSTILE_2023.values() for l in ls]
    # hostile_first: the file starts with `null`, which must not reach Arrow first (it
    # crashes the process, apache/arrow#47409), and every block takes the slow path.
    lines = (GOOD_2023[:20] + hostile + ODD_BUT_VALID_2023 + GOOD_2023[20:]
             if order == "mixed" else hostile[1:] + hostile[:1] + ODD_BUT_VALID_2023 + GOOD_2023)
    result, rows, samples = ingest_one(tmp_path, write(tmp_path / "Video.jsonl.gz", lines))
    assert result["format"] == "amazon-2023"
    check_counts(result, samples, {k: len(v) for k, v in HOSTILE_2023.items()})
    assert result["rows_valid"] == len(GOOD_2023) + 4
    by_user = rows.set_index("customer_id")
    assert by_user.loc["Uhalf", "star_rating"] == np.float32(4.5)
    assert {"Ubytes", "Udup", "Ucrlf"} <= set(by_user.index)
    assert str(by_user.loc["U0", "review_date"]) == "2014-05-13"      # UTC date of the ms
    assert by_user.loc["U0", "review_id"] == "1400000000000:U0:P0"
    assert (rows["product_title"] == "").all()                       # titles come from --meta
    assert any(s["text"] == "null" for s in samples)


def test_json_rows_are_judged_alike_in_any_block(tmp_path):
    """The fast path (Arrow on a block) and the slow one (pieces, then lines) agree."""
    lines = [l if isinstance(l, bytes) else l.encode() for l in
             GOOD_2023 + [l for ls in HOSTILE_2023.values() for l in ls] + ODD_BUT_VALID_2023]

    def run(blocks):
        rejects, rows = sources.Rejects(sources.FORMAT_REASONS["amazon-2023"]), []
        for block in blocks:
            cols, text_of = sources.parse_json_block(block, sources.REVIEW_FIELDS, rejects)
            rows += sources._clean_2023(cols, text_of, rejects).to_pylist()
        return sorted(rows, key=lambda r: r["review_id"]), rejects.counts

    whole = run([b"\n".join(lines) + b"\n"])
    assert run([l + b"\n" for l in lines]) == whole
    assert run([b"\n".join(lines[::-1]) + b"\n"]) == whole
    assert len(whole[0]) == len(GOOD_2023) + 4


@pytest.mark.parametrize("fmt, name, good, hostile, valid_extra", [
    ("movielens-100k", "u.data",
     ["1\t10\t3\t881250949", "2\t10\t5\t881250950", "3\t11\t1\t881250951"],
     {"too_few_fields": ["1 10 3 881250949", "1,10,3,881250949"],
      "too_many_fields": ["1\t10\t3\t881250949\t7"],
      "missing_id": ["\t10\t3\t881250949"],
      "bad_rating": ["1\t10\t0\t881250949", "1\t10\t5.5\t881250949", "1\t10\tx\t881250949"],
      "bad_timestamp": ["1\t10\t3\t881250949000", "1\t10\t3\t12", "1\t10\t3\t-5"],
      "invalid_utf8": [b"\xff\t10\t3\t881250949"]},
     ["4\t12\t3.5\t881250952"]),
    ("movielens-1m", "ratings.dat",
     ["1::1193::5::978300760", "1::661::3::978302109", "2::1193::1::978302110"],
     {"too_few_fields": ["1:914:3:978301968", "1\t914\t3\t978301968"],
      "too_many_fields": ["1::914::3::978301968::9"],
      "missing_id": ["1::::3::978301968"],
      "bad_rating": ["1::914::6::978301968"],
      "bad_timestamp": ["1::914::3::97830196x"]},
     ["3::3408::4.5::978300275"]),
    ("movielens-csv", "ratings.csv",
     ["userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,3,4.5,964981247",
      "2,6,0.5,964982224"],
     {"too_few_fields": ["1;47;5.0;964983815", "1,70,3.0"],
      "too_many_fields": ["1,70,3.0,964983815,x"],
      "repeated_header": ["userId,movieId,rating,timestamp"],
      "bad_rating": ["1,50,5.5,964982931", "1,50,0.0,964982931", "1,50,4.25,964982931"],
      "bad_timestamp": ["1,50,4.0,9649829310000"]},
     ["3,7,2.0,964982931\r"]),
])
def test_movielens_rejects_are_counted_and_sampled(tmp_path, fmt, name, good, hostile,
                                                   valid_extra):
    lines = good[:2] + [l for ls in hostile.values() for l in ls] + valid_extra + good[2:]
    result, rows, samples = ingest_one(tmp_path, write(tmp_path / name, lines))
    assert result["format"] == fmt
    check_counts(result, samples, {k: len(v) for k, v in hostile.items()})
    n_good = len(good) - (fmt == "movielens-csv")
    assert result["rows_valid"] == len(rows) == n_good + len(valid_extra)
    assert rows["star_rating"].dtype == np.float32
    assert set(rows["star_rating"]) <= {0.5 * k for k in range(1, 11)}
    assert rows["review_id"].is_unique and rows["product_title"].eq("").all()


def test_movielens_dat_separator_split_across_reads():
    """``::`` becomes one byte even where a read ends between the two colons."""
    rng = random.Random(3)
    for _ in range(300):
        data = "".join(rng.choice(["1", "::", ":", "a", "\n"]) for _ in range(40)).encode()
        stream = io.BytesIO(data)
        reader = sources._Replacing(stream, b"::", b"\x1f")
        out = b""
        while chunk := reader.read(rng.randint(1, 5)):
            out += chunk
        assert out == data.replace(b"::", b"\x1f")


# --- the same reviews in every format give the same shards -------------------------------------

def equivalent_reviews():
    """(customer, product, stars, day): no customer reviews twice on one day or one product
    twice, so review_id (which differs between formats) never breaks a tie."""
    rows = []
    for c in range(1, 31):
        for p in range(1, 21):
            if (c * 7 + p * 3) % 4:
                rows.append((c, p, 1 + (c * p + c) % 5, dt.date(2010, 1, 1)
                             + dt.timedelta(days=c + 17 * p)))
    return rows


def title(p):
    return "American President, The (1995)" if p == 3 else f"Movie {p} (19{80 + p})"


def write_equivalent(tmp_path, fmt):
    """The reviews of :func:`equivalent_reviews` as ``fmt``; returns (source, meta)."""
    reviews = equivalent_reviews()
    ms = [((day - EPOCH).days * MS_PER_DAY + (c * 37 + p) * 1000) for c, p, _, day in reviews]
    products = sorted({p for _, p, _, _ in reviews})
    d = tmp_path / fmt
    d.mkdir()
    if fmt == "amazon-tsv":
        return write_tsv_gz(d / "reviews.tsv.gz", [
            review_line(str(c), str(p), r, day.isoformat(), f"R{c:03d}{p:03d}", title=title(p))
            for c, p, r, day in reviews]), None
    if fmt == "amazon-2023":
        # Reversed file order, one bad line and a meta line without a title: no effect.
        lines = [review_2023(str(c), str(p), float(r), t)
                 for (c, p, r, _), t in zip(reviews, ms)][::-1] + ['{"user_id": "9", "rat']
        meta = [json.dumps({"main_category": "Movies & TV", "title": title(p), "features": [],
                            "details": {"Director": ["X", {"a": None}]}, "parent_asin": str(p)})
                for p in products] + ['{"parent_asin": "999", "title": null}']
        return (write(d / "Movies_and_TV.jsonl.gz", lines),
                write(d / "meta_Movies_and_TV.jsonl.gz", meta))
    seconds = [t // 1000 for t in ms]
    if fmt == "movielens-csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(
            [("movieId", "title", "genres")] + [(p, title(p), "Drama") for p in products])
        return (write(d / "ratings.csv", ["userId,movieId,rating,timestamp"] + [
            f"{c},{p},{r}.0,{s}" for (c, p, r, _), s in zip(reviews, seconds)]),
            write(d / "movies.csv", out.getvalue().splitlines()))
    if fmt == "movielens-1m":
        return (write(d / "ratings.dat", [f"{c}::{p}::{r}::{s}"
                                          for (c, p, r, _), s in zip(reviews, seconds)]),
                write(d / "movies.dat", [f"{p}::{title(p)}::Drama" for p in products],
                      encoding="latin-1"))
    return (write(d / "u.data", [f"{c}\t{p}\t{r}\t{s}"
                                 for (c, p, r, _), s in zip(reviews, seconds)]),
            write(d / "u.item", [f"{p}|{title(p)}|01-Jan-1995||http://x|0|1" for p in products],
                  encoding="latin-1"))


def run_prep(tmp_path, name, source, **kwargs):
    settings = PrepSettings(min_customer_ratings=3, min_product_ratings=3, train_shards=3)
    work, out = tmp_path / name / "work", tmp_path / name / "out"
    manifest = pipeline.run_data(source, str(work), str(out), settings, **kwargs)
    shards = {s["file"]: (out / s["file"]).read_bytes()
              for ch in ("train", "test") for s in manifest["channels"][ch]["shards"]}
    users = pd.read_parquet(work / "users").sort_values("user").reset_index(drop=True)
    items = pd.read_parquet(work / "items").sort_values("item").reset_index(drop=True)
    return manifest, shards, users, items


def test_same_reviews_in_every_format_give_identical_shards(tmp_path):
    results = {}
    for fmt in sources.FORMATS:
        source, meta = write_equivalent(tmp_path, fmt)
        results[fmt] = run_prep(tmp_path, fmt, source, meta=meta)
    manifest, shards, users, items = results["amazon-tsv"]
    assert manifest["channels"]["test"]["rows"] == 30 and len(shards) == 4
    assert set(items["product_title"]) == {title(p) for p in range(1, 21)}
    for fmt, (m, s, u, i) in results.items():
        assert s == shards, fmt                                        # byte for byte
        pd.testing.assert_frame_equal(u, users, check_dtype=False)
        pd.testing.assert_frame_equal(i, items, check_dtype=False)
        assert m["feature_dim"] == manifest["feature_dim"]


def test_meta_titles_joined_by_hash_partitions_match_one_partition(tmp_path, monkeypatch):
    source, meta = write_equivalent(tmp_path, "amazon-2023")
    # A product listed twice: the smallest title wins, whatever the partitioning.
    with gzip.open(meta, "ab") as f:
        f.write(json.dumps({"parent_asin": "1", "title": "AAA first"}).encode() + b"\n")
    _, shards, _, items = run_prep(tmp_path, "one", source, meta=meta)
    monkeypatch.setattr(ingest, "TITLES_PER_PARTITION", 4)
    manifest, shards_many, _, items_many = run_prep(tmp_path, "many", source, meta=meta)
    assert shards_many == shards
    pd.testing.assert_frame_equal(items_many, items)
    assert items.set_index("product_id").loc["1", "product_title"] == "AAA first"
    meta_totals = json.load(open(tmp_path / "many" / "work" / "reviews" / "_manifest.json"))["meta"]
    assert meta_totals["totals"]["rejected"] == {"invalid_utf8": 0, "bad_json": 0,
                                                 "missing_id": 0, "missing_title": 1}
    assert os.path.exists(tmp_path / "many" / "work" / "rejects" / "meta-0000-rejects.jsonl")
    assert not os.path.exists(tmp_path / "many" / "work" / "reviews" / "_titles")


def test_half_stars_survive_to_the_shards(tmp_path):
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{c},{p},{(c + p) % 10 / 2 + 0.5},{1_000_000_000 + 86400 * (c * 20 + p)}"
        for c in range(1, 9) for p in range(1, 9)]
    manifest, _, _, _ = run_prep(tmp_path, "half", write(tmp_path / "ratings.csv", lines))
    out = str(tmp_path / "half" / "out")
    labels = np.concatenate([decode_channel(out, manifest, ch)[:, 3]
                             for ch in ("train", "test")])
    assert sorted(set(labels)) == [0.5 * k for k in range(1, 11)]
    train = pd.read_parquet(tmp_path / "half" / "work" / "train")
    assert train["star_rating"].dtype == np.float32 and (train["star_rating"] == 4.5).any()
    # The report counts and plots half stars as such, and its baseline uses their values.
    test = pd.read_parquet(tmp_path / "half" / "work" / "test")
    stats = json.load(open(tmp_path / "half" / "out" / "report" / "stats.json"))
    for ch, df in (("train", train), ("test", test)):
        want = df["star_rating"].value_counts()
        assert stats[ch]["ratings"] == [[v, int(want.get(v, 0))] for v in
                                        sorted(set(want.index) | {1.0, 2.0, 3.0, 4.0, 5.0})]
    mean = train["star_rating"].astype(float).mean()
    rmse = float(np.sqrt(((test["star_rating"].astype(float) - mean) ** 2).mean()))
    assert report.mean_baseline_rmse(stats) == pytest.approx(rmse)
    page = (tmp_path / "half" / "out" / "report" / "index.html").read_text(encoding="utf-8")
    assert "<td>4.5 ★</td>" in page or ">4.5 ★<" in page


# --- choosing the format -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sources.FORMATS)
def test_auto_detection_and_forced_format(tmp_path, fmt):
    source, _ = write_equivalent(tmp_path, fmt)
    # The content decides, not the name: the same bytes under a neutral name.
    neutral = tmp_path / ("data.bin.gz" if source.endswith(".gz") else "data.bin")
    neutral.write_bytes(open(source, "rb").read())
    for path in (source, str(neutral)):
        assert ingest_one(tmp_path / "a", path)[0]["format"] == fmt
        forced, rows, _ = ingest_one(tmp_path / "b", path, fmt=fmt)
        assert forced["format"] == fmt and forced["rows_valid"] == len(equivalent_reviews())


def test_wrong_format_is_one_line_naming_the_fix(tmp_path, capsys):
    source, meta = write_equivalent(tmp_path, "amazon-2023")
    dirs = ["--work", str(tmp_path / "w"), "--output", str(tmp_path / "o")]
    def errors(*args):
        code = main(["data", "--source", *args, *dirs])
        lines = capsys.readouterr().err.splitlines()
        return code, [l for l in lines if l.startswith("fmprep: error:")]

    code, err = errors(source, "--format", "movielens-csv")
    assert code == 2 and len(err) == 1
    assert "FORMAT=movielens-csv" in err[0] and "FORMAT=amazon-2023" in err[0]
    assert not os.path.exists(tmp_path / "o" / "manifest.json")
    # A metadata file given as the source, a missing META=, a file no format fits.
    for args, needle in (([meta], "META="),
                         ([source, "--meta", str(tmp_path / "nope.jsonl")], "META="),
                         ([str(write(tmp_path / "x.txt", ["what is this"]))], "FORMAT=")):
        code, err = errors(*args)
        assert code == 2 and len(err) == 1 and needle in err[0], err
    with pytest.raises(FmprepError, match="FORMAT=.*movielens-csv"):
        pipeline.run_data(source, str(tmp_path / "w"), str(tmp_path / "o"), PrepSettings(),
                          fmt="movielens")


def test_forced_format_reads_a_file_auto_cannot_place(tmp_path):
    path = write(tmp_path / "ratings.txt", ["user item rating time"] +
                 [f"{c}\t{p}\t4\t881250949" for c in range(3) for p in range(3)])
    with pytest.raises(FmprepError, match="cannot tell the format.*FORMAT="):
        ingest_one(tmp_path / "a", path)
    result, rows, _ = ingest_one(tmp_path / "b", path, fmt="movielens-100k")
    assert result["rejected"]["too_few_fields"] == 1 and len(rows) == 9


# --- the generated 2023 sample -------------------------------------------------------------------

def test_sample_2023_is_the_tsv_sample_relaid_with_its_own_faults(tmp_path, capsys):
    path = tmp_path / "Video.jsonl.gz"
    assert main(["sample", "--layout", "amazon-2023", "--out", str(path), "--rows", "12000",
                 "--seed", "3"]) == 0
    (tmp_path / "again").mkdir()
    summary = generate_reviews_2023(tmp_path / "again" / "Video.jsonl.gz", rows=12000, seed=3)
    for name in ("Video.jsonl.gz", "meta_Video.jsonl.gz"):             # deterministic
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / name).read_bytes()
    assert all(n > 0 for n in summary["bad"].values())
    result, rows, _ = ingest_one(tmp_path / "jsonl", path)
    assert result["rows_read"] == 12000
    assert result["rejected"] == {"invalid_utf8": 0, **summary["bad"]}

    # Without faults, row for row the TSV sample's products, ratings and dates.
    generate_reviews_2023(tmp_path / "clean.jsonl.gz", rows=3000, seed=3, faults=False,
                          meta=False)
    generate_reviews(tmp_path / "clean.tsv.gz", rows=3000, seed=3, faults=False)
    _, a, _ = ingest_one(tmp_path / "c1", tmp_path / "clean.jsonl.gz")
    _, b, _ = ingest_one(tmp_path / "c2", tmp_path / "clean.tsv.gz")
    cols = ["product_id", "star_rating", "review_date"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))
    pairs = set(zip(a["customer_id"], b["customer_id"]))
    assert len(pairs) == len(set(a["customer_id"])) == len(set(b["customer_id"]))

    titles = ingest.ingest_titles_file(str(tmp_path / "meta_Video.jsonl.gz"), 0,
                                       str(tmp_path / "t"), 1 << 20)
    assert titles["titles"] == summary["meta_products"] >= rows["product_id"].nunique()


@pytest.mark.slow
def test_jsonl_and_meta_on_s3_equal_local(tmp_path, s3):
    source, meta = write_equivalent(tmp_path, "amazon-2023")
    s3.put(source, "fmprep-test/raw/Movies_and_TV.jsonl.gz")
    s3.put(meta, "fmprep-test/raw/meta_Movies_and_TV.jsonl.gz")
    _, local, _, local_items = run_prep(tmp_path, "local", source, meta=meta)
    settings = PrepSettings(min_customer_ratings=3, min_product_ratings=3, train_shards=3)
    remote = pipeline.run_data("s3://fmprep-test/raw/M*.jsonl.gz", "s3://fmprep-test/work",
                               "s3://fmprep-test/out", settings,
                               meta="s3://fmprep-test/raw/meta_*.jsonl.gz")
    for ch in ("train", "test"):
        for shard in remote["channels"][ch]["shards"]:
            assert s3.cat(f"fmprep-test/out/{shard['file']}") == local[shard["file"]]
    assert not s3.exists("fmprep-test/work/reviews/_titles")


def test_movies_csv_title_with_a_bare_carriage_return_is_kept(tmp_path):
    # An unquoted \r inside a line made Python's csv raise, a traceback instead of a title.
    path = write(tmp_path / "movies.csv", [b"movieId,title,genres", b"1,Toy\rStory (1995),Animation",
                                           b'2,"Heat, Again",Action', b"3,Jumanji (1995),Adventure"])
    out = tmp_path / "titles"
    os.makedirs(out)
    result = ingest.ingest_titles_file(path, 0, str(out), 1 << 20)
    titles = pd.concat(pd.read_parquet(out / p["file"]) for p in result["parts"])
    assert dict(zip(titles["product_id"], titles["product_title"])) == {
        "1": "Toy\rStory (1995)", "2": "Heat, Again", "3": "Jumanji (1995)"}
    assert result["titles"] == 3 and sum(result["rejected"].values()) == 0
