"""Training from ``make data``'s OUTPUT: read the shards, train, save, evaluate.

The local ``make train`` (the ``local`` backend): :func:`read_channel` decodes a channel's
RecordIO shards listed in the manifest; :func:`train_from_output` validates the user's
hyperparameters and trains with the solver they resolve to -- :func:`fmprep.model.sgd.fit` or
:func:`train_mcmc_model` (:mod:`fmprep.model.mcmc`) -- then saves the model, fits the ranking
model beside it (:mod:`fmprep.model.ranking`) and writes ``metrics.json`` and
``evaluation.json`` (:func:`write_evaluation`). :func:`fit_output` is the same for a caller that
has read the manifest and validated the hyperparameters itself (``make train`` validates before
it chooses a backend), so neither is done twice. :func:`biases_baseline` is the yardstick the
trainers are measured against.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import storage
from ..config import MANIFEST
from ..errors import FmprepError, command, setting
from ..freshness import data_stamp
from ..recordio import SparseRecords, decode_records
from .evaluate import evaluate, fit_biases
from .hyperparameters import check_feature_dim, validate_hyperparameters
from .mcmc import groups_for, train_mcmc
from .ranking import fit_ranking_model
from .sgd import fit, labels_for, metrics_on

__all__ = ["read_channel", "train_from_output", "fit_output", "train_mcmc_model",
           "write_evaluation", "biases_baseline"]

log = logging.getLogger(__name__)

# Beside the model in MODEL_DIR.
METRICS = "metrics.json"
EVALUATION = "evaluation.json"


def read_channel(output_dir: str, manifest: dict, channel: str,
                 storage_options: dict | None = None):
    """Read and decode every shard of one channel listed in an OUTPUT manifest.

    Parameters
    ----------
    output_dir : str
        The OUTPUT directory (local or URL).
    manifest : dict
        Its manifest, which lists the shards.
    channel : {"train", "test"}
    storage_options : dict, optional
        fsspec options for ``output_dir``.

    Returns
    -------
    SparseRecords
        The shards' records concatenated in manifest order.

    Raises
    ------
    FmprepError
        If the manifest lists no shards for ``channel``, a shard does not decode, or the shards
        disagree on ``feature_dim``.
    """
    shards = manifest.get("channels", {}).get(channel, {}).get("shards")
    if not shards:
        raise FmprepError(f"{output_dir} manifest lists no {channel} shards; re-run "
                          f"{command('data')}")
    parts = []
    for shard in shards:
        url = storage.join(output_dir, *shard["file"].split("/"))
        with storage.open_file(url, "rb", storage_options) as f:
            data = f.read()
        try:
            parts.append(decode_records(data))
        except ValueError as err:
            raise FmprepError(f"{url}: {err}; re-run {command('data')}") from None
    dims = {p.shape for p in parts if p.shape}
    if len(dims) > 1:
        raise FmprepError(f"{channel} shards disagree on feature_dim {sorted(dims)}; re-run "
                          f"{command('data')} with {setting('force')}1")
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

    Reads ``manifest.json``, validates ``hyperparameters`` against it and trains with
    :func:`fit_output`: every train and test shard is read (local or URL, via fsspec), the
    model trained by the solver the hyperparameters resolve to, and ``model.npz``,
    ``model.json``, ``metrics.json`` and (regressors) ``evaluation.json`` and the ranking model
    written to ``model_dir``.

    Parameters
    ----------
    output_dir : str
        The OUTPUT directory (``manifest.json``, ``train/``, ``test/``).
    model_dir : str
        Where the model and metrics go (local or URL).
    hyperparameters : dict
        As for :func:`fmprep.model.sgd.train`; ``feature_dim`` comes from the manifest.
    storage_options : dict, optional
        fsspec options for both locations.
    progress : callable, optional
        Called with each epoch's metrics.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``, with ``wall_seconds`` (reading included).

    Raises
    ------
    FmprepError
        Without a manifest, for invalid hyperparameters, or unreadable shards.
    """
    manifest = storage.read_json(storage.join(output_dir, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"no {MANIFEST} in {output_dir}; run {command('data')} first "
                          f"({setting('output')} must point at its output)")
    hp = validate_hyperparameters(hyperparameters, manifest["feature_dim"])
    return fit_output(output_dir, model_dir, hp, manifest, storage_options, progress)


def fit_output(output_dir: str, model_dir: str, hp: dict, manifest: dict,
               storage_options: dict | None = None, progress=None) -> dict:
    """:func:`train_from_output` with the manifest already read and the hyperparameters
    already validated against it: neither is done again.

    Parameters
    ----------
    output_dir : str
        The OUTPUT directory (``train/``, ``test/``).
    model_dir : str
        Where the model and metrics go (local or URL).
    hp : dict
        Validated (:func:`fmprep.model.hyperparameters.validate_hyperparameters`) with the
        manifest's ``feature_dim``.
    manifest : dict
        OUTPUT's manifest (:func:`fmprep.freshness.read_manifest`).
    storage_options : dict, optional
        fsspec options for both locations.
    progress : callable, optional
        Called with each epoch's (or sweep's) metrics.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``: the trainer's (:func:`fmprep.model.sgd.train`,
        :func:`train_mcmc_model`) plus ``read_seconds``, ``wall_seconds`` (reading included)
        and ``hyperparameters``.

    Raises
    ------
    FmprepError
        For ``hp`` validated against another feature_dim, or unreadable shards.
    """
    check_feature_dim(hp, manifest["feature_dim"])
    t0 = time.perf_counter()
    train_records = read_channel(output_dir, manifest, "train", storage_options)
    test_records = read_channel(output_dir, manifest, "test", storage_options)
    read_seconds = time.perf_counter() - t0
    if hp["solver"] == "mcmc":
        model, metrics = train_mcmc_model(train_records, test_records, hp, manifest, progress)
    else:
        model, metrics = fit(train_records, test_records, hp, progress)
    model.save(model_dir, storage_options, data=data_stamp(manifest))
    ranking_model = None
    if hp["predictor_type"] == "regressor" and "num_users" in manifest:
        ranking_model = fit_ranking_model(train_records, manifest, model_dir, hp["seed"],
                                          storage_options)
    write_evaluation(model, train_records, test_records, manifest, model_dir, storage_options,
                     ranking_model)
    metrics["read_seconds"] = read_seconds
    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics["hyperparameters"] = hp
    storage.write_json(storage.join(model_dir, METRICS), metrics, storage_options)
    return metrics


def train_mcmc_model(train_records, test_records, hyperparameters: dict, manifest: dict,
                     progress=None):
    """Bayesian FM by Gibbs sampling (:mod:`fmprep.model.mcmc`) with fmprep's feature groups.

    Parameters
    ----------
    train_records, test_records : SparseRecords
        The channels; test rows are scored after each sweep for the learning curve only, they
        never steer the sampler.
    hyperparameters : dict
        Validated (:func:`fmprep.model.hyperparameters.validate_hyperparameters`); the
        ``mcmc_*`` options and ``seed`` are read. Not validated again.
    manifest : dict
        OUTPUT's manifest: num_users and num_items give the feature groups.
    progress : callable, optional
        Called with each sweep's metrics.

    Returns
    -------
    model : FMModel
    metrics : dict
        As :func:`fmprep.model.sgd.train`'s: ``epochs`` (one row per sweep: ``train:loss``,
        and ``test:rmse`` of the running posterior mean after burn-in), ``final`` (the deployed
        model's test metrics), ``train_seconds``, ``train_rows``, ``test_rows``, ``solver``.
    """
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
    y_test = labels_for(test_records, hp, "test")
    metrics = {"predictor_type": "regressor", "solver": "mcmc", "train_rows": m["train_rows"],
               "test_rows": int(y_test.size), "epochs": epochs,
               "final": metrics_on(model, test_records, y_test, False),
               "train_seconds": m["train_seconds"], "num_factors": model.num_factors,
               "kept_iterations": m["kept_iterations"], "warnings": []}
    log.info("mcmc: %d sweeps, %d kept samples of rank %d, test:rmse %.4f (%.1f s)",
             hp["mcmc_sweeps"], hp["mcmc_keep"], hp["mcmc_rank"], metrics["final"]["test:rmse"],
             metrics["train_seconds"])
    return model, metrics


def write_evaluation(model, train_records, test_records, manifest: dict, model_dir: str,
                     storage_options: dict | None = None, ranking_model=None) -> dict:
    """Evaluate ``model`` against the baselines and write ``evaluation.json`` beside it.

    Regressors only (a classifier's scores are not ratings).

    Parameters
    ----------
    model : FMModel
        The rating model.
    train_records, test_records : SparseRecords
        OUTPUT's channels (:func:`read_channel`).
    manifest : dict
        OUTPUT's manifest: num_users and num_items locate the user and item columns.
    model_dir : str
        Where ``evaluation.json`` goes (local or URL).
    storage_options : dict, optional
        fsspec options for ``model_dir``.
    ranking_model : FMModel, optional
        The recommender that recommend uses (:mod:`fmprep.model.ranking`), ranked beside
        ``model``.

    Returns
    -------
    dict
        What :func:`fmprep.model.evaluate.evaluate` returns plus the data stamp, as written;
        empty for a binary_classifier or a manifest without num_users.
    """
    if model.predictor_type != "regressor":
        return {}
    if "num_users" not in manifest:
        log.warning("evaluation skipped: the manifest does not say where user and item columns "
                    "are (num_users, num_items); write OUTPUT with %s", command("data"))
        return {}
    result = evaluate(model, train_records, test_records, int(manifest["num_users"]),
                      int(manifest["num_items"]), ranking_model=ranking_model)
    result["data"] = data_stamp(manifest)
    storage.write_json(storage.join(model_dir, EVALUATION), result, storage_options)
    r, k = result["ranking"], result["ranking"]["k"]
    best = "recommender" if "recommender" in r else "model"
    log.info("evaluation: test rmse %.4f (biases only %.4f, train mean %.4f); HR@%d %.4f "
             "(popularity %.4f)", result["rating"]["model"]["rmse"],
             result["rating"]["biases"]["rmse"], result["rating"]["global_mean"]["rmse"], k,
             r[best][f"hr@{k}"], r["popularity"][f"hr@{k}"])
    return result


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
