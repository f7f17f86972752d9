"""The report's HTML page: static, self-contained (inline CSS, images by relative path, no
JavaScript, no external URL)."""

from __future__ import annotations

import html

from .. import storage
from ..config import SAGEMAKER_RECORD
from .charts import (fmt_number, fmt_percent, fmt_stamp, fmt_star, funnel_steps,
                     plot_learning_curve)
from .stats import QUANTILES, mean_baseline_rmse, quantiles, rating_counts, rating_values


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


def model_sections(output: str, model_dir: str, stats: dict, storage_options,
                    images: dict) -> str:
    """HTML of the model's sections: the local trainer's learning curve and metrics, or the
    SageMaker training job's; adds the learning curve chart to ``images``."""
    parts = []
    metrics_url = storage.join(model_dir, "metrics.json")
    metrics = storage.read_json(metrics_url, storage_options)
    if metrics:
        baseline = mean_baseline_rmse(stats)
        regressor = metrics.get("predictor_type", "regressor") == "regressor"
        images["learning_curve.svg"] = plot_learning_curve(metrics, baseline)
        epochs = metrics.get("epochs") or []
        names = sorted({k for e in epochs for k in e if k not in ("epoch", "seconds")},
                       key=lambda k: (not k.startswith("train:"), k)) + ["seconds"]
        step = max(1, -(-len(epochs) // 20))  # at most ~20 rows (the sampler has 200 sweeps)
        shown = epochs[::-1][::step][::-1]
        rows = [tuple([e.get("epoch")] + ["–" if e.get(n) is None else f"{e[n]:.4f}"
                                          for n in names]) for e in shown]
        info = [("predictor_type", metrics.get("predictor_type")),
                ("train rows", fmt_number(metrics.get("train_rows"))),
                ("test rows", fmt_number(metrics.get("test_rows")))]
        info += [(f"final {k}", f"{v:.4f}") for k, v in (metrics.get("final") or {}).items()]
        if baseline is not None and regressor:
            info.append(("test rmse of predicting the train mean", f"{baseline:.4f}"))
        if metrics.get("train_seconds") is not None:
            info.append(("training seconds", f"{metrics['train_seconds']:.1f}"))
        parts.append("<h3>Local trainer</h3>")
        parts.append('<div class="split">'
                     + _figure_html("learning_curve.svg", "learning curve: test metrics per epoch",
                                    f"from {metrics_url}")
                     + "<div>" + _table(["", "value"], info, {1}, ' class="model"')
                     + _table(["epoch"] + names, rows, set(range(len(names) + 1)),
                              ' class="epochs"') + "</div></div>")
        parts.append(_hyperparameters_html(metrics.get("hyperparameters") or {}))
        parts += [f'<p class="note">warning: {_e(w)}</p>' for w in metrics.get("warnings") or []]
    evaluation = storage.read_json(storage.join(model_dir, "evaluation.json"), storage_options)
    if evaluation:
        parts.append(evaluation_html(evaluation))
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
        parts.append('<p class="note">No model yet: <code>make train</code> (local or '
                     'sagemaker backend) adds its learning curve or final metrics here.</p>')
    return "".join(parts)


def evaluation_html(evaluation: dict) -> str:
    """The model against fmprep's baselines: rating errors, ranking, errors by segment."""
    k = evaluation["ranking"]["k"]
    methods = [("model", "the model"), ("biases", "biases only (mean + customer + product)"),
               ("global_mean", "the train mean")]
    rating = [(label, f"{evaluation['rating'][m]['rmse']:.4f}",
               f"{evaluation['rating'][m]['mae']:.4f}") for m, label in methods]
    ranking = [(label, f"{evaluation['ranking'][m][f'hr@{k}']:.4f}",
                f"{evaluation['ranking'][m][f'ndcg@{k}']:.4f}")
               for m, label in (("recommender", "the recommender (make recommend)"),
                                ("model", "the rating model"), ("popularity", "popularity"))
               if m in evaluation["ranking"]]
    segments = []
    for what, title in (("customer_train_ratings", "customer's train ratings"),
                        ("product_train_ratings", "product's train ratings")):
        for name, seg in evaluation["segments"][what].items():
            segments.append((f"{title} {name}", fmt_number(seg["rows"]),
                             *(f"{seg[m]:.4f}" for m, _ in methods)))
    return ("<h3>Evaluation on the test rows</h3>"
            + _table(["", "test RMSE", "test MAE"], rating, {1, 2}, ' class="evaluation"')
            + f'<p class="note">Ranking: every product the customer did not rate in train, '
              f'ranked for {fmt_number(evaluation["ranking"]["customers"])} test customers; '
              f"HR@{k} is the share whose test product is in the top {k}.</p>"
            + _table(["", f"HR@{k}", f"NDCG@{k}"], ranking, {1, 2}, ' class="ranking"')
            + _table(["segment", "rows", "model", "biases only", "train mean"], segments,
                     {1, 2, 3, 4}, ' class="segments"'))


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
        f'<div><dt>{_e(k)}</dt><dd>{_e(fmt_number(v))}</dd></div>' for k, v in summary) + "</dl>")

    h.append('<h2 id="funnel">Rows: source → train and test</h2>')
    h.append('<div class="split">'
             + _figure_html("funnel.svg", "funnel of rows from source to train and test")
             + _table(["step", "rows", "% of first"],
                      [(st["label"], fmt_number(st["rows"]), fmt_percent(st["rows"], top))
                       for st in steps],
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
             + _figure_html("ratings_per_customer.svg", "ratings per customer, log-log")
             + _figure_html("ratings_per_product.svg", "ratings per product, log-log")
             + "</div>")
    head = ["", "count"] + [f"{q} %" for q in QUANTILES] + ["max", "threshold",
                                                               "below threshold", "their rows"]
    rows, keys = [], []
    for what, setting in (("customers", "min_customer_ratings"),
                          ("products", "min_product_ratings")):
        q, below = d[what]["quantiles"], d[what]["below_threshold"]
        rows.append(tuple([f"ratings per {what[:-1]}", fmt_number(q["count"])]
                          + [fmt_number(q[str(p)]) for p in QUANTILES]
                          + [fmt_number(q["max"]), f"≥ {fmt_number(s.get(setting))}",
                             f"{below['keys']:,} ({fmt_percent(below['keys'], q['count'])})",
                             f"{below['rows']:,} ({fmt_percent(below['rows'], q['rows'])})"]))
        keys.append(what)
    h.append(_table(head, rows, set(range(1, len(head))), ' class="quantiles"', keys))

    values = rating_values(stats)
    counts = {ch: rating_counts(stats, ch, values) for ch in ("train", "test")}
    stars = [tuple([fmt_star(v)] + [f"{int(counts[ch][i]):,} "
                                 f"({fmt_percent(counts[ch][i], stats[ch]['rows'])})"
                                 for ch in ("train", "test")]) for i, v in enumerate(values)]
    days_rows = []
    for ch in ("train", "test"):
        hist = [[k, n] for k, n in enumerate(stats[ch]["days"]) if n]
        q = quantiles(hist)
        days_rows.append(tuple([ch] + [fmt_number(q[str(p)]) for p in (50, 90, 99)]
                               + [fmt_number(q["max"])]))
    h.append('<h2 id="channels">Train and test rows</h2><div class="grid"><div>')
    h.append(_figure_html("star_ratings.svg", "star rating distribution, train vs test"))
    h.append(_table(["star_rating", "train", "test"], stars, {1, 2}, ' class="stars"'))
    h.append("</div><div>")
    h.append(_figure_html("days_since_first.svg", "days_since_first histogram, train vs test"))
    h.append(_table(["days_since_first (days)", "50 %", "90 %", "99 %", "max"], days_rows,
                    {1, 2, 3, 4}, ' class="days"'))
    divisor = (manifest.get("days_since_first") or {}).get("divisor", 1.0)
    if s.get("days_scale", "raw") != "raw":
        h.append(f'<p class="note">Shown in days; the records hold days ÷ {_e(divisor)} '
                 f"(days scale: {_e(s.get('days_scale'))}).</p>")
    h.append('<p class="note">A test row is its customer\'s latest review, so its '
             "days_since_first is the customer's whole span.</p>")
    h.append("</div></div>")

    cs = stats["cold_start"]
    h.append('<h2 id="cold-start">Cold start in the test channel</h2>')
    h.append(_table(["", "test", "without a train row", "their test rows"], [
        ("customers", fmt_number(cs["test_customers"]),
         f"{cs['test_customers_without_train']:,} "
         f"({fmt_percent(cs['test_customers_without_train'], cs['test_customers'])})",
         fmt_number(cs["test_rows_customer_without_train"])),
        ("products", fmt_number(cs["test_products"]),
         f"{cs['test_products_without_train']:,} "
         f"({fmt_percent(cs['test_products_without_train'], cs['test_products'])})",
         fmt_number(cs["test_rows_product_without_train"]))],
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
                        [(x.get("url"), fmt_number(x.get("size")), fmt_stamp(x.get("stamp")))
                         for x in src], {1}, ' class="sources"'))
    ch = manifest["channels"]
    h.append(_table(["channel", "rows", "shards"],
                    [(n, fmt_number(ch[n]["rows"]), len(ch[n]["shards"]))
                     for n in ("train", "test")],
                    {1, 2}, ' class="channels"'))
    h.append("</div>")
    ing = manifest.get("ingest") or {}
    if ing.get("rejects_samples"):
        h.append(f'<p class="note">Samples of rejected rows: '
                 f'<code>{_e(ing["rejects_samples"])}</code></p>')
    h.append("</main></body></html>\n")
    return "\n".join(h)


