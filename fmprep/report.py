"""A static HTML report of ``make data`` (and of training, once there is a model).

:func:`write_report` reads ``OUTPUT/manifest.json`` and a few columns of WORK's Parquet and
writes ``OUTPUT/report/``:

* ``stats.json``: every number the report shows, keyed by the manifest's ``key`` so that a
  refresh after training reuses it instead of reading the data again;
* one PNG per chart (matplotlib's Agg renderer; no display needed);
* ``index.html``: static and self-contained (inline CSS, images by relative path, no
  JavaScript, no external URL), written last and atomically. Any previous ``index.html`` is
  deleted first, so a crash part-way never leaves a page that looks complete.

The data pass is out of core: each Parquet part is read alone and only for the columns needed,
and per-part results are small (a few counts, or bit sets of the dense user / item ids) that
are added up. Ratings per customer and per product go through Dask's ``value_counts`` with a
hash-partitioned reduction (``split_out``), the same way the prepare stage counts them, so
they run on whatever scheduler is active (threads, or the cluster of ``SCHEDULER=``).
"""

from __future__ import annotations

import datetime as dt
import html
import io
import logging
import math

import numpy as np

from . import storage
from .config import LOCAL_MODEL_DIR, MANIFEST, SAGEMAKER_RECORD
from .errors import FmprepError

log = logging.getLogger(__name__)

REPORT_DIR = "report"
INDEX = "index.html"
STATS = "stats.json"
STATS_FORMAT = "fmprep-report/2"  # 2: ratings in half stars
HALVES = 11  # rating counts by half star, index h = rating * 2, 0.5..5.0
QUANTILES = (50, 75, 90, 95, 99)
DPI = 100

# Colours (colour-blind safe, Okabe-Ito).
C_TOTAL = "#0072B2"
C_REMOVED = "#D55E00"
C_TRAIN = "#009E73"
C_TEST = "#E69F00"
C_GREY = "#999999"

REJECT_LABELS = {
    "too_many_fields": "too many fields", "too_few_fields": "too few fields",
    "invalid_utf8": "invalid UTF-8", "missing_id": "empty customer / product / review id",
    "repeated_header": "repeated header line", "bad_json": "not a JSON object",
    "bad_rating": "rating not valid (1–5; MovieLens 0.5–5)",
    "bad_date": "review_date not YYYY-MM-DD", "bad_timestamp": "timestamp missing or out of range",
}


# --- the data pass ------------------------------------------------------------------------------

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
    days = np.rint(days_raw * divisor).astype(np.int64) if len(days_raw) else days_raw.astype(int)
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
    out["cold_start"] = {
        "test_customers": int(np.unique(users).size),
        "test_customers_without_train": int(np.unique(users[cold_user_rows]).size),
        "test_rows_customer_without_train": int(cold_user_rows.sum()),
        "test_products": int(np.unique(items).size),
        "test_products_without_train": int(np.unique(items[cold_item_rows]).size),
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
        raise FmprepError(f"{work} has no finished prepare stage (WORK/manifest.json); run make "
                          "data, or pass the WORK that made this OUTPUT (--work)")
    if prepared.get("counts") != manifest.get("counts") or \
            prepared.get("settings") != manifest.get("settings"):
        raise FmprepError(f"{work} was prepared with other data or settings than "
                          f"{manifest.get('work', 'OUTPUT')} holds; rerun make data")
    dists = prepared.get("distributions")
    if dists is None:  # WORK from a version of fmprep that did not count them while preparing
        raise FmprepError(f"{work} holds no ratings distributions (WORK/manifest.json); rerun "
                          "make data with FORCE=1")
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


# --- charts ------------------------------------------------------------------------------------

def _figure(width=8.0, height=4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _fmt(n) -> str:
    if n is None:
        return "–"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.4g}"
    return f"{int(n):,}"


def _pct(part, whole) -> str:
    """``part`` as a percentage of ``whole``; two significant digits below 1 % (never 0.0 % for
    a non-zero part)."""
    if not whole:
        return "–"
    p = 100 * part / whole
    return f"{p:.2g} %" if 0 < p < 1 else f"{p:.1f} %"


def _stamp(stamp) -> str:
    """A source's stamp: an mtime (seconds since the epoch) as UTC time, anything else as is."""
    try:
        t = float(stamp)
    except (TypeError, ValueError):
        return str(stamp)
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def funnel_steps(manifest: dict) -> list[dict]:
    """The rows funnel as ``[{key, label, rows, kind}, …]``; kind is total, removed or split.

    From rows read (when the manifest has the ingest totals) through each reject reason,
    deduplication and both filters, to the train and test rows.
    """
    c = manifest["counts"]
    s = manifest.get("settings", {})
    ing = manifest.get("ingest") or {}
    steps = []
    if "rows_read" in ing:
        steps.append({"key": "rows_read", "label": "rows read", "rows": ing["rows_read"],
                      "kind": "total"})
        for reason, n in (ing.get("rejected") or {}).items():
            steps.append({"key": f"rejected:{reason}",
                          "label": f"rejected: {REJECT_LABELS.get(reason, reason)}",
                          "rows": n, "kind": "removed"})
    steps.append({"key": "rows_valid", "label": "valid rows", "rows": c["rows_in"],
                  "kind": "total"})
    steps.append({"key": "duplicates_removed", "label": "duplicates (customer, product) removed",
                  "rows": c["duplicates_removed"], "kind": "removed"})
    steps.append({"key": "rows_deduped", "label": "deduplicated rows",
                  "rows": c["rows_in"] - c["duplicates_removed"], "kind": "total"})
    steps.append({"key": "removed_by_customer_filter",
                  "label": f"removed: customer < {s.get('min_customer_ratings', '?')} ratings",
                  "rows": c["removed_by_customer_filter"], "kind": "removed"})
    steps.append({"key": "removed_by_product_filter",
                  "label": f"removed: product < {s.get('min_product_ratings', '?')} ratings",
                  "rows": c["removed_by_product_filter"], "kind": "removed"})
    steps.append({"key": "rows_kept", "label": "kept rows", "rows": c["rows_kept"],
                  "kind": "total"})
    steps.append({"key": "train_rows", "label": "train", "rows": c["train_rows"], "kind": "split"})
    steps.append({"key": "test_rows", "label": "test", "rows": c["test_rows"], "kind": "split"})
    return steps


def plot_funnel(steps: list[dict]) -> bytes:
    """Horizontal waterfall: totals as bars from 0, removals as the slice they take off."""
    shown = [st for st in steps if not (st["kind"] == "removed" and st["rows"] == 0)]
    fig = _figure(7.4, 0.4 * len(shown) + 1.3)
    ax = fig.add_subplot()
    top = max(st["rows"] for st in steps) or 1
    level, train_rows = 0, 0
    for i, st in enumerate(shown):
        n = st["rows"]
        if st["kind"] == "total":
            left, colour, level = 0, C_TOTAL, n
        elif st["kind"] == "removed":
            left, colour, level = level - n, C_REMOVED, level - n
        elif st["key"] == "train_rows":
            left, colour, train_rows = 0, C_TRAIN, n
        else:
            left, colour = train_rows, C_TEST
        ax.barh(i, n, left=left, color=colour, height=0.7)
        ax.text(left + n + top * 0.01, i, f"{n:,}  ({_pct(n, top)})", va="center", fontsize=9)
    ax.set_yticks(range(len(shown)), [st["label"] for st in shown], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.4)
    ax.set_xlabel("rows")
    ax.xaxis.set_major_formatter(_thousands())
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Rows from the source to the train and test channels")
    return _png(fig)


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x:,.0f}")


def plot_counts(dist: dict, noun: str, threshold_name: str) -> bytes:
    """Log-log: number of ``noun`` having k ratings vs k, with the threshold and quantiles."""
    hist = dist["histogram"]
    fig = _figure(6.4, 5.2)
    ax = fig.add_subplot()
    if hist:
        k = np.array([h[0] for h in hist])
        n = np.array([h[1] for h in hist])
        ax.scatter(k, n, s=10, color=C_TOTAL, alpha=0.8, linewidths=0, label=f"{noun}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    kmax = hist[-1][0] if hist else 10
    t = dist["threshold"]
    ax.set_xlim(0.6, max(kmax, t or 1) * 1.6)
    q = dist["quantiles"]
    if t:
        # Between k = t - 1 (removed) and k = t (kept).
        below = dist["below_threshold"]
        ax.axvline(t - 0.5, color=C_REMOVED, linewidth=2,
                   label=f"{threshold_name} = {t} (keep k ≥ {t}): removes "
                         f"{_pct(below['keys'], q['count'])} of the {noun}, "
                         f"{_pct(below['rows'], q['rows'])} of the rows")
        if t > 1:
            ax.axvspan(0.6, t - 0.5, color=C_REMOVED, alpha=0.07)
    for name, style in (("50", ":"), ("90", "--"), ("99", "-.")):
        if q.get(name):
            ax.axvline(q[name], color=C_GREY, linestyle=style, linewidth=1,
                       label=f"{name} % of {noun} have ≤ {q[name]}")
    ax.set_xlabel("ratings (k), after deduplication")
    ax.set_ylabel(f"{noun} with k ratings")
    ax.set_title(f"Ratings per {noun[:-1]} ({q['count']:,} {noun})")
    # Below the axes: a power law fills both lower corners and the upper left.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax.grid(True, which="major", alpha=0.25)
    return _png(fig)


def _rating_values(stats: dict) -> list[float]:
    """The rating values either channel shows (whole stars always, half stars that occur)."""
    return sorted({v for ch in ("train", "test") for v, _ in stats[ch]["ratings"]})


def _rating_counts(stats: dict, channel: str, values: list[float]) -> np.ndarray:
    counts = dict(map(tuple, stats[channel]["ratings"]))
    return np.array([counts.get(v, 0) for v in values], dtype=float)


def _star(value: float) -> str:
    return f"{value:g} ★"


def plot_stars(stats: dict) -> bytes:
    """Share of each rating, train next to test."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    values = _rating_values(stats)
    x = np.arange(len(values))
    for offset, ch, colour in ((-0.2, "train", C_TRAIN), (0.2, "test", C_TEST)):
        counts = _rating_counts(stats, ch, values)
        share = 100 * counts / counts.sum() if counts.sum() else counts
        ax.bar(x + offset, share, width=0.4, color=colour,
               label=f"{ch} ({int(counts.sum()):,} rows)")
    ax.set_xticks(x, [_star(v) for v in values])
    ax.set_ylabel("% of the channel's rows")
    ax.set_title("Star ratings")
    ax.legend(fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_days(stats: dict) -> bytes:
    """Histogram of days_since_first (whole days), train and test, log count axis."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    longest = max(len(stats["train"]["days"]), len(stats["test"]["days"]))
    n_bins = max(1, min(60, longest))
    edges = np.linspace(0, longest, n_bins + 1)
    for ch, colour in (("train", C_TRAIN), ("test", C_TEST)):
        days = np.array(stats[ch]["days"], dtype=float)
        if days.sum() == 0:
            continue
        ax.hist(np.arange(len(days)), bins=edges, weights=days, histtype="step", linewidth=1.8,
                color=colour, label=f"{ch}")
    ax.set_yscale("log")
    ax.set_xlabel("days since the customer's first kept review")
    ax.set_ylabel("rows")
    ax.set_title("days_since_first")
    ax.legend(fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def mean_baseline_rmse(stats: dict) -> float | None:
    """Test RMSE of always predicting the train rows' mean rating: the bar a model must beat."""
    values = _rating_values(stats)
    train, test = (_rating_counts(stats, ch, values) for ch in ("train", "test"))
    if not train.sum() or not test.sum():
        return None
    stars = np.array(values)
    mean = float((stars * train).sum() / train.sum())
    return float(math.sqrt(((stars - mean) ** 2 * test).sum() / test.sum()))


def plot_learning_curve(metrics: dict, baseline: float | None) -> bytes:
    """Test metrics per epoch of the local trainer; for a regressor also the train RMSE."""
    epochs = metrics.get("epochs") or []
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    x = [e["epoch"] for e in epochs]
    names = sorted({k for e in epochs for k in e if k.startswith("test:")})
    for name, colour in zip(names, (C_TEST, C_TOTAL, C_REMOVED)):
        ax.plot(x, [e.get(name) for e in epochs], marker="o", color=colour, label=name)
    regressor = metrics.get("predictor_type", "regressor") == "regressor"
    if regressor and epochs and "train:loss" in epochs[0]:
        ax.plot(x, [math.sqrt(e["train:loss"]) for e in epochs], marker="s", linestyle="--",
                color=C_TRAIN, label="train rmse (each row before its update)")
    if regressor and baseline is not None:
        ax.axhline(baseline, color=C_GREY, linestyle=":",
                   label=f"predict the train mean: {baseline:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE" if regressor else "metric")
    if x:
        ax.set_xticks(x if len(x) <= 20 else ax.get_xticks())
    ax.set_title("Learning curve (local trainer)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.25)
    return _png(fig)


# --- HTML ----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
color:#1d1d1f;background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{margin:0 0 4px;font-size:1.7em}h2{margin:36px 0 10px;font-size:1.3em;
border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#555;margin:0 0 18px;font-size:.92em}
figure{margin:8px 0;text-align:center}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.split{display:grid;grid-template-columns:minmax(0,1.75fr) minmax(0,1fr);gap:18px;
align-items:start}
@media (max-width:900px){.split{grid-template-columns:1fr}}
p.hp{font-size:.85em;color:#333}p.hp code{margin-right:.6em;white-space:nowrap}
h3{margin:18px 0 6px;font-size:1.08em}
.row{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:18px;
align-items:start}
table{border-collapse:collapse;font-size:.9em;margin:8px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
thead th{background:#f2f2f2}
dl.summary{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;
margin:10px 0}
dl.summary div{background:#f4f7fb;border-radius:6px;padding:8px 12px}
dl.summary dt{font-size:.8em;color:#555}dl.summary dd{margin:0;font-size:1.25em;
font-variant-numeric:tabular-nums}
code{font-size:.9em;word-break:break-all}
.note{color:#555;font-size:.9em}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _table(head: list[str], rows: list[tuple], numeric: set[int] = frozenset(), attrs="",
           row_keys: list[str] | None = None) -> str:
    cls = lambda i: ' class="n"' if i in numeric else ""  # noqa: E731
    out = [f"<table{attrs}><thead><tr>"]
    out += [f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for j, row in enumerate(rows):
        key = f' data-key="{_e(row_keys[j])}"' if row_keys else ""
        out.append(f"<tr{key}>")
        out += [f"<td{cls(i)}>{_e(v)}</td>" for i, v in enumerate(row)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure_html(name: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_e(name)}" alt="{_e(alt)}">{cap}</figure>'


def _hyperparameters_html(hp: dict) -> str:
    """Hyperparameters as one wrapped line of ``name=value`` (unset ones left out)."""
    items = [f"<code>{_e(k)}={_e(v)}</code>" for k, v in sorted(hp.items()) if v is not None]
    return f'<p class="hp">hyperparameters: {" ".join(items)}</p>' if items else ""


def _model_sections(output: str, model_dir: str, stats: dict, storage_options,
                    images: dict) -> str:
    parts = []
    metrics_url = storage.join(model_dir, "metrics.json")
    metrics = storage.read_json(metrics_url, storage_options)
    if metrics:
        baseline = mean_baseline_rmse(stats)
        regressor = metrics.get("predictor_type", "regressor") == "regressor"
        images["learning_curve.png"] = plot_learning_curve(metrics, baseline)
        epochs = metrics.get("epochs") or []
        names = sorted({k for e in epochs for k in e if k not in ("epoch", "seconds")},
                       key=lambda k: (not k.startswith("train:"), k)) + ["seconds"]
        rows = [tuple([e.get("epoch")] + ["–" if e.get(n) is None else f"{e[n]:.4f}"
                                          for n in names]) for e in epochs]
        info = [("predictor_type", metrics.get("predictor_type")),
                ("train rows", _fmt(metrics.get("train_rows"))),
                ("test rows", _fmt(metrics.get("test_rows")))]
        info += [(f"final {k}", f"{v:.4f}") for k, v in (metrics.get("final") or {}).items()]
        if baseline is not None and regressor:
            info.append(("test rmse of predicting the train mean", f"{baseline:.4f}"))
        if metrics.get("train_seconds") is not None:
            info.append(("training seconds", f"{metrics['train_seconds']:.1f}"))
        parts.append("<h3>Local trainer</h3>")
        parts.append('<div class="split">'
                     + _figure_html("learning_curve.png", "learning curve: test metrics per epoch",
                                    f"from {metrics_url}")
                     + "<div>" + _table(["", "value"], info, {1}, ' class="model"')
                     + _table(["epoch"] + names, rows, set(range(len(names) + 1)),
                              ' class="epochs"') + "</div></div>")
        parts.append(_hyperparameters_html(metrics.get("hyperparameters") or {}))
        parts += [f'<p class="note">warning: {_e(w)}</p>' for w in metrics.get("warnings") or []]
    record = storage.read_json(storage.join(output, SAGEMAKER_RECORD), storage_options)
    job = (record or {}).get("training_job")
    if job:
        parts.append("<h3>SageMaker training job</h3>")
        info = [("job", job.get("name")), ("status", job.get("status")),
                ("region", record.get("region")),
                ("instances", f"{job.get('instance_count')} × {job.get('instance_type')}"),
                ("model artifact", job.get("model_artifact"))]
        info += [(k, f"{v:.4f}" if isinstance(v, (int, float)) else v)
                 for k, v in sorted((job.get("metrics") or {}).items())]
        parts.append(_table(["", "value"], info, attrs=' class="sagemaker"'))
        parts.append(_hyperparameters_html(job.get("hyperparameters") or {}))
    if not parts:
        parts.append('<p class="note">No model yet: <code>make train</code> (BACKEND=local or '
                     'sagemaker) adds its learning curve or final metrics here.</p>')
    return "".join(parts)


def render_html(output: str, manifest: dict, stats: dict, model_html: str,
                generated: str) -> str:
    """The report page; every value passes through :func:`html.escape`."""
    c = manifest["counts"]
    s = manifest.get("settings", {})
    steps = funnel_steps(manifest)
    top = steps[0]["rows"] or 1
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         '<link rel="icon" href="data:,">',
         f"<title>fmprep report: {_e(output)}</title><style>{CSS}</style></head><body><main>"]
    h.append("<h1>fmprep report</h1>")
    h.append(f'<p class="meta">OUTPUT <code>{_e(output)}</code> · WORK '
             f'<code>{_e(manifest.get("work", "?"))}</code> · prepared '
             f'{_e(manifest.get("created", "?"))} · report generated {_e(generated)}</p>')
    summary = [("train rows", c["train_rows"]), ("test rows", c["test_rows"]),
               ("users", manifest["num_users"]), ("items", manifest["num_items"]),
               ("feature_dim", manifest["feature_dim"])]
    h.append('<dl class="summary">' + "".join(
        f'<div><dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd></div>' for k, v in summary) + "</dl>")

    h.append('<h2 id="funnel">Rows: source → train and test</h2>')
    h.append('<div class="split">'
             + _figure_html("funnel.png", "funnel of rows from source to train and test")
             + _table(["step", "rows", "% of first"],
                      [(st["label"], _fmt(st["rows"]), _pct(st["rows"], top)) for st in steps],
                      {1, 2}, ' class="funnel"', [st["key"] for st in steps])
             + "</div>")
    if c.get("filter_iterations", 1) > 1:
        h.append(f'<p class="note">k-core filter: {_e(c["filter_iterations"])} passes; the '
                 "filter rows are totals over all passes.</p>")

    d = stats["distributions"]
    h.append('<h2 id="ratings">Ratings per customer and per product</h2>')
    h.append('<p class="note">After deduplication, before the filters: the counts the '
             "thresholds are applied to (in <code>kcore</code> mode, the first pass). The red "
             "line is the threshold; everything left of it is removed.</p>")
    h.append('<div class="grid">'
             + _figure_html("ratings_per_customer.png", "ratings per customer, log-log")
             + _figure_html("ratings_per_product.png", "ratings per product, log-log")
             + "</div>")
    head = ["", "count"] + [f"{q} %" for q in QUANTILES] + ["max", "threshold",
                                                               "below threshold", "their rows"]
    rows, keys = [], []
    for what, setting in (("customers", "min_customer_ratings"),
                          ("products", "min_product_ratings")):
        q, below = d[what]["quantiles"], d[what]["below_threshold"]
        rows.append(tuple([f"ratings per {what[:-1]}", _fmt(q["count"])]
                          + [_fmt(q[str(p)]) for p in QUANTILES]
                          + [_fmt(q["max"]), f"≥ {_fmt(s.get(setting))}",
                             f"{below['keys']:,} ({_pct(below['keys'], q['count'])})",
                             f"{below['rows']:,} ({_pct(below['rows'], q['rows'])})"]))
        keys.append(what)
    h.append(_table(head, rows, set(range(1, len(head))), ' class="quantiles"', keys))

    values = _rating_values(stats)
    counts = {ch: _rating_counts(stats, ch, values) for ch in ("train", "test")}
    stars = [tuple([_star(v)] + [f"{int(counts[ch][i]):,} "
                                 f"({_pct(counts[ch][i], stats[ch]['rows'])})"
                                 for ch in ("train", "test")]) for i, v in enumerate(values)]
    days_rows = []
    for ch in ("train", "test"):
        hist = [[k, n] for k, n in enumerate(stats[ch]["days"]) if n]
        q = quantiles(hist)
        days_rows.append(tuple([ch] + [_fmt(q[str(p)]) for p in (50, 90, 99)] + [_fmt(q["max"])]))
    h.append('<h2 id="channels">Train and test rows</h2><div class="grid"><div>')
    h.append(_figure_html("star_ratings.png", "star rating distribution, train vs test"))
    h.append(_table(["star_rating", "train", "test"], stars, {1, 2}, ' class="stars"'))
    h.append("</div><div>")
    h.append(_figure_html("days_since_first.png", "days_since_first histogram, train vs test"))
    h.append(_table(["days_since_first (days)", "50 %", "90 %", "99 %", "max"], days_rows,
                    {1, 2, 3, 4}, ' class="days"'))
    divisor = (manifest.get("days_since_first") or {}).get("divisor", 1.0)
    if s.get("days_scale", "raw") != "raw":
        h.append(f'<p class="note">Shown in days; the records hold days ÷ {_e(divisor)} '
                 f"(DAYS_SCALE={_e(s.get('days_scale'))}).</p>")
    h.append('<p class="note">A test row is its customer\'s latest review, so its '
             "days_since_first is the customer's whole span.</p>")
    h.append("</div></div>")

    cs = stats["cold_start"]
    h.append('<h2 id="cold-start">Cold start in the test channel</h2>')
    h.append(_table(["", "test", "without a train row", "their test rows"], [
        ("customers", _fmt(cs["test_customers"]),
         f"{cs['test_customers_without_train']:,} "
         f"({_pct(cs['test_customers_without_train'], cs['test_customers'])})",
         _fmt(cs["test_rows_customer_without_train"])),
        ("products", _fmt(cs["test_products"]),
         f"{cs['test_products_without_train']:,} "
         f"({_pct(cs['test_products_without_train'], cs['test_products'])})",
         _fmt(cs["test_rows_product_without_train"]))],
        {1, 2, 3}, ' class="cold-start"', ["customers", "products"]))
    h.append('<p class="note">A customer left with one review after the filters has only a '
             "test row; the model knows nothing of them but the days feature.</p>")

    h.append('<h2 id="model">Model</h2>')
    h.append(model_html)

    h.append('<h2 id="settings">Settings and inputs</h2>')
    h.append('<div class="row">')
    h.append(_table(["setting", "value"], [(k, v) for k, v in s.items()], set(),
                    ' class="settings"', list(s)))
    src = manifest.get("sources") or []
    if src:
        h.append(_table(["source", "bytes", "modified / ETag"],
                        [(x.get("url"), _fmt(x.get("size")), _stamp(x.get("stamp")))
                         for x in src], {1}, ' class="sources"'))
    ch = manifest["channels"]
    h.append(_table(["channel", "rows", "shards"],
                    [(n, _fmt(ch[n]["rows"]), len(ch[n]["shards"])) for n in ("train", "test")],
                    {1, 2}, ' class="channels"'))
    h.append("</div>")
    ing = manifest.get("ingest") or {}
    if ing.get("rejects_samples"):
        h.append(f'<p class="note">Samples of rejected rows: '
                 f'<code>{_e(ing["rejects_samples"])}</code></p>')
    h.append("</main></body></html>\n")
    return "\n".join(h)


# --- the entry point -----------------------------------------------------------------------------

# Every chart write_report can draw; charts of an earlier report that this one lacks are removed.
IMAGES = ("funnel.png", "ratings_per_customer.png", "ratings_per_product.png", "star_ratings.png",
          "days_since_first.png", "learning_curve.png")


def _remove(url: str, storage_options) -> None:
    fs, path = storage.filesystem(url, storage_options)
    if fs.exists(path):
        fs.rm(path)


def write_report(output: str, storage_options: dict | None = None, work: str | None = None,
                 model_dir: str | None = None, refresh: bool = False) -> str:
    """Write ``OUTPUT/report/index.html`` and its PNG charts; return the page's path.

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
    Order of writes: the old ``index.html`` is deleted, then ``stats.json`` and the PNGs are
    written (each atomically), then ``index.html``, then PNGs of an earlier report that the new
    one does not use are deleted. Data statistics are reused from ``stats.json`` when its key
    equals the manifest's, so refreshing after training reads only the model's metrics.
    """
    manifest = storage.read_json(storage.join(output, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"{output} has no manifest.json; run make data first")
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
            raise FmprepError(f"{output}/manifest.json does not name its WORK; pass --work")
        log.info("report: reading %s", work)
        stats = compute_stats(manifest, work, storage_options)
        storage.write_json(stats_url, stats, storage_options)

    images = {
        "funnel.png": plot_funnel(funnel_steps(manifest)),
        "ratings_per_customer.png": plot_counts(stats["distributions"]["customers"],
                                                "customers", "MIN_CUSTOMER_RATINGS"),
        "ratings_per_product.png": plot_counts(stats["distributions"]["products"],
                                               "products", "MIN_PRODUCT_RATINGS"),
        "star_ratings.png": plot_stars(stats),
        "days_since_first.png": plot_days(stats),
    }
    model_html = _model_sections(output, model_dir or storage.join(output, LOCAL_MODEL_DIR),
                                 stats, storage_options, images)
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    page = render_html(output, manifest, stats, model_html, generated)
    for name, data in images.items():
        storage.write_bytes_atomic(storage.join(report, name), data, storage_options)
    storage.write_bytes_atomic(index, page.encode("utf-8"), storage_options)

    # Only charts this module names: a file a user put in the report folder stays.
    from . import owned

    owned.remove_files(report, [n for n in IMAGES if n not in images], storage_options)
    log.info("report: %s", index)
    return index
