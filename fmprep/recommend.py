"""``make recommend``: the top K products for every customer, from the ranking model.

The scores come from the ranking model (:mod:`fmprep.model.ranking`, fitted by ``make train`` or here
when missing), never from the rating regressor: the regressor predicts stars and ranks the
next review worse than popularity does (docs/design.md §8). A product the customer rated in
train is never recommended.

Out of core with Dask: the users map (WORK/users) and the train pairs (WORK/train) are both
partitioned by user ranges with the same divisions, so each task holds one range's customers
and exactly their train products, scores every product for a batch of them at a time
(:data:`_SCORE_BLOCK` scores in memory), keeps the top K and writes one Parquet part of
OUTPUT/recommendations/. ``_manifest.json`` is written last and lists the parts, so a crashed
run never looks complete, and the next run deletes only those parts (and fmprep-named ones).

Order is deterministic: by score, ties by product index (fmprep's item numbering).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from . import owned, storage
from .errors import FmprepError, command, setting

__all__ = ["recommend_output", "recommend_customer", "top_k", "RECOMMENDATIONS_DIR"]

log = logging.getLogger(__name__)

RECOMMENDATIONS_DIR = "recommendations"
MANIFEST_NAME = "_manifest.json"
FORMAT = "fmprep-recommendations/1"
PART_PATTERN = "part-*.parquet"
# Customers per Dask task: a task holds their train pairs and writes one part.
USERS_PER_PART = 100_000
# Scores held at once while ranking: a (customers, products) float64 block of ~128 MB.
_SCORE_BLOCK = 1 << 24
COLUMNS = ("customer_id", "product_id", "product_title", "rank", "score")


def top_k(scores: np.ndarray, seen_rows, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best unseen columns of each row of ``scores``, best first.

    Parameters
    ----------
    scores : numpy.ndarray, shape (n, num_items)
        Modified in place: seen entries become ``-inf``.
    seen_rows : scipy.sparse.csr_matrix, shape (n, num_items)
        Non-zero where the customer rated the product in train.
    k : int

    Returns
    -------
    items, values : numpy.ndarray, shape (n, min(k, num_items))
        Column indices and scores; where a customer has fewer than ``k`` unseen products the
        tail holds ``-1`` and ``-inf``. Ties go to the smaller column index.
    """
    n, num_items = scores.shape
    kk = min(k, num_items)
    coo = seen_rows.tocoo()
    scores[coo.row, coo.col] = -np.inf
    # The k-th best score of each row; every column above it is in, and columns equal to it
    # fill the remaining places in index order, so ties never depend on argpartition.
    kth = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1]
    above = scores > kth[:, None]
    tied = (scores == kth[:, None]) & np.isfinite(scores)
    room = kk - above.sum(axis=1)
    take = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
    row, col = np.nonzero(take)
    order = np.lexsort((col, -scores[row, col], row))
    row, col = row[order], col[order]
    slot = np.arange(row.size) - np.searchsorted(row, row)  # place within the row
    items = np.full((n, kk), -1, np.int64)
    values = np.full((n, kk), -np.inf)
    items[row, slot] = col
    values[row, slot] = scores[row, col]
    return items, values


def _rank_block(users: pd.DataFrame, train: pd.DataFrame, model, items: pd.DataFrame,
                num_users: int, k: int) -> pd.DataFrame:
    """Top ``k`` of each customer in ``users`` (index ``user``), excluding ``train``'s pairs."""
    import scipy.sparse as sp

    from .model.evaluate import item_scores

    num_items = len(items)
    if users.empty:
        return _empty()
    order = np.argsort(users.index.to_numpy(np.int64), kind="stable")
    users = users.iloc[order]
    user = users.index.to_numpy(np.int64)
    owner = train.index.to_numpy(np.int64)
    pos = np.minimum(np.searchsorted(user, owner), user.size - 1)
    keep = user[pos] == owner  # pairs of this block's customers (all of them, when aligned)
    seen = sp.csr_matrix((np.ones(int(keep.sum()), np.int8),
                          (pos[keep], train["item"].to_numpy(np.int64)[keep] - num_users)),
                         shape=(user.size, num_items))
    step = max(1, _SCORE_BLOCK // max(num_items, 1))
    out_items, out_scores = [], []
    for start in range(0, user.size, step):
        batch = user[start:start + step]
        scores = item_scores(model, batch, np.zeros(batch.size), num_users, num_items)
        it, val = top_k(scores, seen[start:start + batch.size], k)
        out_items.append(it)
        out_scores.append(val)
    it, val = np.concatenate(out_items), np.concatenate(out_scores)
    width = it.shape[1]
    ok = it.ravel() >= 0
    flat = it.ravel()[ok]
    return pd.DataFrame({
        "customer_id": np.repeat(users["customer_id"].to_numpy(object), width)[ok],
        "product_id": items["product_id"].to_numpy(object)[flat],
        "product_title": items["product_title"].to_numpy(object)[flat],
        "rank": np.tile(np.arange(1, width + 1, dtype=np.int32), user.size)[ok],
        "score": val.ravel()[ok].astype(np.float32),
    })


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series([], dtype=object),
                         "product_id": pd.Series([], dtype=object),
                         "product_title": pd.Series([], dtype=object),
                         "rank": pd.Series([], dtype=np.int32),
                         "score": pd.Series([], dtype=np.float32)})


def _items_table(work: str, num_users: int, num_items: int,
                 storage_options: dict | None) -> pd.DataFrame:
    """Product id and title of every item index, in item order (row j = item num_users + j)."""
    import dask.dataframe as dd

    items = dd.read_parquet(storage.join(work, "items"),
                            columns=["product_id", "item", "product_title"],
                            storage_options=storage_options or {}).compute()
    items = items.sort_values("item").reset_index(drop=True)
    if len(items) != num_items or (len(items) and
                                   (items["item"].to_numpy() != np.arange(
                                       num_users, num_users + num_items)).any()):
        raise FmprepError(f"{work}/items does not match OUTPUT's manifest ({num_items} items); "
                          f"run {command('data')} again")
    return items


def _setup(output: str, work: str | None, model_dir: str | None,
           storage_options: dict | None):
    from .config import LOCAL_MODEL_DIR
    from .freshness import read_manifest
    from .model.ranking import ranking_model_for

    manifest = read_manifest(output, storage_options)
    if "num_users" not in manifest:
        raise FmprepError(f"{output}'s manifest lacks num_users/num_items; run {command('data')} "
                          "again")
    work = work or manifest.get("work")
    if not work:
        raise FmprepError(f"the manifest does not say where WORK is; pass {setting('work')}")
    model_dir = model_dir or storage.join(output, LOCAL_MODEL_DIR)
    model = ranking_model_for(output, manifest, model_dir, storage_options)
    return manifest, work, model


def recommend_output(output: str, k: int = 10, work: str | None = None,
                     model_dir: str | None = None, storage_options: dict | None = None,
                     scheduler: str | None = None,
                     users_per_part: int = USERS_PER_PART) -> dict:
    """Write the top ``k`` products of every customer to ``OUTPUT/recommendations/``.

    Parameters
    ----------
    output : str
        OUTPUT of make data (its manifest names WORK, the id maps' home).
    k : int
        Products per customer.
    work : str, optional
        WORK, when not the one the manifest records.
    model_dir : str, optional
        The model directory (default ``OUTPUT/model``); its ``ranking/`` model is used, fitted
        first when missing or stale.
    storage_options : dict, optional
        fsspec options.
    scheduler : str, optional
        As for make data (:func:`fmprep.cluster.dask_client`).
    users_per_part : int
        Customers per task and per output part.

    Returns
    -------
    dict
        The ``_manifest.json`` written: ``k``, ``customers``, ``rows``, ``files``, ``model``.

    Raises
    ------
    FmprepError
        For a bad ``k``, missing OUTPUT / WORK / model, or id maps that disagree with OUTPUT.
    """
    import dask
    import dask.dataframe as dd

    from .cluster import dask_client
    from .freshness import data_stamp
    from .partio import write_parts_tasks

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise FmprepError(f"{setting('k')}{k!r} must be a whole number >= 1")
    manifest, work, model = _setup(output, work, model_dir, storage_options)
    num_users, num_items = int(manifest["num_users"]), int(manifest["num_items"])
    owned.claim(output, "output", storage_options)
    out_dir = storage.join(output, RECOMMENDATIONS_DIR)
    previous = storage.read_json(storage.join(out_dir, MANIFEST_NAME), storage_options)
    # Manifest first, parts after: from here on the folder never looks complete until done.
    stale = owned.listed_files(previous) + owned.fmprep_files(out_dir, [PART_PATTERN],
                                                              storage_options)
    owned.remove_files(out_dir, [MANIFEST_NAME] + stale, storage_options)
    owned.make_dirs(output, [RECOMMENDATIONS_DIR], storage_options)

    items = _items_table(work, num_users, num_items, storage_options)
    so = storage_options or {}
    step = max(1, int(users_per_part))
    divisions = list(range(0, num_users, step)) + [num_users - 1] if num_users > 1 else [0, 0]
    with dask_client(scheduler):
        users = dd.read_parquet(storage.join(work, "users"), columns=["customer_id", "user"],
                                storage_options=so)
        train = dd.read_parquet(storage.join(work, "train"), columns=["user", "item"],
                                storage_options=so)
        users = users.set_index("user", divisions=divisions)
        train = train.set_index("user", divisions=divisions)
        model_d, items_d = dask.delayed(model), dask.delayed(items)
        recs = users.map_partitions(_rank_block, train, model_d, items_d, num_users, k,
                                    meta=_empty())
        written = dask.compute(write_parts_tasks(recs, out_dir, storage_options))[0]
    files = [name for name, _ in written]
    rows = int(sum(n for _, n in written))
    result = {"format": FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(
                  timespec="seconds"),
              "k": int(k), "customers": num_users, "rows": rows, "files": files,
              "model": dict(model.hyperparameters), "data": data_stamp(manifest)}
    storage.write_json(storage.join(out_dir, MANIFEST_NAME), result, storage_options)
    log.info("recommendations: %d rows for %d customers in %d parts → %s", rows, num_users,
             len(files), out_dir)
    return result


def recommend_customer(output: str, customer: str, k: int = 10, work: str | None = None,
                       model_dir: str | None = None,
                       storage_options: dict | None = None) -> pd.DataFrame:
    """One customer's top ``k`` (``make recommend`` for one ``customer``), computed directly.

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``product_id``, ``product_title``, ``score``.

    Raises
    ------
    FmprepError
        When the customer is not in the users map (too few reviews, or not in SOURCE).
    """
    import pyarrow.dataset as ds

    manifest, work, model = _setup(output, work, model_dir, storage_options)
    num_users, num_items = int(manifest["num_users"]), int(manifest["num_items"])
    fs, path = storage.filesystem(storage.join(work, "users"), storage_options)
    found = ds.dataset(path, filesystem=fs, format="parquet").to_table(
        columns=["user"], filter=ds.field("customer_id") == str(customer))
    if found.num_rows == 0:
        raise FmprepError(f"customer {customer!r} is not in {work}/users (customers with fewer "
                          f"reviews than the {setting('min_customer_ratings')} minimum are "
                          "filtered out); "
                          f"pick another {setting('customer')}")
    user = int(found.column("user")[0].as_py())
    fs, path = storage.filesystem(storage.join(work, "train"), storage_options)
    seen = ds.dataset(path, filesystem=fs, format="parquet").to_table(
        columns=["item"], filter=ds.field("user") == user).column("item").to_numpy()
    items = _items_table(work, num_users, num_items, storage_options)
    users = pd.DataFrame({"customer_id": [str(customer)]}, index=pd.Index([user], name="user"))
    train = pd.DataFrame({"item": seen}, index=pd.Index(np.full(seen.size, user), name="user"))
    recs = _rank_block(users, train, model, items, num_users, k)
    return recs[["rank", "product_id", "product_title", "score"]].reset_index(drop=True)
