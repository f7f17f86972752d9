"""The FM row layout and the days scale: what one row of fmprep's records means.

A row holds three entries in ascending key order (docs/design.md §3): 1.0 at the customer's
user index (0..U-1), 1.0 at the product's item index (U..U+I-1) and days_since_first at
:func:`days_column` (``feature_dim - 1``), where ``feature_dim = U + I + 1``.

days_since_first is the whole days from the customer's first kept review, divided by the data's
divisor, chosen by the days scale (:func:`days_divisor`) and recorded in the manifests: prepare
writes the rows with it, predict and score build rows the same way (:func:`scale_days`, which
also keeps a query inside the days training saw) and the report turns values back into whole
days (:func:`whole_days`).
"""

from __future__ import annotations

import numpy as np

DAYS_PER_YEAR = 365.25


def days_column(feature_dim: int) -> int:
    """The key of days_since_first in a row of ``feature_dim`` features."""
    return int(feature_dim) - 1


def days_divisor(days_scale: str, max_days: float) -> float:
    """The divisor of whole days for ``days_scale``: years (365.25), unit (the largest value,
    so values lie in [0, 1]) or raw (1: the reference notebook's days)."""
    if days_scale == "years":
        return DAYS_PER_YEAR
    if days_scale == "unit":
        return float(max_days) or 1.0
    return 1.0


def scale_days(days, days_spec: dict):
    """Whole days → the value a row holds, kept inside the range training saw.

    Parameters
    ----------
    days : int or numpy.ndarray
        Whole days since the customer's first kept review.
    days_spec : dict
        The manifest's ``days_since_first``: ``divisor`` and, when recorded, ``train_range``
        (the smallest and largest value among the train rows).

    Returns
    -------
    scaled : float or numpy.ndarray
        ``days / divisor``, clipped to ``train_range``: a model cannot extrapolate its days
        terms past what it was trained on.
    clipped : bool or numpy.ndarray
        Where the clipping changed the value.
    """
    divisor = float(days_spec.get("divisor") or 1.0)
    raw = np.asarray(days, dtype=np.float64) / divisor
    seen = days_spec.get("train_range")
    scaled = np.clip(raw, seen[0], seen[1]) if seen else raw
    clipped = scaled != raw
    if np.ndim(raw) == 0:
        return float(scaled), bool(clipped)
    return scaled, clipped


def whole_days(scaled, divisor: float):
    """Values a row holds → whole days (the inverse of the division, rounded)."""
    return np.rint(np.asarray(scaled, dtype=np.float64) * float(divisor or 1.0)).astype(np.int64)
