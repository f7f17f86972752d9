"""Factorization Machines trained locally: the ``BACKEND=local`` side of ``make train``.

The model is Rendle's second-order factorization machine over a sparse row ``x``::

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <V_i, V_j> x_i x_j
         = w0 + sum_i w_i x_i + 1/2 sum_f [ (sum_i V_if x_i)^2 - sum_i V_if^2 x_i^2 ]

the second form costing O(nnz * num_factors) per row. ``regressor`` scores are ``y(x)`` trained
on squared error; ``binary_classifier`` scores are ``sigmoid(y(x))`` trained on log-loss with 0/1
labels.

Hyperparameters have SageMaker's names, meanings and defaults (``config.FM_DEFAULTS``,
docs/design.md §3), checked and typed by :func:`validate_hyperparameters`. fmprep-only options
(``config.FM_LOCAL_OPTIONS``) are never sent to SageMaker: ``seed`` (initialisation and the
per-epoch shuffle), ``binary_threshold`` (for ``binary_classifier``: label = rating >= threshold;
SageMaker itself expects 0/1 labels, so a SageMaker job needs them thresholded in the data),
``solver`` and ``mcmc_*`` (:mod:`fmprep.mcmc`) and ``early_stopping*``.

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
  ``config.FM_LOCAL_RECOMMENDED`` (:func:`recommended_hyperparameters` fills in the weight
  decays for the number of train rows); a SageMaker job gets the same SGD settings for every
  name the user leaves unset (:func:`sagemaker_default_hyperparameters`).
* Because the steps are scale-free, ``clip_gradient`` cannot tame a feature with large raw
  values: ``days_since_first`` in raw days (up to ~6000, the reference prep) multiplies every
  step of its weights by that much and test RMSE jumps between epochs. fmprep does not rescale
  inputs behind your back; it warns and recommends ``DAYS_SCALE=years`` (or ``unit``) for prep.
* ``days_since_first`` is in every row, so its factor vector is barely penalised and can give
  each customer a fitted trend in time, which the test row (the customer's latest review)
  extrapolates. On data without a time effect that costs some RMSE with ``DAYS_SCALE=years``
  on small files; ``unit`` (values in [0, 1]) shrinks it.
"""

from __future__ import annotations

import difflib
import io
import logging
import math
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from . import storage
from .config import (FM_DEFAULTS, FM_LOCAL_L2, FM_LOCAL_OPTIONS, FM_LOCAL_RECOMMENDED,
                     FM_OPTIONAL, FM_REQUIRED, MANIFEST)
from .errors import FmprepError
from .freshness import data_stamp
from .recordio import decode_records

__all__ = ["FMModel", "validate_hyperparameters", "sagemaker_hyperparameters",
           "recommended_hyperparameters", "sagemaker_default_hyperparameters", "train",
           "train_from_output", "biases_baseline"]

log = logging.getLogger(__name__)

MODEL_FORMAT = "fmprep-fm/1"
PREDICTOR_TYPES = ("regressor", "binary_classifier")


@numba.njit(cache=True)
def _row_output(indices, values, a, b, w0, w, V, acc):
    """FM output of one CSR row (entries a..b), with the O(nnz * k) sum trick.

    Leaves sum_j V[j, f] * x_j in ``acc``, which the gradient needs.
    """
    k = V.shape[1]
    acc[:] = 0.0
    y = w0
    sq = 0.0
    for j in range(a, b):
        c = indices[j]
        x = values[j]
        y += w[c] * x
        for f in range(k):
            vx = V[c, f] * x
            acc[f] += vx
            sq += vx * vx
    inter = 0.0
    for f in range(k):
        inter += acc[f] * acc[f]
    return y + 0.5 * (inter - sq)


@numba.njit(cache=True)
def _scores(indptr, indices, values, w0, w, V, sigmoid):
    """FM output of every CSR row, with the O(nnz * k) sum trick; float64 accumulators."""
    n = indptr.size - 1
    k = V.shape[1]
    out = np.empty(n, np.float32)
    acc = np.empty(k, np.float64)
    for r in range(n):
        y = _row_output(indices, values, indptr[r], indptr[r + 1], w0, w, V, acc)
        if sigmoid:
            y = 1.0 / (1.0 + math.exp(-y)) if y >= 0 else math.exp(y) / (1.0 + math.exp(y))
        out[r] = y
    return out


def _csr(indptr, indices, values, feature_dim):
    """Validate CSR arrays against the model and return contiguous typed copies/views."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if indptr.ndim != 1 or indptr.size == 0 or indptr[0] != 0:
        raise FmprepError("indptr must be 1-D, start with 0 and have n_rows + 1 entries")
    if indices.shape != values.shape or indptr[-1] != indices.size:
        raise FmprepError(f"indptr ends at {indptr[-1]} but there are {indices.size} indices and "
                          f"{values.size} values; pass one CSR matrix")
    if np.any(np.diff(indptr) < 0):
        raise FmprepError("indptr must not decrease; pass a valid CSR matrix")
    if indices.size and (indices.min() < 0 or indices.max() >= feature_dim):
        bad = int(indices.max() if indices.max() >= feature_dim else indices.min())
        raise FmprepError(f"feature index {bad} is outside [0, feature_dim={feature_dim}); "
                          "encode requests with the model's feature_dim")
    return indptr, indices, values


@dataclass
class FMModel:
    """A trained factorization machine.

    Attributes
    ----------
    w0 : float
        Global bias.
    w : numpy.ndarray of float32, shape (feature_dim,)
        Linear weights.
    V : numpy.ndarray of float32, shape (feature_dim, num_factors)
        Factor vectors, one row per feature.
    predictor_type : {"regressor", "binary_classifier"}
    hyperparameters : dict
        The validated hyperparameters the model was trained with (JSON-serialisable).
    """

    w0: float
    w: np.ndarray
    V: np.ndarray
    predictor_type: str = "regressor"
    hyperparameters: dict = field(default_factory=dict)

    def __post_init__(self):
        self.w0 = float(self.w0)
        self.w = np.ascontiguousarray(self.w, dtype=np.float32)
        self.V = np.ascontiguousarray(self.V, dtype=np.float32)
        if self.w.ndim != 1 or self.V.ndim != 2 or self.V.shape[0] != self.w.shape[0]:
            raise ValueError(f"w must be (feature_dim,) and V (feature_dim, num_factors); got "
                             f"{self.w.shape} and {self.V.shape}")
        if self.predictor_type not in PREDICTOR_TYPES:
            raise ValueError(f"predictor_type must be one of {PREDICTOR_TYPES}, got "
                             f"{self.predictor_type!r}")

    @property
    def feature_dim(self) -> int:
        """Number of input features (``w.shape[0]``)."""
        return self.w.shape[0]

    @property
    def num_factors(self) -> int:
        """Length of each factor vector (``V.shape[1]``)."""
        return self.V.shape[1]

    def predict(self, indptr, indices, values) -> np.ndarray:
        """Score CSR rows.

        Parameters
        ----------
        indptr : array_like of int, shape (n_rows + 1,)
        indices : array_like of int, shape (nnz,)
            Feature indices in ``[0, feature_dim)``; order within a row does not matter, but an
            index repeated within a row is treated as two features that interact.
        values : array_like of float, shape (nnz,)

        Returns
        -------
        numpy.ndarray of float32, shape (n_rows,)
            The regression value, or the probability of label 1 for ``binary_classifier``.

        Raises
        ------
        FmprepError
            If the arrays are not one CSR matrix or an index is outside the model.
        """
        indptr, indices, values = _csr(indptr, indices, values, self.feature_dim)
        return _scores(indptr, indices, values, self.w0, self.w, self.V,
                       self.predictor_type == "binary_classifier")

    def save(self, directory: str, storage_options: dict | None = None,
             data: dict | None = None) -> None:
        """Write ``model.npz`` (arrays only) and then ``model.json`` (metadata) to ``directory``.

        ``data`` (:func:`fmprep.freshness.data_stamp` of the training data) is recorded so that
        predict and deploy can refuse the model once ``make data`` has rebuilt the data.

        ``directory`` may be local or a URL (s3://). Nothing is pickled: :meth:`load` reads the
        arrays with ``allow_pickle=False``. ``model.json`` is written last, so a directory with
        it holds a complete model.
        """
        buf = io.BytesIO()
        np.savez(buf, w0=np.array([self.w0], np.float64), w=self.w, V=self.V)
        storage.write_bytes_atomic(storage.join(directory, "model.npz"), buf.getvalue(),
                                   storage_options)
        meta = {"format": MODEL_FORMAT, "predictor_type": self.predictor_type,
                "feature_dim": self.feature_dim, "num_factors": self.num_factors,
                "hyperparameters": self.hyperparameters}
        if data is not None:
            meta["data"] = data
        storage.write_json(storage.join(directory, "model.json"), meta, storage_options)

    @classmethod
    def load(cls, directory: str, storage_options: dict | None = None) -> "FMModel":
        """Read a model written by :meth:`save` from a local directory or URL.

        Raises
        ------
        FmprepError
            If the files are missing, of another format version, or disagree on the shapes.
        """
        meta = storage.read_json(storage.join(directory, "model.json"), storage_options)
        npz_url = storage.join(directory, "model.npz")
        fs, npz_path = storage.filesystem(npz_url, storage_options)
        if meta is None or not fs.exists(npz_path):
            raise FmprepError(f"no fmprep model in {directory} (model.json and model.npz "
                              "expected); run make train first or point MODEL_DIR at its output")
        if meta.get("format") != MODEL_FORMAT:
            raise FmprepError(f"{directory} holds model format {meta.get('format')!r}, this "
                              f"fmprep reads {MODEL_FORMAT!r}; retrain the model")
        with fs.open(npz_path, "rb") as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            w0, w, V = float(z["w0"][0]), z["w"], z["V"]
        if w.shape != (meta["feature_dim"],) or V.shape != (meta["feature_dim"],
                                                            meta["num_factors"]):
            raise FmprepError(f"{npz_url} arrays {w.shape}/{V.shape} disagree with model.json; "
                              "the model directory is corrupt, retrain")
        return cls(w0=w0, w=w, V=V, predictor_type=meta["predictor_type"],
                   hyperparameters=meta.get("hyperparameters", {}))


# ---------------------------------------------------------------------------------------------
# hyperparameters

_GROUPS = ("bias", "linear", "factors")
SOLVERS = ("auto", "sgd", "mcmc")
_INIT_METHODS = ("normal", "uniform", "constant")


def _spec():
    """name -> (kind, lower bound, lower bound inclusive?) for every accepted hyperparameter.

    kind is "int", "float" or a tuple of allowed strings; a bound of None means any value.
    """
    spec = {
        "feature_dim": ("int", 1, True),
        "num_factors": ("int", 1, True),
        "predictor_type": (PREDICTOR_TYPES, None, True),
        "epochs": ("int", 1, True),
        "mini_batch_size": ("int", 1, True),
        "clip_gradient": ("float", 0.0, False),
        "eps": ("float", 0.0, False),
        "rescale_grad": ("float", 0.0, False),
        "seed": ("int", 0, True),
        "binary_threshold": ("float", None, True),
        "solver": (SOLVERS, None, True),
        "mcmc_rank": ("int", 1, True),
        "mcmc_sweeps": ("int", 1, True),
        "mcmc_burn_in": ("int", 0, True),
        "mcmc_keep": ("int", 1, True),
        "mcmc_init_std": ("float", 0.0, False),
        "early_stopping": ("bool", None, True),
        "early_stopping_patience": ("int", 1, True),
        "early_stopping_tolerance": ("float", 0.0, True),
    }
    for g in _GROUPS:
        spec[f"{g}_init_method"] = (_INIT_METHODS, None, True)
        spec[f"{g}_init_sigma"] = ("float", 0.0, True)
        spec[f"{g}_init_scale"] = ("float", 0.0, True)
        spec[f"{g}_init_value"] = ("float", None, True)
        spec[f"{g}_lr"] = ("float", 0.0, True)
        spec[f"{g}_wd"] = ("float", 0.0, True)
    return spec


_SPEC = _spec()
# fmprep-only options that only the SGD solver reads: giving one means solver=sgd under auto.
_SGD_LOCAL = ("early_stopping", "early_stopping_patience", "early_stopping_tolerance")


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _coerce(name, raw):
    kind, low, inclusive = _SPEC[name]
    text = raw.strip() if isinstance(raw, str) else raw
    if kind == "bool":
        # Strings come from --hp / HP=; 0 and 1 from JSON or YAML written by hand.
        word = (str(text).lower() if isinstance(text, (str, bool, int, np.integer, np.bool_))
                else None)
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise FmprepError(f"hyperparameter {name}={raw!r} is not true or false; pass e.g. "
                          f"{name}=false")
    if isinstance(kind, tuple):
        if text not in kind:
            raise FmprepError(f"hyperparameter {name}={raw!r} is not valid; use one of "
                              f"{', '.join(kind)}")
        return text
    try:
        if isinstance(text, bool):
            raise ValueError
        number = float(text)
        if kind == "int":
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError, OverflowError):
        what = "an integer" if kind == "int" else "a number"
        raise FmprepError(f"hyperparameter {name}={raw!r} is not {what}; pass e.g. "
                          f"{name}={FM_DEFAULTS.get(name, 1)}") from None
    if not math.isfinite(number):
        raise FmprepError(f"hyperparameter {name}={raw!r} must be finite")
    if low is not None and (number < low or (number == low and not inclusive)):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise FmprepError(f"hyperparameter {name}={raw!r} is out of range; it must be {bound}")
    return number


def validate_hyperparameters(hyperparameters: dict, feature_dim: int | None = None) -> dict:
    """Check and type FM hyperparameters, filling in the defaults of ``config``.

    Values may be strings, as SageMaker passes them (``"256"``, ``"1e-3"``). Names are
    SageMaker's (``config.FM_DEFAULTS``, ``config.FM_OPTIONAL``, ``feature_dim``) plus the
    fmprep-only options of ``config.FM_LOCAL_OPTIONS``. A value of None means "not set".
    ``solver=auto`` is resolved here: ``sgd`` for a binary_classifier or when any setting that
    only SGD reads (epochs, num_factors, learning rates, ``early_stopping*``, ...) is given,
    else ``mcmc``. ``early_stopping`` accepts true/false, 1/0, yes/no or on/off.

    Parameters
    ----------
    hyperparameters : dict
        Name -> value.
    feature_dim : int, optional
        The data's feature dimension (from the manifest). Fills ``feature_dim`` when it is not
        given and must equal it when it is.

    Returns
    -------
    dict
        Every accepted name, typed; optional hyperparameters that are not set are None.

    Raises
    ------
    FmprepError
        For an unknown name, a value of the wrong type or out of range, an init method without
        its scale / value, ``binary_threshold`` with a regressor, or a ``feature_dim`` that
        differs from the data's.
    """
    given = {k: v for k, v in dict(hyperparameters or {}).items() if v is not None}
    unknown = sorted(set(given) - set(_SPEC))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(_SPEC), n=1)
        hint = f"did you mean {close[0]}?" if close else "see config.FM_DEFAULTS for the names"
        raise FmprepError(f"unknown FM hyperparameter {unknown[0]!r}; {hint}")
    hp = {**FM_DEFAULTS, **{k: None for k in FM_OPTIONAL + FM_REQUIRED}, **FM_LOCAL_OPTIONS}
    hp.update({name: _coerce(name, value) for name, value in given.items()})
    if feature_dim is not None:
        if hp["feature_dim"] is None:
            hp["feature_dim"] = int(feature_dim)
        elif hp["feature_dim"] != feature_dim:
            raise FmprepError(f"hyperparameter feature_dim={hp['feature_dim']} but the data has "
                              f"feature_dim {feature_dim}; drop feature_dim (it is read from the "
                              "manifest) or re-run make data")
    if hp["feature_dim"] is None:
        raise FmprepError("hyperparameter feature_dim is required; pass the manifest's "
                          "feature_dim or train from an OUTPUT directory")
    for g in _GROUPS:
        method = hp[f"{g}_init_method"]
        needed = {"uniform": f"{g}_init_scale", "constant": f"{g}_init_value"}.get(method)
        if needed and hp[needed] is None:
            raise FmprepError(f"{g}_init_method={method} needs {needed}; set it or use "
                              f"{g}_init_method=normal")
    if hp["solver"] == "auto":
        # Settings that only SGD (and SageMaker) read say which solver the user means.
        sgd_only = sorted(set(given) & (set(FM_DEFAULTS) | set(FM_OPTIONAL) | set(_SGD_LOCAL))
                          - {"predictor_type"})
        binary = hp["predictor_type"] == "binary_classifier"
        hp["solver"] = "sgd" if binary or sgd_only else "mcmc"
    if hp["solver"] == "mcmc" and hp["predictor_type"] == "binary_classifier":
        raise FmprepError("solver=mcmc trains regressors; use solver=sgd (or auto) for "
                          "predictor_type=binary_classifier")
    if hp["mcmc_burn_in"] + hp["mcmc_keep"] > hp["mcmc_sweeps"]:
        raise FmprepError(f"mcmc_sweeps={hp['mcmc_sweeps']} leaves no room for mcmc_burn_in="
                          f"{hp['mcmc_burn_in']} and mcmc_keep={hp['mcmc_keep']} samples; raise "
                          "mcmc_sweeps or lower the others")
    if hp["binary_threshold"] is not None and hp["predictor_type"] != "binary_classifier":
        raise FmprepError("binary_threshold applies only to predictor_type=binary_classifier; "
                          "drop it or change predictor_type")
    return hp


def sagemaker_hyperparameters(hyperparameters: dict) -> dict:
    """The SageMaker training-job form of validated hyperparameters: set values as strings.

    fmprep-only options (every name in ``config.FM_LOCAL_OPTIONS``: ``seed``,
    ``binary_threshold``, ``solver``, ``mcmc_*``, ``early_stopping*``) and unset optional names
    are left out.
    """
    return {k: str(v) for k, v in hyperparameters.items()
            if v is not None and k not in FM_LOCAL_OPTIONS}


def recommended_hyperparameters(train_rows: int) -> dict:
    """fmprep's recommended local-training hyperparameters for ``train_rows`` train rows.

    ``config.FM_LOCAL_RECOMMENDED`` plus ``linear_wd`` and ``factors_wd`` from
    ``config.FM_LOCAL_L2`` divided by ``train_rows`` (weight decay is the penalty of the mean
    loss, see the module docstring); every other hyperparameter keeps its default.
    :func:`sagemaker_default_hyperparameters` is the SageMaker job's version of these.

    Parameters
    ----------
    train_rows : int
        Rows in the train channel (``manifest["channels"]["train"]["rows"]``).

    Returns
    -------
    dict
        Hyperparameter name -> value, ready for :func:`train` or ``make train HP=...``.

    Raises
    ------
    FmprepError
        If ``train_rows`` is not a positive integer.

    Notes
    -----
    Prep with ``DAYS_SCALE=years`` (or ``unit``): with raw days (values in the thousands) these
    learning rates make training unstable.
    """
    if isinstance(train_rows, bool) or not isinstance(train_rows, (int, np.integer)) \
            or train_rows < 1:
        raise FmprepError(f"train_rows must be a positive integer, got {train_rows!r}")
    return {**FM_LOCAL_RECOMMENDED,
            "linear_wd": float(f"{FM_LOCAL_L2['linear'] / train_rows:.3g}"),
            "factors_wd": float(f"{FM_LOCAL_L2['factors'] / train_rows:.3g}")}


def sagemaker_default_hyperparameters(train_rows: int) -> dict:
    """The settings a SageMaker training job gets for every hyperparameter the user leaves unset.

    :func:`recommended_hyperparameters` without fmprep's local-only options (``solver``): the
    SGD settings whose names mean the same to SageMaker's built-in FM as to fmprep's SGD
    solver, its twin (num_factors, epochs, mini_batch_size, the learning rates and weight
    decays). SageMaker has no early stopping for FM, so ``epochs`` is run in full; 10 is where
    early stopping lands on generated data (:func:`train`). ``fmprep.sagemaker.train`` sends
    these for every name the user does not set.

    Measured in the twin (``python benchmarks/bench_sgd.py --study sagemaker``; generated
    reviews prepped with DAYS_SCALE=years; test RMSE, mean of seeds 0, 1, 2; a fixed number of
    epochs as SageMaker runs them)::

        generated reviews                        20 k      200 k     1 M
        train rows                               6 335     71 188    367 894
        predict the train mean                   1.1972    1.2541    1.2490
        biases baseline (biases_baseline)        1.0459    1.1621    1.1475
        SageMaker's defaults (3 epochs)          1.1944    1.2373    1.2250
        these settings                           0.9840    1.0777    1.0535
          w0 starting at 0                       1.0045    1.0797    1.0520
          weight decay applied lazily            1.0676    1.1813    1.1546
          SageMaker's weight decays              1.1602    1.1770    1.1145
          SageMaker's weight decays, lazily      1.1420    1.1887    1.1535

    The indented rows probe what the twin cannot know of SageMaker's optimizer. Its w0 starts
    near 0, not at the mean label: that costs 0.02 RMSE on 6 k rows and nothing from 71 k on,
    so no bias initialisation is sent (it would need every train label read). Its weight
    decay may touch a feature only in
    the batches that hold it, as MXNet's sparse Adam does with ``lazy_update``: fmprep scales
    decay up for that (module docstring), so lazily these weight decays regularise rare
    customers and products far less and the job scores like an unregularised FM. No one value
    is good under both readings (1 M rows, seed 0: the best lazy weight decays, 1e-3, score
    1.059 lazily and 1.229 in the twin); fmprep's are the best in the twin and, lazily, better
    than SageMaker's own or within 0.001 of them, so they are sent.

    Parameters
    ----------
    train_rows : int
        Rows in the train channel (``manifest["channels"]["train"]["rows"]``): the weight
        decays are L2 penalties divided by it.

    Returns
    -------
    dict
        Hyperparameter name -> value, all valid SageMaker FM hyperparameters.

    Raises
    ------
    FmprepError
        If ``train_rows`` is not a positive integer.
    """
    return {k: v for k, v in recommended_hyperparameters(train_rows).items()
            if k not in FM_LOCAL_OPTIONS}


# ---------------------------------------------------------------------------------------------
# training

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
    msg = (f"feature column(s) {cols[:5].tolist()} hold values up to "
           f"{float(np.abs(values[large]).max()):.0f}; large raw values make training unstable "
           "(test RMSE jumps between epochs): prep with DAYS_SCALE=years or unit, or lower the "
           "learning rates")
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


def _labels(records, hp, what):
    """The records' labels as float64, thresholded for binary_classifier; checked."""
    if records.labels is None:
        raise FmprepError(f"the {what} records have no labels; encode them with labels")
    y = np.asarray(records.labels, dtype=np.float64)
    if np.isnan(y).any():
        raise FmprepError(f"{int(np.isnan(y).sum())} {what} records have no label; re-run "
                          "make data")
    if hp["predictor_type"] == "binary_classifier":
        if hp["binary_threshold"] is not None:
            return (y >= hp["binary_threshold"]).astype(np.float64)
        if not np.isin(y, (0.0, 1.0)).all():
            raise FmprepError(f"binary_classifier needs 0/1 labels but the {what} labels hold "
                              f"{np.unique(y)[:5].tolist()}; set binary_threshold (e.g. 4: "
                              "rating >= 4 -> 1)")
    return y


def _evaluate(model, records, y, binary):
    """SageMaker-named test metrics of ``model`` on ``records`` with labels ``y``."""
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
        raise FmprepError(f"the {what} channel has no records; re-run make data")
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
    lr = np.array([hp[f"{g}_lr"] for g in _GROUPS])
    wd = np.array([hp[f"{g}_wd"] for g in _GROUPS])
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
                              "the learning rates or prep with DAYS_SCALE=years")
        model.w0 = float(bias[0])
        row = {"epoch": epoch, "train:loss": loss / n}
        if valid is not None:
            row.update({"valid:" + name[5:]: v
                        for name, v in _evaluate(model, *valid, binary).items()})
        if test is not None:
            row.update(_evaluate(model, *test, binary))
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
    validation (:func:`fmprep.mcmc.latest_per_user_split` of the TRAIN records: the test
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
    reviews prepped with DAYS_SCALE=years, :func:`recommended_hyperparameters`; test RMSE,
    mean of seeds 0, 1, 2; the test rows were scored only)::

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
    fdim = hp["feature_dim"]
    binary = hp["predictor_type"] == "binary_classifier"
    if test_records is not None and test_records.shape and test_records.shape != fdim:
        raise FmprepError(f"test records have feature_dim {test_records.shape}, train has {fdim}; "
                          "encode both channels in one make data run")
    _, indices, values = _csr_records(train_records, fdim, "train")
    y = _labels(train_records, hp, "train")
    test = None
    if test_records is not None:
        _csr_records(test_records, fdim, "test")
        test = (test_records, _labels(test_records, hp, "test"))
    warnings = _scale_warnings(indices, values)
    n = y.size

    t_start = time.perf_counter()
    stopping, valid = None, None
    if hp["early_stopping"]:
        from .mcmc import latest_per_user_split  # mcmc imports this module

        # The split reads the days column at shape - 1: make sure shape is the model's.
        fit, valid = latest_per_user_split(train_records._replace(shape=fdim))
        if valid.indptr.size < 2:
            msg = ("early stopping skipped: no customer has two train rows to hold one out, so "
                   f"all {hp['epochs']} epochs ran; set early_stopping=false to silence this")
            log.warning(msg)
            warnings.append(msg)
            valid = None
    if valid is not None:
        model, history, best = _sgd(fit, _labels(fit, hp, "train"), hp, hp["epochs"], test,
                                    (valid, _labels(valid, hp, "train")), progress)
        rows_seen = (fit.indptr.size - 1) * len(history)
        # Refit on every train row: the held-out latest reviews are the most informative about
        # the test rows, and dropping them cost 0.015-0.026 RMSE (docstring's figures).
        model, refit, _ = _sgd(train_records, y, hp, best[0], test, None, progress)
        rows_seen += n * best[0]
        stopping = {"metric": _STOP_METRIC[hp["predictor_type"]], "best": best[1],
                    "patience": hp["early_stopping_patience"],
                    "tolerance": hp["early_stopping_tolerance"],
                    "fit_rows": int(fit.indptr.size - 1), "valid_rows": int(valid.indptr.size - 1),
                    "refit": refit}
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
        "final": {} if test is None else _evaluate(model, *test, binary),
        "epochs_run": len(history),
        "best_epoch": None if best is None else best[0],
        "stopped_early": len(history) < hp["epochs"],
        "early_stopping": stopping,
        "train_seconds": train_seconds,
        "rows_per_second": rows_seen / train_seconds if train_seconds > 0 else None,
        "warnings": warnings,
    }
    return model, metrics


def write_evaluation(model, train_records, test_records, manifest: dict, model_dir: str,
                     storage_options: dict | None = None, ranking_model=None) -> dict:
    """Evaluate ``model`` (and the ``ranking_model`` recommend uses, if given) against the
    baselines (:mod:`fmprep.evaluate`) and write ``evaluation.json`` beside it; regressors only
    (a classifier's scores are not ratings)."""
    from .evaluate import evaluate

    if model.predictor_type != "regressor":
        return {}
    if "num_users" not in manifest:
        log.warning("evaluation skipped: the manifest does not say where user and item columns "
                    "are (num_users, num_items); write OUTPUT with make data")
        return {}
    result = evaluate(model, train_records, test_records, int(manifest["num_users"]),
                      int(manifest["num_items"]), ranking_model=ranking_model)
    result["data"] = data_stamp(manifest)
    storage.write_json(storage.join(model_dir, "evaluation.json"), result, storage_options)
    r, k = result["ranking"], result["ranking"]["k"]
    best = "recommender" if "recommender" in r else "model"
    log.info("evaluation: test rmse %.4f (biases only %.4f, train mean %.4f); HR@%d %.4f "
             "(popularity %.4f)", result["rating"]["model"]["rmse"],
             result["rating"]["biases"]["rmse"], result["rating"]["global_mean"]["rmse"], k,
             r[best][f"hr@{k}"], r["popularity"][f"hr@{k}"])
    return result


def train_mcmc_model(train_records, test_records, hyperparameters: dict, manifest: dict,
                     progress=None):
    """Bayesian FM by Gibbs sampling (:mod:`fmprep.mcmc`) with fmprep's feature groups.

    Parameters
    ----------
    train_records, test_records : SparseRecords
        The channels; test rows are scored after each sweep for the learning curve only, they
        never steer the sampler.
    hyperparameters : dict
        Validated (:func:`validate_hyperparameters`); the ``mcmc_*`` options and ``seed``.
    manifest : dict
        OUTPUT's manifest: num_users and num_items give the feature groups.
    progress : callable, optional
        Called with each sweep's metrics.

    Returns
    -------
    model : FMModel
    metrics : dict
        As :func:`train`'s: ``epochs`` (one row per sweep: ``train:loss``, and ``test:rmse`` of
        the running posterior mean after burn-in), ``final`` (the deployed model's test
        metrics), ``train_seconds``, ``train_rows``, ``test_rows``, ``solver``.
    """
    from .mcmc import groups_for, train_mcmc

    hp = hyperparameters
    groups = groups_for(hp["feature_dim"], int(manifest["num_users"]),
                        int(manifest["num_items"]))
    model, m = train_mcmc(train_records, groups, rank=hp["mcmc_rank"], n_iter=hp["mcmc_sweeps"],
                          burn_in=hp["mcmc_burn_in"], keep=hp["mcmc_keep"], seed=hp["seed"],
                          init_std=hp["mcmc_init_std"], valid=test_records, progress=progress)
    model.hyperparameters = hp
    epochs = [{"epoch": r["iteration"], "train:loss": r["train:rmse"] ** 2,
               **({"test:rmse": r["valid:rmse"]} if "valid:rmse" in r else {}),
               "seconds": r["seconds"]} for r in m["iterations"]]
    y_test = _labels(test_records, hp, "test")
    metrics = {"predictor_type": "regressor", "solver": "mcmc", "train_rows": m["train_rows"],
               "test_rows": int(y_test.size), "epochs": epochs,
               "final": _evaluate(model, test_records, y_test, False),
               "train_seconds": m["train_seconds"], "num_factors": model.num_factors,
               "kept_iterations": m["kept_iterations"], "warnings": []}
    log.info("mcmc: %d sweeps, %d kept samples of rank %d, test:rmse %.4f (%.1f s)",
             hp["mcmc_sweeps"], hp["mcmc_keep"], hp["mcmc_rank"], metrics["final"]["test:rmse"],
             metrics["train_seconds"])
    return model, metrics


def read_channel(output_dir: str, manifest: dict, channel: str,
                 storage_options: dict | None = None):
    """Read and decode every shard of one channel listed in an OUTPUT manifest.

    Returns
    -------
    SparseRecords
        The shards' records concatenated in manifest order.
    """
    from .recordio import SparseRecords

    shards = manifest.get("channels", {}).get(channel, {}).get("shards")
    if not shards:
        raise FmprepError(f"{output_dir} manifest lists no {channel} shards; re-run make data")
    parts = []
    for shard in shards:
        url = storage.join(output_dir, *shard["file"].split("/"))
        with storage.open_file(url, "rb", storage_options) as f:
            data = f.read()
        try:
            parts.append(decode_records(data))
        except ValueError as err:
            raise FmprepError(f"{url}: {err}; re-run make data") from None
    dims = {p.shape for p in parts if p.shape}
    if len(dims) > 1:
        raise FmprepError(f"{channel} shards disagree on feature_dim {sorted(dims)}; re-run "
                          "make data with FORCE=1")
    offsets = np.cumsum([0] + [p.indices.size for p in parts[:-1]])
    indptr = np.concatenate([np.zeros(1, np.int64)]
                            + [p.indptr[1:] + o for p, o in zip(parts, offsets)])
    labels = None
    if any(p.labels is not None for p in parts):
        labels = np.concatenate([p.labels if p.labels is not None
                                 else np.full(p.indptr.size - 1, np.nan, np.float32)
                                 for p in parts])
    return SparseRecords(indptr, np.concatenate([p.indices for p in parts]),
                         np.concatenate([p.values for p in parts]), labels,
                         dims.pop() if dims else 0)


def train_from_output(output_dir: str, model_dir: str, hyperparameters: dict,
                      storage_options: dict | None = None, progress=None) -> dict:
    """Train on an OUTPUT directory of ``make data`` and save the model and its metrics.

    Reads ``manifest.json`` and every train and test shard (local or URL, via fsspec), trains
    with :func:`train`, and writes ``model.npz``, ``model.json`` and ``metrics.json`` to
    ``model_dir``.

    Parameters
    ----------
    output_dir : str
        The OUTPUT directory (``manifest.json``, ``train/``, ``test/``).
    model_dir : str
        Where the model and metrics go (local or URL).
    hyperparameters : dict
        As for :func:`train`; ``feature_dim`` comes from the manifest.
    storage_options : dict, optional
        fsspec options for both locations.
    progress : callable, optional
        Called with each epoch's metrics.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``, with ``wall_seconds`` (reading included).
    """
    t0 = time.perf_counter()
    manifest = storage.read_json(storage.join(output_dir, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"no {MANIFEST} in {output_dir}; run make data first (OUTPUT= must "
                          "point at its output)")
    hp = validate_hyperparameters(hyperparameters, manifest["feature_dim"])
    train_records = read_channel(output_dir, manifest, "train", storage_options)
    test_records = read_channel(output_dir, manifest, "test", storage_options)
    read_seconds = time.perf_counter() - t0
    if hp["solver"] == "mcmc":
        model, metrics = train_mcmc_model(train_records, test_records, hp, manifest, progress)
    else:
        model, metrics = train(train_records, test_records, hp, progress)
    model.save(model_dir, storage_options, data=data_stamp(manifest))
    ranking_model = None
    if hp["predictor_type"] == "regressor" and "num_users" in manifest:
        from .ranking import fit_ranking_model
        ranking_model = fit_ranking_model(train_records, manifest, model_dir, hp["seed"],
                                          storage_options)
    write_evaluation(model, train_records, test_records, manifest, model_dir, storage_options,
                     ranking_model)
    metrics["read_seconds"] = read_seconds
    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics["hyperparameters"] = hp
    storage.write_json(storage.join(model_dir, "metrics.json"), metrics, storage_options)
    return metrics


# ---------------------------------------------------------------------------------------------
# baseline


def biases_baseline(train_records, test_records, reg: float = 5.0, sweeps: int = 10) -> float:
    """Test RMSE of global mean + customer bias + product bias, fitted on ``train_records``.

    Regularised least squares ``sum (r - mu - b_u - b_i)^2 + reg * (|b_u|^2 + |b_i|^2)``
    solved by alternating exact updates of the user and the item biases. Rows are fmprep's FM
    layout: the user is each row's first column, the item its second (other columns, such as
    days_since_first, are ignored). Users or items unseen in training get bias 0.

    Parameters
    ----------
    train_records, test_records : SparseRecords
        Labelled rows with at least two entries each.
    reg : float
        L2 penalty on each bias.
    sweeps : int
        Alternating updates of (user biases, item biases).

    Returns
    -------
    float
        Root mean squared error on ``test_records``.
    """
    from .evaluate import fit_biases

    def pairs(records, what):
        starts = records.indptr[:-1]
        if np.any(np.diff(records.indptr) < 2):
            raise FmprepError(f"{what} rows need a user and an item column (fmprep FM layout)")
        return records.indices[starts], records.indices[starts + 1], \
            np.asarray(records.labels, np.float64)

    u, i, r = pairs(train_records, "train")
    tu, ti, tr = pairs(test_records, "test")
    mu, bu, bi = fit_biases(u, i, r, reg, sweeps)
    dim = int(max(tu.max(), ti.max())) + 1
    bu, bi = np.pad(bu, (0, max(0, dim - bu.size))), np.pad(bi, (0, max(0, dim - bi.size)))
    pred = mu + bu[tu] + bi[ti]
    return float(np.sqrt(np.mean((pred - tr) ** 2)))
