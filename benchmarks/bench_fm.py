"""fmprep's rating models side by side with scikit-surprise and myFM, on make data's split.

What it measures
----------------
Each dataset goes through ``make data``'s pipeline (``fmprep.pipeline.run_data`` with the
default ``PrepSettings``, exactly as ``make data SOURCE=...`` runs it). Every method then fits
the same train rows and is scored on the same test rows: each customer's latest review, as
make data splits them. Rows of the table:

* train mean: the mean train rating predicted for every test row;
* biases only (``training.biases_baseline``: mean + customer bias + product bias, regularised);
* fmprep ``make train`` defaults: what ``make train`` with no settings runs
  (``scripts/train_deploy.py train``: ``validate_hyperparameters({})`` then
  ``training.fit_output`` into a temporary model directory). Today that is ``solver=auto`` →
  Bayesian FM by MCMC (``fmprep.model.mcmc``). Its fit time is the trainer's own ``train_seconds``,
  which, as in make train, includes scoring the test rows after each sweep for the learning
  curve (they never steer the sampler);
* fmprep SGD with SageMaker's defaults (``config.FM_DEFAULTS``: k=256, 3 epochs, every epoch
  run: fmprep's local early stopping is off, as SageMaker has none), the local twin of a
  SageMaker job. ``--hp solver=sgd`` adds ``make train HP=solver=sgd`` as it runs locally;
* scikit-surprise SVD and SVD++ with their defaults. SVD++ is slow: it runs only when train has
  at most ``--svdpp-max-rows`` rows, otherwise a note above the table says it was skipped;
* myFM's Bayesian FM, rank 10, 200 samples (``n_iter=200``, its defaults otherwise), on the
  same sparse rows as fmprep's (customer, product, ``days_since_first``) with one prior group
  for each of the three, as fmprep's sampler has.

surprise sees only (customer, product, rating) and clips its predictions to the rating scale;
the FMs also see ``days_since_first`` and do not clip. Test RMSE is on the rating scale.

Fit seconds are wall time of the fit alone (no reading, no data conversion, no scoring except
make train's per-sweep learning curve), one process, one thread each, on whatever else the
machine runs at the time. Compare the ``fit / SVD`` column instead: every method's fit is
bracketed by two surprise SVD fits (one before, one after) and divided by their mean, so that
load from other processes weighs on both sides of the ratio (SVD's own row shows how far one
SVD fit strays from its neighbours: the noise of the column). numba kernels are compiled (or
loaded from numba's cache) on a few rows before anything is timed, and a fit is repeated until
its repeats add up to ``--min-time`` seconds (default 2, at most ``--max-repeats`` fits; every
method is seeded, so repeats score the same) and the fastest counts: on small data one fit of a
few milliseconds is mostly noise. BLAS runs on one thread (``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` default to 1 here; set them to override): every
method computes on one thread anyway, and OpenBLAS's idle threads spinning after each small
call slowed fmprep's sampler ~3x on a busy 2-core machine.

Test rows are few (one per customer), so each table's header gives the standard error of one
test RMSE over them (delta method); differences between two methods on the same rows are
paired and vary less, but ones well below that figure are not worth reading into. Nothing is
asserted: the script prints what it measured and records it as JSON.

Datasets
--------
* generated reviews (``fmprep.sample.generate_reviews``, seed ``--seed``) at each ``--rows``
  size (default 20 000 and 1 000 000; 20 000 with seed 42 is make's bundled sample). The file is
  regenerated every run and replaced only if its bytes changed, so results follow the current
  generator while an unchanged file keeps its prep;
* MovieLens 100K (GroupLens), real public ratings. The only route to it here is PyPI: the wheel
  ``recbole==1.2.1`` ships ``recbole/dataset_example/ml-100k/ml-100k.inter`` (ml-100k's
  ``u.data`` with a header line). The script fetches the wheel with ``pip download``, extracts
  that one file, drops the header and writes ``u.data`` (read as ``FORMAT=movielens-100k``).
  ``--no-movielens-100k`` leaves it out;
* ``--output DIR``: an existing OUTPUT of make data (its WORK is not needed).

Files go to ``--dir`` (default data/bench): sources, WORK and OUTPUT per dataset (the prep reruns
only when its inputs changed) and the results as JSON (``--out``, default data/bench/fm.json).

Running
-------
The libraries are the ``bench`` extra (``pip install -e ".[bench]"``, or
``pip install scikit-surprise myfm``); a missing one is skipped with a note::

    python benchmarks/bench_fm.py                          # 20 k, ML-100K, 1 M: ~5 min on 2 cores
    python benchmarks/bench_fm.py --rows 20000 --no-movielens-100k
    python benchmarks/bench_fm.py --output data/output --skip svdpp
    python benchmarks/bench_fm.py --hp mcmc_rank=8 --recommended   # two more rows

``--tune`` instead reruns the study that chose ``fmprep.model.mcmc.MCMC_DEFAULTS``: it reads only the
train channel, holds out each customer's latest train review (``mcmc.latest_per_user_split``)
as validation, runs one long chain per (rank, init_std, seed) and scores, offline from the
per-sweep validation predictions, every (sweeps, kept samples) choice with raw draws and with
conditional means; the test channel is never read::

    python benchmarks/bench_fm.py --tune --rows 200000,1000000 --no-movielens-100k
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import filecmp
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from functools import partial

# One BLAS thread (unless the environment says otherwise), set before numpy loads: every method
# here computes on one thread, and OpenBLAS's idle threads spin after each call and take cores
# from the numba kernels; on a busy 2-core machine that made fmprep's sampler ~3x slower.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in BLAS_THREADS:
    os.environ.setdefault(_name, "1")

import numpy as np

from fmprep.model import hyperparameters, mcmc, sgd, training
from fmprep.model.fm import FMModel
from fmprep import storage
from fmprep.config import FM_DEFAULTS, FM_LOCAL_OPTIONS, MANIFEST, PrepSettings
from fmprep.recordio import SparseRecords

RECBOLE_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ML100K_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass
class Dataset:
    name: str
    source: str                 # where the ratings come from, for the table header
    output: str                 # make data's OUTPUT
    prep_seconds: float | None = None
    notes: list = field(default_factory=list)


def make_data(source: str, work: str, output: str) -> float:
    """``make data SOURCE=source WORK=work OUTPUT=output`` with every setting at its default."""
    from fmprep.pipeline import run_data

    t0 = time.perf_counter()
    run_data(source, work, output, PrepSettings())
    return time.perf_counter() - t0


def generated(rows: int, directory: str, seed: int) -> Dataset:
    from fmprep.sample import generate_reviews

    source = os.path.join(directory, f"reviews_{rows}_{seed}.tsv.gz")
    # Same file name in a side directory: the gzip header names the file, so an unchanged
    # generator writes identical bytes.
    fresh = os.path.join(directory, "new", os.path.basename(source))
    generate_reviews(fresh, rows=rows, seed=seed)
    if os.path.exists(source) and filecmp.cmp(fresh, source, shallow=False):
        os.remove(fresh)        # unchanged: keep the old file (and so its prep)
    else:
        os.replace(fresh, source)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(fresh))
    tag = f"{rows}_{seed}"
    seconds = make_data(source, os.path.join(directory, f"work_{tag}"),
                        os.path.join(directory, f"output_{tag}"))
    return Dataset(f"generated reviews, {rows:,} rows",
                   f"fmprep.sample.generate_reviews(rows={rows}, seed={seed}) → {source}",
                   os.path.join(directory, f"output_{tag}"), seconds)


def prep(rows: int, directory: str, seed: int = 42) -> str:
    """Generated reviews through make data's pipeline, for other benchmarks; returns OUTPUT."""
    return generated(rows, directory, seed).output


def movielens_100k(directory: str) -> Dataset:
    """MovieLens 100K from the recbole wheel on PyPI, written as ml-100k's ``u.data``."""
    base = os.path.join(directory, "ml-100k")
    u_data = os.path.join(base, "u.data")
    if not os.path.exists(u_data):
        wheels = os.path.join(directory, "wheels")
        os.makedirs(wheels, exist_ok=True)
        found = [f for f in os.listdir(wheels) if f.startswith("recbole-1.2.1-")]
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", RECBOLE_WHEEL, "--no-deps",
                            "--only-binary=:all:", "-q", "-d", wheels], check=True)
            found = [f for f in os.listdir(wheels) if f.startswith("recbole-1.2.1-")]
        with zipfile.ZipFile(os.path.join(wheels, found[0])) as z:
            text = z.read(ML100K_MEMBER).decode("utf-8")
        header, _, body = text.partition("\n")
        if header.rstrip("\r") != ML100K_HEADER:
            raise SystemExit(f"{found[0]}: {ML100K_MEMBER} starts with {header!r}, expected "
                             f"{ML100K_HEADER!r}")
        os.makedirs(base, exist_ok=True)
        with open(u_data + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            f.write(body)
        os.replace(u_data + ".tmp", u_data)
    seconds = make_data(u_data, os.path.join(base, "work"), os.path.join(base, "output"))
    return Dataset("MovieLens 100K (real ratings)",
                   f"GroupLens ml-100k u.data, from PyPI wheel {RECBOLE_WHEEL} "
                   f"({ML100K_MEMBER}) → {u_data}", os.path.join(base, "output"), seconds)


def existing(output: str) -> Dataset:
    manifest = storage.read_json(storage.join(output, MANIFEST)) or {}
    sources = ", ".join(s.get("url", s.get("path", "?")) if isinstance(s, dict) else str(s)
                        for s in manifest.get("sources", [])) or "?"
    return Dataset(f"OUTPUT {output}", f"make data output of {sources}", output)


# ---------------------------------------------------------------------------------------------
# methods


def rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2)))


def scored(pred, truth) -> tuple[float, dict]:
    """RMSE and, in a dict, its standard error over the test rows (delta method:
    se(MSE) / (2 RMSE)); the rows are few (one per customer), so it is not small."""
    sq = (np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2
    r = float(np.sqrt(sq.mean()))
    se = float(sq.std(ddof=1) / np.sqrt(sq.size) / (2 * r)) if sq.size > 1 and r > 0 else None
    return r, {"test_rmse_se": se}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def head(records, n: int) -> SparseRecords:
    """The first ``n`` rows of ``records``."""
    end = int(records.indptr[n])
    return SparseRecords(records.indptr[:n + 1].copy(), records.indices[:end],
                         records.values[:end], records.labels[:n], records.shape)


def warm_up(train, test, manifest) -> None:
    """Compile (or load from numba's cache) every numba kernel the timed fits use."""
    small = head(train, min(200, train.labels.size))
    small_test = head(test, min(50, test.labels.size))
    quick = {**FM_DEFAULTS, "solver": "sgd", "epochs": 1}
    if "early_stopping" in FM_LOCAL_OPTIONS:
        quick["early_stopping"] = False
    sgd.train(small, small_test, quick)
    groups = mcmc.groups_for(manifest["feature_dim"], manifest["num_users"],
                             manifest["num_items"])
    model, _ = mcmc.train_mcmc(small, groups, n_iter=3, burn_in=1, keep=2, valid=small_test)
    model.predict(small_test.indptr, small_test.indices, small_test.values)


def user_item(records, num_users):
    starts = records.indptr[:-1]
    return records.indices[starts], records.indices[starts + 1] - num_users


def run_make_train(output: str, hp: dict, test, label_only: bool = False):
    """``make train`` (BACKEND=local) with ``HP`` = ``hp``, the path scripts/train_deploy.py's
    cmd_train takes, into a temporary model directory. Returns (rmse, fit s, extra), or with
    ``label_only`` what the settings resolve to, without training."""
    manifest = storage.read_json(storage.join(output, MANIFEST))
    h = hyperparameters.validate_hyperparameters(hp, manifest["feature_dim"])
    if label_only:
        if h["solver"] == "mcmc":
            return (f"MCMC, rank {h['mcmc_rank']} × {h['mcmc_keep']} kept, {h['mcmc_sweeps']} "
                    f"sweeps")
        return f"SGD, k={h['num_factors']}, {h['epochs']} epochs"
    with tempfile.TemporaryDirectory(prefix="bench_fm_model_") as model_dir:
        metrics = training.fit_output(output, model_dir, h, manifest)
        model = FMModel.load(model_dir)
        score, se = scored(model.predict(test.indptr, test.indices, test.values), test.labels)
    extra = {**se, "solver": metrics["hyperparameters"]["solver"],
             "train_from_output_test_rmse": metrics["final"].get("test:rmse"),
             "wall_seconds_incl_read_save_evaluate": metrics["wall_seconds"]}
    return score, metrics["train_seconds"], extra


def run_sgd(train, test, hp):
    (model, _), seconds = timed(lambda: sgd.train(train, None, hp))
    score, se = scored(model.predict(test.indptr, test.indices, test.values), test.labels)
    return score, seconds, se


def run_surprise(algo_name, train, test, num_users):
    import pandas as pd
    import surprise

    u, i = user_item(train, num_users)
    y = train.labels.astype(np.float64)
    frame = pd.DataFrame({"u": u, "i": i, "r": y})
    reader = surprise.Reader(rating_scale=(float(y.min()), float(y.max())))
    trainset = surprise.Dataset.load_from_df(frame, reader).build_full_trainset()
    algo = surprise.SVD(random_state=0) if algo_name == "SVD" else surprise.SVDpp(random_state=0)
    _, seconds = timed(lambda: algo.fit(trainset))
    tu, ti = user_item(test, num_users)
    pred = [algo.predict(a, b).est for a, b in zip(tu.tolist(), ti.tolist())]
    score, se = scored(pred, test.labels)
    return score, seconds, se


def run_myfm(train, test, manifest, rank=10, n_iter=200):
    import myfm
    import scipy.sparse as sp

    dim = manifest["feature_dim"]
    users, items = manifest["num_users"], manifest["num_items"]

    def csr(r):
        return sp.csr_matrix((r.values.astype(np.float64), r.indices, r.indptr),
                             shape=(r.indptr.size - 1, dim))

    X, y = csr(train), train.labels.astype(np.float64)
    model = myfm.MyFMRegressor(rank=rank, random_seed=0)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        _, seconds = timed(lambda: model.fit(X, y, n_iter=n_iter,
                                             group_shapes=[users, items, dim - users - items]))
    score, se = scored(model.predict(csr(test)), test.labels)
    return score, seconds, se


def available(module: str, package: str, ds: Dataset) -> bool:
    if importlib.util.find_spec(module) is not None:
        return True
    ds.notes.append(f"{package} is not installed (pip install {package}): its rows are skipped")
    return False


def bench(ds: Dataset, ns) -> dict:
    manifest = storage.read_json(storage.join(ds.output, MANIFEST))
    train = training.read_channel(ds.output, manifest, "train")
    test = training.read_channel(ds.output, manifest, "test")
    y_test = test.labels.astype(np.float64)
    n_train = int(train.labels.size)
    num_users = manifest["num_users"]
    print(f"\n== {ds.name}: {n_train:,} train / {y_test.size:,} test rows, "
          f"{num_users:,} customers, {manifest['num_items']:,} products", flush=True)
    warm_up(train, test, manifest)

    # The table's rows in order: (key, label, run() -> (rmse, fit seconds, extra)).
    methods = []

    def train_mean():
        mean, seconds = timed(lambda: float(train.labels.astype(np.float64).mean()))
        score, se = scored(np.full(y_test.size, mean), y_test)
        return score, seconds, se

    methods.append(("train_mean", "train mean", train_mean))
    methods.append(("biases", "biases only (`training.biases_baseline`)",
                    lambda: (*timed(lambda: training.biases_baseline(train, test)), {})))
    label = run_make_train(ds.output, {}, test, label_only=True)
    methods.append(("make_train", f"**fmprep `make train` defaults** ({label})",
                    partial(run_make_train, ds.output, {}, test)))
    for item in ns.hp:
        hp = dict(pair.partition("=")[::2] for pair in item.split())
        label = run_make_train(ds.output, hp, test, label_only=True)
        methods.append((f"make_train {item}", f"fmprep `make train HP='{item}'` ({label})",
                        partial(run_make_train, ds.output, hp, test)))
    if "sgd" not in ns.skip:
        # A SageMaker job's settings: every epoch runs (SageMaker FM has no early stopping).
        sagemaker = {**FM_DEFAULTS, "solver": "sgd"}
        if "early_stopping" in FM_LOCAL_OPTIONS:
            sagemaker["early_stopping"] = False
        label = (f"fmprep SGD, SageMaker's defaults (`FM_DEFAULTS`: "
                 f"k={FM_DEFAULTS['num_factors']}, {FM_DEFAULTS['epochs']} epochs)")
        methods.append(("sgd_sagemaker_defaults", label,
                        partial(run_sgd, train, test, sagemaker)))
    if ns.recommended and not hasattr(hyperparameters, "recommended_hyperparameters"):
        ds.notes.append("hyperparameters.recommended_hyperparameters is gone: --recommended "
                        "skipped")
    elif ns.recommended:
        hp = hyperparameters.recommended_hyperparameters(n_train)
        label = (f"fmprep SGD, `hyperparameters.recommended_hyperparameters` "
                 f"(k={hp['num_factors']}, "
                 f"{hp['epochs']} epochs)")
        methods.append(("sgd_recommended", label, partial(run_sgd, train, test, hp)))
    svd = None
    if available("surprise", "scikit-surprise", ds):
        if "svd" not in ns.skip:
            svd = partial(run_surprise, "SVD", train, test, num_users)
            methods.append(("surprise_svd", "surprise SVD (defaults: k=100, 20 epochs)", svd))
        if "svdpp" in ns.skip:
            pass
        elif n_train > ns.svdpp_max_rows:
            ds.notes.append(f"surprise SVD++ skipped: {n_train:,} train rows > --svdpp-max-rows "
                            f"{ns.svdpp_max_rows:,} (it is slow)")
        else:
            methods.append(("surprise_svdpp", "surprise SVD++ (defaults: k=20, 20 epochs)",
                            partial(run_surprise, "SVDpp", train, test, num_users)))
    if "myfm" not in ns.skip and available("myfm", "myfm", ds):
        methods.append(("myfm", "myFM Bayesian FM (rank 10, 200 samples)",
                        partial(run_myfm, train, test, manifest)))
    if svd is None:
        ds.notes.append("surprise SVD did not run, so there is no fit / SVD column")

    def measure(run):
        """Fit until the fits add up to ``--min-time`` s (at most ``--max-repeats``); the
        first fit's score, the fastest fit's seconds, and how many fits ran."""
        score, seconds, extra = run()
        times = [seconds]
        while sum(times) < ns.min_time and len(times) < ns.max_repeats:
            again, seconds, _ = run()
            if again != score:
                extra["repeat_rmse_differs"] = again
            times.append(seconds)
        return score, min(times), extra, len(times)

    # Each method's fit is bracketed by surprise SVD fits, and its ratio is to their mean: a
    # load that comes and goes on a shared machine then weighs on both sides of the ratio.
    before = measure(svd)[1] if svd else None
    rows = []
    for key, name, run in methods:
        score, seconds, extra, fits = measure(run)
        row = {"key": key, "method": name, "test_rmse": score, "fit_seconds": seconds,
               "fits": fits, **extra}
        text = ""
        if svd:
            after = measure(svd)[1]
            row["svd_seconds_before_after"] = [before, after]
            row["fit_vs_svd"] = seconds / ((before + after) / 2)
            text = f", {row['fit_vs_svd']:.2f}× SVD ({before:.3f} / {after:.3f} s)"
            before = after
        rows.append(row)
        print(f"  {name}: test RMSE {score:.4f}, fit {seconds:.3f} s (fastest of {fits}){text}",
              flush=True)
    result = {"dataset": ds.name, "source": ds.source, "output": ds.output,
              "prep_seconds": ds.prep_seconds, "train_rows": n_train,
              "test_rows": int(y_test.size), "customers": int(num_users),
              "products": int(manifest["num_items"]), "notes": list(ds.notes),
              "load_average_after": list(os.getloadavg()), "rows": rows}
    print("\n" + markdown(result), flush=True)
    return result


def markdown(result: dict) -> str:
    lines = [(f"**{result['dataset']}** — {result['source']}; {result['train_rows']:,} train / "
              f"{result['test_rows']:,} test rows (each customer's latest), "
              f"{result['customers']:,} customers, {result['products']:,} products")]
    se = [r["test_rmse_se"] for r in result["rows"] if r.get("test_rmse_se")]
    if se:
        lines[0] += (f"; standard error of one test RMSE ≈ ±{min(se):.3f}–{max(se):.3f} "
                     f"over the {result['test_rows']:,} test rows")
    lines.append("")
    lines += [f"_Note: {note}._" for note in result["notes"]]
    if result["notes"]:
        lines.append("")
    lines += ["| method | test RMSE | fit s | fit / SVD |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        s = r["fit_seconds"]
        secs = f"{s:.3f}" if s < 1 else f"{s:.1f}"
        ratio = "–" if r.get("fit_vs_svd") is None else f"{r['fit_vs_svd']:.2f}×"
        lines.append(f"| {r['method']} | {r['test_rmse']:.4f} | {secs} | {ratio} |")
    return "\n".join(lines)


def environment() -> dict:
    versions = {}
    for dist in ("numpy", "numba", "scikit-surprise", "myfm", "dask", "pandas"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
            "threads": {name: os.environ.get(name) for name in BLAS_THREADS},
            "versions": versions}


# ---------------------------------------------------------------------------------------------
# --tune: the validation study behind fmprep.model.mcmc.MCMC_DEFAULTS


def tune_chain(fit, groups, args, rank, init, seed, sweeps):
    """One chain on ``fit``; the validation predictions (``args``: CSR arrays) of every sweep's
    draw and of its conditional means, the chain's metrics and seconds."""
    draws, means = [], []
    out = np.empty(args[0].size - 1)

    def hook(sweep, theta0, w, V, cw, cV):
        mcmc._predict(*args, theta0[0], w, V, out)
        draws.append(out.astype(np.float32))
        mcmc._predict(*args, theta0[1], cw, cV, out)
        means.append(out.astype(np.float32))

    t0 = time.perf_counter()
    _, metrics = mcmc.train_mcmc(fit, groups, rank=rank, n_iter=sweeps, burn_in=sweeps - 1,
                                 keep=1, seed=seed, init_std=init, sample_hook=hook)
    return np.array(draws), np.array(means), metrics, time.perf_counter() - t0


def tune(ds: Dataset, ns) -> None:
    """Validation study for the MCMC defaults; reads the train channel only."""
    output = ds.output
    manifest = storage.read_json(storage.join(output, MANIFEST))
    train = training.read_channel(output, manifest, "train")
    fit, valid = mcmc.latest_per_user_split(train)
    groups = mcmc.groups_for(manifest["feature_dim"], manifest["num_users"],
                             manifest["num_items"])
    y = valid.labels.astype(np.float64)
    args = (valid.indptr.astype(np.int64), valid.indices.astype(np.int64),
            valid.values.astype(np.float64))
    print(f"\n{ds.name} ({output}): {fit.labels.size} fit / {y.size} validation rows (from "
          f"train only); biases only {training.biases_baseline(fit, valid):.4f}, global mean "
          f"{rmse(np.full(y.size, fit.labels.mean()), y):.4f}", flush=True)
    longest = max(ns.tune_sweeps)
    burn = ns.tune_burn_in
    keeps = (8, 16, 32)
    for rank in ns.tune_rank:
        for init in ns.tune_init:
            scores = {}
            for seed in range(ns.tune_seeds):
                draws, means, metrics, seconds = tune_chain(fit, groups, args, rank, init, seed,
                                                            longest)
                curve = [r["train:rmse"] for r in metrics["iterations"]]
                print(f"  rank {rank} init_std {init} seed {seed}: {seconds:.1f} s for {longest} "
                      f"sweeps; train RMSE after 25/50/100 sweeps "
                      + "/".join(f"{curve[i - 1]:.3f}" for i in (25, 50, 100) if i <= longest),
                      flush=True)
                for kind, preds in (("draws", draws), ("cond. means", means)):
                    for n in ns.tune_sweeps:
                        row = []
                        for k in keeps:
                            thin = (n - burn) // k
                            idx = [n - 1 - i * thin for i in range(k)] if thin else []
                            row.append(rmse(preds[idx].mean(0), y) if idx else np.nan)
                        row.append(rmse(preds[burn:n].mean(0), y))
                        scores.setdefault((kind, n), []).append(row)
            for (kind, n), rows in scores.items():
                mean = np.nanmean(rows, axis=0)
                print(f"    rank {rank} init_std {init} {kind:<11} {n:3d} sweeps, burn-in {burn}: "
                      + "  ".join(f"keep {k} {v:.4f}" for k, v in zip(keeps, mean[:-1]))
                      + f"  all {mean[-1]:.4f}  (valid RMSE, mean of {len(rows)} seeds)",
                      flush=True)


# ---------------------------------------------------------------------------------------------


def row_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N,N,...") from None
    if any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: row counts must be >= 1")
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=row_counts, action="extend", metavar="N[,N...]",
                   help="generated reviews per dataset (repeatable or comma-separated; default "
                        "20000,1000000)")
    p.add_argument("--no-generated", action="store_true", help="no generated datasets")
    p.add_argument("--movielens-100k", dest="movielens", action="store_true", default=True,
                   help="include MovieLens 100K, fetched through PyPI (default: on)")
    p.add_argument("--no-movielens-100k", dest="movielens", action="store_false",
                   help="leave MovieLens 100K out")
    p.add_argument("--output", action="append", default=[],
                   help="also an existing OUTPUT of make data (repeatable)")
    p.add_argument("--dir", default="data/bench",
                   help="sources, WORK and OUTPUT of each dataset (default %(default)s)")
    p.add_argument("--out", default="data/bench/fm.json",
                   help="results as JSON (default %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default %(default)s)")
    p.add_argument("--skip", action="append", default=[],
                   choices=("sgd", "svd", "svdpp", "myfm"), help="leave a method out")
    p.add_argument("--svdpp-max-rows", type=int, default=200_000, metavar="N",
                   help="run surprise SVD++ only up to N train rows (default %(default)s)")
    p.add_argument("--hp", action="append", default=[], metavar="'NAME=VALUE ...'",
                   help="one more row: make train HP='NAME=VALUE ...' (repeatable, a row each)")
    p.add_argument("--recommended", action="store_true",
                   help="one more row: SGD with hyperparameters.recommended_hyperparameters")
    p.add_argument("--min-time", type=float, default=2.0, metavar="S",
                   help="repeat a fit until the repeats add up to S seconds (default %(default)s)")
    p.add_argument("--max-repeats", type=int, default=10, metavar="N",
                   help="... or N fits (default %(default)s); the fastest is reported")
    p.add_argument("-v", "--verbose", action="store_true", help="fmprep's log lines too")
    p.add_argument("--tune", action="store_true",
                   help="run the validation study of the MCMC defaults instead (train rows only)")
    p.add_argument("--tune-rank", type=int, nargs="+", default=[4, 8], metavar="R")
    p.add_argument("--tune-init", type=float, nargs="+", default=[0.1, 0.5], metavar="S")
    p.add_argument("--tune-seeds", type=int, default=3, metavar="N")
    p.add_argument("--tune-sweeps", type=int, nargs="+", default=[150, 200, 300], metavar="N")
    p.add_argument("--tune-burn-in", type=int, default=50, metavar="N")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")

    os.makedirs(ns.dir, exist_ok=True)
    plan = [] if ns.no_generated else [("rows", n) for n in (ns.rows or [20_000, 1_000_000])]
    if ns.movielens:
        plan.append(("ml-100k", 100_000))
    plan.sort(key=lambda item: item[1])          # smallest first
    plan += [("output", o) for o in ns.output]
    report = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
              "environment": environment(), "datasets": []}
    for kind, what in plan:
        t0 = time.perf_counter()
        ds = (generated(what, ns.dir, ns.seed) if kind == "rows" else
              movielens_100k(ns.dir) if kind == "ml-100k" else existing(what))
        print(f"\n{ds.name}: data ready in {time.perf_counter() - t0:.0f} s ({ds.output})",
              flush=True)
        if ns.tune:
            tune(ds, ns)
            continue
        report["datasets"].append(bench(ds, ns))
        os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
        with open(ns.out, "w", encoding="utf-8") as f:   # after each dataset: partial runs count
            json.dump(report, f, indent=2)
    if not ns.tune:
        print(f"\nresults: {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
