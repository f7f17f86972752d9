"""How good a trained model is, on the leave-last-out test rows, next to fmprep's own baselines.

Rating accuracy: test RMSE and MAE of the model, of the train mean and of the biases-only
model (global mean + customer bias + product bias, ridge), overall and by segment (customers
and products with few or many train ratings). Ranking (docs/design.md §3): for each evaluated
test customer, every product they did not rate in train is scored and ranked (full ranking,
no sampled negatives); HR@K is the share of customers whose test product is in the top K,
NDCG@K its mean 1 / log2(rank + 1) (0 beyond K). Popularity (products by train ratings) is
ranked the same way.

Rows are fmprep's FM layout (docs/design.md §2): the user column, the item column, then
days_since_first at ``feature_dim - 1``.
"""

from __future__ import annotations

import numpy as np

from ..errors import FmprepError, command

# Segments by train ratings of the row's customer / product: [low, high) bounds.
SEGMENTS = ((1, 5), (5, 20), (20, None))
TOP_K = 10
# Full ranking costs customers x products; beyond this many test customers a seeded sample
# of them is ranked (the rating metrics always use every test row).
MAX_RANKED_CUSTOMERS = 10_000
_BATCH = 256  # customers scored at once: a (256, products) float64 block


def fm_columns(records, num_users: int, feature_dim: int):
    """(user, item, days) arrays of records in fmprep's three-column layout.

    Raises
    ------
    FmprepError
        If a row is not (user, item, days_since_first).
    """
    counts = np.diff(records.indptr)
    starts = records.indptr[:-1]
    if counts.size and (counts.min() < 2 or counts.max() > 3):
        raise FmprepError("rows are not fmprep's FM layout (user, item, days_since_first); "
                          f"evaluate OUTPUT written by {command('data')}")
    user = records.indices[starts].astype(np.int64)
    item = records.indices[starts + 1].astype(np.int64)
    days = np.where(counts == 3, records.values[np.minimum(starts + 2, records.indices.size - 1)],
                    0.0).astype(np.float64)
    if user.size and (user.max() >= num_users or item.min() < num_users
                      or item.max() >= feature_dim - 1):
        raise FmprepError("rows are not fmprep's FM layout (user, item, days_since_first); "
                          f"evaluate OUTPUT written by {command('data')}")
    return user, item, days


def fit_biases(user, item, rating, reg: float = 5.0, sweeps: int = 10):
    """Global mean + user bias + item bias by alternating ridge updates.

    Minimises ``sum (r - mu - b_u - b_i)^2 + reg * (|b_u|^2 + |b_i|^2)``.

    Returns
    -------
    mu : float
        The mean rating.
    b_user, b_item : numpy.ndarray
        Biases indexed by feature id (0 for ids not in training).
    """
    dim = int(max(user.max(), item.max())) + 1
    mu = float(rating.mean())
    b_user, b_item = np.zeros(dim), np.zeros(dim)
    n_user = np.bincount(user, minlength=dim)
    n_item = np.bincount(item, minlength=dim)
    for _ in range(sweeps):
        b_user = np.bincount(user, rating - mu - b_item[item], dim) / (n_user + reg)
        b_item = np.bincount(item, rating - mu - b_user[user], dim) / (n_item + reg)
    return mu, b_user, b_item


def _errors(pred, truth) -> dict:
    err = np.asarray(pred, np.float64) - truth
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}


def _segment_name(low, high) -> str:
    return f"{low}+" if high is None else f"{low}-{high - 1}"


def _by_segment(counts, preds: dict, truth) -> dict:
    out = {}
    for low, high in SEGMENTS:
        mask = (counts >= low) & ((counts < high) if high is not None else True)
        if mask.any():
            out[_segment_name(low, high)] = {"rows": int(mask.sum()),
                                             **{name: _errors(p[mask], truth[mask])["rmse"]
                                                for name, p in preds.items()}}
    return out


def item_scores(model, users, days, num_users: int, num_items: int) -> np.ndarray:
    """FM scores of every item for each (user, days) query: shape (len(users), num_items).

    With one-hot user u, one-hot item i and days d the FM is
    ``w0 + w_u + w_i + w_d d + <v_u, v_i> + d <v_u, v_d> + d <v_i, v_d>``, so all items of a
    query come from one matrix product.
    """
    fdim = model.w.shape[0]
    items = np.arange(num_users, num_users + num_items)
    w, V = model.w.astype(np.float64), model.V.astype(np.float64)
    v_d, w_d = V[fdim - 1], w[fdim - 1]
    Vu = V[users]
    base = model.w0 + w[users] + days * (w_d + Vu @ v_d)
    Vi = V[items]
    scores = base[:, None] + w[items][None, :] + Vu @ Vi.T + days[:, None] * (Vi @ v_d)[None, :]
    if model.predictor_type == "binary_classifier":
        scores = 1.0 / (1.0 + np.exp(-scores))
    return scores


def rank_metrics(score_fn, test_user, test_item, train_items_of, num_users: int, k: int = TOP_K,
                 per_customer: bool = False):
    """HR@k and NDCG@k of full rankings over the products each customer did not rate in train.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(rows)`` → (len(rows), num_items) scores for the test rows ``rows``.
    test_user, test_item : numpy.ndarray
        One test row per evaluated customer.
    train_items_of : scipy.sparse.csr_matrix
        Customers × products, non-zero where the customer rated the product in train.
    num_users : int
        Offset of item ids (item columns start at num_users).
    k : int
        Cut-off.
    per_customer : bool
        Also return each customer's hit (bool array) as ``hits``.

    Returns
    -------
    dict
        ``hr``, ``ndcg`` (means over customers) and ``customers``.

    Notes
    -----
    Ties count against the test product (it is ranked after every product with an equal
    score), so a constant scorer cannot look good.
    """
    ranks = []
    for start in range(0, test_user.size, _BATCH):
        rows = np.arange(start, min(start + _BATCH, test_user.size))
        ranks.append(target_ranks(score_fn(rows), test_item[rows] - num_users,
                                  train_items_of[test_user[rows]]))
    return hits_and_gains(np.concatenate(ranks), k, per_customer)


def target_ranks(scores: np.ndarray, target: np.ndarray, seen_rows) -> np.ndarray:
    """Products ranked before each row's target among those the customer did not rate.

    Parameters
    ----------
    scores : numpy.ndarray, shape (n, num_items)
    target : numpy.ndarray of int, shape (n,)
        Each row's test product (0-based product index).
    seen_rows : scipy.sparse.csr_matrix, shape (n, num_items)
        Non-zero where the row's customer rated the product in train (not candidates).

    Returns
    -------
    numpy.ndarray of int
        0 when the target is ranked first; ties count against the target.
    """
    n = target.size
    own = scores[np.arange(n), target]
    better = scores >= own[:, None]
    better[np.arange(n), target] = False
    seen = seen_rows.tocoo()
    seen_better = np.bincount(seen.row, weights=better[seen.row, seen.col], minlength=n)
    return better.sum(axis=1) - seen_better.astype(np.int64)


def hits_and_gains(ranks: np.ndarray, k: int, per_customer: bool = False) -> dict:
    """HR@k and NDCG@k (``1 / log2(rank + 2)`` within the top k) of :func:`target_ranks`."""
    hits = ranks < k
    gains = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    result = {"hr": float(hits.mean()) if hits.size else 0.0,
              "ndcg": float(gains.mean()) if hits.size else 0.0, "customers": int(hits.size)}
    if per_customer:
        result["hits"] = hits
    return result


def evaluate(model, train, test, num_users: int, num_items: int, k: int = TOP_K,
             max_ranked: int = MAX_RANKED_CUSTOMERS, seed: int = 0,
             ranking_model=None) -> dict:
    """Rating and ranking metrics of ``model`` and of the baselines on the test rows.

    Parameters
    ----------
    model : fmprep.model.fm.FMModel
    train, test : SparseRecords
        The channels of OUTPUT (fmprep's FM layout).
    num_users, num_items : int
        From the manifest.
    k : int
        Ranking cut-off (HR@k, NDCG@k).
    max_ranked : int
        Test customers ranked at most (a seeded sample beyond).
    seed : int
        Seeds that sample.
    ranking_model : fmprep.model.fm.FMModel, optional
        The model recommend ranks with (:mod:`fmprep.model.ranking`); ranked as ``recommender``.

    Returns
    -------
    dict
        ``rating`` (rmse, mae per method), ``segments`` (rmse by customer and by product train
        ratings), ``ranking`` (hr and ndcg at k per method) and the row counts.
    """
    import scipy.sparse as sp

    fdim = model.w.shape[0]
    u, i, d = fm_columns(train, num_users, fdim)
    tu, ti, td = fm_columns(test, num_users, fdim)
    r = np.asarray(train.labels, np.float64)
    tr = np.asarray(test.labels, np.float64)
    mu, b_user, b_item = fit_biases(u, i, r)
    pad = max(b_user.size, fdim)
    b_user, b_item = np.pad(b_user, (0, pad - b_user.size)), np.pad(b_item, (0, pad - b_item.size))
    preds = {"model": model.predict(test.indptr, test.indices, test.values).astype(np.float64),
             "global_mean": np.full(tr.size, mu),
             "biases": mu + b_user[tu] + b_item[ti]}
    user_counts = np.bincount(u, minlength=num_users)
    item_counts = np.bincount(i - num_users, minlength=num_items)

    seen = sp.csr_matrix((np.ones(u.size, np.int8), (u, i - num_users)),
                         shape=(num_users, num_items))
    seen.data[:] = 1  # a repeated (customer, product) pair counts once
    rows = np.arange(tu.size)
    if rows.size > max_ranked:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, max_ranked, replace=False))
    ru, ri, rd = tu[rows], ti[rows], td[rows]
    popularity = item_counts.astype(np.float64)
    ranking = {
        "model": rank_metrics(lambda b: item_scores(model, ru[b], rd[b], num_users, num_items),
                              ru, ri, seen, num_users, k),
        "popularity": rank_metrics(lambda b: np.broadcast_to(popularity, (b.size, num_items)),
                                   ru, ri, seen, num_users, k),
    }
    if ranking_model is not None:
        ranking["recommender"] = rank_metrics(
            lambda b: item_scores(ranking_model, ru[b], rd[b], num_users, num_items),
            ru, ri, seen, num_users, k)
    return {
        "format": "fmprep-evaluation/1",
        "test_rows": int(tr.size), "train_rows": int(r.size),
        "rating": {name: _errors(p, tr) for name, p in preds.items()},
        "segments": {"customer_train_ratings": _by_segment(user_counts[tu], preds, tr),
                     "product_train_ratings": _by_segment(item_counts[ti - num_users], preds,
                                                          tr)},
        "ranking": {"k": k, "customers": int(rows.size),
                    **{name: {f"hr@{k}": m["hr"], f"ndcg@{k}": m["ndcg"]}
                       for name, m in ranking.items()}},
    }


def evaluate_output(output: str, model_dir: str | None = None,
                    storage_options: dict | None = None) -> dict:
    """``make evaluate``: evaluate OUTPUT's model on OUTPUT's channels, write evaluation.json.

    Parameters
    ----------
    output : str
        OUTPUT of make data (manifest and shards).
    model_dir : str, optional
        The model (default ``OUTPUT/model``).
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    dict
        What :func:`evaluate` returns, as written to ``model_dir/evaluation.json``.

    Raises
    ------
    FmprepError
        Without a model, with a model of earlier data, or for a binary classifier.
    """
    from .. import storage
    from ..config import LOCAL_MODEL_DIR
    from ..freshness import check_model, read_manifest
    from .fm import FMModel
    from .training import read_channel, write_evaluation

    manifest = read_manifest(output, storage_options)
    model_dir = model_dir or storage.join(output, LOCAL_MODEL_DIR)
    model = FMModel.load(model_dir, storage_options)
    meta = storage.read_json(storage.join(model_dir, "model.json"), storage_options) or {}
    check_model(meta, manifest, model_dir)
    if model.predictor_type != "regressor":
        raise FmprepError("evaluate scores ratings; this model is a binary_classifier (train a "
                          "regressor, the default, to evaluate it)")
    from .ranking import ranking_model_for

    train = read_channel(output, manifest, "train", storage_options)
    test = read_channel(output, manifest, "test", storage_options)
    recommender = ranking_model_for(output, manifest, model_dir, storage_options, train)
    return write_evaluation(model, train, test, manifest, model_dir, storage_options,
                            recommender)

