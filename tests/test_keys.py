"""The fast paths under prepare and ingest, each against a plain-Python statement of its rule.

* prepare's 64-bit keys (FNV-1a + MurmurHash3 finalizer, numba) and what happens when two ids
  share one;
* prepare's (customer, date, review_id) order, which compares review_ids only on ties;
* ingest's strict YYYY-MM-DD parser (numba) against :mod:`datetime`;
* ingest's parse-ahead thread: order, errors and early close;
* the per-product sums over bucketed count files;
* ingest's one-digit rating check against the regex it replaced.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fmprep import grouping, prepare, sources
from fmprep.errors import FmprepError

MASK = (1 << 64) - 1


def fnv1a_fmix64(text: str, seed: int) -> int:
    """The key function written out in Python integers."""
    h = 14695981039346656037 ^ seed
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 1099511628211) & MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return h ^ (h >> 33)


IDS = ["", "A", "52764559", "B00005JNO1", "AGBFYI2DDIKXC5Y4FARTYDTQBMFQ", "ünïcødé ✓", "x" * 300]


def test_keys_are_the_documented_hash_whatever_the_array_layout():
    want = np.array([fnv1a_fmix64(s, prepare.CUSTOMER_SEED) for s in IDS], dtype=np.uint64)
    as_str = pd.Series(IDS, dtype="str")
    assert (prepare.string_keys(as_str, prepare.CUSTOMER_SEED) == want).all()
    assert (prepare.string_keys(pd.Series(IDS, dtype=object), prepare.CUSTOMER_SEED) == want).all()
    chunked = pa.chunked_array([IDS[:3], IDS[3:]])
    assert (prepare.string_keys(chunked, prepare.CUSTOMER_SEED) == want).all()
    sliced = pa.array(["pad", "pad"] + IDS)[2:]
    assert (prepare.string_keys(sliced, prepare.CUSTOMER_SEED) == want).all()
    other = prepare.string_keys(as_str, prepare.PRODUCT_SEED)
    assert not (other == want).any()


def _rows(customers, ckeys, products, dates, review_ids):
    df = pd.DataFrame({"customer_id": pd.Series(customers, dtype="str"),
                       "review_id": pd.Series(review_ids, dtype="str"),
                       "star_rating": np.float32(5),
                       "review_date": pd.to_datetime(dates).astype("datetime64[ms]")})
    return df.assign(ckey=np.array(ckeys, dtype=np.uint64),
                     pkey=prepare.string_keys(pd.Series(products, dtype="str"),
                                              prepare.PRODUCT_SEED))


def _days(df):
    return df["review_date"].to_numpy().view(np.int64)


def _dedupe(df):
    """The rows prepare keeps of ``df``, in its order."""
    return df.take(prepare.dedupe_order(df["ckey"].to_numpy(), df["pkey"].to_numpy(), _days(df),
                                        df["review_id"], df["customer_id"]))


def test_two_customers_under_one_key_stop_the_run():
    # Forced: both customers get key 7, and each has one review of the same product, so a
    # dedupe that trusted the key would silently keep one of them.
    df = _rows(["C1", "C2"], [7, 7], ["P1", "P1"], ["2015-01-01", "2015-01-02"], ["R1", "R2"])
    with pytest.raises(FmprepError, match="'C1'.*'C2'|'C2'.*'C1'"):
        _dedupe(df)
    fine = _rows(["C1", "C1"], [7, 7], ["P1", "P1"], ["2015-01-01", "2015-01-02"], ["R1", "R2"])
    assert _dedupe(fine)["review_date"].tolist() == [pd.Timestamp("2015-01-02")]


def test_two_products_under_one_key_stop_the_run():
    counts = pd.DataFrame({"pkey": np.array([5, 5], dtype=np.uint64),
                           "tkey": np.array([1, 2], dtype=np.uint64),
                           "product_id": pd.Series(["P1", "P2"], dtype="str"),
                           "product_title": pd.Series(["a", "b"], dtype="str"),
                           "k": [3, 1]})
    with pytest.raises(FmprepError, match="product ids"):
        prepare.item_titles(counts)
    counts["product_id"] = pd.Series(["P1", "P1"], dtype="str")
    assert prepare.item_titles(counts)["product_title"].tolist() == ["a"]


def test_customer_order_equals_a_full_sort_with_many_ties():
    rng = np.random.default_rng(3)
    n = 5000
    df = _rows([f"C{i}" for i in rng.integers(0, 50, n)], rng.integers(0, 50, n),
               [f"P{i}" for i in rng.integers(0, 30, n)],
               pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 4, n), "D"),
               [f"R{i:03d}" for i in rng.integers(0, 400, n)])
    got = df.take(prepare.customer_order(df["ckey"].to_numpy(), _days(df), df["review_id"]))[
        ["ckey", "review_date", "review_id"]]
    want = df.sort_values(["ckey", "review_date", "review_id"])[["ckey", "review_date",
                                                                   "review_id"]]
    assert got.reset_index(drop=True).equals(want.reset_index(drop=True))


def test_item_title_is_the_most_frequent_then_smallest():
    counts = pd.DataFrame({"pkey": np.array([1, 1, 1, 2, 2], dtype=np.uint64),
                           "tkey": np.array([10, 11, 10, 20, 21], dtype=np.uint64),
                           "product_id": pd.Series(["P", "P", "P", "Q", "Q"], dtype="str"),
                           "product_title": pd.Series(["b", "a", "b", "z", "y"], dtype="str"),
                           "k": [1, 2, 1, 4, 4]})
    got = prepare.item_titles(counts).set_index("product_id")["product_title"].to_dict()
    assert got == {"P": "a", "Q": "y"}  # P: a=2 ties b=1+1, smallest wins; Q: tie, smallest


def _python_date(text: str):
    if len(text) != 10 or not all(c in "0123456789" for c in text[:4] + text[5:7] + text[8:]):
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        return None


def test_iso_dates_accept_exactly_the_real_calendar_days():
    day = dt.date(1899, 12, 1)
    texts = []
    while day < dt.date(2001, 3, 31):
        texts.append(day.isoformat())
        day += dt.timedelta(days=1)
    texts += ["2014-02-30", "2014-13-01", "2014-00-10", "2014-01-00", "2014-01-32", "0000-01-01",
              "1900-02-29", "2000-02-29", "2100-02-29", "2014-1-01", "2014/01/01", "", " 2014-01-0",
              "2014-01-011", "２０１４-01-01", "2014-01-0a", "+014-01-01", "9999-12-31", "0001-01-01"]
    values = pa.array(["pad"] + texts)[1:]  # sliced: the parser must honour the offset
    dates, ok = sources.parse_iso_dates(values)
    for text, got, valid in zip(texts, dates.to_pylist(), ok):
        want = _python_date(text)
        assert valid == (want is not None), text
        if valid:
            assert got == want, text


def test_parse_ahead_keeps_order_raises_errors_and_stops_on_close():
    assert list(sources._prefetched(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise sources.LineTooLong()

    got = []
    with pytest.raises(sources.LineTooLong):
        for x in sources._prefetched(failing()):
            got.append(x)
    assert got == [1]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    it = sources._prefetched(endless(), depth=2)
    assert next(it) == 0
    it.close()  # the consumer stops early: the thread must end, not block on a full queue
    time.sleep(0.3)
    assert threading.active_count() == before
    assert len(produced) < 10


@pytest.mark.parametrize("groups,span", [(50, 4), (3, 100_000), (5000, 2)])
def test_compiled_grouping_equals_numpy_and_pandas(groups, span):
    # Few groups give long runs (merge-sort and pairwise paths both); negative and 64-bit
    # second keys check the radix sort's offset and digit passes.
    rng = np.random.default_rng(groups)
    n = 20_000
    first = rng.integers(0, 2**64 - 1, groups, dtype=np.uint64)[rng.integers(0, groups, n)]
    days = rng.integers(-span, span, n).astype(np.int64)
    wide = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    for second in (days, wide):
        np.testing.assert_array_equal(grouping.order_by_pair(first, second),
                                      np.lexsort((second, first)))
    order = np.lexsort((days, first))
    pkey = rng.integers(0, 40, n).astype(np.uint64)[order]
    want = ~pd.DataFrame({"c": first[order], "p": pkey}).duplicated(keep="last").to_numpy()
    np.testing.assert_array_equal(grouping.last_of_each(first[order], pkey), want)
    assert len(grouping.order_by_pair(first[:0], days[:0])) == 0
    np.testing.assert_array_equal(grouping.order_by_key(first), np.argsort(first, kind="stable"))
    assert len(grouping.order_by_key(first[:0])) == 0


def _groups_by_python(first, second):
    groups = {}
    for i, pair in enumerate(zip(first.tolist(), second.tolist())):
        groups.setdefault(pair, []).append(i)
    return sorted(groups.values())


def test_pair_groups_hold_each_pair_in_row_order_even_when_mixes_collide():
    rng = np.random.default_rng(7)
    first = rng.integers(0, 30, 3000).astype(np.uint64) * np.uint64(0x5851F42D4C957F2D)
    second = rng.integers(0, 4, 3000).astype(np.uint64)
    # Pairs that share prepare.PAIR_MIX's mix with (first[0], second[0]): the fallback path.
    a, mix = 12345, int(prepare.PAIR_MIX)
    clash = (int(first[0]) * mix + int(second[0]) - a * mix) % 2**64
    first = np.r_[first, [a, a]].astype(np.uint64)
    second = np.r_[second, [clash, clash]].astype(np.uint64)
    for f, s in ((first[:3000], second[:3000]), (first, second), (first[:0], second[:0])):
        order, starts = prepare.pair_groups(f, s)
        got = sorted(order[b:e].tolist() for b, e in zip(starts, np.r_[starts[1:], len(order)]))
        assert got == _groups_by_python(f, s)


def test_shard_order_breaks_equal_hashes_by_keys():
    order = np.array([9, 3, 9, 3], dtype=np.uint64)
    ckey = np.array([2, 1, 1, 1], dtype=np.uint64)
    pkey = np.array([0, 8, 5, 7], dtype=np.uint64)
    np.testing.assert_array_equal(prepare.shard_order(order, ckey, pkey), [3, 1, 2, 0])
    unique = np.array([5, 1, 4], dtype=np.uint64)
    np.testing.assert_array_equal(prepare.shard_order(unique, unique, unique), [1, 2, 0])


def test_product_counts_sum_across_parts_as_pandas_does(tmp_path):
    """Counts written per part, bucketed by product key, sum per bucket to pandas' totals."""
    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 50, size=n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             for n in (0, 1, 200, 1000)]
    urls = [str(tmp_path / f"part-{i}.arrow") for i in range(len(parts))]
    for pkey, url in zip(parts, urls):
        prepare.write_product_counts(pkey, url, 3, None)
    expected = pd.Series(np.concatenate(parts)).value_counts()
    got_keep, got_hist = prepare._keep_products(urls, 3, 25, None)
    assert got_keep.tolist() == sorted(expected[expected >= 25].index.tolist())
    assert got_hist == expected.value_counts().to_dict()


def test_one_digit_ratings_accept_what_the_regex_accepts():
    import re

    import pyarrow.compute as pc

    from fmprep.sources.columns import one_digit_ratings
    values = ["1", "2", "3", "4", "5", "0", "6", "", "12", "4 stars", "５", " 3", "3 ", None, "5"]
    arr = pa.array(values, pa.string())
    for sliced in (arr, arr.slice(3), arr.slice(0, 0), pa.array(["", ""], pa.string())):
        ratings, ok = one_digit_ratings(sliced)
        want = [v is not None and re.fullmatch(r"[1-5]", v) is not None
                for v in sliced.to_pylist()]
        assert ok.tolist() == want
        assert ratings.dtype == np.float32
        assert ratings.tolist() == [float(v) if w else 0.0
                                    for v, w in zip(sliced.to_pylist(), want)]
        regex = pc.fill_null(pc.match_substring_regex(sliced, r"^[1-5]$"), False)
        assert ok.tolist() == regex.to_pylist()
