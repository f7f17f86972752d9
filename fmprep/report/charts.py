"""The report's charts: PNG bytes from the statistics (matplotlib's Agg renderer, no display)."""

from __future__ import annotations

import datetime as dt
import io
import math

import numpy as np

from .stats import rating_counts, rating_values

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


def fmt_number(n) -> str:
    """A count with thousands separators ("–" for None)."""
    if n is None:
        return "–"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.4g}"
    return f"{int(n):,}"


def fmt_percent(part, whole) -> str:
    """``part`` as a percentage of ``whole``; two significant digits below 1 % (never 0.0 % for
    a non-zero part)."""
    if not whole:
        return "–"
    p = 100 * part / whole
    return f"{p:.2g} %" if 0 < p < 1 else f"{p:.1f} %"


def fmt_stamp(stamp) -> str:
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
        ax.text(left + n + top * 0.01, i, f"{n:,}  ({fmt_percent(n, top)})", va="center",
                fontsize=9)
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
                         f"{fmt_percent(below['keys'], q['count'])} of the {noun}, "
                         f"{fmt_percent(below['rows'], q['rows'])} of the rows")
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


def fmt_star(value: float) -> str:
    """A rating value as stars: ``4.5 ★``."""
    return f"{value:g} ★"


def plot_stars(stats: dict) -> bytes:
    """Share of each rating, train next to test."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    values = rating_values(stats)
    x = np.arange(len(values))
    for offset, ch, colour in ((-0.2, "train", C_TRAIN), (0.2, "test", C_TEST)):
        counts = rating_counts(stats, ch, values)
        share = 100 * counts / counts.sum() if counts.sum() else counts
        ax.bar(x + offset, share, width=0.4, color=colour,
               label=f"{ch} ({int(counts.sum()):,} rows)")
    ax.set_xticks(x, [fmt_star(v) for v in values])
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


