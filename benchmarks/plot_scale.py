"""The scaling curve of a bench_scale.py run, as two SVG charts for the README.

``PREFIX_time.svg``: seconds per million rows against rows (log axis), one line per tool;
``PREFIX_memory.svg``: peak memory of one worker (the largest process, for threads) against
rows. Drawn with the report's own SVG layer (fmprep/report/charts.py), no plotting library.

Usage::

    python benchmarks/plot_scale.py data/bench/results.json docs/performance
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The report's chart layer: private to fmprep, reused here rather than drawn a second time.
from fmprep.report.charts import (C_GREY, C_REMOVED, C_TEST, C_TOTAL, C_TRAIN, _Key,
                                  _linear_scale, _log_limits, _log_scale, _Plot)

STYLE = {  # tool → (colour, dash, marker)
    "threads": (C_TOTAL, "-", "o"), "dask-2w": (C_TRAIN, "-", "s"),
    "dask-1w": (C_TRAIN, "--", "s"), "local": (C_TOTAL, "--", "o"),
    "duckdb": (C_TEST, "-", "^"), "floor": (C_GREY, ":", None),
    "reference": (C_REMOVED, "-", "x"),
}


def series(runs: list[dict], field: str) -> list[tuple[str, list, list, _Key]]:
    """``(label, rows, values, key)`` per tool that has ``field`` at two sizes or more."""
    out = []
    for tool, (colour, dash, marker) in STYLE.items():
        mine = sorted((r for r in runs if r["tool"] == tool and r["ok"]
                       and r.get(field) is not None), key=lambda r: r["rows"])
        if len(mine) >= 2:
            out.append((mine[-1]["label"], [r["rows"] for r in mine],
                        [r[field] for r in mine], _Key(colour, dash, marker)))
    return out


def chart(runs: list[dict], field: str, title: str, ylabel: str, log_y: bool) -> str:
    """One line chart of ``field`` against rows."""
    lines = series(runs, field)
    xs = [x for _, rows, _, _ in lines for x in rows]
    ys = [y for _, _, values, _ in lines for y in values]
    y_scale = (_log_scale(*_log_limits(ys)) if log_y
               else _linear_scale(0, max(ys, default=1), pad=0.05))
    plot = _Plot(_log_scale(*_log_limits(xs)), y_scale, (520, 280), title, "rows",
                 ylabel, [(label, key) for label, _, _, key in lines], box=True, grid=True)
    for _, rows, values, key in lines:
        plot.curve(rows, values, key.colour, key.dash, key.marker)
    return plot.svg()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="bench_scale.py's JSON results")
    parser.add_argument("prefix", help="output path without the _time.svg / _memory.svg")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        runs = json.load(f)["runs"]
    charts = {
        "time": chart(runs, "s_per_million_rows", "Seconds per million rows",
                      "s / M rows", log_y=True),
        "memory": chart([r for r in runs if r["tool"] != "floor"], "peak_worker_mib",
                        "Peak memory of one worker", "MiB", log_y=False),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.prefix)), exist_ok=True)
    for name, svg in charts.items():
        path = f"{args.prefix}_{name}.svg"
        with open(path, "w", encoding="utf-8") as f:
            f.write(svg)
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
