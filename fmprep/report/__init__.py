"""A static HTML report of ``make data`` (and of training, once there is a model).

:func:`write_report` reads ``OUTPUT/manifest.json`` and a few columns of WORK's Parquet and
writes ``OUTPUT/report/``:

* ``stats.json``: every number the report shows, keyed by the manifest's ``key`` so that a
  refresh after training reuses it instead of reading the data again;
* one SVG document per chart (drawn by hand in :mod:`.charts`: no plotting library);
* ``index.html``: static and self-contained (inline CSS, images by relative path, no
  JavaScript, no external URL), written last and atomically. Any previous ``index.html`` is
  deleted first, so a crash part-way never leaves a page that looks complete.

The data pass is out of core: each Parquet part is read alone and only for the columns needed,
and per-part results are small (a few counts, or bit sets of the dense user / item ids) that
are added up. Ratings per customer and per product go through Dask's ``value_counts`` with a
hash-partitioned reduction (``split_out``), the same way the prepare stage counts them, so
they run on whatever scheduler is active (threads, or the cluster of the ``scheduler`` setting).
"""

from __future__ import annotations

import datetime as dt
import logging

from .. import owned, storage
from ..config import LOCAL_MODEL_DIR, MANIFEST
from ..errors import FmprepError, command, setting
from .charts import REJECT_LABELS, funnel_steps, plot_counts, plot_days, plot_funnel, plot_stars
from .page import model_sections, render_html
from .stats import QUANTILES, STATS_FORMAT, compute_stats, mean_baseline_rmse

__all__ = ["QUANTILES", "REJECT_LABELS", "compute_stats", "funnel_steps", "mean_baseline_rmse",
           "write_report"]

log = logging.getLogger(__name__)

REPORT_DIR = "report"
INDEX = "index.html"
STATS = "stats.json"

# Every chart write_report can draw; charts of an earlier report that this one lacks are removed.
IMAGES = ("funnel.svg", "ratings_per_customer.svg", "ratings_per_product.svg", "star_ratings.svg",
          "days_since_first.svg", "learning_curve.svg")
# The PNG charts of fmprep versions before the SVG ones: removed from a report written by them.
OLD_IMAGES = ("funnel.png", "ratings_per_customer.png", "ratings_per_product.png",
              "star_ratings.png", "days_since_first.png", "learning_curve.png")


def _remove(url: str, storage_options) -> None:
    fs, path = storage.filesystem(url, storage_options)
    if fs.exists(path):
        fs.rm(path)


def write_report(output: str, storage_options: dict | None = None, work: str | None = None,
                 model_dir: str | None = None, refresh: bool = False,
                 manifest: dict | None = None) -> str:
    """Write ``OUTPUT/report/index.html`` and its SVG charts; return the page's path.

    Parameters
    ----------
    output : str
        OUTPUT directory of ``make data`` (local or URL), holding ``manifest.json``.
    storage_options : dict, optional
        fsspec options for every read and write.
    work : str, optional
        WORK directory; default the one recorded in the manifest.
    model_dir : str, optional
        Local trainer's model directory; default ``OUTPUT/model``. Its ``metrics.json``, and
        ``OUTPUT/sagemaker.json``, are shown when present.
    refresh : bool
        Read WORK again even if ``report/stats.json`` matches the manifest's key.
    manifest : dict, optional
        OUTPUT's manifest when the caller has read it already (make train); default: read it.

    Returns
    -------
    str
        The URL or path of ``index.html``.

    Raises
    ------
    FmprepError
        If OUTPUT has no manifest, or WORK is missing or does not match it.

    Notes
    -----
    Order of writes: the old ``index.html`` is deleted, then ``stats.json`` and the SVG charts
    are written (each atomically), then ``index.html``, then charts of an earlier report that
    the new one does not use are deleted (and the PNG charts of fmprep versions before SVG).
    Data statistics are reused from ``stats.json`` when its key equals the manifest's, so
    refreshing after training reads only the model's metrics.
    """
    if manifest is None:
        manifest = storage.read_json(storage.join(output, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"{output} has no manifest.json; run {command('data')} first")
    report = storage.join(output, REPORT_DIR)
    index = storage.join(report, INDEX)
    stats_url = storage.join(report, STATS)
    _remove(index, storage_options)

    stats = None if refresh else storage.read_json(stats_url, storage_options)
    if not (stats and stats.get("format") == STATS_FORMAT and manifest.get("key")
            and stats.get("key") == manifest.get("key")
            and stats.get("counts") == manifest.get("counts")):
        work = work or manifest.get("work")
        if not work:
            raise FmprepError(f"{output}/manifest.json does not name its WORK; pass "
                              f"{setting('work')}")
        log.info("report: reading %s", work)
        stats = compute_stats(manifest, work, storage_options)
        storage.write_json(stats_url, stats, storage_options)

    images = {
        "funnel.svg": plot_funnel(funnel_steps(manifest)),
        "ratings_per_customer.svg": plot_counts(stats["distributions"]["customers"],
                                                "customers", "MIN_CUSTOMER_RATINGS"),
        "ratings_per_product.svg": plot_counts(stats["distributions"]["products"],
                                               "products", "MIN_PRODUCT_RATINGS"),
        "star_ratings.svg": plot_stars(stats),
        "days_since_first.svg": plot_days(stats),
    }
    model_html = model_sections(output, model_dir or storage.join(output, LOCAL_MODEL_DIR),
                                 stats, storage_options, images)
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    page = render_html(output, manifest, stats, model_html, generated)
    for name, svg in images.items():
        storage.write_bytes_atomic(storage.join(report, name), svg.encode("utf-8"),
                                   storage_options)
    storage.write_bytes_atomic(index, page.encode("utf-8"), storage_options)

    # Only charts this module names: a file a user put in the report folder stays.
    owned.remove_files(report, [n for n in IMAGES + OLD_IMAGES if n not in images],
                       storage_options)
    log.info("report: %s", index)
    return index

