"""Stage 2, prepare: reviews → deduplicated, long-tail-filtered, indexed, split rows (Dask).

Out of core throughout: rows are shuffled once by customer (so every per-customer step is local
to a partition) and checkpointed to Parquet; the id maps are sorted with Dask. Every result is
independent of the number of partitions and of the scheduler:

* duplicates: one row per (customer, product), the latest by (review_date, review_id);
* filter: ``single`` counts ratings once and keeps customers with ≥ ``min_customer_ratings``
  and products with ≥ ``min_product_ratings`` (the reference notebook); ``kcore`` repeats
  until both hold for every remaining row;
* ids: users 0..U-1 and items U..U+I-1, each by ratings count descending (after the filter),
  ties by customer_id / product_id ascending;
* ``days_since_first``: days since the customer's first remaining review;
* split: each customer's latest review (by review_date, then review_id) is the test row;
* train/test shards: a row's shard is a hash of (customer_id, product_id), rows inside a shard
  are ordered by that hash, so shards are similar in size and in a fixed, shuffled order.
"""

from __future__ import annotations

import logging

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from . import partio, storage
from .config import MANIFEST, MANIFEST_FORMAT, PrepSettings
from .errors import FmprepError

log = logging.getLogger(__name__)

DAYS_PER_YEAR = 365.25


# --- pure functions on pandas partitions --------------------------------------------------------

def dedupe_partition(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest review of each (customer, product) in a customer-partitioned frame."""
    # Only the few repeated pairs are sorted: a full four-key string sort was the costliest
    # task of prepare (3.5 of 18.6 task-seconds on 2 M rows; 1.2 s this way).
    repeated = df.duplicated(["customer_id", "product_id"], keep=False)
    if not repeated.any():
        return df
    latest = (df[repeated].sort_values(["customer_id", "product_id", "review_date", "review_id"])
              .drop_duplicates(["customer_id", "product_id"], keep="last"))
    return pd.concat([df[~repeated], latest])


def customer_counts(df: pd.DataFrame) -> pd.Series:
    """Ratings per customer for each row (exact: a customer's rows share one partition)."""
    return df.groupby("customer_id", sort=False)["customer_id"].transform("size")


def filter_partition(df: pd.DataFrame, keep_products: pd.Index,
                     min_customer_ratings: int) -> pd.DataFrame:
    """Rows whose customer has enough ratings here and whose product is in ``keep_products``."""
    keep = (customer_counts(df) >= min_customer_ratings) & df["product_id"].isin(keep_products)
    return df[keep]


def filter_stats(df: pd.DataFrame, keep_products: pd.Index, min_customer_ratings: int) -> pd.DataFrame:
    """One-row frame: rows removed by the customer minimum, then by the product minimum."""
    cust_ok = customer_counts(df) >= min_customer_ratings
    prod_ok = df["product_id"].isin(keep_products)
    return pd.DataFrame({"by_customer": [int((~cust_ok).sum())],
                         "by_product": [int((cust_ok & ~prod_ok).sum())]})


def customer_stats(df: pd.DataFrame) -> pd.DataFrame:
    """customer_id, n_ratings and first_review of every customer in a customer-partitioned frame.

    ``first_review`` is what ``days_since_first`` counts from, kept so that a prediction for a
    new date can be built from the id map alone.
    """
    g = df.groupby("customer_id", sort=False)["review_date"]
    out = pd.DataFrame({"n_ratings": g.size(), "first_review": g.min()}).reset_index()
    out["n_ratings"] = out["n_ratings"].astype("int64")
    return out


def item_stats(df: pd.DataFrame) -> pd.DataFrame:
    """product_id, n_ratings and product_title of a product-partitioned frame.

    The title is the product's most frequent one (ties: the smallest string), since a few
    products carry several titles in the source.
    """
    if df.empty:
        return pd.DataFrame({"product_id": pd.Series([], dtype=df["product_id"].dtype),
                             "n_ratings": pd.Series([], dtype="int64"),
                             "product_title": pd.Series([], dtype=df["product_title"].dtype)})
    titles = (df.groupby(["product_id", "product_title"], sort=False).size().rename("k")
              .reset_index()
              .sort_values(["product_id", "k", "product_title"], ascending=[True, False, True])
              .drop_duplicates("product_id"))
    counts = df.groupby("product_id", sort=False).size().rename("n_ratings").reset_index()
    out = counts.merge(titles[["product_id", "product_title"]], on="product_id")
    out["n_ratings"] = out["n_ratings"].astype("int64")
    return out


def assign_ids(df: pd.DataFrame, offsets: list[int], id_column: str,
               partition_info: dict | None = None) -> pd.DataFrame:
    """Number the rows of a globally sorted frame: partition offset + position."""
    start = offsets[partition_info["number"]]
    return df.assign(**{id_column: np.arange(start, start + len(df), dtype="int64")})


def days_and_split(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``days_since_first`` and ``is_test`` (the customer's latest review) to a partition."""
    df = df.sort_values(["customer_id", "review_date", "review_id"])
    first = df.groupby("customer_id", sort=False)["review_date"].transform("min")
    days = (df["review_date"] - first).dt.days.astype("float64")
    is_test = ~df["customer_id"].duplicated(keep="last")
    return df.assign(days_since_first=days, is_test=is_test)


def shard_rows(df: pd.DataFrame, n_shards: int) -> pd.DataFrame:
    """Add ``shard`` and ``order`` from a stable hash of (customer_id, product_id)."""
    h = pd.util.hash_pandas_object(df[["customer_id", "product_id"]], index=False).to_numpy()
    return df.assign(shard=(h % np.uint64(n_shards)).astype("int64"), order=h)


def sort_shard(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed row order inside a shard (hash order: shuffled, yet reproducible)."""
    return df.sort_values(["order", "customer_id", "product_id"]).drop(columns=["order"])


ROW_COLUMNS = ["user", "item", "days_since_first", "star_rating", "customer_id", "product_id",
               "review_id", "review_date"]


# --- the stage ------------------------------------------------------------------------------

def _stage_parts(work: str, stage: str, storage_options: dict | None) -> tuple[dict, list[str]]:
    manifest = storage.read_json(storage.join(work, stage, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"{storage.join(work, stage)} is missing or incomplete; run the "
                          "previous stage first (make data runs them all)")
    return manifest, [storage.join(work, stage, p) for p in manifest["parts"]]


def _keep_products(rows: dd.DataFrame, settings: PrepSettings) -> pd.Index:
    """Products with enough ratings in ``rows``; only this keep-set reaches the client."""
    prod_n = rows["product_id"].value_counts(split_out=max(1, rows.npartitions // 8))
    keep_products = pd.Index(
        prod_n[prod_n >= settings.min_product_ratings].index.compute(), name="product_id")
    return keep_products


def _shuffle_method() -> str | None:
    """Dask's shuffle for this run: p2p (its default) on a cluster, in-memory tasks otherwise.

    Without a distributed client Dask falls back to a partd disk shuffle, which measured 2.5x
    slower than the task shuffle on the 2 M-row benchmark; the threaded scheduler holds the
    data in this process either way (use a cluster for bounded memory).
    """
    try:
        from distributed import default_client

        default_client()
        return None
    except (ImportError, ValueError):
        return "tasks"


def prepare(work: str, settings: PrepSettings, storage_options: dict | None = None,
            key: str | None = None) -> dict:
    """Run the prepare stage; see :func:`prepare_rows`."""
    method = _shuffle_method()
    # Parts are read with pandas' own string dtype already; Dask's re-conversion cost ~10 %.
    config = {"dataframe.convert-string": False}
    if method:
        config["dataframe.shuffle.method"] = method
    with dask.config.set(config):
        return prepare_rows(work, settings, storage_options, key)


def prepare_rows(work: str, settings: PrepSettings, storage_options: dict | None = None,
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
    ingested, review_parts = _stage_parts(work, "reviews", storage_options)
    out_manifest = storage.join(work, MANIFEST)
    fs, path = storage.filesystem(out_manifest, storage_options)
    if fs.exists(path):
        fs.rm(path)
    for d in ("_deduped", "train", "test", "users", "items"):
        storage.reset_stage_dir(storage.join(work, d), storage_options)

    # 1. One shuffle by customer; deduplicate; checkpoint so later passes re-read, not recompute.
    reviews = partio.read_parts(review_parts, storage_options=storage_options)
    by_customer = reviews.shuffle("customer_id", npartitions=reviews.npartitions)
    deduped = by_customer.map_partitions(dedupe_partition)
    dedup_dir = storage.join(work, "_deduped")
    written = dask.compute(*partio.write_parts_tasks(deduped, dedup_dir, storage_options))
    rows_in = ingested["totals"]["rows_valid"]
    rows_deduped = sum(r for _, r in written)
    rows = partio.read_parts([storage.join(dedup_dir, n) for n, _ in written],
                             storage_options=storage_options)

    # 2. Long tail.
    removed = {"by_customer": 0, "by_product": 0}
    iterations = 0
    kept = rows
    while True:
        iterations += 1
        keep_products = _keep_products(kept, settings)
        stats = kept.map_partitions(filter_stats, keep_products, settings.min_customer_ratings,
                                    meta={"by_customer": "int64", "by_product": "int64"}).sum()
        stats = stats.compute()
        removed["by_customer"] += int(stats["by_customer"])
        removed["by_product"] += int(stats["by_product"])
        kept = kept.map_partitions(filter_partition, keep_products, settings.min_customer_ratings)
        if settings.filter_mode == "single" or int(stats.sum()) == 0:
            break
        # k-core: checkpoint each round so the lazy graph does not grow with the iterations.
        kept = kept.persist()
    rows_kept = rows_deduped - removed["by_customer"] - removed["by_product"]
    if rows_kept == 0:
        raise FmprepError(
            f"no rows left after filtering ({rows_deduped} rows, min {settings.min_customer_ratings}"
            f" per customer, {settings.min_product_ratings} per product); lower "
            "MIN_CUSTOMER_RATINGS / MIN_PRODUCT_RATINGS or use a larger SOURCE")

    # 3. Dense ids, by count descending then key; sorted maps are persisted so the partition
    #    offsets and the numbering see the same partitions.
    users = kept.map_partitions(customer_stats, meta={"customer_id": rows["customer_id"].dtype,
                                                      "n_ratings": "int64",
                                                      "first_review": rows["review_date"].dtype})
    items = (kept[["product_id", "product_title"]]
             .shuffle("product_id", npartitions=kept.npartitions)
             .map_partitions(item_stats, meta={"product_id": rows["product_id"].dtype,
                                               "n_ratings": "int64",
                                               "product_title": rows["product_title"].dtype}))
    # One pass over the rows for both maps; sorting then works on the small persisted stats.
    users, items = dask.persist(users, items)
    users, items = dask.persist(
        users.sort_values(["n_ratings", "customer_id"], ascending=[False, True]),
        items.sort_values(["n_ratings", "product_id"], ascending=[False, True]))
    user_lengths, item_lengths = dask.compute(users.map_partitions(len), items.map_partitions(len))
    num_users, num_items = int(sum(user_lengths)), int(sum(item_lengths))
    user_offsets = np.concatenate([[0], np.cumsum(user_lengths)[:-1]]).tolist()
    item_offsets = (num_users + np.concatenate([[0], np.cumsum(item_lengths)[:-1]])).tolist()
    users = users.map_partitions(assign_ids, user_offsets, "user",
                                 meta=users._meta.assign(user=np.int64(0)))
    items = items.map_partitions(assign_ids, item_offsets, "item",
                                 meta=items._meta.assign(item=np.int64(0)))
    feature_dim = num_users + num_items + 1

    # 4. days_since_first and the split while rows are still grouped by customer; then ids.
    split = kept.map_partitions(days_and_split)
    split = split.merge(users[["customer_id", "user"]], on="customer_id", how="inner")
    split = split.merge(items[["product_id", "item"]], on="product_id", how="inner")
    if settings.days_scale == "years":
        split["days_since_first"] = split["days_since_first"] / DAYS_PER_YEAR
        days_divisor = DAYS_PER_YEAR
    elif settings.days_scale == "unit":
        days_divisor = float(split["days_since_first"].max().compute()) or 1.0
        split["days_since_first"] = split["days_since_first"] / days_divisor
    else:
        days_divisor = 1.0

    tasks = {}
    for channel, n_shards, mask in (("train", settings.train_shards, ~split["is_test"]),
                                    ("test", settings.test_shards, split["is_test"])):
        part = split[mask].map_partitions(shard_rows, n_shards)
        divisions = list(range(n_shards)) + [n_shards - 1]
        part = part.set_index("shard", divisions=divisions, sorted=False)
        part = part.map_partitions(sort_shard)[ROW_COLUMNS]
        tasks[channel] = partio.write_parts_tasks(part, storage.join(work, channel),
                                                  storage_options)
    tasks["users"] = partio.write_parts_tasks(
        users[["customer_id", "user", "n_ratings", "first_review"]], storage.join(work, "users"),
        storage_options)
    tasks["items"] = partio.write_parts_tasks(
        items[["product_id", "item", "n_ratings", "product_title"]], storage.join(work, "items"),
        storage_options)
    (done,) = dask.compute(tasks)

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
        "parts": {k: [{"file": n, "rows": r} for n, r in v] for k, v in done.items()},
    }
    storage.write_json(out_manifest, manifest, storage_options)
    return manifest
