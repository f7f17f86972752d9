"""The FM hyperparameter contract: SageMaker's names, fmprep's options, validation and defaults.

Hyperparameters have SageMaker's names, meanings and defaults (``config.FM_DEFAULTS``,
docs/design.md §3), checked and typed by :func:`validate_hyperparameters`. fmprep-only options
(``config.FM_LOCAL_OPTIONS``) are never sent to SageMaker: ``seed`` (initialisation and the
per-epoch shuffle), ``binary_threshold`` (for ``binary_classifier``: label = rating >= threshold;
SageMaker itself expects 0/1 labels, so a SageMaker job needs them thresholded in the data),
``solver`` and ``mcmc_*`` (:mod:`fmprep.model.mcmc`) and ``early_stopping*``
(:mod:`fmprep.model.sgd`).

This module imports no numba: the SageMaker backend (:mod:`fmprep.serving.sagemaker`) and
anything else that only checks or sends hyperparameters loads it without the trainers.
"""

from __future__ import annotations

import difflib
import math

import numpy as np

from ..config import (FM_DEFAULTS, FM_LOCAL_L2, FM_LOCAL_OPTIONS, FM_LOCAL_RECOMMENDED,
                      FM_OPTIONAL, FM_REQUIRED)
from ..errors import FmprepError, command

__all__ = ["PREDICTOR_TYPES", "SOLVERS", "GROUPS", "validate_hyperparameters",
           "check_feature_dim", "sagemaker_hyperparameters", "recommended_hyperparameters",
           "sagemaker_default_hyperparameters"]

PREDICTOR_TYPES = ("regressor", "binary_classifier")
SOLVERS = ("auto", "sgd", "mcmc")
# The three parameter groups (w0, w, V), each with its own init, learning rate and weight decay.
GROUPS = ("bias", "linear", "factors")
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
    for g in GROUPS:
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
        # Strings come from the hp setting; 0 and 1 from JSON or YAML written by hand.
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


def check_feature_dim(hp: dict, feature_dim: int | None) -> None:
    """Check validated hyperparameters against the data's feature dimension.

    For a caller that holds validated hyperparameters and then meets the data (the SGD trainer
    and its records): the same check :func:`validate_hyperparameters` makes, without
    validating again.

    Parameters
    ----------
    hp : dict
        Validated hyperparameters (``feature_dim`` set).
    feature_dim : int or None
        The data's feature dimension; None (unknown) passes.

    Raises
    ------
    FmprepError
        If the two differ.
    """
    if feature_dim is not None and hp["feature_dim"] != feature_dim:
        raise FmprepError(f"hyperparameter feature_dim={hp['feature_dim']} but the data has "
                          f"feature_dim {feature_dim}; drop feature_dim (it is read from the "
                          f"manifest) or re-run {command('data')}")


def validate_hyperparameters(hyperparameters: dict, feature_dim: int | None = None) -> dict:
    """Check and type FM hyperparameters, filling in the defaults of ``config``.

    Values may be strings, as SageMaker passes them (``"256"``, ``"1e-3"``). Names are
    SageMaker's (``config.FM_DEFAULTS``, ``config.FM_OPTIONAL``, ``feature_dim``) plus the
    fmprep-only options of ``config.FM_LOCAL_OPTIONS``. A value of None means "not set".
    ``solver=auto`` is resolved here: ``sgd`` for a binary_classifier or when any setting that
    only SGD reads (epochs, num_factors, learning rates, ``early_stopping*``, ...) is given,
    else ``mcmc``. ``early_stopping`` accepts true/false, 1/0, yes/no or on/off.

    Validating a validated dict again returns an equal dict: callers validate once, where the
    user's values come in, and pass the result on.

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
        else:
            check_feature_dim(hp, feature_dim)
    if hp["feature_dim"] is None:
        raise FmprepError("hyperparameter feature_dim is required; pass the manifest's "
                          "feature_dim or train from an OUTPUT directory")
    for g in GROUPS:
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

    Parameters
    ----------
    hyperparameters : dict
        Validated (:func:`validate_hyperparameters`).

    Returns
    -------
    dict
        Name -> value as a string, SageMaker's names only.
    """
    return {k: str(v) for k, v in hyperparameters.items()
            if v is not None and k not in FM_LOCAL_OPTIONS}


def recommended_hyperparameters(train_rows: int) -> dict:
    """fmprep's recommended local-training hyperparameters for ``train_rows`` train rows.

    ``config.FM_LOCAL_RECOMMENDED`` plus ``linear_wd`` and ``factors_wd`` from
    ``config.FM_LOCAL_L2`` divided by ``train_rows`` (weight decay is the penalty of the mean
    loss, see :mod:`fmprep.model.sgd`); every other hyperparameter keeps its default.
    :func:`sagemaker_default_hyperparameters` is the SageMaker job's version of these.

    Parameters
    ----------
    train_rows : int
        Rows in the train channel (``manifest["channels"]["train"]["rows"]``).

    Returns
    -------
    dict
        Hyperparameter name -> value, ready for :func:`fmprep.model.sgd.train` or
        ``make train`` (its ``hp`` setting).

    Raises
    ------
    FmprepError
        If ``train_rows`` is not a positive integer.

    Notes
    -----
    Prep with ``days_scale`` ``years`` (or ``unit``): with raw days (values in the thousands) these
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
    early stopping lands on generated data (:func:`fmprep.model.sgd.train`).
    ``fmprep.serving.sagemaker.train`` sends these for every name the user does not set.

    Measured in the twin (``python benchmarks/bench_sgd.py --study sagemaker``; generated
    reviews prepped with days_scale years; test RMSE, mean of seeds 0, 1, 2; a fixed number of
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
    decay up for that (:mod:`fmprep.model.sgd`), so lazily these weight decays regularise rare
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
