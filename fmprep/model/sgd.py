"""The SGD trainer: mini-batch Adam over SageMaker's FM hyperparameters, with early stopping.

fmprep's local twin of a SageMaker FM training job (``solver=sgd``). :func:`train` takes the
user's hyperparameters and validates them (:mod:`fmprep.model.hyperparameters`); :func:`fit`
takes hyperparameters already validated, for callers that validated them at their entry
(:func:`fmprep.model.training.fit_output`).

Early stopping (on by default for the local SGD solver; SageMaker's FM has none): ``epochs`` is
a limit, each customer's latest train review is held out to choose the epoch count, and the
model is refitted on every train row for it (:func:`train`, with the figures that chose this).

Optimizer. AWS does not publish the FM container's optimizer, so results match SageMaker's in
meaning, not bit for bit. fmprep uses mini-batch Adam (beta1 0.9, beta2 0.999), as the open
MXNet factorization-machine example does (its parameters ``w0_weight``/``w1_weight``/``v`` are
the names in SageMaker's model artifact), mapped onto SageMaker's names like MXNet's optimizers:

* the batch gradient is the sum of row gradients times ``rescale_grad`` (unset: 1 / rows in the
  batch, i.e. the mean), plus ``wd * weight`` (scaled per feature, see below), then clipped to
  ``[-clip_gradient, clip_gradient]`` when set; ``eps`` (unset: 1e-8) is Adam's epsilon;
* each of the three groups (``bias`` = w0, ``linear`` = w, ``factors`` = V) has its own
  ``*_lr`` and ``*_wd``;
* updates are lazy (sparse): only features present in a batch move, and Adam's bias correction
  counts each feature's own updates.

Two choices are fmprep's own (SageMaker documents neither):

* Weight decay is the L2 penalty of the mean loss, ``mean(row loss) + wd / 2 * |weight|^2``,
  for every weight, rare or frequent -- what a dense update (every weight decays in every batch)
  optimises. Decaying lazily, only in the batches that hold a feature, would instead penalise a
  customer in proportion to their number of ratings: heavy raters and popular products are
  shrunk hard while one-rating customers are barely regularised. So a feature's decay is
  scaled by ``1 / P(feature in a batch)`` when it moves (:func:`_decay_scale`). In
  least-squares terms (``sum (y - t)^2 + l2 * |weight|^2``, like the ALS baseline) the penalty
  is ``l2 = wd * train_rows``: keep ``l2`` fixed, not ``wd``, when the data grows.
* With ``bias_init_method`` normal or uniform, w0 starts at the mean train label (its log-odds
  for ``binary_classifier``) plus the random draw, not at 0; ``constant`` uses
  ``bias_init_value`` as given.

Consequences worth knowing, measured on ``fmprep.sample`` data (benchmarks/bench_fm.py):

* Adam's steps are about ``lr`` whatever the gradient's size, so SageMaker's default learning
  rates (linear 0.001, factors 0.0001) move a user's weight by ~0.001 per rating: three epochs
  leave the model close to the global mean. For the local SGD solver use
  ``config.FM_LOCAL_RECOMMENDED``
  (:func:`fmprep.model.hyperparameters.recommended_hyperparameters` fills in the weight decays
  for the number of train rows); a SageMaker job gets the same SGD settings for every name the
  user leaves unset (:func:`fmprep.model.hyperparameters.sagemaker_default_hyperparameters`).
* Because the steps are scale-free, ``clip_gradient`` cannot tame a feature with large raw
  values: ``days_since_first`` in raw days (up to ~6000, the reference prep) multiplies every
  step of its weights by that much and test RMSE jumps between epochs. fmprep does not rescale
  inputs behind your back; it warns and recommends ``days_scale`` ``years`` (or ``unit``) for prep.
* ``days_since_first`` is in every row, so its factor vector is barely penalised and can give
  each customer a fitted trend in time, which the test row (the customer's latest review)
  extrapolates. On data without a time effect that costs some RMSE with ``days_scale`` ``years``
  on small files; ``unit`` (values in [0, 1]) shrinks it.
"""

from __future__ import annotations

import logging
import math
import time

import numba
import numpy as np

from ..errors import FmprepError, command, render, setting
from .fm import FMModel, _csr, _row_output
from .hyperparameters import GROUPS, check_feature_dim, validate_hyperparameters
from .mcmc import latest_per_user_split

__all__ = ["train", "fit", "labels_for", "metrics_on"]

log = logging.getLogger(__name__)

_BETA1 = 0.9
_BETA2 = 0.999
_DEFAULT_EPS = 1e-8


@numba.njit(cache=True)
def _adam(theta, m, v, g, lr, wd, clip, eps, t):
    """One Adam step on a scalar with weight decay folded into the gradient (MXNet order:
    rescaled gradient + wd * weight, then clip); returns (theta, m, v)."""
    g = g + wd * theta
    if clip > 0.0:
        g = min(max(g, -clip), clip)
    m = _BETA1 * m + (1.0 - _BETA1) * g
    v = _BETA2 * v + (1.0 - _BETA2) * g * g
    mhat = m / (1.0 - _BETA1 ** t)
    vhat = v / (1.0 - _BETA2 ** t)
    return theta - lr * mhat / (math.sqrt(vhat) + eps), m, v


@numba.njit(cache=True)
def _epoch(indptr, indices, values, labels, order, batch, binary, bias, w, V, state_w, state_V,
           steps, lr, wd, decay, clip, eps, rescale, slot, touched, gw, gV, acc):
    """One pass of mini-batch Adam over the rows in ``order``; returns the summed row loss.

    ``bias`` is [w0, m, v, t]. ``state_w`` is (feature_dim, 2) and ``state_V`` is
    (2, feature_dim, k): Adam's first and second moments. ``steps`` counts each feature's
    updates for Adam's bias correction: updates are lazy (only features present in the batch
    move, weight decay included), so a rare feature's moments are corrected for its own age.
    ``decay`` scales each feature's weight decay for the batches it is absent from (see
    :func:`_decay_scale`).
    ``slot`` maps feature -> row of the gradient buffers ``gw``/``gV`` (-1 when absent).
    ``rescale`` <= 0 means 1 / rows in the batch. Gradients use the weights at the start of
    the batch, as a mini-batch should.
    """
    n = order.size
    k = V.shape[1]
    loss = 0.0
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        nt = 0
        g0 = 0.0
        for p in range(start, stop):
            r = order[p]
            a = indptr[r]
            b = indptr[r + 1]
            y = _row_output(indices, values, a, b, bias[0], w, V, acc)
            t = labels[r]
            if binary:
                # log-loss on sigmoid(y), computed stably; d loss / d y = p - t
                if y >= 0:
                    prob = 1.0 / (1.0 + math.exp(-y))
                    loss += math.log1p(math.exp(-y)) + (1.0 - t) * y
                else:
                    prob = math.exp(y) / (1.0 + math.exp(y))
                    loss += math.log1p(math.exp(y)) - t * y
                d = prob - t
            else:
                d = y - t  # squared loss / 2
                loss += d * d
            g0 += d
            for j in range(a, b):
                c = indices[j]
                s = slot[c]
                if s < 0:
                    s = nt
                    slot[c] = s
                    touched[nt] = c
                    gw[s] = 0.0
                    gV[s, :] = 0.0
                    nt += 1
                dx = d * values[j]
                gw[s] += dx
                for f in range(k):
                    gV[s, f] += dx * (acc[f] - V[c, f] * values[j])
        scale = rescale if rescale > 0.0 else 1.0 / (stop - start)
        bias[3] += 1.0
        bias[0], bias[1], bias[2] = _adam(bias[0], bias[1], bias[2], scale * g0, lr[0], wd[0],
                                          clip, eps, bias[3])
        for s in range(nt):
            c = touched[s]
            slot[c] = -1
            steps[c] += 1
            tc = steps[c]
            w[c], state_w[c, 0], state_w[c, 1] = _adam(
                w[c], state_w[c, 0], state_w[c, 1], scale * gw[s], lr[1], wd[1] * decay[c], clip,
                eps, tc)
            for f in range(k):
                V[c, f], state_V[0, c, f], state_V[1, c, f] = _adam(
                    V[c, f], state_V[0, c, f], state_V[1, c, f], scale * gV[s, f], lr[2],
                    wd[2] * decay[c], clip, eps, tc)
    return loss


_LARGE_VALUE = 100.0


def _scale_warnings(indices, values):
    """Warn about features with large raw values, which make Adam's steps unstable."""
    large = np.abs(values) > _LARGE_VALUE
    if not large.any():
        return []
    cols = np.unique(indices[large])
    # Rendered now: the line is kept in metrics.json, as the command that trained spelled it.
    msg = render(f"feature column(s) {cols[:5].tolist()} hold values up to "
                 f"{float(np.abs(values[large]).max()):.0f}; large raw values make training "
                 f"unstable (test RMSE jumps between epochs): prep with {setting('days_scale')}"
                 "years or unit, or lower the learning rates")
    log.warning(msg)
    return [msg]


def _init(rng, hp, group, shape):
    method = hp[f"{group}_init_method"]
    if method == "normal":
        return rng.normal(0.0, hp[f"{group}_init_sigma"], shape).astype(np.float32)
    if method == "uniform":
        scale = hp[f"{group}_init_scale"]
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    return np.full(shape, hp[f"{group}_init_value"], np.float32)


def _bias_centre(hp, y):
    """The centre of w0's random initialisation (fmprep's choice; SageMaker's is 0).

    The mean train label for a regressor, its log-odds (within [-10, 10]) for a binary
    classifier, and 0 for ``bias_init_method=constant``, whose ``bias_init_value`` is used as
    given.
    """
    if hp["bias_init_method"] == "constant":
        return 0.0
    mean = float(np.mean(y))
    if hp["predictor_type"] == "binary_classifier":
        logit = math.log(max(mean, 1e-12) / max(1.0 - mean, 1e-12))
        return min(max(logit, -10.0), 10.0)
    return mean


def _decay_scale(indices, n_rows, batch, feature_dim):
    """Per-feature factor on ``linear_wd`` / ``factors_wd`` that makes lazy decay dense.

    Updates are lazy: a feature's weight decays only in the batches that hold it. A feature in
    ``c`` of ``n_rows`` rows is in a batch of ``batch`` random rows with probability
    ``p = 1 - (1 - batch / n_rows) ** c``; scaling its decay by ``1 / p`` gives every weight, rare
    or frequent, the expected decay per epoch of a dense update (every weight, every batch).
    A feature in every batch (``days_since_first``) keeps factor 1.

    Returns
    -------
    numpy.ndarray of float64, shape (feature_dim,)
        ``1 / p`` per feature; 1 for features absent from the data (they never move).
    """
    counts = np.bincount(indices, minlength=feature_dim).astype(np.float64)
    q = min(1.0, batch / max(n_rows, 1))
    if q >= 1.0:
        return np.ones(feature_dim)
    p = -np.expm1(counts * math.log1p(-q))
    return np.where(counts > 0, 1.0 / np.maximum(p, 1e-300), 1.0)


def labels_for(records, hp: dict, what: str) -> np.ndarray:
    """The records' labels as float64, thresholded for binary_classifier; checked.

    Parameters
    ----------
    records : SparseRecords
        Rows with labels.
    hp : dict
        Validated hyperparameters: ``predictor_type`` and ``binary_threshold`` are read.
    what : str
        The channel's name for messages ("train", "test").

    Returns
    -------
    numpy.ndarray of float64, shape (n_rows,)
        Labels as given for a regressor, 0/1 for a binary_classifier.

    Raises
    ------
    FmprepError
        If labels are missing, or not 0/1 for a binary_classifier without ``binary_threshold``.
    """
    if records.labels is None:
        raise FmprepError(f"the {what} records have no labels; encode them with labels")
    y = np.asarray(records.labels, dtype=np.float64)
    if np.isnan(y).any():
        raise FmprepError(f"{int(np.isnan(y).sum())} {what} records have no label; re-run "
                          f"{command('data')}")
    if hp["predictor_type"] == "binary_classifier":
        if hp["binary_threshold"] is not None:
            return (y >= hp["binary_threshold"]).astype(np.float64)
        if not np.isin(y, (0.0, 1.0)).all():
            raise FmprepError(f"binary_classifier needs 0/1 labels but the {what} labels hold "
                              f"{np.unique(y)[:5].tolist()}; set binary_threshold (e.g. 4: "
                              "rating >= 4 -> 1)")
    return y


def metrics_on(model: FMModel, records, y: np.ndarray, binary: bool) -> dict:
    """SageMaker-named test metrics of ``model`` on ``records`` with labels ``y``.

    Parameters
    ----------
    model : FMModel
    records : SparseRecords
        The rows to score.
    y : numpy.ndarray
        Their labels (:func:`labels_for`).
    binary : bool
        True for a binary_classifier.

    Returns
    -------
    dict
        ``test:rmse`` for a regressor; ``test:binary_classification_accuracy``,
        ``test:binary_f_beta`` and ``test:binary_classification_cross_entropy`` for a
        binary_classifier.
    """
    scores = model.predict(records.indptr, records.indices, records.values).astype(np.float64)
    if not binary:
        return {"test:rmse": float(np.sqrt(np.mean((scores - y) ** 2)))}
    p = np.clip(scores, 1e-15, 1 - 1e-15)
    predicted = scores >= 0.5
    tp = float(np.sum(predicted & (y == 1)))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float((y == 1).sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "test:binary_classification_accuracy": float(np.mean(predicted == (y == 1))),
        "test:binary_f_beta": f1,
        "test:binary_classification_cross_entropy":
            float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
    }


def _csr_records(records, feature_dim, what):
    indptr, indices, values = _csr(records.indptr, records.indices, records.values, feature_dim)
    if indptr.size < 2:
        raise FmprepError(f"the {what} channel has no records; re-run {command('data')}")
    return indptr, indices, values


_STOP_METRIC = {"regressor": "valid:rmse",
                "binary_classifier": "valid:binary_classification_cross_entropy"}


def _sgd(records, y, hp, epochs, test=None, valid=None, progress=None):
    """Mini-batch Adam from the seeded initialisation: up to ``epochs`` passes over ``records``.

    ``test`` and ``valid`` are (records, labels) or None, scored after every epoch. With
    ``valid``, training stops once ``_STOP_METRIC`` has not improved by more than
    ``early_stopping_tolerance`` for ``early_stopping_patience`` epochs.

    Returns
    -------
    model : FMModel
        The weights after the last epoch run.
    history : list of dict
        One row per epoch: ``epoch``, ``train:loss``, the valid:/test: metrics, ``seconds``.
    best : tuple (epoch, value) or None
        With ``valid``: the best epoch and its metric.
    """
    fdim, k = hp["feature_dim"], hp["num_factors"]
    binary = hp["predictor_type"] == "binary_classifier"
    indptr, indices, values = _csr(records.indptr, records.indices, records.values, fdim)
    rng = np.random.default_rng(hp["seed"])
    bias = np.array([_init(rng, hp, "bias", 1)[0] + _bias_centre(hp, y), 0.0, 0.0, 0.0])
    w = _init(rng, hp, "linear", fdim)
    V = _init(rng, hp, "factors", (fdim, k))
    state_w = np.zeros((fdim, 2), np.float32)
    state_V = np.zeros((2, fdim, k), np.float32)
    steps = np.zeros(fdim, np.int64)
    lr = np.array([hp[f"{g}_lr"] for g in GROUPS])
    wd = np.array([hp[f"{g}_wd"] for g in GROUPS])
    clip = hp["clip_gradient"] or 0.0
    eps = hp["eps"] if hp["eps"] is not None else _DEFAULT_EPS
    rescale = hp["rescale_grad"] or 0.0
    batch = hp["mini_batch_size"]
    n = indptr.size - 1
    decay = _decay_scale(indices, n, batch, fdim)
    max_nnz = int(np.diff(indptr).max())
    buf_rows = max(1, min(fdim, batch * max_nnz))
    slot = np.full(fdim, -1, np.int64)
    touched = np.empty(buf_rows, np.int64)
    gw = np.empty(buf_rows, np.float64)
    gV = np.empty((buf_rows, k), np.float64)
    acc = np.empty(k, np.float64)

    model = FMModel(bias[0], w, V, hp["predictor_type"], hp)
    history, best, waited = [], None, 0
    stop_metric = _STOP_METRIC[hp["predictor_type"]]
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        loss = _epoch(indptr, indices, values, y, order, batch, binary, bias, w, V, state_w,
                      state_V, steps, lr, wd, decay, clip, eps, rescale, slot, touched, gw, gV,
                      acc)
        seconds = time.perf_counter() - t0
        if not np.isfinite(bias[0]) or not np.isfinite(loss):
            raise FmprepError(f"training diverged in epoch {epoch} (non-finite weights); lower "
                              f"the learning rates or prep with {setting('days_scale')}years")
        model.w0 = float(bias[0])
        row = {"epoch": epoch, "train:loss": loss / n}
        if valid is not None:
            row.update({"valid:" + name[5:]: v
                        for name, v in metrics_on(model, *valid, binary).items()})
        if test is not None:
            row.update(metrics_on(model, *test, binary))
        row["seconds"] = seconds
        history.append(row)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k_}={v:.4g}" for k_, v in row.items()
                                                  if k_ != "epoch"))
        if progress is not None:
            progress(row)
        if valid is None:
            continue
        value = row[stop_metric]
        if best is None or value < best[1] - hp["early_stopping_tolerance"]:
            best, waited = (epoch, value), 0
        else:
            waited += 1
            if waited >= hp["early_stopping_patience"]:
                break
    return model, history, best


def train(train_records, test_records, hyperparameters, progress=None):
    """Train a factorization machine with mini-batch Adam, by default with early stopping.

    Early stopping (``early_stopping=true``, the default; fmprep-only, never sent to SageMaker):
    ``epochs`` is the most to run. Each customer's latest train review is held out as
    validation (:func:`fmprep.model.mcmc.latest_per_user_split` of the TRAIN records: the test
    protocol one step earlier; test rows never decide anything) and the model is fitted on the
    remaining train rows. After each epoch the validation RMSE -- cross-entropy (log-loss) for
    binary_classifier: smooth and sensitive to confidence, where accuracy moves in steps of one
    row -- is compared with the best so far; after ``early_stopping_patience`` epochs without an
    improvement larger than ``early_stopping_tolerance``, training stops. The returned model is
    then refitted from the same seed on every train row for the best epoch count. If no
    customer has two train rows there is nothing to hold out: all epochs run, with a warning.

    Parameters
    ----------
    train_records, test_records : SparseRecords
        CSR rows with labels, as :func:`fmprep.recordio.decode_records` returns them, in
        fmprep's FM layout (the customer is each row's first column, ``days_since_first`` the
        last feature) for early stopping's split. ``test_records`` may be None (no test
        metrics); they are only ever scored, never used to choose.
    hyperparameters : dict
        SageMaker FM hyperparameters plus fmprep's options (``seed``, ``binary_threshold``,
        ``early_stopping*``); see :func:`validate_hyperparameters`. ``feature_dim`` defaults to
        the records' shape.
    progress : callable, optional
        Called with each epoch's metrics dict as the epoch ends (the early-stopping run's,
        then the refit's).

    Returns
    -------
    model : FMModel
    metrics : dict
        ``solver`` ("sgd"); ``epochs`` (per epoch run: ``train:loss`` -- mean squared error, or
        cross-entropy for binary_classifier, of each row scored before its batch's update --
        with early stopping the ``valid:`` metrics, the test metrics and seconds); ``final``
        (the returned model's test metrics); ``epochs_run``, ``best_epoch`` (None without early
        stopping), ``stopped_early``; ``early_stopping`` (None when off, else ``metric``,
        ``best``, ``patience``, ``tolerance``, ``fit_rows``, ``valid_rows`` and ``refit``: the
        refit's per-epoch rows); ``train_seconds``, ``rows_per_second``, ``train_rows``,
        ``test_rows`` and ``warnings`` (e.g. a feature with large raw values).

    Raises
    ------
    FmprepError
        For invalid hyperparameters, records whose feature dimension differs from
        ``feature_dim``, or labels unfit for the predictor type.

    Notes
    -----
    Measured with ``python benchmarks/bench_sgd.py --study stopping --limit 40`` (generated
    reviews prepped with days_scale years,
    :func:`fmprep.model.hyperparameters.recommended_hyperparameters`; test RMSE, mean of seeds
    0, 1, 2; the test rows were scored only)::

        generated reviews (train rows)          20 k (6 k)  200 k (71 k)  1 M (368 k)
        10 epochs, no early stopping            0.9840      1.0777        1.0535
        40 epochs, no early stopping            0.9904      1.0753        1.0627
        limit 40, refit, patience 1             1.0014      1.0830        1.0616
        limit 40, refit, patience 2             0.9928      1.0791        1.0548
        limit 40, refit, patience 3 (default)   0.9791      1.0766        1.0548
          its best epochs                       10-12       11-12         9-11
          best epoch's weights, no refit        1.0050      1.0917        1.0714
        limit 40, refit, patience 5             0.9791      1.0766        1.0570
        limit 10 (recommended), patience 3      0.9846      1.0791        1.0561

    Early stopping finds the epoch count that was tuned by hand (10) from a limit of 40, where
    running all 40 epochs costs up to 0.009. Refitting beats keeping the best epoch's weights
    by 0.015-0.026: the held-out reviews are each customer's latest, the most telling about the
    test review that follows. Patience 1-2 stops on noise in the validation curve. The price is
    time: the search plus the refit took 1.5-2.5x the 10-epoch run (1 M: 9-16 s against 6 s).
    """
    hp = validate_hyperparameters(hyperparameters, train_records.shape or None)
    return fit(train_records, test_records, hp, progress)


def fit(train_records, test_records, hp: dict, progress=None):
    """:func:`train` with hyperparameters already validated: the same training, not validated
    again.

    Parameters
    ----------
    train_records, test_records : SparseRecords
        As for :func:`train`; ``test_records`` may be None.
    hp : dict
        Validated (:func:`fmprep.model.hyperparameters.validate_hyperparameters`), with
        ``feature_dim`` set; the records must have that feature dimension.
    progress : callable, optional
        Called with each epoch's metrics dict.

    Returns
    -------
    model : FMModel
    metrics : dict
        As :func:`train` returns them.

    Raises
    ------
    FmprepError
        For records whose feature dimension differs from ``feature_dim``, or labels unfit for
        the predictor type.
    """
    # The data check validate_hyperparameters makes in train; hp itself is not re-validated.
    check_feature_dim(hp, train_records.shape or None)
    fdim = hp["feature_dim"]
    binary = hp["predictor_type"] == "binary_classifier"
    if test_records is not None and test_records.shape and test_records.shape != fdim:
        raise FmprepError(f"test records have feature_dim {test_records.shape}, train has {fdim}; "
                          f"encode both channels in one {command('data')} run")
    _, indices, values = _csr_records(train_records, fdim, "train")
    y = labels_for(train_records, hp, "train")
    test = None
    if test_records is not None:
        _csr_records(test_records, fdim, "test")
        test = (test_records, labels_for(test_records, hp, "test"))
    warnings = _scale_warnings(indices, values)
    n = y.size

    t_start = time.perf_counter()
    stopping, valid = None, None
    if hp["early_stopping"]:
        # The split reads the days column at shape - 1: make sure shape is the model's.
        fit_set, valid = latest_per_user_split(train_records._replace(shape=fdim))
        if valid.indptr.size < 2:
            msg = ("early stopping skipped: no customer has two train rows to hold one out, so "
                   f"all {hp['epochs']} epochs ran; set early_stopping=false to silence this")
            log.warning(msg)
            warnings.append(msg)
            valid = None
    if valid is not None:
        model, history, best = _sgd(fit_set, labels_for(fit_set, hp, "train"), hp,
                                    hp["epochs"], test, (valid, labels_for(valid, hp, "train")),
                                    progress)
        rows_seen = (fit_set.indptr.size - 1) * len(history)
        # Refit on every train row: the held-out latest reviews are the most informative about
        # the test rows, and dropping them cost 0.015-0.026 RMSE (docstring's figures).
        model, refit, _ = _sgd(train_records, y, hp, best[0], test, None, progress)
        rows_seen += n * best[0]
        stopping = {"metric": _STOP_METRIC[hp["predictor_type"]], "best": best[1],
                    "patience": hp["early_stopping_patience"],
                    "tolerance": hp["early_stopping_tolerance"],
                    "fit_rows": int(fit_set.indptr.size - 1),
                    "valid_rows": int(valid.indptr.size - 1), "refit": refit}
        log.info("early stopping: best %s %.4f at epoch %d of %d run (limit %d); refitted on "
                 "every train row", stopping["metric"], best[1], best[0], len(history),
                 hp["epochs"])
    else:
        model, history, best = _sgd(train_records, y, hp, hp["epochs"], test, None, progress)
        rows_seen = n * len(history)
    train_seconds = time.perf_counter() - t_start
    metrics = {
        "predictor_type": hp["predictor_type"],
        "solver": "sgd",
        "train_rows": n,
        "test_rows": 0 if test is None else int(test[1].size),
        "epochs": history,
        "final": {} if test is None else metrics_on(model, *test, binary),
        "epochs_run": len(history),
        "best_epoch": None if best is None else best[0],
        "stopped_early": len(history) < hp["epochs"],
        "early_stopping": stopping,
        "train_seconds": train_seconds,
        "rows_per_second": rows_seen / train_seconds if train_seconds > 0 else None,
        "warnings": warnings,
    }
    return model, metrics
