"""The HTML report: its numbers against the manifest and an independent pandas computation, its
images, its crash safety, S3, and a render in headless Chromium."""

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
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmprep.model.training import train_from_output
from fmprep import pipeline, report, storage
from fmprep.config import PrepSettings
from fmprep.errors import FmprepError
from fmprep.sources import FORMAT_REASONS, REJECT_REASONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
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

    # Every chart is referenced, relative, exists and is a real PNG of a sensible size.
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(output, "report", "*.png"))}
    assert set(page.images) == on_disk
    assert on_disk >= {"funnel.png", "ratings_per_customer.png", "ratings_per_product.png",
                       "star_ratings.png", "days_since_first.png", "learning_curve.png"}
    for src in page.images:
        assert "/" not in src and ":" not in src
        path = os.path.join(output, "report", src)
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = im.size
            assert 400 <= w <= 2000 and 300 <= h <= 2000, (src, im.size)
            assert np.asarray(im.convert("L")).std() > 5, f"{src} looks blank"

    # Static and self-contained.
    assert page.scripts == 0 and "<script" not in text.lower()
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", text.replace("data:,", ""))
    assert all(link == "data:," for link in page.links)

    # The funnel equals the manifest.
    c, ing = manifest["counts"], manifest["ingest"]
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
    assert os.path.exists(os.path.join(odd, "report", "learning_curve.png"))

    # No model any more, but a SageMaker job: its final metrics replace the learning curve,
    # whose now-unused PNG is removed. Data stats come from stats.json: WORK is not read again.
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
    assert not os.path.exists(os.path.join(odd, "report", "learning_curve.png"))
    assert "learning_curve.png" not in text

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

    def crash_on_third_png(url, data, storage_options=None):
        if url.endswith(".png"):
            written.append(url)
            if len(written) == 3:
                raise OSError("disk full")
        return real(url, data, storage_options)

    monkeypatch.setattr(storage, "write_bytes_atomic", crash_on_third_png)
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
    for src in Page(text).images:
        assert s3.cat(f"fmprep-test/out/report/{src}")[:8] == PNG_MAGIC
    assert "No model yet" in text


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
