"""The factorization machine: :class:`FMModel`, its numba scoring kernels and its files.

The model is Rendle's second-order factorization machine over a sparse row ``x``::

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <V_i, V_j> x_i x_j
         = w0 + sum_i w_i x_i + 1/2 sum_f [ (sum_i V_if x_i)^2 - sum_i V_if^2 x_i^2 ]

the second form costing O(nnz * num_factors) per row. ``regressor`` scores are ``y(x)``;
``binary_classifier`` scores are ``sigmoid(y(x))``, the probability of label 1.

Rows are CSR arrays (``indptr``, ``indices``, ``values``) with indices in ``[0, feature_dim)``.
fmprep's FM row layout, as ``make data`` encodes it (:func:`fmprep.recordio.encode_fm_rows`):
the customer's one-hot column first, the product's (offset by ``num_users``) second, and
``days_since_first`` as the last feature (column ``feature_dim - 1``). The model itself reads
any layout; early stopping's hold-out (:func:`fmprep.model.mcmc.latest_per_user_split`), the
MCMC feature groups and the baselines rely on this one.

Trainers: :mod:`fmprep.model.sgd` (mini-batch Adam, SageMaker's twin) and
:mod:`fmprep.model.mcmc` (Bayesian FM); the hyperparameter contract is
:mod:`fmprep.model.hyperparameters`; training from ``make data``'s OUTPUT is
:mod:`fmprep.model.training`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numba
import numpy as np

from .. import storage
from ..errors import FmprepError, command, setting
from .hyperparameters import PREDICTOR_TYPES

__all__ = ["FMModel", "MODEL_FORMAT"]

MODEL_FORMAT = "fmprep-fm/1"
# A saved model: the arrays, then the metadata (written last: a directory with it is complete).
ARRAYS, META = "model.npz", "model.json"
MODEL_FILES = (ARRAYS, META)


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

        Parameters
        ----------
        directory : str
            Local directory or URL.
        storage_options : dict, optional
            fsspec options for a URL.
        data : dict, optional
            The training data's stamp, recorded in ``model.json``.
        """
        buf = io.BytesIO()
        np.savez(buf, w0=np.array([self.w0], np.float64), w=self.w, V=self.V)
        storage.write_bytes_atomic(storage.join(directory, ARRAYS), buf.getvalue(),
                                   storage_options)
        meta = {"format": MODEL_FORMAT, "predictor_type": self.predictor_type,
                "feature_dim": self.feature_dim, "num_factors": self.num_factors,
                "hyperparameters": self.hyperparameters}
        if data is not None:
            meta["data"] = data
        storage.write_json(storage.join(directory, META), meta, storage_options)

    @classmethod
    def load(cls, directory: str, storage_options: dict | None = None) -> "FMModel":
        """Read a model written by :meth:`save` from a local directory or URL.

        Parameters
        ----------
        directory : str
            Local directory or URL holding ``model.json`` and ``model.npz``.
        storage_options : dict, optional
            fsspec options for a URL.

        Returns
        -------
        FMModel

        Raises
        ------
        FmprepError
            If the files are missing, of another format version, or disagree on the shapes.
        """
        meta = storage.read_json(storage.join(directory, META), storage_options)
        npz_url = storage.join(directory, ARRAYS)
        fs, npz_path = storage.filesystem(npz_url, storage_options)
        if meta is None or not fs.exists(npz_path):
            raise FmprepError(f"no fmprep model in {directory} (model.json and model.npz "
                              f"expected); run {command('train')} first or point "
                              f"{setting('model_dir')} at its output")
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
