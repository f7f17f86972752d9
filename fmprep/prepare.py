"""Stage 2, prepare: reviews → deduplicated, long-tail-filtered, indexed, split rows (Dask).

Out of core throughout, and every result is independent of the number of partitions and of
the scheduler:

* keys: customer_id and product_id are hashed once to 64-bit integers (``ckey``, ``pkey``), and
  every row-level step (shuffle, dedupe, counts, filter, joins) works on those; the strings
  are only carried along. A hash shared by two different ids stops the run with an error
  (it is checked, not assumed away);
* duplicates: one row per (customer, product), the latest by (review_date, review_id);
* filter: ``single`` counts ratings once and keeps customers with ≥ ``min_customer_ratings``
  and products with ≥ ``min_product_ratings`` (the reference notebook); ``kcore`` repeats
  until both hold for every remaining row;
* ids: users 0..U-1 and items U..U+I-1, each by ratings count descending (after the filter),
  ties by customer_id / product_id ascending;
* ``days_since_first``: days since the customer's first remaining review;
* split: each customer's latest review (by review_date, then review_id) is the test row;
* titles: a product's title is its most frequent one among its valid reviews (ties: the
  smallest string), since a few products carry several titles in the source;
* train/test shards: a row's shard is a hash of (customer, product), rows inside a shard
  are ordered by that hash, so shards are similar in size and in a fixed, shuffled order.

Ingest has grouped the rows by customer bucket already (row group j of every part is bucket
j), so each bucket is read, deduplicated and written to ``WORK/_deduped`` without a shuffle, and
every per-customer step afterwards is local to a part: parts are sorted by (customer,
review_date, review_id) there, and the filter, ``days_since_first``, the split and the user
statistics are single passes over each sorted part (``WORK/_kept``). Only the small
per-customer and per-product tables are sorted or joined across parts, and the kept rows are
shuffled once more into their shards. These scratch files are Arrow IPC and are removed when
the stage is done.
"""

from __future__ import annotations

import collections
import logging

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import grouping, ids, layout, memory, owned, partio, storage
from .config import INGEST_MANIFEST, MANIFEST, MANIFEST_FORMAT, REVIEWS_DIR, PrepSettings
from .errors import FmprepError, command, setting
from .keys import CHECK_SEED, CUSTOMER_SEED, PRODUCT_SEED, TITLE_SEED, bucket_of, string_keys

log = logging.getLogger(__name__)

INPUT_COLUMNS = ["customer_id", "review_id", "product_id", "product_title", "star_rating",
                 "review_date"]
# Scratch directories of WORK (Arrow IPC files, see partio), removed when the stage is done:
BY_PRODUCT = "_by_product"    # the shuffles' files
BY_SHARD = "_by_shard"
DEDUPED = "_deduped"          # rows after dedupe, one part per customer bucket
KEPT = "_kept"                # rows after the filter, with days and the split
COUNTS = "_counts"            # rows per product of each part (after dedupe, each k-core round
                              # and the filter), bucketed by product key
SCRATCH_DIRS = (BY_PRODUCT, DEDUPED, KEPT, BY_SHARD, COUNTS)
ROW_COLUMNS = ["user", "item", "days_since_first", "star_rating", "review_date"]
SHARD_INPUT_COLUMNS = ["ckey", "pkey", "star_rating", "review_date", "days_since_first", "is_test"]
# Rows per partition of the user and item tables while they are sorted into ids: one partition
# sorts without a shuffle, but a sort holds a few copies of its partition (a user row is ~100
# bytes in pandas, an item row with its title ~300), and a 1 GiB worker must hold them.
USERS_PER_PARTITION = 300_000
ITEMS_PER_PARTITION = 100_000
MAX_SHARD_ROWS = 500_000  # rows of a train or test shard, at most: see capped_shards


# --- keys ---------------------------------------------------------------------------------------

def _collision(kind: str, key, a, b) -> FmprepError:
    return FmprepError(f"two {kind} ids, {a!r} and {b!r}, share the 64-bit key {key}; this is "
                       "a one-in-billions event: please report it (rename one id to go on)")


def _check_one_string_per_key(keys: np.ndarray, strings: pd.Series, kind: str) -> None:
    """Raise if two different strings share a key in a frame sorted by ``keys``."""
    if len(keys) < 2:
        return
    same_key = keys[1:] == keys[:-1]
    if not same_key.any():
        return
    text = pa.array(strings)
    differ = pc.fill_null(pc.not_equal(text[1:], text[:-1]), False).to_numpy(
        zero_copy_only=False)
    bad = np.flatnonzero(same_key & differ)
    if len(bad):
        i = int(bad[0])
        raise _collision(kind, int(keys[i]), text[i].as_py(), text[i + 1].as_py())


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in ``keys``."""
    if len(keys) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.diff(np.r_[starts, len(keys)])


# --- pure functions on pandas partitions --------------------------------------------------------

def customer_order(ckey: np.ndarray, days: np.ndarray, review_id) -> np.ndarray:
    """Row order by (ckey, day, review_id, position); review_ids are compared only on ties.

    Parameters
    ----------
    ckey : numpy.ndarray of uint64
        Keys of customer_id.
    days : numpy.ndarray of int64
        The review dates, as any integer count that orders them.
    review_id : pyarrow.Array or pandas.Series
        Strings that break ties of (ckey, day).

    Returns
    -------
    numpy.ndarray of int64
    """
    order = grouping.order_by_pair(ckey, days)
    ckey, days = ckey[order], days[order]
    tie = (ckey[1:] == ckey[:-1]) & (days[1:] == days[:-1])
    if tie.any():
        # Rows in runs of equal (ckey, date): sort each run by review_id, in place.
        tied = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])
        run = np.cumsum(np.r_[True, ~tie])[tied]
        sub = pa.table({"run": run, "review_id": _arrow(review_id).take(order[tied])})
        within = pc.sort_indices(sub, sort_keys=[("run", "ascending"),
                                                 ("review_id", "ascending")]).to_numpy()
        order[tied] = order[tied][within]
    return order


def _arrow(values) -> pa.Array | pa.ChunkedArray:
    return values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)


def dedupe_order(ckey: np.ndarray, pkey: np.ndarray, days: np.ndarray, review_id,
                 customer_id) -> np.ndarray:
    """The rows to keep, in (ckey, date, review_id) order: the latest of each (customer, product).

    Parameters
    ----------
    ckey, pkey : numpy.ndarray of uint64
        Keys of customer_id and product_id.
    days : numpy.ndarray of int64
        The review dates, as any integer count that orders them.
    review_id, customer_id : pyarrow.Array or pandas.Series
        Strings: review_id breaks ties of date; customer_id is checked against its key.

    Returns
    -------
    numpy.ndarray of int64
        Row positions: each customer's rows together, oldest first, as every later
        per-customer step needs them.
    """
    order = customer_order(ckey, days, review_id)
    sorted_ckey = ckey[order]
    # Two customer_ids under one ckey would show as two different second keys (seeded apart).
    check = string_keys(customer_id, CHECK_SEED)[order]
    clash = np.flatnonzero((sorted_ckey[1:] == sorted_ckey[:-1]) & (check[1:] != check[:-1]))
    if len(clash):
        i, j = order[clash[0]], order[clash[0] + 1]
        ids = _arrow(customer_id)
        raise _collision("customer", int(ckey[i]), ids[int(i)].as_py(), ids[int(j)].as_py())
    # Sorted oldest first, so the last of each (customer, product) is the latest review.
    return order[grouping.last_of_each(sorted_ckey, pkey[order])]


def product_counts(pkey: np.ndarray) -> pa.Table:
    """Rows per product key: columns ``pkey``, ``n``."""
    keys, n = np.unique(pkey, return_counts=True)
    return pa.table({"pkey": keys.astype(np.uint64), "n": n.astype(np.int64)})


def product_totals(pkey: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` summed per product key: the keys (sorted, unique) and their totals."""
    order = np.argsort(pkey, kind="stable")
    keys = pkey[order]
    if len(keys) == 0:
        return keys, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(n[order], starts).astype(np.int64)


def write_product_counts(pkey: np.ndarray, url: str, n_buckets: int,
                         storage_options: dict | None) -> None:
    """Rows per product of one part to the scratch file ``url``, bucketed by product key: the
    map side of the sums by product (:func:`keep_bucket`, :func:`item_bucket`)."""
    counts = product_counts(pkey)
    partio.write_buckets(counts, bucket_of(counts["pkey"].to_numpy(), n_buckets), n_buckets,
                         url, storage_options)


def filter_partition(df: pd.DataFrame, keep_products: np.ndarray,
                     min_customer_ratings: int) -> tuple[pd.DataFrame, dict]:
    """Rows whose customer has enough ratings here and whose product key is in ``keep_products``.

    ``df`` is sorted by customer (as :func:`dedupe_bucket` writes it) and holds all of each
    of its customers' rows. Returns the kept rows (still sorted)
    and the rows removed by the customer minimum, then by the product minimum.
    """
    starts, lengths = _runs(df["ckey"].to_numpy())
    customer_ok = np.repeat(lengths >= min_customer_ratings, lengths)
    # A hash lookup: 6x faster than searchsorted into the sorted keep-set.
    product_ok = pd.Index(df["pkey"].to_numpy()).isin(keep_products)
    removed = {"by_customer": int((~customer_ok).sum()),
               "by_product": int((customer_ok & ~product_ok).sum())}
    return df[customer_ok & product_ok].reset_index(drop=True), removed


def days_and_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``days_since_first`` and ``is_test`` for a customer-sorted frame, and its customers.

    Returns
    -------
    rows : pandas.DataFrame
        ``df`` plus ``days_since_first`` (float64 days) and ``is_test`` (each customer's
        latest review).
    customers : pandas.DataFrame
        ``ckey``, ``customer_id``, ``n_ratings`` and ``first_review`` per customer: what
        ``days_since_first`` counts from, kept so a prediction for a new date needs only the
        id map.
    """
    starts, lengths = _runs(df["ckey"].to_numpy())
    dates = df["review_date"].to_numpy()
    first = np.repeat(dates[starts], lengths)
    days = ((dates - first) // np.timedelta64(1, "D")).astype("float64")
    is_test = np.zeros(len(df), dtype=bool)
    is_test[starts + lengths - 1] = True
    rows = df.assign(days_since_first=days, is_test=is_test)
    customers = pd.DataFrame({"ckey": df["ckey"].to_numpy()[starts],
                              "customer_id": df["customer_id"].take(starts).reset_index(drop=True),
                              "n_ratings": lengths.astype("int64"),
                              "first_review": df["review_date"].take(starts)
                              .reset_index(drop=True)})
    return rows, customers


PAIR_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: pkey * PAIR_MIX + tkey mixes a key pair


def pair_groups(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by the pair (``first``, ``second``), each group in row order.

    Sorted by one 64-bit mix of the pair (half the radix passes of sorting by both keys);
    should two different pairs share a mix, by both keys instead.

    Returns
    -------
    order : numpy.ndarray of int64
        Row positions, each group's rows together and in their input order.
    starts : numpy.ndarray of int64
        Where in ``order`` each group starts.
    """
    order = grouping.order_by_key(first * PAIR_MIX + second)
    a, b = first[order], second[order]
    new_pair = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    mixed = a * PAIR_MIX + b
    if (new_pair & (mixed[1:] == mixed[:-1])).any():
        order = grouping.order_by_pair(first, second)
        a, b = first[order], second[order]
        new_pair = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return order, np.flatnonzero(np.r_[True, new_pair]) if len(order) else np.zeros(0, np.int64)


def title_counts(product_id, product_title, pkey: np.ndarray) -> pa.Table:
    """Rows per (product, title) of some reviews: the input of :func:`item_titles`.

    Grouped on 64-bit keys of both strings; the strings of each group's first row are kept.

    Parameters
    ----------
    product_id, product_title : pyarrow.Array or pyarrow.ChunkedArray
        The reviews' strings.
    pkey : numpy.ndarray of uint64
        Keys of ``product_id``.

    Returns
    -------
    pyarrow.Table
        ``pkey``, ``tkey``, ``product_id``, ``product_title``, ``k`` (rows), one row per pair.
    """
    tkey = string_keys(product_title, TITLE_SEED)
    order, starts = pair_groups(pkey, tkey)
    pkeys, tkeys = pkey[order], tkey[order]
    first = pa.array(order[starts])
    return pa.table({"pkey": pkeys[starts], "tkey": tkeys[starts],
                     "product_id": product_id.take(first),
                     "product_title": product_title.take(first),
                     "k": np.diff(np.r_[starts, len(order)]).astype(np.int64)})


def item_titles(df: pd.DataFrame) -> pd.DataFrame:
    """One ``product_id`` and ``product_title`` per ``pkey`` of a pkey-partitioned frame.

    The title is the product's most frequent one (ties: the smallest string).
    """
    counts = df.groupby(["pkey", "tkey"], sort=False).agg(
        product_id=("product_id", "first"), product_title=("product_title", "first"),
        k=("k", "sum")).reset_index()
    table = pa.table({"pkey": counts["pkey"].to_numpy(), "k": counts["k"].to_numpy(),
                      "product_title": pa.array(counts["product_title"])})
    # Arrow compares titles only where (pkey, k) tie.
    order = pc.sort_indices(table, sort_keys=[("pkey", "ascending"), ("k", "descending"),
                                              ("product_title", "ascending")]).to_numpy()
    counts = counts.take(order)
    pkeys = counts["pkey"].to_numpy()
    _check_one_string_per_key(pkeys, counts["product_id"], "product")
    first = np.r_[True, pkeys[1:] != pkeys[:-1]] if len(pkeys) else np.zeros(0, bool)
    return counts.loc[first, ["pkey", "product_id", "product_title"]].reset_index(drop=True)


def users_by_part(users: pd.DataFrame, n_parts: int) -> list[pd.DataFrame]:
    """``ckey`` and ``user`` of a range of numbered users, split by the part they came from."""
    part = users["part"].to_numpy()
    order, counts = partio.bucket_order(part, n_parts)
    ordered = users[["ckey", "user"]].take(order)
    bounds = np.r_[0, np.cumsum(counts)]
    return [ordered.iloc[bounds[i]:bounds[i + 1]] for i in range(n_parts)]


def item_ids(items: list[pd.DataFrame]) -> pd.DataFrame:
    """``pkey`` and ``item`` of every item: the map each part's rows look their items up in."""
    return pd.concat([r[["pkey", "item"]] for r in items], ignore_index=True)


def join_ids(rows: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Add ``user`` (from the part's own customers) and ``item`` (from all items) by key.

    A hash lookup into each map (keys are unique there), rows kept in their order.
    """
    ids = {}
    for name, key, table in (("user", "ckey", users), ("item", "pkey", items)):
        at = pd.Index(table[key].to_numpy()).get_indexer(rows[key].to_numpy())
        if len(at) and at.min() < 0:  # every kept row's customer and product has an id
            raise RuntimeError(f"prepare: a kept row has no {name} id")
        ids[name] = table[name].to_numpy()[at]
    return rows.assign(**ids)


def shard_hash(df: pd.DataFrame) -> np.ndarray:
    """A stable 64-bit hash of (ckey, pkey): it picks a row's shard and its place there."""
    return pd.util.hash_pandas_object(df[["ckey", "pkey"]], index=False).to_numpy()


def shard_order(order: np.ndarray, ckey: np.ndarray, pkey: np.ndarray) -> np.ndarray:
    """Fixed row order inside a shard: by hash (shuffled, yet reproducible), then by keys.

    The keys decide only between equal hashes, which practically never occur: they are
    looked for, and only then is the three-key sort run.
    """
    at = np.argsort(order)
    ordered = order[at]
    if (ordered[1:] == ordered[:-1]).any():
        at = np.lexsort((pkey, ckey, order))
    return at


# --- tasks: parts in, files and small tables out ----------------------------------------------

def titles_bucket(urls: list[str], bucket: int, keep_products: np.ndarray,
                  storage_options: dict | None) -> pd.DataFrame:
    """Reduce side: :func:`item_titles` of the kept products in one product bucket."""
    counts = partio.read_bucket(urls, bucket, storage_options)
    return item_titles(counts[pd.Index(counts["pkey"].to_numpy()).isin(keep_products)])


def keep_bucket(count_urls: list[str], bucket: int, min_product_ratings: int,
                storage_options: dict | None) -> dict:
    """Reduce side of the product counts, for one product bucket: the products with at least
    ``min_product_ratings`` rows (``keep``, sorted keys), and how many products have each count
    (``k`` and ``products``)."""
    counts = partio.read_bucket(count_urls, bucket, storage_options, arrow=True)
    keys, totals = product_totals(counts["pkey"].to_numpy(), counts["n"].to_numpy())
    k, products = np.unique(totals, return_counts=True)
    return {"keep": keys[totals >= min_product_ratings], "k": k, "products": products}


def item_bucket(titles: pd.DataFrame, count_urls: list[str], bucket: int,
                storage_options: dict | None) -> pd.DataFrame:
    """The items of one product bucket: its products with kept rows, their rows and titles.

    ``titles`` is :func:`titles_bucket` of the same bucket. Returns ``pkey``, ``n_ratings``,
    ``product_id``, ``product_title``.
    """
    counts = partio.read_bucket(count_urls, bucket, storage_options, arrow=True)
    keys, totals = product_totals(counts["pkey"].to_numpy(), counts["n"].to_numpy())
    at = pd.Index(titles["pkey"].to_numpy()).get_indexer(keys)
    if len(at) and at.min() < 0:  # every kept row's product was counted with its title
        raise RuntimeError("prepare: a kept product has no title count")
    return pd.DataFrame({"pkey": keys, "n_ratings": totals,
                         "product_id": titles["product_id"].to_numpy()[at],
                         "product_title": titles["product_title"].to_numpy()[at]})


def dedupe_bucket(urls: list[str], footers: list, bucket: int, out_url: str, titles_url: str,
                  n_title_buckets: int, counts_url: str, storage_options: dict | None) -> dict:
    """Every row of one customer bucket → deduplicated, sorted, written to ``out_url``.

    The bucket is row group ``bucket`` of every ingest part (see :mod:`fmprep.ingest`; their
    ``footers``, parsed once for all buckets, see :func:`fmprep.partio.parquet_footers`), read
    as Arrow and kept so: the strings are only hashed, taken and written. Its title counts
    (:func:`title_counts`) go to ``titles_url``, bucketed by pkey: the map side of the shuffle
    by product.

    Its rows per product go to ``counts_url``, bucketed by product key like the titles (a file,
    not the result: held in memory until every bucket is done, they grew with the data).
    Returns the file name, its rows and its histogram of ratings per customer (``h[k]``
    customers have ``k`` rows).
    """
    table = partio.read_parquet_bucket(urls, bucket, INPUT_COLUMNS, storage_options,
                                       arrow=True, footers=footers)
    ckey = string_keys(table["customer_id"], CUSTOMER_SEED)
    pkey = string_keys(table["product_id"], PRODUCT_SEED)
    titles = title_counts(table["product_id"], table["product_title"], pkey)
    partio.write_buckets(titles, bucket_of(titles["pkey"].to_numpy(), n_title_buckets),
                         n_title_buckets, titles_url, storage_options)
    days = pc.cast(table["review_date"], pa.int32()).to_numpy().astype(np.int64)
    order = dedupe_order(ckey, pkey, days, table["review_id"], table["customer_id"])
    ckey, pkey, taken = ckey[order], pkey[order], pa.array(order)
    # A row needs no more than its keys, its rating and date, and customer_id for the users map
    # (product ids and titles come from the title counts; review_id only broke ties).
    deduped = pa.table({"ckey": ckey, "pkey": pkey,
                        "customer_id": table["customer_id"].take(taken),
                        "star_rating": table["star_rating"].take(taken),
                        "review_date": table["review_date"].take(taken)})
    rows = partio.write_scratch_part(deduped, out_url, storage_options)
    # A bucket holds all of its customers' rows, so these histograms add up across buckets.
    _, ratings_per_customer = _runs(ckey)
    write_product_counts(pkey, counts_url, n_title_buckets, storage_options)
    del table, titles, deduped
    memory.trim()
    return {"file": out_url.rsplit("/", 1)[-1], "rows": rows,
            "customer_histogram": np.bincount(ratings_per_customer)}


def filter_round(df: pd.DataFrame, keep_products: np.ndarray, min_customer_ratings: int,
                 counts_url: str, n_buckets: int, storage_options: dict | None) -> dict:
    """One k-core round on one part: the kept rows and the removals; the kept rows per product
    go to ``counts_url`` (see :func:`write_product_counts`)."""
    kept, removed = filter_partition(df, keep_products, min_customer_ratings)
    write_product_counts(kept["pkey"].to_numpy(), counts_url, n_buckets, storage_options)
    return {"rows": kept, "removed": removed}


def finish_part(df: pd.DataFrame, keep_products: np.ndarray, min_customer_ratings: int,
                url: str, part: int, counts_url: str, n_buckets: int,
                storage_options: dict | None) -> dict:
    """Filter one part, add days and the split, write it to ``url``; return its tables.

    Its rows per product go to ``counts_url`` (see :func:`write_product_counts`). Returns the
    removals, the part's customers (with ``part``, so their ids can be sent back here) and its
    largest ``days_since_first``.
    """
    kept, removed = filter_partition(df, keep_products, min_customer_ratings)
    rows, customers = days_and_split(kept)
    partio.write_scratch_part(rows, url, storage_options)
    write_product_counts(kept["pkey"].to_numpy(), counts_url, n_buckets, storage_options)
    max_days = float(rows["days_since_first"].max()) if len(rows) else 0.0
    del df, kept, rows
    memory.trim()
    return {"removed": removed, "users": customers.assign(part=np.int64(part)),
            "n_users": len(customers), "max_days": max_days}


def scatter_shards(url: str, users: pd.DataFrame, items: pd.DataFrame, days_divisor: float,
                   train_shards: int, test_shards: int, out_url: str,
                   storage_options: dict | None) -> None:
    """Map side of the shuffle into shards: one kept part with ids → ``out_url``, bucketed.

    Bucket ``s < train_shards`` is train shard ``s``; bucket ``train_shards + s`` test shard
    ``s``.
    """
    rows = join_ids(partio.read_scratch_part(url, SHARD_INPUT_COLUMNS, storage_options), users,
                    items)
    rows["days_since_first"] = rows["days_since_first"] / days_divisor
    h = shard_hash(rows)
    is_test = rows["is_test"].to_numpy()
    buckets = np.where(is_test, train_shards + (h % np.uint64(test_shards)).astype(np.int64),
                       (h % np.uint64(train_shards)).astype(np.int64))
    partio.write_buckets(rows[ROW_COLUMNS + ["ckey", "pkey"]].assign(order=h), buckets,
                         train_shards + test_shards, out_url, storage_options)


def gather_shard(urls: list[str], bucket: int, out_url: str,
                 storage_options: dict | None) -> int:
    """Reduce side: one shard's rows from every part, in shard order, written to ``out_url``."""
    table = partio.read_bucket(urls, bucket, storage_options, arrow=True)
    at = shard_order(*(table[c].to_numpy() for c in ("order", "ckey", "pkey")))
    return partio.write_part(table.select(ROW_COLUMNS).take(pa.array(at)), out_url,
                             storage_options)


# --- the stage ------------------------------------------------------------------------------

def _ingested_parts(work: str, storage_options: dict | None) -> tuple[dict, list[str]]:
    manifest = storage.read_json(storage.join(work, INGEST_MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"{storage.join(work, REVIEWS_DIR)} is missing or incomplete; run the "
                          f"previous stage first ({command('data')} runs them all)")
    if "customer_buckets" not in manifest:
        raise FmprepError(f"{storage.join(work, REVIEWS_DIR)} was written by an earlier fmprep; "
                          f"run {command('data')} again to rewrite it")
    return manifest, [storage.join(work, REVIEWS_DIR, p) for p in manifest["parts"]]


def capped_shards(settings: PrepSettings, train_rows: int, test_rows: int) -> tuple[int, int]:
    """Shards per channel: as many as asked for, but no more than the channel has rows, and no
    fewer than one per :data:`MAX_SHARD_ROWS` rows.

    A shard beyond the rows could only be empty, yet costs a task and a file in every step
    of the shuffle into shards: 100000 train shards on 6 k rows ran for 11 minutes. Each cap
    is logged as a warning. A shard is sorted whole by one task, so its rows bound that task's
    memory: at 40 M reviews, 10 train shards of 1.9 M rows each paused 1 GiB workers for good;
    40 of 0.47 M rows peaked at 843 MiB. A raise is logged.

    Returns
    -------
    (int, int)
        Train and test shards, each at least 1.
    """
    counts = []
    for name, asked, rows in (("train_shards", settings.train_shards, train_rows),
                              ("test_shards", settings.test_shards, test_rows)):
        var = setting(name)
        cap = max(1, rows)
        if asked > cap:
            log.warning("warning: %s%d is more than the %d rows of that channel; writing %d "
                        "shards (use %s%d or less)", var, asked, rows, cap, var, cap)
        needed = -(-rows // MAX_SHARD_ROWS)
        if needed > asked:
            log.info("prepare: %d shards instead of %s%d, so that none holds more than %d of "
                     "the %d rows", needed, var, asked, MAX_SHARD_ROWS, rows)
        counts.append(max(min(asked, cap), needed))
    return counts[0], counts[1]


def _write_ranges(ranges: list, columns: list[str], out_dir: str,
                  storage_options: dict | None) -> list:
    """Delayed writes of each numbered range's ``columns`` to ``out_dir/part-NNNNN.parquet``;
    each gives ``(file name, rows)``."""
    def write(df, name):
        return name, partio.write_part(df[columns], storage.join(out_dir, name), storage_options)
    return [dask.delayed(write)(r, f"part-{i:05d}.parquet") for i, r in enumerate(ranges)]


def _after(value, *done):
    """``value``, once the tasks ``done`` have run (a barrier in the task graph)."""
    return value


# fmprep's own names for what prepare writes under WORK (see fmprep.owned): scratch files of
# the shuffles, and the parts of the four datasets.
# (_by_customer: the shuffle by customer of fmprep versions before ingest bucketed the parts)
SCRATCH_FILES = tuple(f"{d}/part-*{partio.SCRATCH_SUFFIX}"
                      for d in SCRATCH_DIRS + ("_by_customer",))
OUTPUT_DIRS = ("train", "test", "users", "items")
OWN_FILES = SCRATCH_FILES + tuple(f"{d}/part-*.parquet" for d in OUTPUT_DIRS)


def clear(work: str, storage_options: dict | None = None) -> None:
    """Remove the prepare stage's earlier output from ``work``, manifest first.

    Only files that the previous run listed, or that carry prepare's own names in its own
    folders, are deleted (see :mod:`fmprep.owned`).
    """
    owned.claim(work, "work", storage_options)
    old = storage.read_json(storage.join(work, MANIFEST), storage_options)
    if old is not None and old.get("stage") == "prepare":
        owned.remove_files(work, [MANIFEST], storage_options)
    else:
        old = None
    owned.remove_files(work, owned.listed_files(old) + owned.fmprep_files(work, OWN_FILES,
                                                                          storage_options),
                       storage_options)
    owned.make_dirs(work, SCRATCH_DIRS + OUTPUT_DIRS, storage_options)


def _keep_products(count_urls: list[str], n_buckets: int, min_product_ratings: int,
                   storage_options: dict | None) -> tuple[np.ndarray, dict]:
    """Sorted product keys with ≥ ``min_product_ratings`` rows, summed over the parts' count
    files (:func:`write_product_counts`, ``n_buckets`` each), and ``{k: products with k rows}``.

    One task per product bucket sums its products; only the keep-set and the histogram reach
    the client.
    """
    (buckets,) = dask.compute([dask.delayed(keep_bucket)(count_urls, j, min_product_ratings,
                                                         storage_options)
                               for j in range(n_buckets)])
    histogram = collections.Counter()
    for b in buckets:
        histogram.update(dict(zip(b["k"].tolist(), b["products"].tolist())))
    # Buckets hold disjoint products, so the keys only need to be put in order.
    return np.sort(np.concatenate([b["keep"] for b in buckets])), dict(histogram)


def _histogram_pairs(histogram: dict) -> list[list[int]]:
    """``{k: n_k}`` → ``[[k, n_k], …]`` for k ascending, leaving out ``n_k == 0``."""
    return [[int(k), int(n)] for k, n in sorted(histogram.items()) if n]


def prepare(work: str, settings: PrepSettings, storage_options: dict | None = None,
            key: str | None = None) -> dict:
    """Run the prepare stage from ``WORK/reviews`` to ``WORK/{train,test,users,items}``.

    Parameters
    ----------
    work : str
        WORK directory (local or URL) holding ``reviews/`` from the ingest stage.
    settings : PrepSettings
        Filter, shard and scaling settings.
    storage_options : dict, optional
        fsspec options.
    key : str, optional
        Stored in the manifest so a rerun can tell whether this stage is up to date.

    Returns
    -------
    dict
        The manifest written last to ``WORK/manifest.json``.
    """
    ingested, review_parts = _ingested_parts(work, storage_options)
    out_manifest = storage.join(work, MANIFEST)
    clear(work, storage_options)
    # Ingest wrote each part's rows grouped by customer bucket: bucket j is row group j of
    # every part, so that every customer's rows come together without a shuffle here.
    n_parts = ingested["customer_buckets"]
    delayed = dask.delayed

    # 1. Each customer bucket is deduplicated, sorted by customer and written to _deduped
    #    (memory: one bucket per task), counting products; its titles go to product buckets.
    scratch = [f"part-{i:05d}{partio.SCRATCH_SUFFIX}" for i in range(n_parts)]
    title_files = [storage.join(work, BY_PRODUCT, name) for name in scratch]
    dedup_dir = storage.join(work, DEDUPED)
    counts_dir = storage.join(work, COUNTS)

    def counts_files(step):  # one file per part, each bucketed by product key
        return [storage.join(counts_dir, f"part-{i:05d}-{step}{partio.SCRATCH_SUFFIX}")
                for i in range(n_parts)]
    deduped_counts, kept_counts = counts_files("deduped"), counts_files("kept")
    footers = delayed(partio.parquet_footers)(review_parts, storage_options)  # read once
    parts = dask.persist(*[
        delayed(dedupe_bucket)(review_parts, footers, i, storage.join(dedup_dir, name),
                               title_files[i], n_parts, deduped_counts[i],
                               storage_options)
        for i, name in enumerate(scratch)])
    written, histograms = dask.compute([(p["file"], p["rows"]) for p in parts],
                                       [p["customer_histogram"] for p in parts])
    rows_in = ingested["totals"]["rows_valid"]
    rows_deduped = sum(r for _, r in written)
    counts = deduped_counts
    customer_histogram = collections.Counter()
    for h in histograms:
        customer_histogram.update(dict(enumerate(h.tolist())))
    rows = [delayed(partio.read_scratch_part)(storage.join(dedup_dir, name), None,
                                              storage_options)
            for name, _ in written]

    # 2. Long tail. k-core rounds keep their rows in memory (spilled by a cluster's workers);
    #    the last round also adds days and the split and writes WORK/_kept.
    removed = {"by_customer": 0, "by_product": 0}
    iterations = 0
    kept_dir = storage.join(work, KEPT)
    kept_urls = [storage.join(kept_dir, name) for name, _ in written]
    while True:
        iterations += 1
        keep_products, histogram = _keep_products(counts, n_parts, settings.min_product_ratings,
                                                  storage_options)
        if iterations == 1:  # before any filter: what the report plots
            product_histogram = histogram
        if settings.filter_mode == "kcore":
            counts = counts_files(f"round{iterations}")
            rounds = dask.persist(*[delayed(filter_round)(r, keep_products,
                                                          settings.min_customer_ratings, url,
                                                          n_parts, storage_options)
                                    for r, url in zip(rows, counts)])
            (round_removed,) = dask.compute([r["removed"] for r in rounds])
            removed["by_customer"] += sum(r["by_customer"] for r in round_removed)
            removed["by_product"] += sum(r["by_product"] for r in round_removed)
            rows = [r["rows"] for r in rounds]
            if sum(r["by_customer"] + r["by_product"] for r in round_removed):
                continue
        # The titles of the kept products need only the keep-set: they run beside the parts.
        finished, titles = dask.persist(
            [delayed(finish_part)(r, keep_products, settings.min_customer_ratings, url, i,
                                  kept_counts[i], n_parts, storage_options)
             for i, (r, url) in enumerate(zip(rows, kept_urls))],
            [delayed(titles_bucket)(title_files, j, keep_products, storage_options)
             for j in range(n_parts)])
        (last_removed, max_days, part_users) = dask.compute(
            [f["removed"] for f in finished], [f["max_days"] for f in finished],
            [f["n_users"] for f in finished])
        removed["by_customer"] += sum(r["by_customer"] for r in last_removed)
        removed["by_product"] += sum(r["by_product"] for r in last_removed)
        break
    rows_kept = rows_deduped - removed["by_customer"] - removed["by_product"]
    if rows_kept == 0:
        raise FmprepError(
            f"no rows left after filtering ({rows_deduped} rows, min {settings.min_customer_ratings}"
            f" per customer, {settings.min_product_ratings} per product); lower "
            "MIN_CUSTOMER_RATINGS / MIN_PRODUCT_RATINGS or use a larger SOURCE")

    # 3. Dense ids, by count descending then id, sorted on the small per-key tables (a sample
    #    sort, fmprep.ids): users from the parts' customers, items from the product buckets.
    item_parts = [delayed(item_bucket)(t, kept_counts, j, storage_options)
                  for j, t in enumerate(titles)]
    (users, num_users), (items, num_items) = ids.number_tables([
        ids.Table([f["users"] for f in finished], "n_ratings", "customer_id", "user",
                  rows=sum(part_users), per_range=USERS_PER_PARTITION),
        ids.Table(item_parts, "n_ratings", "product_id", "item", rows=len(keep_products),
                  per_range=ITEMS_PER_PARTITION)])
    feature_dim = num_users + num_items + 1
    days_divisor = layout.days_divisor(settings.days_scale, max(max_days))

    # 4. User ids go back to the part their customers came from (a shuffle of the users, not
    #    of the rows); the item map (two integers per item) goes to every part. The rows then
    #    go to their shards through files, as in step 1.
    by_part = [delayed(users_by_part, nout=n_parts)(r, n_parts) for r in users]
    item_map = delayed(item_ids)(items)
    # Each customer's latest row is its test row: num_users test rows, the rest train.
    n_train, n_test = capped_shards(settings, rows_kept - num_users, num_users)
    by_shard = [storage.join(work, BY_SHARD, name) for name in scratch]
    shard_maps = [delayed(scatter_shards)(url, delayed(pd.concat)([b[i] for b in by_part],
                                                                  ignore_index=True),
                                          item_map, days_divisor, n_train, n_test, out,
                                          storage_options)
                  for i, (url, out) in enumerate(zip(kept_urls, by_shard))]
    after_shard_maps = delayed(_after)(by_shard, *shard_maps)
    names = {ch: [f"part-{s:05d}.parquet" for s in range(n)]
             for ch, n in (("train", n_train), ("test", n_test))}
    buckets = [("train", name) for name in names["train"]] + [("test", name)
                                                               for name in names["test"]]
    tasks = {"shards": [delayed(gather_shard)(after_shard_maps, b, storage.join(work, ch, name),
                                              storage_options)
                        for b, (ch, name) in enumerate(buckets)]}
    tasks["users"] = _write_ranges(users, ["customer_id", "user", "n_ratings", "first_review"],
                                   storage.join(work, "users"), storage_options)
    tasks["items"] = _write_ranges(items, ["product_id", "item", "n_ratings", "product_title"],
                                   storage.join(work, "items"), storage_options)
    (done,) = dask.compute(tasks)
    # Only now: until here a lost worker's results are recomputed from these files.
    owned.remove_files(work, owned.fmprep_files(work, SCRATCH_FILES, storage_options),
                       storage_options)
    shard_rows = done.pop("shards")
    done["train"] = list(zip(names["train"], shard_rows[:n_train]))
    done["test"] = list(zip(names["test"], shard_rows[n_train:]))
    if sum(shard_rows) != rows_kept:
        raise RuntimeError("prepare: rows were lost on the way to the shards")

    counts = {
        "rows_in": int(rows_in),
        "duplicates_removed": int(rows_in - rows_deduped),
        "removed_by_customer_filter": removed["by_customer"],
        "removed_by_product_filter": removed["by_product"],
        "filter_iterations": iterations,
        "rows_kept": int(rows_kept),
        "train_rows": sum(r for _, r in done["train"]),
        "test_rows": sum(r for _, r in done["test"]),
    }
    manifest = {
        "format": MANIFEST_FORMAT, "stage": "prepare", "key": key, "settings": settings.to_dict(),
        "num_users": num_users, "num_items": num_items, "feature_dim": feature_dim,
        "days_divisor": days_divisor, "counts": counts,
        # Ratings per customer and per product after dedupe, before the filters: [[k, n_k], …]
        "distributions": {"customers": _histogram_pairs(customer_histogram),
                          "products": _histogram_pairs(product_histogram)},
        "parts": {k: [{"file": n, "rows": r} for n, r in v] for k, v in done.items()},
        "files": [f"{k}/{n}" for k, v in done.items() for n, _ in v],
    }
    storage.write_json(out_manifest, manifest, storage_options)
    return manifest
