"""A ranking model for top-k recommendations: implicit-feedback factors blended with popularity.

A rating regressor answers "how many stars would this customer give", not "what will this
customer review next": on MovieLens 100K (fmprep's leave-last-out split, full ranking over the
products each customer has not rated) the default rating model's HR@10 is 0.023 against
popularity's 0.067. This module fits what ranks instead, on which pairs were rated at all:

* **iALS** (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
  Datasets"): customer factors ``x_u`` and product factors ``y_i`` minimising
  ``sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (|x_u|^2 + |y_i|^2)`` over *every* (customer,
  product) cell, with ``p_ui = 1`` where the customer rated the product in train (else 0) and
  confidence ``c_ui = 1 + alpha`` there (else 1). Alternating exact minimisation per side; each
  row's k x k system is solved by a few conjugate-gradient steps warm-started from the previous
  sweep (Takacs, Pilaszy & Tikk 2011), using ``Y^T Y`` once per sweep so the cost is
  O(nnz k + rows k^2) per sweep rather than O(nnz k^2).
* **popularity**: ``s_i = log(1 + n_i) / log(1 + max n)`` with ``n_i`` the product's train
  ratings. The model's score is ``x_u . y_i + beta s_i``.

``reg``, ``alpha`` and ``beta`` are chosen on validation rows carved from train exactly as the
test rows are carved from all rows -- each customer's latest train review
(:func:`fmprep.model.mcmc.latest_per_user_split`) -- by HR@10 of full ranking; the test channel is
never read. Popularity alone (``beta`` = inf) is one of the candidates and, being the simplest,
is kept unless the best candidate beats it by more than one standard error of the paired
per-customer difference (the one-standard-error rule): on data whose next review popularity
predicts as well, the recommender is popularity rather than something noisier. The winner is
refitted on all train rows.

The result is an ordinary :class:`fmprep.model.fm.FMModel` (``w0 = 0``, customer ``w = 0``, product
``w = beta s_i``, ``V`` = the factors, days feature 0), so :func:`fmprep.model.evaluate.item_scores`,
recommend and the local tools score it unchanged. Its output is a preference score, not a
rating: ``hyperparameters["task"] == "ranking"`` marks it.
"""

from __future__ import annotations

import logging
import math
import time

import numba
import numpy as np
import scipy.sparse as sp

from ..errors import FmprepError, command
from .fm import FMModel

__all__ = ["train_ranking", "RANKING_DEFAULTS", "is_ranking_model"]

log = logging.getLogger(__name__)

_BATCH = 512  # validation customers scored at once: a (512, products) float32 block

# factors: 32 scored within noise of 64 on MovieLens 100K validation HR@10 at half the cost.
# The grids are what validation chooses from (log steps wide enough to reach "popularity
# only" through reg and beta). sweeps: alternating sweeps per fit; cg_steps: per row and sweep.
# max_valid_customers: a seeded sample beyond this many; 5,000 keeps one standard error of a
# hit rate near 0.1 at ~0.004 while the study costs about as much as the MCMC fit at 1 M
# reviews (~20 s on 2 cores).
RANKING_DEFAULTS = {"factors": 32, "regs": (1.0, 10.0, 100.0), "alphas": (1.0, 10.0),
                    "betas": (0.0, 0.3, 1.0, 3.0), "sweeps": 10, "cg_steps": 3,
                    "init_std": 0.01, "k": 10, "max_valid_customers": 5_000}


def is_ranking_model(model: FMModel) -> bool:
    """Whether ``model`` was fitted by :func:`train_ranking` (scores preferences, not stars)."""
    return model.hyperparameters.get("task") == "ranking"


@numba.njit(parallel=True, cache=True)
def _half_sweep(indptr, indices, fixed, gram, reg, alpha, cg_steps, out):
    """Update every row of ``out`` given the other side's factors ``fixed`` (CG, warm start).

    Row r solves ``(gram + reg I + alpha sum_j y_j y_j^T) x = (1 + alpha) sum_j y_j`` over its
    products j. Written as plain loops over preallocated vectors: numpy expressions here would
    allocate several temporaries per row and step.
    """
    k = out.shape[1]
    for r in numba.prange(out.shape[0]):
        lo, hi = indptr[r], indptr[r + 1]
        x = out[r].copy()
        res = np.empty(k)
        p = np.empty(k)
        ap = np.empty(k)
        # res = b - A x
        for f in range(k):
            acc = 0.0
            for g in range(k):
                acc += gram[f, g] * x[g]
            res[f] = -acc - reg * x[f]
        for j in range(lo, hi):
            y = fixed[indices[j]]
            yx = 0.0
            for f in range(k):
                yx += y[f] * x[f]
            c = (1.0 + alpha) - alpha * yx
            for f in range(k):
                res[f] += c * y[f]
        rs_old = 0.0
        for f in range(k):
            p[f] = res[f]
            rs_old += res[f] * res[f]
        for _ in range(cg_steps):
            if rs_old < 1e-20:
                break
            for f in range(k):
                acc = 0.0
                for g in range(k):
                    acc += gram[f, g] * p[g]
                ap[f] = acc + reg * p[f]
            for j in range(lo, hi):
                y = fixed[indices[j]]
                yp = 0.0
                for f in range(k):
                    yp += y[f] * p[f]
                yp *= alpha
                for f in range(k):
                    ap[f] += yp * y[f]
            pap = 0.0
            for f in range(k):
                pap += p[f] * ap[f]
            step = rs_old / pap
            rs_new = 0.0
            for f in range(k):
                x[f] += step * p[f]
                res[f] -= step * ap[f]
                rs_new += res[f] * res[f]
            beta = rs_new / rs_old
            for f in range(k):
                p[f] = res[f] + beta * p[f]
            rs_old = rs_new
        for f in range(k):
            out[r, f] = x[f]


def fit_ials(matrix: sp.csr_matrix, factors: int, reg: float, alpha: float, sweeps: int,
             cg_steps: int = RANKING_DEFAULTS["cg_steps"],
             init_std: float = RANKING_DEFAULTS["init_std"], seed: int = 0):
    """Fit iALS factors to a binary customers x products matrix.

    Parameters
    ----------
    matrix : scipy.sparse.csr_matrix
        Non-zero where the customer rated the product (values are ignored).
    factors, reg, alpha, sweeps, cg_steps, init_std, seed
        See the module docstring; ``seed`` fixes the initial factors, and the kernels draw
        nothing, so the same inputs give the same factors.

    Returns
    -------
    X, Y : numpy.ndarray of float64
        Customer factors (rows of ``matrix``) and product factors (columns).
    """
    rows = matrix.tocsr()
    cols = rows.T.tocsr()
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, init_std, (rows.shape[0], factors))
    Y = rng.normal(0.0, init_std, (rows.shape[1], factors))
    r_ptr, r_idx = rows.indptr.astype(np.int64), rows.indices.astype(np.int64)
    c_ptr, c_idx = cols.indptr.astype(np.int64), cols.indices.astype(np.int64)
    for _ in range(sweeps):
        _half_sweep(r_ptr, r_idx, Y, Y.T @ Y, reg, alpha, cg_steps, X)
        _half_sweep(c_ptr, c_idx, X, X.T @ X, reg, alpha, cg_steps, Y)
    return X, Y


def popularity_scores(item, num_items: int) -> np.ndarray:
    """``log(1 + n_i) / log(1 + max n)`` of every product from its rows' product indices."""
    counts = np.bincount(item, minlength=num_items).astype(np.float64)
    top = counts.max() if counts.size else 0.0
    return np.log1p(counts) / math.log1p(top) if top > 0 else counts


def _binary(user, item, num_users, num_items):
    m = sp.csr_matrix((np.ones(user.size, np.float32), (user, item)), shape=(num_users, num_items))
    m.data[:] = 1.0  # a repeated pair counts once
    return m


def train_ranking(train_records, num_users: int, num_items: int, seed: int = 0,
                  settings: dict | None = None) -> tuple[FMModel, dict]:
    """Fit the ranking model on the train channel; choose its settings on carved validation.

    Parameters
    ----------
    train_records : SparseRecords
        The train channel in fmprep's FM layout (user column, item column, days).
    num_users, num_items : int
        From the manifest; the model has ``train_records.shape`` features.
    seed : int
        Seeds the factors' initialisation and the validation customers' sample.
    settings : dict, optional
        Overrides of :data:`RANKING_DEFAULTS`.

    Returns
    -------
    model : FMModel
        ``w_i = beta s_i`` and the iALS factors; ``hyperparameters`` records the choice.
    metrics : dict
        ``candidates`` (validation HR@k / NDCG@k of every (reg, alpha, beta) and of popularity),
        ``chosen``, ``valid_customers``, ``train_seconds``.

    Raises
    ------
    FmprepError
        If the records are not fmprep's layout.
    """
    from .evaluate import fm_columns, hits_and_gains, target_ranks
    from .mcmc import latest_per_user_split

    cfg = {**RANKING_DEFAULTS, **(settings or {})}
    t0 = time.perf_counter()
    fdim = int(train_records.shape)
    if fdim != num_users + num_items + 1:
        raise FmprepError(f"train rows have feature_dim {fdim}, the manifest {num_users} users + "
                          f"{num_items} items + days; re-run {command('data')}")
    user, item, _ = fm_columns(train_records, num_users, fdim)
    item = item - num_users
    fit, valid = latest_per_user_split(train_records)
    fu, fi, _ = fm_columns(fit, num_users, fdim)
    vu, vi, _ = fm_columns(valid, num_users, fdim)
    fi, vi = fi - num_users, vi - num_users
    rng = np.random.default_rng(seed)
    if vu.size > cfg["max_valid_customers"]:
        pick = np.sort(rng.choice(vu.size, cfg["max_valid_customers"], replace=False))
        vu, vi = vu[pick], vi[pick]
    fit_matrix = _binary(fu, fi, num_users, num_items)
    pop_fit = popularity_scores(fi, num_items).astype(np.float32)
    k = cfg["k"]

    seen_valid = fit_matrix[vu]
    candidates, hits = [], []  # hits: per validation customer, for the rule below

    def validate(base_scores, betas):
        """Score each beta's ranking of the validation customers; one base matrix per batch."""
        ranks = [[] for _ in betas]
        for start in range(0, vu.size, _BATCH):
            rows = slice(start, start + _BATCH)
            base = base_scores(vu[rows])
            for j, beta in enumerate(betas):
                scores = base + np.float32(beta) * pop_fit if beta else base
                ranks[j].append(target_ranks(scores, vi[rows], seen_valid[rows]))
        out = []
        for r in ranks:
            m = hits_and_gains(np.concatenate(r), k, per_customer=True)
            hits.append(m["hits"].astype(np.float64))
            out.append({f"hr@{k}": m["hr"], f"ndcg@{k}": m["ndcg"]})
        return out

    (pop_metrics,) = validate(lambda u: np.broadcast_to(pop_fit, (u.size, num_items)), [0.0])
    candidates.append({"kind": "popularity", **pop_metrics})
    for reg in cfg["regs"]:
        for alpha in cfg["alphas"]:
            X, Y = fit_ials(fit_matrix, cfg["factors"], reg, alpha, cfg["sweeps"],
                            cfg["cg_steps"], cfg["init_std"], seed)
            X32, Y32t = X.astype(np.float32), np.ascontiguousarray(Y.T, np.float32)
            for beta, m in zip(cfg["betas"], validate(lambda u: X32[u] @ Y32t, cfg["betas"])):
                candidates.append({"kind": "ials", "reg": reg, "alpha": alpha, "beta": beta,
                                   **m})
                log.debug("ranking candidate %s", candidates[-1])
    # Best HR@k; NDCG@k breaks ties, then the earlier (simpler) candidate. Then the
    # one-standard-error rule: popularity, the simplest candidate, stays unless the best beats
    # it by more than one standard error of the paired per-customer difference in hits.
    best = max(range(len(candidates)),
               key=lambda j: (candidates[j][f"hr@{k}"], candidates[j][f"ndcg@{k}"], -j))
    diff = hits[best] - hits[0]
    margin = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
    if best and float(diff.mean()) <= margin:
        best = 0
    chosen = dict(candidates[best], margin=margin)

    pop = popularity_scores(item, num_items)
    w = np.zeros(fdim)
    V = np.zeros((fdim, cfg["factors"]))
    if chosen["kind"] == "popularity":
        w[num_users:num_users + num_items] = pop
    else:
        X, Y = fit_ials(_binary(user, item, num_users, num_items), cfg["factors"],
                        chosen["reg"], chosen["alpha"], cfg["sweeps"], cfg["cg_steps"],
                        cfg["init_std"], seed)
        w[num_users:num_users + num_items] = chosen["beta"] * pop
        V[:num_users], V[num_users:num_users + num_items] = X, Y
    hp = {"task": "ranking", "method": chosen["kind"], "factors": int(cfg["factors"]),
          "seed": int(seed), "sweeps": int(cfg["sweeps"]), "cg_steps": int(cfg["cg_steps"]),
          **{name: chosen[name] for name in ("reg", "alpha", "beta") if name in chosen}}
    model = FMModel(0.0, w, V, "regressor", hp)
    metrics = {"task": "ranking", "chosen": chosen, "candidates": candidates,
               "valid_customers": int(vu.size), "train_rows": int(user.size),
               "train_seconds": time.perf_counter() - t0}
    log.info("ranking: %s chosen on %d validation customers (HR@%d %.4f; popularity %.4f), "
             "%.1f s", _describe(chosen), vu.size, k, chosen[f"hr@{k}"],
             candidates[0][f"hr@{k}"], metrics["train_seconds"])
    return model, metrics


def _describe(candidate: dict) -> str:
    if candidate["kind"] == "popularity":
        return "popularity"
    return (f"iALS reg={candidate['reg']:g} alpha={candidate['alpha']:g} + "
            f"{candidate['beta']:g} x popularity")


# ---------------------------------------------------------------------------------------------
# the ranking model beside the rating model: MODEL_DIR/ranking/

RANKING_SUBDIR = "ranking"
RANKING_METRICS = "ranking.json"  # the validation study, beside the model


def fit_ranking_model(train_records, manifest: dict, model_dir: str, seed: int = 0,
                      storage_options: dict | None = None) -> FMModel:
    """Fit :func:`train_ranking` on the train channel; save it in ``model_dir/ranking``.

    The model is saved with OUTPUT's data stamp (as the rating model is) and its validation
    study as ``ranking.json`` beside it.
    """
    from .. import storage
    from ..freshness import data_stamp

    model, metrics = train_ranking(train_records, int(manifest["num_users"]),
                                   int(manifest["num_items"]), seed)
    where = storage.join(model_dir, RANKING_SUBDIR)
    model.save(where, storage_options, data=data_stamp(manifest))
    storage.write_json(storage.join(where, RANKING_METRICS), metrics, storage_options)
    return model


def ranking_model_for(output: str, manifest: dict, model_dir: str,
                      storage_options: dict | None = None, train_records=None) -> FMModel:
    """The ranking model of ``model_dir``; fitted first when missing or trained on older data.

    A model imported from SageMaker (``make import-model``) or trained before fmprep fitted
    ranking models has none: the fit takes seconds and needs only the train channel.
    """
    from .. import storage
    from .training import read_channel  # training imports this module
    from ..freshness import stale_reason

    where = storage.join(model_dir, RANKING_SUBDIR)
    meta = storage.read_json(storage.join(where, "model.json"), storage_options)
    if meta is not None and meta.get("data") and not stale_reason(meta["data"], manifest):
        return FMModel.load(where, storage_options)
    log.info("fitting the ranking model into %s (none for this data yet)", where)
    if train_records is None:
        train_records = read_channel(output, manifest, "train", storage_options)
    return fit_ranking_model(train_records, manifest, model_dir, 0, storage_options)
