"""Bayesian Factorization Machines by Gibbs sampling (MCMC), regression only.

The model is Rendle's second-order FM (:mod:`fmprep.model.fm`) with the hierarchical priors of
Freudenthaler, Schmidt-Thieme & Rendle (2011) and Rendle (2012, "Factorization Machines with
libFM", ACM TIST §4.3)::

    y_i   ~ N(yhat(x_i), 1 / alpha)               alpha ~ Gamma(a0, b0)
    w0    ~ N(0, 1 / lambda0)                      (lambda0 = 0: a flat prior)
    w_j   ~ N(mu_w[g], 1 / lambda_w[g])            g = groups[j]
    v_jf  ~ N(mu_v[g, f], 1 / lambda_v[g, f])
    lambda ~ Gamma(a0, b0),  mu | lambda ~ N(0, 1 / (gamma0 * lambda))   (Normal-Gamma)

with a0 = b0 = gamma0 = 1 (Gamma in shape/rate form). Each feature group (fmprep rows: the
customers, the products, ``days_since_first``; :func:`groups_for`) has its own prior means and
precisions, so no regularisation constant needs tuning: the sampler integrates them out.

One sweep draws, in order: alpha and every (lambda, mu) given the current weights, then w0, every
w_j and every v_jf given everything else. yhat is linear in each single weight theta,
``yhat_i = g_i + theta * h_i``, so its conditional is Gaussian with precision
``alpha * sum h_i^2 + lambda`` and mean ``(alpha * sum h_i (e_i + theta h_i) + lambda mu) /
precision``. With the residuals ``e_i = y_i - yhat_i`` and ``q_if = sum_l v_lf x_il`` cached
(``h = x_ij`` for w_j, ``h = x_ij (q_if - v_jf x_ij)`` for v_jf) and updated after each draw, a
sweep costs O(nnz * rank). The residual caches are rebuilt from the weights at the start of every
sweep, so rounding never accumulates.

The prediction is the posterior mean, estimated by averaging the FM outputs of the kept samples
``s = 1..S``. That average is itself one FM (:func:`stack_samples`): ``w0`` and ``w`` are the
sample means and ``V`` the samples' factor matrices side by side, each divided by ``sqrt(S)``,
because ``<[v_1..v_S] / sqrt(S), [v'_1..v'_S] / sqrt(S)> = (1/S) sum_s <v_s, v'_s>``. The
trained model is therefore an ordinary :class:`fmprep.model.fm.FMModel` with ``rank * S`` factors that
the server, predict and the SageMaker-format tools use unchanged.

Kept samples are thinned (``keep`` of the sweeps after burn-in, evenly spaced, the last one
included) so that the model stays small. With the raw draws that costs accuracy: on validation
rows of generated data one draw's prediction varies by ~0.6 (variance, in stars^2) from sweep to
sweep, so 16 kept draws lose ~0.02 RMSE against the mean of every sweep. By default
(``rao_blackwell=True``) a kept sample is instead each weight's conditional posterior mean at
the moment it was drawn (the Gaussian's centre, computed anyway): the chain is unchanged, the
kept values vary ~3x less, and 32 kept samples come within ~0.003 RMSE of averaging every
sweep's raw draw. For w0 and w this is exact Rao-Blackwellisation; for the product
``<v_i, v_j>`` of two conditional means it is an approximation, whose mean over all sweeps
measured no worse than the raw draws' (benchmarks/bench_fm.py, docstring of
``MCMC_DEFAULTS``).

Features absent from the training rows get, in every sample, their group's prior mean (mu_w,
mu_v): the posterior mean of a weight the data say nothing about. They are left out of the
hyperparameter draws.

Randomness comes from one ``numpy.random.Generator`` seeded with ``seed`` (initialisation, the
normal deviates of every weight, the Gamma draws); the numba kernels are serial and draw
nothing themselves, so the same inputs and seed give bit-identical models.
"""

from __future__ import annotations

import logging
import math
import time

import numba
import numpy as np

from ..errors import FmprepError, setting
from .fm import FMModel, _row_output

__all__ = ["train_mcmc", "groups_for", "latest_per_user_split", "stack_samples",
           "MCMC_DEFAULTS", "GROUP_NAMES"]

log = logging.getLogger(__name__)

GROUP_NAMES = ("users", "items", "days")

# Chosen on validation rows carved from the train channel (latest_per_user_split: each
# customer's latest train review), never on test rows, of generated data (fmprep.sample, prep
# with days_scale="years") at 200 k and 1 M reviews; `benchmarks/bench_fm.py --tune`
# reruns the study. Valid RMSE, mean of 3 seeds (0, 1, 2), burn-in 50, 200 sweeps, kept samples
# as conditional means; "all" averages every sweep after burn-in (not deployable at this size):
#                    20 k*: keep 16 / 32 / all   200 k: keep 16 / 32 / all   1 M: 16 / 32 / all
#   biases only             1.133                       1.156                     1.154
#   rank 4, init 0.5    1.063 / 1.067 / 1.061       1.047 / 1.047 / 1.043    1.028 / 1.026 / 1.024
#   rank 8, init 0.5    1.060 / 1.058 / 1.055       1.050 / 1.049 / 1.045    1.036 / 1.033 / 1.031
# (* 705 validation rows: differences below ~0.02 there are noise.)
# init_std 0.1 (myFM's and libFM's usual value) left the 1 M chain at near-zero factors for
# ~150 sweeps in all 3 seeds (train RMSE 1.09 after 100 sweeps vs 0.69 from 0.5; valid RMSE
# 1.080 at rank 4, keep 32; at 200 k it escaped by ~100 sweeps): the first hyperparameter
# draw sets the factor precisions to ~1 / init_std^2, and the data pull the factors out of that
# prior only slowly. Raw draws instead of conditional means, rank 4, 1 M: keep 32 1.031 (vs
# 1.026). 150 sweeps scored within 0.001 of 200 and 300; 200 leaves room for slower mixing.
# rank 4 x 32 kept samples = 128 factors in the deployed model.
MCMC_DEFAULTS = {"rank": 4, "n_iter": 200, "burn_in": 50, "keep": 32, "init_std": 0.5}

# Normal-Gamma hyperprior constants (Rendle 2012 uses the same non-informative values).
_A0 = 1.0       # Gamma shape of every precision
_B0 = 1.0       # Gamma rate of every precision
_GAMMA0 = 1.0   # prior strength of each mean: mu ~ N(0, 1 / (gamma0 * lambda))
_LAMBDA0 = 0.0  # precision of w0's prior (flat)


# ---------------------------------------------------------------------------------------------
# kernels


@numba.njit(cache=True)
def _residuals(indptr, indices, values, y, w0, w, V, e, q):
    """e_i = y_i - yhat_i and q[f, i] = sum_j V[j, f] x_ij for every row."""
    n = indptr.size - 1
    k = V.shape[1]
    for r in range(n):
        lin = w0
        sq = 0.0
        for f in range(k):
            q[f, r] = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            x = values[p]
            lin += w[c] * x
            for f in range(k):
                vx = V[c, f] * x
                q[f, r] += vx
                sq += vx * vx
        inter = 0.0
        for f in range(k):
            inter += q[f, r] * q[f, r]
        e[r] = y[r] - (lin + 0.5 * (inter - sq))


@numba.njit(cache=True)
def _predict(indptr, indices, values, w0, w, V, out):
    """FM output of every CSR row into ``out`` (float64 throughout)."""
    acc = np.empty(V.shape[1])
    for r in range(indptr.size - 1):
        out[r] = _row_output(indices, values, indptr[r], indptr[r + 1], w0, w, V, acc)


@numba.njit(cache=True)
def _sweep(col_ptr, col_rows, col_vals, groups, alpha, theta0, w, V, lam_w, mu_w, lam_v, mu_v,
           e, q, z0, zw, zv, cw, cV):
    """Draw w0, every w_j and every v_jf once from their full conditionals.

    ``e`` and ``q`` must hold the residuals and factor sums of the current weights; they are
    kept up to date. ``z0``, ``zw`` (F,) and ``zv`` (F, k) are standard normal deviates.
    Features without training rows are skipped.
    """
    n = e.size
    F, k = V.shape
    # w0: h_i = 1
    s = 0.0
    for i in range(n):
        s += e[i]
    w0 = theta0[0]
    prec = alpha * n + _LAMBDA0
    mean = (alpha * (s + w0 * n)) / prec
    theta0[1] = mean
    new = mean + z0 / math.sqrt(prec)
    d = new - w0
    for i in range(n):
        e[i] -= d
    theta0[0] = new
    # w_j: h_i = x_ij
    for j in range(F):
        a, b = col_ptr[j], col_ptr[j + 1]
        if a == b:
            continue
        g = groups[j]
        shh = 0.0
        seh = 0.0
        for p in range(a, b):
            x = col_vals[p]
            shh += x * x
            seh += e[col_rows[p]] * x
        old = w[j]
        prec = alpha * shh + lam_w[g]
        mean = (alpha * (seh + old * shh) + lam_w[g] * mu_w[g]) / prec
        cw[j] = mean
        new = mean + zw[j] / math.sqrt(prec)
        d = new - old
        for p in range(a, b):
            e[col_rows[p]] -= d * col_vals[p]
        w[j] = new
    # v_jf: h_i = x_ij * (q_if - v_jf x_ij)
    for f in range(k):
        qf = q[f]
        for j in range(F):
            a, b = col_ptr[j], col_ptr[j + 1]
            if a == b:
                continue
            g = groups[j]
            old = V[j, f]
            shh = 0.0
            seh = 0.0
            for p in range(a, b):
                i = col_rows[p]
                x = col_vals[p]
                h = x * (qf[i] - old * x)
                shh += h * h
                seh += e[i] * h
            prec = alpha * shh + lam_v[g, f]
            mean = (alpha * (seh + old * shh) + lam_v[g, f] * mu_v[g, f]) / prec
            cV[j, f] = mean
            new = mean + zv[j, f] / math.sqrt(prec)
            d = new - old
            for p in range(a, b):
                i = col_rows[p]
                x = col_vals[p]
                h = x * (qf[i] - old * x)
                e[i] -= d * h
                qf[i] += d * x
            V[j, f] = new


@numba.njit(cache=True)
def _has_repeats(indptr, indices, feature_dim):
    """True if some row holds one column twice (the FM would square that feature)."""
    last = np.full(feature_dim, -1, np.int64)
    for r in range(indptr.size - 1):
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            if last[c] == r:
                return True
            last[c] = r
    return False


# ---------------------------------------------------------------------------------------------
# helpers


def groups_for(feature_dim: int, num_users: int, num_items: int) -> np.ndarray:
    """Feature -> group for fmprep's FM layout: 0 users, 1 items, 2 days (and any other column).

    Columns ``[0, num_users)`` are customers, ``[num_users, num_users + num_items)`` products,
    and the rest (``days_since_first`` at ``feature_dim - 1``) group 2.

    Returns
    -------
    numpy.ndarray of int64, shape (feature_dim,)

    Raises
    ------
    FmprepError
        If the users and items do not fit in ``feature_dim``.
    """
    if min(num_users, num_items) < 0 or num_users + num_items > feature_dim:
        raise FmprepError(f"{num_users} users + {num_items} items do not fit in feature_dim "
                          f"{feature_dim}; pass the manifest's num_users, num_items and "
                          "feature_dim")
    groups = np.full(feature_dim, 2, np.int64)
    groups[:num_users] = 0
    groups[num_users:num_users + num_items] = 1
    return groups


def _subset(records, rows):
    """The records' rows ``rows`` (sorted row numbers) as new SparseRecords."""
    from ..recordio import SparseRecords

    rows = np.asarray(rows, np.int64)
    starts, ends = records.indptr[rows], records.indptr[rows + 1]
    lengths = ends - starts
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    labels = None if records.labels is None else records.labels[rows]
    return SparseRecords(indptr, records.indices[take], records.values[take], labels,
                         records.shape)


def latest_per_user_split(records):
    """Carve a validation set from train rows: each customer's latest row, as prep does for test.

    A row's customer is its first column and its time the value at column ``shape - 1``
    (``days_since_first``; 0 when a row lacks it). For every customer with at least two rows the
    row with the largest time goes to ``valid`` -- the last such row in row order when several
    tie -- and all others to ``fit``; customers with one row stay wholly in ``fit``. Only the
    records given are read, so passing the train channel never touches test rows.

    Parameters
    ----------
    records : SparseRecords
        Rows in fmprep's FM layout (user column first), with ``shape`` set.

    Returns
    -------
    fit, valid : SparseRecords
        Disjoint, together exactly ``records``'s rows, each in their original order.
    """
    n = records.indptr.size - 1
    if n == 0:
        raise FmprepError("no records to split")
    lengths = np.diff(records.indptr)
    if np.any(lengths < 1):
        raise FmprepError("every row needs a user column (fmprep FM layout)")
    user = records.indices[records.indptr[:-1]]
    days = np.zeros(n)
    days_col = records.shape - 1
    at = np.flatnonzero(records.indices == days_col)
    if at.size:
        row_of = np.repeat(np.arange(n), lengths)
        days[row_of[at]] = records.values[at]
    # Sort by (user, days, row); the last row of each user is its latest, ties by row order.
    order = np.lexsort((np.arange(n), days, user))
    su = user[order]
    last = np.r_[su[1:] != su[:-1], True]
    first = np.r_[True, su[1:] != su[:-1]]
    chosen = order[last & ~first]          # users with >= 2 rows
    is_valid = np.zeros(n, bool)
    is_valid[chosen] = True
    return _subset(records, np.flatnonzero(~is_valid)), _subset(records, np.flatnonzero(is_valid))


def stack_samples(samples, hyperparameters: dict | None = None) -> FMModel:
    """One FM whose output is the mean output of the FM samples ``(w0, w, V)`` given.

    ``w0`` and ``w`` are averaged; the ``V`` are put side by side, each scaled by
    ``1 / sqrt(S)``, so that the interaction of the result is the mean of the interactions.
    """
    samples = list(samples)
    if not samples:
        raise FmprepError("no samples to stack")
    S = len(samples)
    w0 = float(np.mean([s[0] for s in samples]))
    w = np.mean([np.asarray(s[1], np.float64) for s in samples], axis=0)
    V = np.concatenate([np.asarray(s[2], np.float64) for s in samples], axis=1) / math.sqrt(S)
    return FMModel(w0, w, V, "regressor", dict(hyperparameters or {}))


def _arrays(records, feature_dim, what):
    if records.labels is None:
        raise FmprepError(f"the {what} records have no labels; encode them with labels")
    indptr = np.ascontiguousarray(records.indptr, np.int64)
    indices = np.ascontiguousarray(records.indices, np.int64)
    values = np.ascontiguousarray(records.values, np.float64)
    y = np.asarray(records.labels, np.float64)
    if indptr.size < 2:
        raise FmprepError(f"the {what} records are empty")
    if indptr[0] != 0 or indptr[-1] != indices.size or indices.size != values.size \
            or np.any(np.diff(indptr) < 0) or y.size != indptr.size - 1:
        raise FmprepError(f"the {what} records are not one CSR matrix with a label per row")
    if indices.size and (indices.min() < 0 or indices.max() >= feature_dim):
        raise FmprepError(f"the {what} records hold a feature index outside [0, {feature_dim})")
    if not np.isfinite(y).all() or not np.isfinite(values).all():
        raise FmprepError(f"the {what} records hold NaN or infinite labels or values")
    if _has_repeats(indptr, indices, feature_dim):
        raise FmprepError(f"a {what} row holds one feature twice; sum duplicates first")
    return indptr, indices, values, y


def _group_sum(groups, t, G):
    """Per-group column sums of ``t`` (rows: features), shape (G, t.shape[1])."""
    return np.stack([np.bincount(groups, weights=t[:, f], minlength=G)
                     for f in range(t.shape[1])], axis=1)


def _draw_hyper(rng, theta, groups_present, counts, G, mu_old):
    """Draw (lambda, mu) per group, and per factor for a 2-D ``theta``, given the weights.

    ``theta`` rows are the present features, ``groups_present`` their groups, ``counts`` the
    present features per group. lambda | theta, mu_old ~ Gamma, then mu | theta, lambda ~
    Normal (the Normal-Gamma hyperprior's conditionals). Empty groups get lambda = a0 / b0 (the
    prior mean) and mu = 0.
    """
    two_d = theta.ndim == 2
    t = theta if two_d else theta[:, None]
    k = t.shape[1]
    s1 = _group_sum(groups_present, t, G)
    n = counts[:, None].astype(np.float64)
    mu_old = mu_old.reshape(G, k)
    dev = t - mu_old[groups_present]
    s2 = _group_sum(groups_present, dev * dev, G)
    shape = _A0 + 0.5 * (n + 1.0)
    rate = _B0 + 0.5 * (s2 + _GAMMA0 * mu_old ** 2)
    lam = rng.gamma(np.broadcast_to(shape, (G, k)), 1.0 / rate)
    post_n = n + _GAMMA0
    mu = s1 / post_n + rng.standard_normal((G, k)) / np.sqrt(post_n * lam)
    empty = counts == 0
    lam[empty] = _A0 / _B0
    mu[empty] = 0.0
    if not two_d:
        return lam[:, 0], mu[:, 0]
    return lam, mu


# ---------------------------------------------------------------------------------------------
# training


def train_mcmc(train, groups: np.ndarray, rank: int = MCMC_DEFAULTS["rank"],
               n_iter: int = MCMC_DEFAULTS["n_iter"], burn_in: int = MCMC_DEFAULTS["burn_in"],
               keep: int = MCMC_DEFAULTS["keep"], seed: int = 0,
               init_std: float = MCMC_DEFAULTS["init_std"], valid=None, progress=None,
               rao_blackwell: bool = True, return_samples: bool = False, sample_hook=None):
    """Fit a Bayesian FM regressor by Gibbs sampling; return one deployable :class:`FMModel`.

    Parameters
    ----------
    train : SparseRecords
        Labelled CSR rows (no feature repeated within a row); ``train.shape`` is the feature
        dimension (or ``groups.size`` when 0).
    groups : numpy.ndarray of int, shape (feature_dim,)
        Group of each feature, in ``[0, G)``; :func:`groups_for` for fmprep's layout.
    rank : int
        Factors per sample.
    n_iter : int
        Gibbs sweeps in all, burn-in included.
    burn_in : int
        Sweeps discarded before samples count.
    keep : int
        Samples kept for the model: the last sweep and every ``(n_iter - burn_in) // keep``-th
        before it. The model has ``rank * keep`` factors.
    seed : int
        Seeds every random draw; the same seed and inputs give identical models.
    init_std : float
        Standard deviation of the initial factors (w starts at 0, w0 at the mean label).
    valid : SparseRecords, optional
        Labelled rows scored after each sweep (they never influence the sampler).
    progress : callable, optional
        Called with each sweep's metrics dict.
    return_samples : bool
        Also return the kept samples as rank-``rank`` FMModels in ``metrics["samples"]``.
    rao_blackwell : bool
        Keep each weight's conditional posterior mean at its draw instead of the draw itself
        (module docstring); the chain is the same either way.
    sample_hook : callable, optional
        Called as ``sample_hook(sweep, theta0, w, V, cw, cV)`` after every sweep (0-based
        ``sweep``; ``theta0`` = [w0, its conditional mean], ``w``/``V`` the draws, ``cw``/``cV``
        their conditional means; float64 arrays, not to be modified or kept without copying);
        for experiments (benchmarks/bench_fm.py --tune).

    Returns
    -------
    model : FMModel
        Posterior predictive mean over the kept samples, as one FM (:func:`stack_samples`).
    metrics : dict
        ``iterations`` (per sweep: ``train:rmse`` of that sweep's draw, ``alpha``, ``seconds``
        and, with ``valid``, ``valid:rmse`` of the running posterior mean over every sweep after
        burn-in), ``final`` (``valid:rmse`` of the returned model, and of the mean over every
        post-burn-in sample as ``valid:rmse_all_samples``), ``kept_iterations``,
        ``train_seconds``, ``train_rows``, ``num_factors``, ``hyperparameters``.

    Raises
    ------
    FmprepError
        On invalid arguments or records.
    """
    for name, value, low in (("rank", rank, 1), ("n_iter", n_iter, 1), ("burn_in", burn_in, 0),
                             ("keep", keep, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise FmprepError(f"{name}={value!r} must be an integer >= {low}")
    if burn_in >= n_iter or keep > n_iter - burn_in:
        raise FmprepError(f"n_iter={n_iter}, burn_in={burn_in}, keep={keep}: need burn_in < "
                          "n_iter and keep <= n_iter - burn_in")
    if not (init_std >= 0 and math.isfinite(init_std)):
        raise FmprepError(f"init_std={init_std!r} must be a finite number >= 0")
    groups = np.ascontiguousarray(groups, np.int64)
    F = int(train.shape or groups.size)
    if F < 1 or groups.shape != (F,) or groups.min() < 0:
        raise FmprepError(f"groups must map each of the {F} features to a group >= 0; got shape "
                          f"{groups.shape}")
    G = int(groups.max()) + 1
    indptr, indices, values, y = _arrays(train, F, "train")
    n = y.size
    if valid is not None:
        if valid.shape and valid.shape != F:
            raise FmprepError(f"valid records have feature_dim {valid.shape}, train has {F}")
        v_indptr, v_indices, v_values, v_y = _arrays(valid, F, "valid")
        v_sum = np.zeros(v_y.size)
        v_out = np.empty(v_y.size)

    # Column-major copy for the per-feature draws.
    order = np.argsort(indices, kind="stable")
    col_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))[order]
    col_vals = values[order]
    col_counts = np.bincount(indices, minlength=F)
    col_ptr = np.concatenate([[0], np.cumsum(col_counts)]).astype(np.int64)
    present = col_counts > 0
    g_present = groups[present]
    counts = np.bincount(g_present, minlength=G)
    absent = np.flatnonzero(~present)

    rng = np.random.default_rng(seed)
    theta0 = np.array([y.mean(), y.mean()])   # w0 and its last conditional mean
    w = np.zeros(F)
    V = rng.normal(0.0, init_std, (F, rank)) if init_std > 0 else np.zeros((F, rank))
    V[absent] = 0.0
    mu_w = np.zeros(G)
    mu_v = np.zeros((G, rank))
    e = np.empty(n)
    q = np.empty((rank, n))
    cw = np.zeros(F)
    cV = np.zeros((F, rank))

    post = n_iter - burn_in
    thin = post // keep
    kept_iters = [n_iter - 1 - i * thin for i in range(keep)][::-1]
    kept_set = set(kept_iters)
    kept = []
    hp = {"solver": "mcmc", "predictor_type": "regressor", "feature_dim": F,
          "num_factors": int(rank * keep), "rank": int(rank), "n_iter": int(n_iter),
          "burn_in": int(burn_in), "keep": int(keep), "seed": int(seed),
          "init_std": float(init_std), "rao_blackwell": bool(rao_blackwell), "groups": int(G)}
    history = []
    t_start = time.perf_counter()
    for it in range(n_iter):
        t0 = time.perf_counter()
        _residuals(indptr, indices, values, y, theta0[0], w, V, e, q)
        alpha = rng.gamma(_A0 + 0.5 * n, 1.0 / (_B0 + 0.5 * float(e @ e)))
        lam_w, mu_w = _draw_hyper(rng, w[present], g_present, counts, G, mu_w)
        lam_v, mu_v = _draw_hyper(rng, V[present], g_present, counts, G, mu_v)
        z0 = rng.standard_normal()
        zw = rng.standard_normal(F)
        zv = rng.standard_normal((F, rank))
        _sweep(col_ptr, col_rows, col_vals, groups, alpha, theta0, w, V, lam_w, mu_w, lam_v,
               mu_v, e, q, z0, zw, zv, cw, cV)
        if absent.size:  # no data: the posterior mean given the group's prior
            w[absent] = cw[absent] = mu_w[groups[absent]]
            V[absent] = cV[absent] = mu_v[groups[absent]]
        train_rmse = math.sqrt(float(e @ e) / n)
        if not math.isfinite(train_rmse):
            raise FmprepError(f"the sampler diverged in sweep {it + 1} (non-finite residuals); "
                              f"check the feature values (prep with {setting('days_scale')}"
                              "years)")
        row = {"iteration": it + 1, "train:rmse": train_rmse, "alpha": float(alpha)}
        if sample_hook is not None:
            sample_hook(it, theta0, w, V, cw, cV)
        s0, sw, sV = (theta0[1], cw, cV) if rao_blackwell else (theta0[0], w, V)
        if it in kept_set:
            kept.append((s0, sw.astype(np.float32), sV.astype(np.float32)))
        if valid is not None and it >= burn_in:
            _predict(v_indptr, v_indices, v_values, s0, sw, sV, v_out)
            v_sum += v_out
            row["valid:rmse"] = float(np.sqrt(np.mean((v_sum / (it - burn_in + 1) - v_y) ** 2)))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if progress is not None:
            progress(row)
        log.debug("sweep %d: %s", it + 1, row)
    train_seconds = time.perf_counter() - t_start

    # kept holds float32 copies; stack in float64 so the mean is exact before the final cast.
    model = stack_samples(kept, hp)
    final = {}
    if valid is not None:
        pred = model.predict(v_indptr, v_indices, v_values).astype(np.float64)
        final["valid:rmse"] = float(np.sqrt(np.mean((pred - v_y) ** 2)))
        final["valid:rmse_all_samples"] = history[-1]["valid:rmse"]
    metrics = {"solver": "mcmc", "train_rows": n,
               "valid_rows": 0 if valid is None else int(v_y.size),
               "iterations": history, "final": final,
               "kept_iterations": [i + 1 for i in kept_iters],
               "num_factors": model.num_factors, "train_seconds": train_seconds,
               "hyperparameters": hp}
    if return_samples:
        metrics["samples"] = [FMModel(s0, sw, sV, "regressor", {}) for s0, sw, sV in kept]
    return model, metrics
