"""The report's numbers: one out-of-core pass over WORK's prepared Parquet parts.

Each part is read alone and only for the columns needed; per-part results are small (a few
counts, or bit sets of the dense user / item ids) and are added up. Everything lands in
``OUTPUT/report/stats.json``, keyed by the manifest's ``key``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .. import storage
from ..layout import whole_days
from ..config import MANIFEST
from ..errors import FmprepError, command, setting

log = logging.getLogger(__name__)

STATS_FORMAT = "fmprep-report/2"  # 2: ratings in half stars
HALVES = 11  # rating counts by half star, index h = rating * 2, 0.5..5.0
QUANTILES = (50, 75, 90, 95, 99)


def _read_column(url: str, columns: list[str], storage_options: dict | None):
    """``columns`` of one Parquet file as a pyarrow Table (nothing else is read)."""
    import pyarrow.parquet as pq

    with storage.open_file(url, "rb", storage_options) as f:
        return pq.read_table(f, columns=columns)


def _channel_part_stats(url: str, channel: str, n_ids: int, divisor: float,
                        storage_options: dict | None) -> dict:
    """Rating counts, integer days_since_first and the ids seen in one train/test part.

    Ratings are counted in half stars (``halves[h]`` rows rate ``h / 2``): MovieLens has them.
    """
    table = _read_column(url, ["user", "item", "days_since_first", "star_rating"],
                         storage_options)
    ratings = table.column("star_rating").to_numpy().astype(np.float64)
    halves = np.bincount(np.rint(ratings * 2).astype(np.int64), minlength=HALVES)[:HALVES]
    days_raw = table.column("days_since_first").to_numpy().astype(np.float64)
    days = whole_days(days_raw, divisor) if len(days_raw) else days_raw.astype(int)
    out = {"halves": halves, "days": np.bincount(days) if len(days) else np.zeros(1, np.int64),
           "rows": table.num_rows}
    users = table.column("user").to_numpy().astype(np.int64)
    items = table.column("item").to_numpy().astype(np.int64)
    if channel == "train":
        seen = np.zeros(n_ids, dtype=bool)
        seen[users] = True
        seen[items] = True
        out["seen"] = np.packbits(seen)
    else:
        out["users"] = users
        out["items"] = items
    return out


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = max(len(a), len(b))
    return np.pad(a, (0, n - len(a))) + np.pad(b, (0, n - len(b)))


def channel_stats(work: str, prepared: dict, storage_options: dict | None = None) -> dict:
    """Star ratings, days_since_first and cold start of the train and test channels.

    Parameters
    ----------
    work : str
        WORK directory of a finished prepare stage.
    prepared : dict
        Its ``manifest.json`` (parts, num_users, num_items, days_divisor).
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    dict
        Per channel: ``rows``, ``ratings`` (``[[rating, rows], …]``: every whole star 1..5 and
        any half star that occurs) and ``days`` (count of rows
        per whole day of days_since_first, index = days); ``cold_start``: test customers and
        products (and their test rows) that have no train row.

    Notes
    -----
    Each part is read alone, for four numeric columns. Train parts return a bit set of the ids
    they contain (users and items have dense ids, so ``(U + I) / 8`` bytes each), which are
    OR-ed together; test rows are then checked against it. ``days_since_first`` is turned
    back into whole days with the manifest's divisor, whatever ``DAYS_SCALE`` was.
    """
    import dask

    num_users, num_items = prepared["num_users"], prepared["num_items"]
    n_ids = num_users + num_items
    divisor = float(prepared.get("days_divisor") or 1.0)
    tasks = {ch: [dask.delayed(_channel_part_stats)(storage.join(work, ch, p["file"]), ch,
                                                    n_ids, divisor, storage_options)
                  for p in prepared["parts"][ch] if p["rows"] > 0]
             for ch in ("train", "test")}
    (results,) = dask.compute(tasks)
    out = {}
    for ch, parts in results.items():
        halves, days = np.zeros(HALVES, np.int64), np.zeros(1, np.int64)
        for r in parts:
            halves, days = halves + r["halves"], _add(days, r["days"])
        out[ch] = {"rows": int(sum(r["rows"] for r in parts)),
                   "ratings": [[h / 2, int(n)] for h, n in enumerate(halves)
                               if h >= 1 and (h % 2 == 0 or n)],
                   "days": [int(x) for x in days]}
    seen = np.zeros((n_ids + 7) // 8, np.uint8)
    for r in results["train"]:
        seen |= r["seen"]
    seen = np.unpackbits(seen, count=n_ids).astype(bool)
    users = np.concatenate([r["users"] for r in results["test"]] or [np.zeros(0, np.int64)])
    items = np.concatenate([r["items"] for r in results["test"]] or [np.zeros(0, np.int64)])
    cold_user_rows, cold_item_rows = ~seen[users], ~seen[items]

    def distinct(ids):  # dense ids: a mask, not a sort (np.unique took 1.7 s at 40 M rows)
        present = np.zeros(n_ids, bool)
        present[ids] = True
        return int(np.count_nonzero(present))

    out["cold_start"] = {
        "test_customers": distinct(users),
        "test_customers_without_train": distinct(users[cold_user_rows]),
        "test_rows_customer_without_train": int(cold_user_rows.sum()),
        "test_products": distinct(items),
        "test_products_without_train": distinct(items[cold_item_rows]),
        "test_rows_product_without_train": int(cold_item_rows.sum()),
    }
    return out


def quantiles(hist: list[list[int]], qs=QUANTILES) -> dict:
    """Quantiles of a ``[[k, n_k], …]`` histogram (inverted CDF: the smallest k reaching q).

    Parameters
    ----------
    hist : list of [int, int]
        ``n_k`` keys have exactly ``k`` rows, ascending ``k``.
    qs : sequence of int
        Percentages.

    Returns
    -------
    dict
        ``{"50": k, …, "max": k, "count": number of keys, "rows": sum of k * n_k}``; the same
        as ``numpy.quantile(..., method="inverted_cdf")`` over the per-key counts.
    """
    if not hist:
        return {**{str(q): None for q in qs}, "max": None, "count": 0, "rows": 0}
    k = np.array([h[0] for h in hist], np.int64)
    n = np.array([h[1] for h in hist], np.int64)
    cum = np.cumsum(n)
    total = int(cum[-1])
    out = {str(q): int(k[np.searchsorted(cum * 100, q * total, side="left")]) for q in qs}
    out.update(max=int(k[-1]), count=total, rows=int((k * n).sum()))
    return out


def _below(hist: list[list[int]], threshold: int) -> dict:
    """Keys and rows below ``threshold`` (what a minimum of ``threshold`` removes in one pass)."""
    keys = sum(n for k, n in hist if k < threshold)
    rows = sum(k * n for k, n in hist if k < threshold)
    return {"keys": int(keys), "rows": int(rows)}


def compute_stats(manifest: dict, work: str, storage_options: dict | None = None) -> dict:
    """Everything the report shows about the data, from OUTPUT's manifest and WORK's Parquet.

    Parameters
    ----------
    manifest : dict
        ``OUTPUT/manifest.json``.
    work : str
        The WORK directory that produced it.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    dict
        ``key``, ``distributions`` (customers / products histograms, quantiles, what the
        thresholds cut), ``train`` / ``test`` (stars, days) and ``cold_start``.

    Raises
    ------
    FmprepError
        If WORK is missing, unfinished, or was prepared again since OUTPUT was encoded.
    """
    prepared = storage.read_json(storage.join(work, MANIFEST), storage_options)
    if prepared is None:
        raise FmprepError(f"{work} has no finished prepare stage (WORK/manifest.json); run "
                          f"{command('data')}, or pass the WORK that made this OUTPUT "
                          f"({setting('work')})")
    if prepared.get("counts") != manifest.get("counts") or \
            prepared.get("settings") != manifest.get("settings"):
        raise FmprepError(f"{work} was prepared with other data or settings than "
                          f"{manifest.get('work', 'OUTPUT')} holds; rerun {command('data')}")
    dists = prepared.get("distributions")
    if dists is None:  # WORK from a version of fmprep that did not count them while preparing
        raise FmprepError(f"{work} holds no ratings distributions (WORK/manifest.json); rerun "
                          f"{command('data')} with {setting('force')}1")
    settings = manifest.get("settings", {})
    thresholds = {"customers": settings.get("min_customer_ratings"),
                  "products": settings.get("min_product_ratings")}
    stats = {"format": STATS_FORMAT, "key": manifest.get("key"),
             "counts": manifest.get("counts"), "distributions": {}}
    for what, hist in dists.items():
        stats["distributions"][what] = {
            "histogram": hist, "quantiles": quantiles(hist), "threshold": thresholds[what],
            "below_threshold": _below(hist, thresholds[what] or 0)}
    stats.update(channel_stats(work, prepared, storage_options))
    return stats


def rating_values(stats: dict) -> list[float]:
    """The rating values either channel shows (whole stars always, half stars that occur)."""
    return sorted({v for ch in ("train", "test") for v, _ in stats[ch]["ratings"]})


def rating_counts(stats: dict, channel: str, values: list[float]) -> np.ndarray:
    """Rows of ``channel`` per rating in ``values`` (0 where a value does not occur)."""
    counts = dict(map(tuple, stats[channel]["ratings"]))
    return np.array([counts.get(v, 0) for v in values], dtype=float)


def mean_baseline_rmse(stats: dict) -> float | None:
    """Test RMSE of always predicting the train rows' mean rating: the bar a model must beat."""
    values = rating_values(stats)
    train, test = (rating_counts(stats, ch, values) for ch in ("train", "test"))
    if not train.sum() or not test.sum():
        return None
    stars = np.array(values)
    mean = float((stars * train).sum() / train.sum())
    return float(math.sqrt(((stars - mean) ** 2 * test).sum() / test.sum()))


