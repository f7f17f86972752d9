"""One rating on demand: (customer, product, date) → an FM row → the deployed model's score.

The ids are the source's (customer_id, product_id); WORK's users/ and items/ maps turn them
into the model's feature indices, and OUTPUT's manifest says how days_since_first was scaled.
The deployment asked is the local server (OUTPUT/endpoint.json) or the SageMaker endpoint
(OUTPUT/sagemaker.json); either must serve a model of OUTPUT's current data.
"""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq

from .. import layout, storage
from ..config import MANIFEST
from ..errors import FmprepError, command, setting
from ..freshness import read_manifest, stale_reason


def _parts(work: str, prepared: dict, stage: str) -> list[str]:
    return [storage.join(work, stage, p["file"]) for p in prepared["parts"][stage]]


def _rows(urls: list[str], column: str, value: str, columns: list[str]):
    """The rows of Parquet files where ``column == value`` (pushed down to each file)."""
    import pyarrow as pa

    tables = []
    for url in urls:
        with storage.open_file(url, "rb") as f:
            tables.append(pq.read_table(f, columns=columns, filters=[(column, "==", value)]))
    return pa.concat_tables(tables) if tables else None


def default_date(manifest: dict) -> dt.date:
    """predict's DATE when none is given: the latest review date in the data.

    Today would ask the model about a time it never saw (years past the data, for the public
    review sets); the data's last day is the latest date training knows about.

    Parameters
    ----------
    manifest : dict
        OUTPUT's manifest; its ``review_dates`` is ``[first, last]`` as ISO dates.

    Returns
    -------
    datetime.date
        The last review date.
    """
    dates = manifest.get("review_dates")
    if not dates:
        raise FmprepError(f"{MANIFEST} predates review_dates; pass {setting('date')}YYYY-MM-DD "
                          f"or rerun {command('data')} {setting('force')}1")
    return dt.date.fromisoformat(dates[1])


def fm_row(output: str, work: str | None, customer: str, product: str,
           date: dt.date | None = None):
    """The FM feature row for (customer, product, date), from OUTPUT's manifest and WORK's maps.

    The days since the customer's first review are scaled as the training data was and clipped
    to the range the training rows span: an FM extrapolates a linear term without bound.

    Parameters
    ----------
    output : str
        OUTPUT of make data (its manifest).
    work : str or None
        WORK with the id maps; None: the one OUTPUT's manifest names.
    customer, product : str
        customer_id and product_id as in the source data.
    date : datetime.date, optional
        Date of the rating; default :func:`default_date`.

    Returns
    -------
    indices, values : list
        Keys ``[user, item, feature_dim - 1]`` and values ``[1, 1, days_since_first]``.
    info : dict
        ``feature_dim``, ``user``, ``item``, ``title``, ``first_review``, ``date`` (given or
        :func:`default_date`), ``days`` (unclipped), ``clipped_days`` (None when in range),
        ``seen_days`` (the days training saw, or None).
    """
    manifest = read_manifest(output)
    date = date or default_date(manifest)
    work = work or manifest.get("work")
    prepared = storage.read_json(storage.join(work, MANIFEST)) if work else None
    if prepared is None:
        raise FmprepError(f"no finished prepare stage in {setting('work')}{work}; pass "
                          f"{setting('work')} or run {command('data')}")
    users = _rows(_parts(work, prepared, "users"), "customer_id", customer,
                  ["user", "first_review"])
    if users is None or users.num_rows == 0:
        raise FmprepError(f"customer {customer} is not in {storage.join(work, 'users')} (never "
                          f"seen, or filtered out for too few ratings); pick another "
                          f"{setting('customer')} or lower {setting('min_customer_ratings')} and "
                          f"re-run {command('data')}")
    items = _rows(_parts(work, prepared, "items"), "product_id", product, ["item", "product_title"])
    if items is None or items.num_rows == 0:
        raise FmprepError(f"product {product} is not in {storage.join(work, 'items')} (never "
                          f"seen, or filtered out for too few ratings); pick another "
                          f"{setting('product')} or lower {setting('min_product_ratings')} and "
                          f"re-run {command('data')}")
    first = users["first_review"][0].as_py()
    first = first.date() if isinstance(first, dt.datetime) else first
    days = (date - first).days
    feature_dim = int(manifest["feature_dim"])
    spec = manifest["days_since_first"]
    scaled, was_clipped = layout.scale_days(days, spec)
    divisor, seen = float(spec["divisor"]), spec.get("train_range")
    clipped = int(layout.whole_days(scaled, divisor)) if was_clipped else None
    user, item = int(users["user"][0].as_py()), int(items["item"][0].as_py())
    info = {"feature_dim": feature_dim, "user": user, "item": item,
            "title": items["product_title"][0].as_py(), "first_review": str(first),
            "date": date, "days": days, "clipped_days": clipped,
            "seen_days": layout.whole_days(seen, divisor).tolist() if seen else None}
    return [user, item, layout.days_column(feature_dim)], [1.0, 1.0, scaled], info


def rating_text(raw: float, label_range: list | None) -> str:
    """The score on the rating scale (clipped to the ratings seen), the raw score beside it.

    Parameters
    ----------
    raw : float
        The model's score.
    label_range : list or None
        ``[lowest, highest]`` rating in the data (the manifest's ``label_range``).

    Returns
    -------
    str
        e.g. ``score 4.81 (raw 4.8123)``.
    """
    if not label_range:
        return f"score {raw:.4f}"
    lo, hi = label_range
    shown = min(max(raw, lo), hi)
    note = f", clipped to the rating range {lo:g}–{hi:g}" if shown != raw else ""
    return f"score {shown:.2f} (raw {raw:.4f}{note})"


def prediction_text(prediction: dict, label_range: list | None) -> str:
    """One prediction of the server's answer, as predict prints it.

    A binary classifier's score is a probability, not a rating: shown with its label.
    """
    if "predicted_label" in prediction:
        return (f"score {prediction['score']:.4f}, predicted_label "
                f"{prediction['predicted_label']}")
    return rating_text(prediction["score"], label_range)


def deployment(output: str, backend: str, manifest: dict) -> dict:
    """The record of the deployment predict asks, refused when missing or stale.

    Parameters
    ----------
    output : str
        OUTPUT of make data.
    backend : {"local", "sagemaker"}
        Which deployment.
    manifest : dict
        OUTPUT's manifest, to compare the served model's data with.

    Returns
    -------
    dict
        OUTPUT/endpoint.json (local) or OUTPUT/sagemaker.json (sagemaker; its ``endpoint``
        entry names the endpoint).
    """
    if backend == "local":
        from .local import read_local_record

        record = read_local_record(output)
        if record is None:
            raise FmprepError(f"no local server recorded in {output}; run {command('deploy')} "
                              "first")
        reason = stale_reason(record.get("data"), manifest)
        if reason:
            raise FmprepError(f"the server at {record['url']} serves a model of earlier data "
                              f"({reason}); run {command('train')}, then {command('undeploy')} "
                              f"&& {command('deploy')}")
        return record
    from . import sagemaker

    record = sagemaker.read_record(output)
    if not record.get("endpoint"):
        raise FmprepError(f"no endpoint recorded in {output}; run {command('deploy')} "
                          f"{setting('backend')}sagemaker first")
    reason = stale_reason(record["endpoint"].get("data"), manifest)
    if reason:
        raise FmprepError(f"endpoint {record['endpoint']['name']} serves a model of earlier "
                          f"data ({reason}); run {command('train')} "
                          f"{setting('backend')}sagemaker, then undeploy and deploy")
    return record


def invoke(record: dict, backend: str, body: bytes, region: str | None = None) -> dict:
    """Send a request body to the deployment of :func:`deployment`; its JSON answer."""
    if backend == "local":
        from .local import invoke_local

        return invoke_local(record["url"], body)
    from . import sagemaker

    return sagemaker.predict(record["endpoint"]["name"], body,
                             region=region or record.get("region"))
