"""The HTML report: its numbers against the manifest and an independent pandas computation, its
SVG charts (also on edge cases), its crash safety, S3, and a render in headless Chromium."""

from __future__ import annotations

import functools
import glob
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmprep.model.training import train_from_output
from fmprep import pipeline, report, storage
from fmprep.report import charts
from fmprep.config import PrepSettings
from fmprep.errors import FmprepError
from fmprep.sources import FORMAT_REASONS, REJECT_REASONS

SVG_NS = "{http://www.w3.org/2000/svg}"
CHARTS = {"funnel.svg", "ratings_per_customer.svg", "ratings_per_product.svg",
          "star_ratings.svg", "days_since_first.svg", "learning_curve.svg"}
OLD_PNGS = {n.replace(".svg", ".png") for n in CHARTS}
SETTINGS = dict(min_customer_ratings=3, min_product_ratings=4, train_shards=3,
                days_scale="years", part_size="500kB")
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"


class Page(HTMLParser):
    """What the tests need from the report: images, links, scripts and the tables' keyed rows."""

    def __init__(self, text):
        super().__init__()
        self.images, self.links, self.scripts = [], [], 0
        self.rows = {}           # (table class, data-key) -> [cell texts]
        self._table, self._row, self._cell = None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        elif tag in ("a", "link") and "href" in a:
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self._table = a.get("class")
        elif tag == "tr" and "data-key" in a:
            self._row = (self._table, a["data-key"])
            self.rows[self._row] = []
        elif tag == "td" and self._row:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._row and self._cell is not None:
            self.rows[self._row].append(self._cell)
            self._cell = None
        elif tag == "tr":
            self._row = None


def number(text: str) -> int:
    return int(text.split("(")[0].replace(",", "").strip())


def parse_svg(text: str) -> tuple[ET.Element, list[str]]:
    """An SVG chart parsed as XML, and its texts; every coordinate is a number inside the
    canvas (so not NaN), the legend and labels included."""
    root = ET.fromstring(text)
    assert root.tag == f"{SVG_NS}svg"
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert 200 <= width <= 1200 and 150 <= height <= 1200, (width, height)
    for el in root.iter():
        for attr in ("x", "x1", "x2", "cx"):
            if el.get(attr) is not None:
                assert 0 <= float(el.get(attr)) <= width, (el.tag, el.attrib)
        for attr in ("y", "y1", "y2", "cy"):
            if el.get(attr) is not None:
                assert 0 <= float(el.get(attr)) <= height, (el.tag, el.attrib)
        for attr in ("width", "height", "r"):
            if el is not root and el.get(attr) is not None:
                assert 0 <= float(el.get(attr)) <= max(width, height), (el.tag, el.attrib)
        for pair in (el.get("points") or "").split():
            px, py = map(float, pair.split(","))
            assert 0 <= px <= width and 0 <= py <= height, pair
    return root, [t.text for t in root.iter(f"{SVG_NS}text")]


def plot_area(root: ET.Element) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the chart's plot area: its clip rectangle."""
    r = root.find(f"{SVG_NS}defs/{SVG_NS}clipPath/{SVG_NS}rect")
    x, y, w, h = (float(r.get(a)) for a in ("x", "y", "width", "height"))
    return x, y, x + w, y + h


def data_elements(root: ET.Element, tag: str) -> list[ET.Element]:
    """The ``tag`` elements drawn in the clipped plot area (not the legend's samples)."""
    group = next(g for g in root.iter(f"{SVG_NS}g") if g.get("clip-path"))
    return list(group.iter(f"{SVG_NS}{tag}"))


@pytest.fixture(scope="module")
def prepped(sample_file, tmp_path_factory):
    """make data on the 20 k-row sample (several parts, non-default thresholds) and a small
    local model, so the report has every section."""
    root = tmp_path_factory.mktemp("report")
    work, output = str(root / "work"), str(root / "output")
    manifest = pipeline.run_data(sample_file[0], work, output, PrepSettings(**SETTINGS))
    hp = {"num_factors": 4, "epochs": 3, "mini_batch_size": 200, "seed": 1}
    train_from_output(output, os.path.join(output, "model"), hp)
    index = report.write_report(output)
    return output, work, manifest, index


def test_report_lists_valid_images_and_the_manifest_numbers(prepped):
    output, work, manifest, index = prepped
    assert index == os.path.join(output, "report", "index.html")
    text = open(index, encoding="utf-8").read()
    page = Page(text)

    # Every chart is referenced, relative, exists and is a well-formed SVG document.
    folder = os.path.join(output, "report")
    assert not glob.glob(os.path.join(folder, "*.png"))
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.svg"))}
    assert set(page.images) == on_disk == CHARTS
    svgs = {}
    for src in page.images:
        assert "/" not in src and ":" not in src
        with open(os.path.join(folder, src), encoding="utf-8") as f:
            svgs[src] = parse_svg(f.read())

    # The charts show the data: the funnel's labels (escaped in the file) and counts ...
    c, ing = manifest["counts"], manifest["ingest"]
    root, texts = svgs["funnel.svg"]
    assert "Rows from the source to the train and test channels" in texts
    assert "removed: customer < 3 ratings" in texts and "train" in texts
    top = ing["rows_read"]
    assert f"{c['train_rows']:,} ({charts.fmt_percent(c['train_rows'], top)})" in texts
    assert f"{top:,} (100.0 %)" in texts
    n_bars = len([st for st in report.funnel_steps(manifest)
                  if st["kind"] != "removed" or st["rows"]])
    assert len(data_elements(root, "rect")) == n_bars
    # ... each customer / product count a point, placed by k and by its count on log axes ...
    stats = json.load(open(os.path.join(folder, "stats.json")))
    for name, what, setting_name in (("ratings_per_customer.svg", "customers",
                                      "MIN_CUSTOMER_RATINGS"),
                                     ("ratings_per_product.svg", "products",
                                      "MIN_PRODUCT_RATINGS")):
        root, texts = svgs[name]
        dist = stats["distributions"][what]
        t = dist["threshold"]
        assert any(x.startswith(f"{setting_name} = {t} (keep k ≥ {t}): removes ") for x in texts)
        assert f"50 % of {what} have ≤ {dist['quantiles']['50']}" in texts
        assert {"1", "10"} <= set(texts)  # decades
        dots = data_elements(root, "circle")
        assert len(dots) == len(dist["histogram"])
        left, top_px, right, bottom = plot_area(root)
        xy = [(float(d.get("cx")), float(d.get("cy"))) for d in dots]
        assert all(left <= x <= right and top_px <= y <= bottom for x, y in xy)
        assert all(a[0] < b[0] for a, b in zip(xy, xy[1:]))  # ascending k, left to right
        by_count = sorted(zip((n for _, n in dist["histogram"]), (y for _, y in xy)))
        assert all(a[1] >= b[1] for a, b in zip(by_count, by_count[1:]))  # more is higher
        # one decade is as far from the next on both axes' tick labels: a log scale
        ticks = {tx.text: float(tx.get("x")) for tx in root.iter(f"{SVG_NS}text")
                 if tx.get("text-anchor") == "middle" and tx.text in ("1", "10", "100")}
        assert ticks["10"] - ticks["1"] == pytest.approx(ticks["100"] - ticks["10"], abs=0.2)
    # ... train and test bars per star, the days histogram and the learning curve.
    root, texts = svgs["star_ratings.svg"]
    assert {"1 ★", "5 ★", f"train ({c['train_rows']:,} rows)",
            f"test ({c['test_rows']:,} rows)"} <= set(texts)
    assert len(data_elements(root, "rect")) == 2 * 5
    root, texts = svgs["days_since_first.svg"]
    assert {"train", "test", "rows", "days_since_first"} <= set(texts)
    assert len(data_elements(root, "polyline")) == 2
    root, texts = svgs["learning_curve.svg"]
    assert {"test:rmse", "train rmse (each row before its update)", "epoch", "RMSE"} <= set(texts)
    assert any(x.startswith("predict the train mean: ") for x in texts)

    # Static and self-contained.
    assert page.scripts == 0 and "<script" not in text.lower()
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", text.replace("data:,", ""))
    assert all(link == "data:," for link in page.links)

    # The funnel equals the manifest.
    want = {"rows_read": ing["rows_read"], "rows_valid": ing["rows_valid"],
            "duplicates_removed": c["duplicates_removed"],
            "rows_deduped": c["rows_in"] - c["duplicates_removed"],
            "removed_by_customer_filter": c["removed_by_customer_filter"],
            "removed_by_product_filter": c["removed_by_product_filter"],
            "rows_kept": c["rows_kept"], "train_rows": c["train_rows"],
            "test_rows": c["test_rows"]}
    want.update({f"rejected:{k}": v for k, v in ing["rejected"].items()})
    got = {key: number(cells[1]) for (table, key), cells in page.rows.items()
           if table == "funnel"}
    assert got == want
    assert sum(ing["rejected"].values()) > 0  # the sample has faults: the reasons are exercised

    # The thresholds: in the settings table, the funnel's labels and the quantile table.
    assert page.rows[("settings", "min_customer_ratings")][1] == "3"
    assert page.rows[("settings", "min_product_ratings")][1] == "4"
    assert "removed: customer &lt; 3 ratings" in text
    assert "removed: product &lt; 4 ratings" in text
    assert page.rows[("quantiles", "customers")][8] == "≥ 3"
    assert page.rows[("quantiles", "products")][8] == "≥ 4"

    # The model section shows the local trainer's final test RMSE.
    metrics = json.load(open(os.path.join(output, "model", "metrics.json")))
    assert f"{metrics['final']['test:rmse']:.4f}" in text


def test_report_numbers_match_an_independent_computation(prepped):
    output, work, manifest, _ = prepped
    stats = json.load(open(os.path.join(output, "report", "stats.json")))
    assert stats["key"] == manifest["key"]

    # From the ingested reviews, deduplicated here by pandas (prepare's scratch files are gone).
    reviews = pd.concat(pd.read_parquet(f, columns=["customer_id", "product_id"])
                        for f in glob.glob(os.path.join(work, "reviews", "*.parquet")))
    deduped = reviews.drop_duplicates()
    assert not os.path.exists(os.path.join(work, "_deduped"))
    assert len(deduped) == manifest["counts"]["rows_in"] - manifest["counts"]["duplicates_removed"]
    for what, col in (("customers", "customer_id"), ("products", "product_id")):
        want = deduped[col].value_counts().value_counts().sort_index()
        dist = stats["distributions"][what]
        assert dist["histogram"] == [[int(k), int(n)] for k, n in want.items()]
        per_key = np.sort(deduped[col].value_counts().to_numpy())
        for q in report.QUANTILES:
            assert dist["quantiles"][str(q)] == int(np.quantile(per_key, q / 100,
                                                                method="inverted_cdf"))
        assert dist["quantiles"]["max"] == per_key.max()
        t = dist["threshold"]
        assert dist["below_threshold"] == {"keys": int((per_key < t).sum()),
                                           "rows": int(per_key[per_key < t].sum())}
    # single mode: what the customer threshold cuts is exactly the customer filter's count
    assert stats["distributions"]["customers"]["below_threshold"]["rows"] == \
        manifest["counts"]["removed_by_customer_filter"]

    users = pd.read_parquet(os.path.join(work, "users"))
    frames = {ch: pd.read_parquet(os.path.join(work, ch)) for ch in ("train", "test")}
    for ch, df in frames.items():
        assert stats[ch]["rows"] == len(df) == manifest["counts"][f"{ch}_rows"]
        assert stats[ch]["ratings"] == [[float(s), int((df["star_rating"] == s).sum())]
                                        for s in range(1, 6)]
        first = df.merge(users, on="user")
        days = (first["review_date"] - first["first_review"]).dt.days.to_numpy()
        assert stats[ch]["days"] == np.bincount(days).tolist()

    train, test = frames["train"], frames["test"]
    cold_users = set(test["user"]) - set(train["user"])
    cold_items = set(test["item"]) - set(train["item"])
    assert stats["cold_start"] == {
        "test_customers": test["user"].nunique(),
        "test_customers_without_train": len(cold_users),
        "test_rows_customer_without_train": int(test["user"].isin(cold_users).sum()),
        "test_products": test["item"].nunique(),
        "test_products_without_train": len(cold_items),
        "test_rows_product_without_train": int(test["item"].isin(cold_items).sum()),
    }
    assert stats["cold_start"]["test_customers_without_train"] > 0  # min 3: some have 1 left


def _copy_output(src: str, dst: str) -> None:
    """OUTPUT's manifest and model, without shards or report (the report needs no more)."""
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "manifest.json"), dst)
    shutil.copytree(os.path.join(src, "model"), os.path.join(dst, "model"))


def test_escaping_refresh_and_stale_charts(prepped, tmp_path):
    output, work, manifest, _ = prepped
    odd = str(tmp_path / 'out <b>&"x"')
    _copy_output(output, odd)
    index = report.write_report(odd, work=work)
    text = open(index, encoding="utf-8").read()
    assert "<b>" not in text and "out &lt;b&gt;&amp;&quot;x&quot;" in text
    assert os.path.exists(os.path.join(odd, "report", "learning_curve.svg"))

    # No model any more, but a SageMaker job: its final metrics replace the learning curve,
    # whose now-unused SVG is removed, as are the PNG charts an earlier fmprep wrote; a file
    # of the user's stays. Data stats come from stats.json: WORK is not read again.
    folder = os.path.join(odd, "report")
    for name in OLD_PNGS | {"my-chart.png", "notes.svg"}:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
    shutil.rmtree(os.path.join(odd, "model"))
    storage.write_json(os.path.join(odd, "sagemaker.json"), {
        "region": "us-east-1", "training_job": {
            "name": "fm-<job>", "status": "Completed", "instance_type": "ml.c5.2xlarge",
            "instance_count": 4, "hyperparameters": {"num_factors": "64"},
            "model_artifact": "s3://bucket/model.tar.gz",
            "metrics": {"test:rmse": 1.0512, "train:progress": 100.0}}})
    index = report.write_report(odd, work=str(tmp_path / "no-such-work"))
    text = open(index, encoding="utf-8").read()
    assert "fm-&lt;job&gt;" in text and "1.0512" in text and "test:rmse" in text
    assert sorted(os.listdir(folder)) == sorted(CHARTS - {"learning_curve.svg"}
                                                 | {"index.html", "stats.json", "my-chart.png",
                                                    "notes.svg"})
    assert "learning_curve" not in text

    # refresh=True reads WORK again, and says what to do when it is gone.
    with pytest.raises(FmprepError, match="no finished prepare stage"):
        report.write_report(odd, work=str(tmp_path / "no-such-work"), refresh=True)


def test_a_crash_leaves_no_report_that_looks_complete(prepped, tmp_path, monkeypatch):
    output, work, _, _ = prepped
    out = str(tmp_path / "out")
    _copy_output(output, out)
    index = report.write_report(out, work=work)
    assert os.path.exists(index)

    real = storage.write_bytes_atomic
    written = []

    def crash_on_third_chart(url, data, storage_options=None):
        if url.endswith(".svg"):
            written.append(url)
            if len(written) == 3:
                raise OSError("disk full")
        return real(url, data, storage_options)

    monkeypatch.setattr(storage, "write_bytes_atomic", crash_on_third_chart)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(out, work=work)
    assert not os.path.exists(index)  # the old page went first; the new one never appeared
    assert not glob.glob(os.path.join(out, "report", "*.tmp-*"))
    monkeypatch.setattr(storage, "write_bytes_atomic", real)
    assert report.write_report(out, work=work) == index


def test_every_reject_reason_has_a_funnel_label():
    reasons = set(REJECT_REASONS) | {r for rs in FORMAT_REASONS.values() for r in rs}
    assert reasons <= set(report.REJECT_LABELS)
    manifest = {"counts": {k: 0 for k in ("rows_in", "duplicates_removed", "rows_kept",
                                          "removed_by_customer_filter",
                                          "removed_by_product_filter", "train_rows",
                                          "test_rows")},
                "ingest": {"rows_read": 3, "rejected": {"bad_json": 2, "bad_timestamp": 1}}}
    labels = [st["label"] for st in report.funnel_steps(manifest)]
    assert "rejected: not a JSON object" in labels
    assert "rejected: timestamp missing or out of range" in labels


def test_errors_name_the_fix(prepped, tmp_path):
    output, work, manifest, _ = prepped
    with pytest.raises(FmprepError, match="run make data first"):
        report.write_report(str(tmp_path / "nowhere"))
    other = str(tmp_path / "other")
    os.makedirs(other)
    changed = {**manifest, "counts": {**manifest["counts"], "train_rows": 1}}
    storage.write_json(os.path.join(other, "manifest.json"), changed)
    with pytest.raises(FmprepError, match="rerun make data"):
        report.write_report(other, work=work)
    # WORK prepared before the distributions were counted there: one line naming the fix.
    old_work = str(tmp_path / "old_work")
    os.makedirs(old_work)
    prepared = json.load(open(os.path.join(work, "manifest.json")))
    del prepared["distributions"]
    storage.write_json(os.path.join(old_work, "manifest.json"), prepared)
    out2 = str(tmp_path / "out2")
    os.makedirs(out2)
    storage.write_json(os.path.join(out2, "manifest.json"), manifest)
    with pytest.raises(FmprepError, match="FORCE=1"):
        report.write_report(out2, work=old_work)


def test_report_on_s3(prepped, s3):
    output, work, manifest, _ = prepped
    for name in ("train", "test"):  # the distributions come from WORK's manifest
        s3.put(os.path.join(work, name), f"fmprep-test/work/{name}", recursive=True)
    s3.put(os.path.join(work, "manifest.json"), "fmprep-test/work/manifest.json")
    s3.put(os.path.join(output, "manifest.json"), "fmprep-test/out/manifest.json")
    index = report.write_report("s3://fmprep-test/out", work="s3://fmprep-test/work")
    assert index == "s3://fmprep-test/out/report/index.html"
    text = s3.cat("fmprep-test/out/report/index.html").decode("utf-8")
    local = json.load(open(os.path.join(output, "report", "stats.json")))
    remote = json.loads(s3.cat("fmprep-test/out/report/stats.json"))
    assert remote["distributions"] == local["distributions"]
    assert remote["cold_start"] == local["cold_start"]
    images = Page(text).images
    assert set(images) == CHARTS - {"learning_curve.svg"}
    for src in images:
        parse_svg(s3.cat(f"fmprep-test/out/report/{src}").decode("utf-8"))
    assert "No model yet" in text


# --- charts on edge cases -------------------------------------------------------------------------

EMPTY_QUANTILES = {"50": None, "75": None, "90": None, "95": None, "99": None, "max": None,
                   "count": 0, "rows": 0}


def dist(hist, threshold, quantiles=None, below=(0, 0)):
    q = quantiles or {"50": 1, "75": 1, "90": 2, "95": 2, "99": 3, "max": 3, "count": 5,
                      "rows": 9}
    return {"histogram": hist, "quantiles": q, "threshold": threshold,
            "below_threshold": {"keys": below[0], "rows": below[1]}}


@pytest.mark.parametrize("threshold", [0, None, 1, 2, 50])
def test_counts_chart_thresholds(threshold):
    hist = [[1, 3], [2, 1], [3, 1]]
    root, texts = parse_svg(charts.plot_counts(dist(hist, threshold, below=(3, 3)),
                                               "products", "MIN_<P>"))
    lines = [(float(el.get("x1")), el.get("stroke"), el.get("stroke-width"))
             for el in data_elements(root, "line")]
    red = [x for x, colour, _ in lines if colour == charts.C_REMOVED]
    shaded = [r for r in data_elements(root, "rect") if r.get("fill") == charts.C_REMOVED]
    legend = [x for x in texts if x.startswith("MIN_<P> = ")]
    if threshold:
        assert legend == [f"MIN_<P> = {threshold} (keep k ≥ {threshold}): removes 60.0 % of "
                          f"the products, 33.3 % of the rows"]
        assert len(red) == 1  # between k = t - 1 and t, also for t = 1 (left of k = 1)
        left, _, right, _ = plot_area(root)
        assert left < red[0] < right
        assert len(shaded) == (threshold > 1)
    else:
        assert not legend and not red and not shaded
    # quantile lines at k = 1, 2 and 3 (50, 90, 99 %)
    assert len([x for x, colour, _ in lines if colour == charts.C_GREY]) == 3
    assert "&lt;P&gt;" in charts.plot_counts(dist(hist, 2), "products", "MIN_<P>")


def test_counts_chart_without_data():
    root, texts = parse_svg(charts.plot_counts(dist([], 5, EMPTY_QUANTILES), "customers",
                                               "MIN_CUSTOMER_RATINGS"))
    assert "Ratings per customer (0 customers)" in texts
    assert not data_elements(root, "circle")
    assert any(x.startswith("MIN_CUSTOMER_RATINGS = 5 (keep k ≥ 5): removes –") for x in texts)
    # one count far from 1: the y axis still shows two decades to read it against
    _, texts = parse_svg(charts.plot_counts(dist([[40, 30]], 3), "customers", "X"))
    assert {"10", "100"} <= set(texts)


def test_linear_and_log_ticks():
    for lo, hi in ((0, 63.1), (0, 5.6e6), (0, 6087), (0.37, 1.3), (1.27, 1.556), (0, 1)):
        scale = charts._linear_scale(lo, hi)
        values = [v for v, _ in scale.ticks]
        assert 4 <= len(values) <= 6, (lo, hi, values)
        step = values[1] - values[0]
        mantissa = step / 10 ** np.floor(np.log10(step))
        assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9, step
        assert scale.lo <= values[0] and values[-1] <= scale.hi
    assert [t for _, t in charts._linear_scale(0, 5.6e6).ticks][1:3] == ["1,000,000",
                                                                        "2,000,000"]
    assert [t for _, t in charts._linear_scale(0.9, 3.1, integer=True).ticks] == ["1", "2", "3"]
    log = charts._log_scale(0.5, 2e6)
    assert [t for _, t in log.ticks] == ["1", "10", "100", "1,000", "10,000", "100,000",
                                         "1,000,000"]
    assert log.frac(0) is None and log.frac(-1) is None and log.frac(None) is None
    assert log.frac(10) - log.frac(1) == pytest.approx(log.frac(100) - log.frac(10))


def test_star_and_days_charts_on_edge_cases():
    ch = lambda ratings, days: {"rows": sum(n for _, n in ratings), "ratings": ratings,  # noqa
                                "days": days}
    # no rows at all; a single (half) star value; all days 0; half stars and short spans
    for stats, n_bars, n_steps in (
            ({"train": ch([[1.0, 0], [2.0, 0]], [0]), "test": ch([], [0])}, 4, 0),
            ({"train": ch([], []), "test": ch([], [])}, 0, 0),
            ({"train": ch([[4.5, 5]], [5]), "test": ch([[4.5, 2]], [2])}, 2, 2),
            ({"train": ch([[v / 2, 1] for v in range(1, 11)], [3, 0, 0, 1, 5]),
              "test": ch([[5.0, 3]], [0] * 7 + [3])}, 20, 2)):
        root, texts = parse_svg(charts.plot_stars(stats))
        assert len(data_elements(root, "rect")) == n_bars
        assert f"train ({stats['train']['rows']:,} rows)" in texts
        root, texts = parse_svg(charts.plot_days(stats))
        assert len(data_elements(root, "polyline")) == n_steps
        assert "days since the customer's first kept review" in texts
    _, texts = parse_svg(charts.plot_stars(
        {"train": ch([[v / 2, 1] for v in range(1, 11)], [1]), "test": ch([[5.0, 3]], [1])}))
    assert {"0.5 ★", "4.5 ★", "5 ★"} <= set(texts)
    # 100 days in 60 bins at most: a step is two points per bin and one at each end
    root, _ = parse_svg(charts.plot_days({"train": ch([[5.0, 1]], [1] * 500),
                                          "test": ch([[5.0, 1]], [1])}))
    points = [len(p.get("points").split()) for p in data_elements(root, "polyline")]
    assert points == [2 * 60 + 2, 2 * 60 + 2]


def test_learning_curve_on_edge_cases():
    def curve(epochs, baseline=1.25, predictor_type="regressor"):
        return parse_svg(charts.plot_learning_curve(
            {"epochs": epochs, "predictor_type": predictor_type}, baseline))

    root, texts = curve([])
    assert not data_elements(root, "polyline") and "Learning curve (local trainer)" in texts
    root, texts = curve([{"epoch": 1, "train:loss": 1.0, "test:rmse": 1.1}])
    assert not data_elements(root, "polyline")  # one point: markers only
    assert len(data_elements(root, "circle")) == 1 and len(data_elements(root, "rect")) == 1
    assert "predict the train mean: 1.250" in texts
    # a metric missing or None in some epochs: the line breaks there
    epochs = [{"epoch": i, "train:loss": 0.5, "test:rmse": None if i == 3 else 1.0 + i / 10}
              for i in range(1, 7)]
    epochs[0]["train:loss"] = None
    root, texts = curve(epochs)
    assert len([p for p in data_elements(root, "polyline")
                if p.get("stroke") == charts.C_TEST]) == 2
    # a classifier: its test metrics, no train RMSE and no mean baseline
    root, texts = curve([{"epoch": i, "test:accuracy": 0.6, "test:f1": float("nan"),
                          "train:loss": 0.7} for i in range(1, 4)], predictor_type="x")
    assert {"test:accuracy", "test:f1", "metric"} <= set(texts)
    assert not any("train rmse" in x or "train mean" in x for x in texts)
    # many epochs (the sampler's 200 sweeps): lines without a marker per point
    root, _ = curve([{"epoch": i, "train:loss": 1 / i, "test:rmse": 1 + 1 / i}
                     for i in range(1, 201)])
    assert not data_elements(root, "circle") and len(data_elements(root, "polyline")) == 2


def test_funnel_chart_of_empty_counts():
    manifest = {"counts": {k: 0 for k in ("rows_in", "duplicates_removed", "rows_kept",
                                          "removed_by_customer_filter",
                                          "removed_by_product_filter", "train_rows",
                                          "test_rows")}}
    root, texts = parse_svg(charts.plot_funnel(report.funnel_steps(manifest)))
    assert "valid rows" in texts and "0 (0.0 %)" in texts
    assert "removed: customer < ? ratings" not in texts  # removals of 0 rows are left out


# --- headless Chromium ----------------------------------------------------------------------------

def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def serve(directory: str):
    """A thread serving ``directory`` on 127.0.0.1; returns (server, requests log)."""
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):
            log.append((self.command, self.path, int(code)))

        def copyfile(self, source, outputfile):
            data = source.read()
            log.append(("BYTES", self.path, len(data)))
            outputfile.write(data)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, log


def render(chromium: str, url: str, screenshot: str, profile: str,
           size=(1280, 2400)) -> subprocess.CompletedProcess:
    """Load ``url`` in headless Chromium; write a screenshot and return the DOM on stdout."""
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         f"--screenshot={screenshot}", f"--window-size={size[0]},{size[1]}", "--dump-dom", url],
        capture_output=True, text=True, timeout=180)


@pytest.fixture
def chromium():
    """The chromium binary; skip without it, unless FMPREP_REQUIRE_CHROMIUM is set (CI)."""
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("FMPREP_REQUIRE_CHROMIUM"):
            pytest.fail(f"FMPREP_REQUIRE_CHROMIUM is set but chromium is not installed; "
                        f"run: {CHROMIUM_INSTALL}")
        pytest.skip(f"chromium is not installed ({CHROMIUM_INSTALL}; "
                    "set FMPREP_REQUIRE_CHROMIUM=1 to make this a failure)")
    return binary


@pytest.mark.slow
def test_report_renders_in_headless_chromium(chromium, prepped, tmp_path):
    output = prepped[0]
    directory = os.path.join(output, "report")
    page = Page(open(os.path.join(directory, "index.html"), encoding="utf-8").read())
    server, log = serve(directory)
    try:
        shot = str(tmp_path / "shot.png")
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        done = render(chromium, url, shot, str(tmp_path / "profile"))
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-2000:]

    # The page and every image were fetched, completely, and nothing else was asked for.
    fetched = {path: code for method, path, code in log if method == "GET"}
    served = {path: n for method, path, n in log if method == "BYTES"}
    wanted = ["/index.html"] + [f"/{src}" for src in page.images]
    assert set(fetched) == set(wanted), (fetched, wanted)
    for path in wanted:
        assert fetched[path] == 200, path
        assert served[path] == os.path.getsize(os.path.join(directory, path.lstrip("/")))
    # The browser built the page we wrote: title, every image, the funnel table.
    dom = Page(done.stdout)
    assert dom.images == page.images
    assert "fmprep report" in done.stdout and 'class="funnel"' in done.stdout

    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10                      # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, charts and colours
