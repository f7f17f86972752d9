"""The report's charts: small SVG documents drawn by hand from the statistics.

Each ``plot_*`` function returns one SVG document (a ``str``). The layout is fixed: margins
follow from the labels' lengths at an average glyph width, so there are no font metrics, no
rasterising and no plotting library, and the five charts take milliseconds.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections import namedtuple

import numpy as np

from .stats import rating_counts, rating_values

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

# --- SVG drawing: scales, ticks and one plot area -----------------------------------------------

TITLE_FONT, LABEL_FONT, FONT = 14, 12, 11  # px: title, axis labels, ticks / legend / notes
CHAR_EM = 0.58     # average glyph width of a sans-serif font, in em (DejaVu Sans: ~0.55)
TICK = 4           # tick length, px
LEGEND_ROW = 17    # legend line height, px
SWATCH = 22        # legend sample length, px
INK = "#222222"
GRID = "#e4e4e4"
DASHES = {"-": None, "--": "5,3", ":": "1.5,2.5", "-.": "6,2.5,1.5,2.5"}
MAX_MARKERS = 50   # beyond this a marker per point only blurs the line

# How a legend entry shows its series: line dash ("-", "--", …), marker ("o", "s", or "rect"
# for a filled patch) and line width.
_Key = namedtuple("_Key", "colour dash marker width", defaults=(None, None, 1.5))


def _width(text: str, size: float) -> float:
    """Approximate rendered width of ``text`` in px (no font metrics at hand)."""
    return len(text) * CHAR_EM * size


def _n(v: float) -> str:
    """A coordinate with one decimal: finer than a pixel, and keeps the file small."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


class _Scale:
    """Data values to a fraction 0..1 along one axis (linear or log10), with labelled ticks.

    ``lo`` may be above ``hi``: an inverted axis (the funnel's first row at the top).
    """

    def __init__(self, lo: float, hi: float, ticks: list, log: bool = False, minor=()):
        self.lo, self.hi, self.ticks, self.log, self.minor = lo, hi, ticks, log, list(minor)
        self._a, self._b = (math.log10(lo), math.log10(hi)) if log else (lo, hi)

    def frac(self, v) -> float | None:
        """Where ``v`` falls, or None where it has no place (None, NaN, ≤ 0 on a log axis)."""
        if not _finite(v) or (self.log and v <= 0):
            return None
        return ((math.log10(v) if self.log else v) - self._a) / (self._b - self._a)


def _linear_scale(lo: float, hi: float, integer: bool = False, pad: float = 0.0) -> _Scale:
    """A linear axis over ``[lo, hi]``, widened by ``pad`` × the span at both ends.

    Ticks are multiples of 1, 2 or 5 × 10^k inside the range, the step whose count is closest
    to five (4–6 for most ranges); only a range too short for two ticks is widened to the
    next multiples. ``integer`` allows no step below 1 (epochs, days).
    """
    if not hi > lo:  # one value or none: a range around it
        lo, hi = (lo - abs(lo) / 10, hi + abs(hi) / 10) if lo else (0.0, 1.0)
    lo, hi = lo - pad * (hi - lo), hi + pad * (hi - lo)
    k0 = math.floor(math.log10(hi - lo))
    steps = [m * 10.0 ** k for k in range(k0 - 2, k0 + 2) for m in (1, 2, 5)]
    steps = [s for s in steps if s >= 1] if integer else steps
    for extend in (False, True):
        options = []
        for s in steps or [1.0]:
            # 1e-9: a limit that is a multiple of the step up to rounding counts as one
            first = math.floor(lo / s + 1e-9) if extend else math.ceil(lo / s - 1e-9)
            last = math.ceil(hi / s - 1e-9) if extend else math.floor(hi / s + 1e-9)
            n = last - first + 1
            options.append((abs(n - 5), n, s, first, last))  # ties: fewer ticks, finer step
        _, n, step, first, last = min(options)
        if n >= 2:
            break
    lo, hi = min(lo, first * step), max(hi, last * step)
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    ticks = [(i * step, f"{i * step:,.{digits}f}") for i in range(first, last + 1)]
    return _Scale(lo, hi, ticks)


def _log_limits(values, pad: float = 0.05) -> tuple[float, float]:
    """Limits of the positive ``values`` on a log axis, ``pad`` of the decades beyond each end
    (at least a decade's worth); ``(1, 10)`` when there is none."""
    pos = [v for v in values if _finite(v) and v > 0]
    if not pos:
        return 1.0, 10.0
    lo, hi = min(pos), max(pos)
    f = 10 ** (max(math.log10(hi / lo), 1.0) * pad)
    return lo / f, hi * f


def _log_scale(lo: float, hi: float) -> _Scale:
    """A log10 axis over ``[lo, hi]`` (both > 0) with ticks at the decades (1, 10, 1,000 …);
    widened to span at least two of them, so that values can be read off."""
    hi = hi if hi > lo else lo * 10
    a, b = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    if a > b:  # no decade inside: the enclosing two
        a, b = a - 1, a
        lo = 10.0 ** a
    if a == b:  # one: up to the next (counts and k start at 1, the low end means something)
        b += 1
    hi = max(hi, 10.0 ** b)
    every = -(-(b - a + 1) // 8)  # at most 8 labels
    ticks = [(10.0 ** e, f"{10 ** e:,}" if e >= 0 else f"{10.0 ** e:g}")
             for e in range(a, b + 1, every)]
    minor = [m * 10.0 ** e for e in range(a - 1, b + 1) for m in range(2, 10)
             if lo <= m * 10.0 ** e <= hi] if every == 1 else []
    return _Scale(lo, hi, ticks, log=True, minor=minor)


def _category_scale(labels: list[str], invert: bool = False) -> _Scale:
    """Categories at 0, 1, …, n - 1 (from the top when ``invert``)."""
    lo, hi = -0.6, max(len(labels), 1) - 0.4
    return _Scale(*((hi, lo) if invert else (lo, hi)), list(enumerate(labels)))


def _line(x1, y1, x2, y2, colour, width=1.0, dash="-", opacity=None) -> str:
    extra = f' stroke-dasharray="{DASHES[dash]}"' if DASHES.get(dash) else ""
    extra += f' stroke-opacity="{opacity}"' if opacity is not None else ""
    return (f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{colour}" '
            f'stroke-width="{width}"{extra}/>')


def _rect(x, y, w, h, colour, opacity=None) -> str:
    extra = f' fill-opacity="{opacity}"' if opacity is not None else ""
    return (f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" '
            f'fill="{colour}"{extra}/>')


def _marker(x, y, marker, r=3.0) -> str:
    """A marker without colour (its group sets the fill)."""
    if marker == "o":
        return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r}"/>'
    return f'<rect x="{_n(x - r)}" y="{_n(y - r)}" width="{2 * r}" height="{2 * r}"/>'


def _text(x, y, text, size=FONT, anchor="start", extra="") -> str:
    """Text whose baseline is at ``y`` (callers centre it with ~0.35 em)."""
    a = f' text-anchor="{anchor}"' if anchor != "start" else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}"{a}{extra}>{_esc(text)}</text>'


class _Plot:
    """One chart: a plot area of ``size`` px (width, height) on an SVG canvas.

    The margins around it follow from the tick labels, the axis labels and the legend (a list
    of ``(label, _Key)``, flowed into lines under the axes). Data drawn with the methods below
    is clipped to the plot area; :meth:`svg` adds the axes, title and legend on top.
    """

    def __init__(self, x: _Scale, y: _Scale, size: tuple[int, int], title: str,
                 xlabel: str = "", ylabel: str = "", legend=(), box: bool = False,
                 grid: bool = False):
        self.xs, self.ys, self.title, self.xlabel, self.ylabel = x, y, title, xlabel, ylabel
        self.box, self.legend = box, list(legend)
        y_labels = max((_width(t, FONT) for _, t in y.ticks), default=0)
        self.left = 10 + (LABEL_FONT + 8 if ylabel else 0) + y_labels + TICK + 4
        self.right = self.left + size[0]
        # The last x tick label may stick out past the plot area by half its width.
        overhang = _width(x.ticks[-1][1], FONT) / 2 if x.ticks else 0
        widest = max((SWATCH + 6 + _width(label, FONT) for label, _ in self.legend), default=0)
        self.width = math.ceil(max(self.right + max(14, overhang + 4), 10 + widest + 10))
        self.rows = self._flow()
        self.top = 36 if title else 12
        self.bottom = self.top + size[1]
        self.under_axis = self.bottom + TICK + FONT + 4 + (LABEL_FONT + 10 if xlabel else 0)
        self.height = math.ceil(self.under_axis + 8
                                + (len(self.rows) * LEGEND_ROW + 6 if self.rows else 0))
        self._under, self._data, self._over = [], [], []
        if grid:
            for v, _ in x.ticks:
                px = self.px(v)
                self._under.append(_line(px, self.top, px, self.bottom, GRID))
            for v, _ in y.ticks:
                py = self.py(v)
                self._under.append(_line(self.left, py, self.right, py, GRID))

    def _flow(self) -> list[list[tuple]]:
        """Legend entries as lines of ``(x, label, key)`` that fit the canvas's width."""
        rows, line, at = [], [], 10.0
        for label, key in self.legend:
            w = SWATCH + 6 + _width(label, FONT)
            if line and at + w > self.width - 10:
                rows.append(line)
                line, at = [], 10.0
            line.append((at, label, key))
            at += w + 18
        return rows + [line] if line else rows

    def px(self, v) -> float | None:
        f = self.xs.frac(v)
        return None if f is None else self.left + f * (self.right - self.left)

    def py(self, v) -> float | None:
        f = self.ys.frac(v)
        return None if f is None else self.bottom - f * (self.bottom - self.top)

    # Data, clipped to the plot area.

    def vline(self, v, colour, width=1.0, dash="-") -> None:
        px = self.px(v)
        if px is not None:
            self._data.append(_line(px, self.top, px, self.bottom, colour, width, dash))

    def hline(self, v, colour, width=1.0, dash="-") -> None:
        py = self.py(v)
        if py is not None:
            self._data.append(_line(self.left, py, self.right, py, colour, width, dash))

    def vspan(self, v0, v1, colour, opacity) -> None:
        a, b = self.px(v0), self.px(v1)
        if a is not None and b is not None:
            self._data.append(_rect(min(a, b), self.top, abs(b - a), self.bottom - self.top,
                                    colour, opacity))

    def bar(self, x0, x1, y0, y1, colour) -> None:
        """A filled rectangle between two x and two y values."""
        xs, ys = (self.px(x0), self.px(x1)), (self.py(y0), self.py(y1))
        if None not in xs and None not in ys:
            self._data.append(_rect(min(xs), min(ys), abs(xs[1] - xs[0]), abs(ys[1] - ys[0]),
                                    colour))

    def polyline(self, points, colour, width=1.5, dash="-") -> None:
        """A line through pixel ``points``."""
        if len(points) < 2:
            return
        d = f' stroke-dasharray="{DASHES[dash]}"' if DASHES.get(dash) else ""
        pts = " ".join(f"{_n(a)},{_n(b)}" for a, b in points)
        self._data.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                          f'stroke-width="{width}" stroke-linejoin="round"{d}/>')

    def points(self, xs, ys, colour, marker="o", r=3.0, opacity=None) -> None:
        """Markers at the data points that have a place on both axes."""
        pts = [(self.px(a), self.py(b)) for a, b in zip(xs, ys)]
        shapes = [_marker(a, b, marker, r) for a, b in pts if a is not None and b is not None]
        if shapes:
            o = f' fill-opacity="{opacity}"' if opacity is not None else ""
            self._data.append(f'<g fill="{colour}"{o}>' + "".join(shapes) + "</g>")

    def curve(self, xs, ys, colour, dash="-", marker=None, width=1.5) -> None:
        """A line through the data points, broken where a value is missing; with markers
        when there are few points."""
        run = []
        for a, b in zip(xs, ys):
            p = (self.px(a), self.py(b))
            if None in p:
                self.polyline(run, colour, width, dash)
                run = []
            else:
                run.append(p)
        self.polyline(run, colour, width, dash)
        if marker and len(xs) <= MAX_MARKERS:
            self.points(xs, ys, colour, marker, r=3.0)

    def text(self, x, y, text) -> None:
        """A note at data ``(x, y)``, vertically centred, not clipped."""
        px, py = self.px(x), self.py(y)
        if px is not None and py is not None:
            self._over.append(_text(px, py + 0.35 * FONT, text))

    # The frame, ticks, labels, title and legend.

    def _axes(self) -> list[str]:
        out = []
        if self.box:
            out.append(f'<rect x="{_n(self.left)}" y="{_n(self.top)}" '
                       f'width="{_n(self.right - self.left)}" '
                       f'height="{_n(self.bottom - self.top)}" fill="none" stroke="{INK}"/>')
        else:
            out.append(_line(self.left, self.top, self.left, self.bottom, INK))
            out.append(_line(self.left, self.bottom, self.right, self.bottom, INK))
        for v in self.xs.minor:
            px = self.px(v)
            out.append(_line(px, self.bottom, px, self.bottom + TICK / 2, INK))
        for v in self.ys.minor:
            py = self.py(v)
            out.append(_line(self.left - TICK / 2, py, self.left, py, INK))
        for v, label in self.xs.ticks:
            px = self.px(v)
            out.append(_line(px, self.bottom, px, self.bottom + TICK, INK))
            out.append(_text(px, self.bottom + TICK + FONT, label, anchor="middle"))
        for v, label in self.ys.ticks:
            py = self.py(v)
            out.append(_line(self.left - TICK, py, self.left, py, INK))
            out.append(_text(self.left - TICK - 3, py + 0.35 * FONT, label, anchor="end"))
        mid_x, mid_y = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        if self.xlabel:
            out.append(_text(mid_x, self.under_axis - 4, self.xlabel, LABEL_FONT, "middle"))
        if self.ylabel:
            out.append(_text(10 + LABEL_FONT, mid_y, self.ylabel, LABEL_FONT, "middle",
                             f' transform="rotate(-90 {_n(10 + LABEL_FONT)} {_n(mid_y)})"'))
        if self.title:
            out.append(_text(mid_x, 22, self.title, TITLE_FONT, "middle"))
        return out

    def _legend(self) -> list[str]:
        out = []
        for i, line in enumerate(self.rows):
            y = self.under_axis + 8 + (i + 0.5) * LEGEND_ROW
            for x, label, key in line:
                if key.marker == "rect":
                    out.append(_rect(x, y - 5, SWATCH, 10, key.colour))
                else:
                    if key.dash:
                        out.append(_line(x, y, x + SWATCH, y, key.colour, key.width, key.dash))
                    if key.marker:
                        out.append(f'<g fill="{key.colour}">'
                                   f'{_marker(x + SWATCH / 2, y, key.marker)}</g>')
                out.append(_text(x + SWATCH + 6, y + 0.35 * FONT, label))
        return out

    def svg(self) -> str:
        """The whole SVG document."""
        w, h = self.width, self.height
        clip = (f'<clipPath id="plot"><rect x="{_n(self.left)}" y="{_n(self.top)}" '
                f'width="{_n(self.right - self.left)}" height="{_n(self.bottom - self.top)}"/>'
                "</clipPath>")
        return "\n".join(
            [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" font-family="sans-serif" fill="{INK}">',
             f"<title>{_esc(self.title)}</title>", f"<defs>{clip}</defs>",
             f'<rect width="{w}" height="{h}" fill="#ffffff"/>', *self._under,
             '<g clip-path="url(#plot)">', *self._data, "</g>", *self._axes(), *self._over,
             *self._legend(), "</svg>\n"])


# --- Formatting and the funnel's steps ----------------------------------------------------------

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


def plot_funnel(steps: list[dict]) -> str:
    """The rows funnel as a horizontal waterfall.

    Parameters
    ----------
    steps : list of dict
        :func:`funnel_steps`.

    Returns
    -------
    str
        An SVG document: totals as bars from 0, removals as the slice they take off the level
        above, train and test side by side; each row annotated "n (p %)" of the first total.
    """
    shown = [st for st in steps if not (st["kind"] == "removed" and st["rows"] == 0)]
    top = max((st["rows"] for st in steps), default=0) or 1
    p = _Plot(_linear_scale(0, top * 1.4), _category_scale([st["label"] for st in shown], True),
              (440, 30 * max(1, len(shown))),
              "Rows from the source to the train and test channels", xlabel="rows")
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
        p.bar(left, left + n, i - 0.35, i + 0.35, colour)
        p.text(left + n + top * 0.01, i, f"{n:,} ({fmt_percent(n, top)})")
    return p.svg()


def plot_counts(dist: dict, noun: str, threshold_name: str) -> str:
    """Log-log scatter: how many ``noun`` have k ratings, against k.

    Parameters
    ----------
    dist : dict
        One of the stats' ``distributions``: ``histogram`` ``[[k, n_k], …]``, ``quantiles``,
        ``threshold`` and ``below_threshold``.
    noun : str
        "customers" or "products".
    threshold_name : str
        The threshold's setting, for the legend.

    Returns
    -------
    str
        An SVG document with the threshold line (the removed region shaded) and the 50, 90 and
        99 % quantiles, explained in a legend under the axes.
    """
    hist = dist["histogram"]
    q = dist["quantiles"]
    t = dist["threshold"] or 0
    cut = t - 0.5  # between k = t - 1 (removed) and k = t (kept)
    kmax = hist[-1][0] if hist else 10
    # Room left of k = 1 for the line of a threshold of 1 (which removes nothing) at 0.5.
    x = _log_scale(min(0.6, cut * 0.8) if t >= 1 else 0.6, max(kmax, t, 1) * 1.6)
    y = _log_scale(*_log_limits([n for _, n in hist]))
    legend = [(noun, _Key(C_TOTAL, marker="o"))] if hist else []
    if t:
        below = dist["below_threshold"]
        legend.append((f"{threshold_name} = {t} (keep k ≥ {t}): removes "
                       f"{fmt_percent(below['keys'], q['count'])} of the {noun}, "
                       f"{fmt_percent(below['rows'], q['rows'])} of the rows",
                       _Key(C_REMOVED, "-", width=2)))
    lines = [(name, dash) for name, dash in (("50", ":"), ("90", "--"), ("99", "-."))
             if q.get(name)]
    legend += [(f"{name} % of {noun} have ≤ {q[name]}", _Key(C_GREY, dash, width=1))
               for name, dash in lines]
    # The legend goes under the axes: a power law fills both lower corners and the upper left.
    p = _Plot(x, y, (540, 330), f"Ratings per {noun[:-1]} ({q['count']:,} {noun})",
              "ratings (k), after deduplication", f"{noun} with k ratings", legend,
              box=True, grid=True)
    if t > 1:
        p.vspan(x.lo, cut, C_REMOVED, 0.07)
    p.points([k for k, _ in hist], [n for _, n in hist], C_TOTAL, r=2.2, opacity=0.8)
    if t:
        p.vline(cut, C_REMOVED, 2)
    for name, dash in lines:
        p.vline(q[name], C_GREY, 1, dash)
    return p.svg()


def fmt_star(value: float) -> str:
    """A rating value as stars: ``4.5 ★``."""
    return f"{value:g} ★"


def plot_stars(stats: dict) -> str:
    """Share of each rating value in the train and the test rows, side by side.

    Parameters
    ----------
    stats : dict
        The report's statistics (``train`` and ``test`` with their ``ratings``).

    Returns
    -------
    str
        An SVG document: per rating value a train and a test bar, in % of the channel's rows.
    """
    values = rating_values(stats)
    bars = []
    for offset, ch, colour in ((-0.2, "train", C_TRAIN), (0.2, "test", C_TEST)):
        counts = rating_counts(stats, ch, values)
        total = counts.sum()
        bars.append((offset, ch, colour, 100 * counts / total if total else counts, total))
    top = max((float(share.max()) for *_, share, _ in bars if len(share)), default=0)
    p = _Plot(_category_scale([fmt_star(v) for v in values]), _linear_scale(0, top * 1.05),
              (540, 280), "Star ratings", ylabel="% of the channel's rows",
              legend=[(f"{ch} ({int(total):,} rows)", _Key(colour, marker="rect"))
                      for _, ch, colour, _, total in bars])
    for offset, _, colour, share, _ in bars:
        for i, s in enumerate(share):
            p.bar(i + offset - 0.2, i + offset + 0.2, 0, s, colour)
    return p.svg()


def plot_days(stats: dict) -> str:
    """Step histogram of days_since_first (whole days) of the train and the test rows.

    Parameters
    ----------
    stats : dict
        The report's statistics (``train`` and ``test`` with ``days``: rows per whole day).

    Returns
    -------
    str
        An SVG document: up to 60 equal bins over the longest channel's days, log count axis.
    """
    longest = max(len(stats["train"]["days"]), len(stats["test"]["days"]))
    edges = np.linspace(0, max(longest, 1), max(1, min(60, longest)) + 1)
    hists = []
    for ch, colour in (("train", C_TRAIN), ("test", C_TEST)):
        days = np.asarray(stats[ch]["days"], dtype=float)
        if days.sum() > 0:
            counts, _ = np.histogram(np.arange(len(days)), bins=edges, weights=days)
            hists.append((ch, colour, counts))
    y = _log_scale(*_log_limits([c for *_, counts in hists for c in counts]))
    p = _Plot(_linear_scale(0, float(edges[-1]), integer=True), y, (540, 280),
              "days_since_first", "days since the customer's first kept review", "rows",
              [(ch, _Key(colour, "-", width=1.8)) for ch, colour, _ in hists])
    for _, colour, counts in hists:
        # Empty bins (no place on a log axis) drop to the bottom of the plot.
        level = [p.bottom if p.py(c) is None else p.py(c) for c in counts]
        pts = [(p.px(edges[0]), p.bottom)]
        for i, yy in enumerate(level):
            pts += [(p.px(edges[i]), yy), (p.px(edges[i + 1]), yy)]
        p.polyline(pts + [(p.px(edges[-1]), p.bottom)], colour, 1.8)
    return p.svg()


def plot_learning_curve(metrics: dict, baseline: float | None) -> str:
    """Test metrics per epoch of the local trainer; for a regressor also the train RMSE.

    Parameters
    ----------
    metrics : dict
        The local trainer's ``metrics.json`` (``epochs``: one dict per epoch; a metric may be
        missing or None in some epochs).
    baseline : float, optional
        Test RMSE of predicting the train mean (a regressor's dotted line).

    Returns
    -------
    str
        An SVG document.
    """
    epochs = metrics.get("epochs") or []
    x = [e.get("epoch") for e in epochs]
    regressor = metrics.get("predictor_type", "regressor") == "regressor"
    names = sorted({k for e in epochs for k in e if k.startswith("test:")})
    series = [(name, [e.get(name) for e in epochs], _Key(colour, "-", "o"))
              for name, colour in zip(names, (C_TEST, C_TOTAL, C_REMOVED))]
    if regressor and epochs and "train:loss" in epochs[0]:
        rmse = [math.sqrt(v) if _finite(v) and v >= 0 else None
                for v in (e.get("train:loss") for e in epochs)]
        series.append(("train rmse (each row before its update)", rmse, _Key(C_TRAIN, "--", "s")))
    legend = [(label, key) for label, _, key in series]
    values = [v for _, ys, _ in series for v in ys if _finite(v)]
    if regressor and _finite(baseline):
        legend.append((f"predict the train mean: {baseline:.3f}", _Key(C_GREY, ":", width=1.5)))
        values.append(baseline)
    xs = [v for v in x if _finite(v)]
    p = _Plot(_linear_scale(min(xs, default=0), max(xs, default=1), integer=True, pad=0.05),
              _linear_scale(min(values, default=0), max(values, default=1), pad=0.05),
              (540, 280), "Learning curve (local trainer)", "epoch",
              "RMSE" if regressor else "metric", legend, box=True, grid=True)
    if regressor and _finite(baseline):
        p.hline(baseline, C_GREY, 1.5, ":")
    for _, ys, key in series:
        p.curve(x, ys, key.colour, key.dash, key.marker)
    return p.svg()
