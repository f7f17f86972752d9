"""fmprep's solvers against each other and established libraries, on make data's real split.

For each size, generated reviews (``fmprep.sample.generate_reviews``) go through ``make data``'s
pipeline (``fmprep.pipeline.run_data``, default prep settings except ``days_scale="years"``) and
every method fits the same train shards and is scored on the same test rows (each customer's
latest review, never seen while fitting or choosing defaults):

* global mean; biases only (``fm.biases_baseline``: mean + customer + product bias);
* fmprep FM, SGD/Adam with SageMaker's defaults (``config.FM_DEFAULTS``) and with
  ``fm.recommended_hyperparameters`` (fmprep's local settings);
* fmprep FM by MCMC (``fmprep.mcmc.train_mcmc``, ``MCMC_DEFAULTS``): the deployable stacked
  model, and (a second run of the same chain, scoring the test rows after every sweep without
  letting them influence it) the mean over every sweep after burn-in, which is what thinning
  to the kept samples gives up;
* scikit-surprise SVD (its defaults) and myfm's Bayesian FM (rank 10, 200 sweeps, the same
  rows and columns as fmprep's with one prior group per customers / products / days; with its
  default ``init_stdev=0.1`` and with 0.5), if installed (``pip install scikit-surprise myfm``;
  skipped with a note otherwise).

Fit seconds are wall time of the fit alone, on whatever else the machine runs at the time, so
the ``x SVD`` column (ratio to surprise SVD's fit in the same run) is the figure to compare.

Examples::

    python benchmarks/bench_solvers.py                     # 20 k and 1 M generated reviews
    python benchmarks/bench_solvers.py --rows 200000 --skip myfm
    python benchmarks/bench_solvers.py --output data/output --mcmc rank=4 --mcmc keep=32

``--tune`` instead reruns the study that chose ``fmprep.mcmc.MCMC_DEFAULTS``: it reads only the
train channel, holds out each customer's latest train review (``mcmc.latest_per_user_split``)
as validation, runs one long chain per (rank, init_std, seed) and scores, offline from the
per-sweep validation predictions, every (sweeps, kept samples) choice with raw draws and with
conditional means; the test channel is never read::

    python benchmarks/bench_solvers.py --tune --rows 200000 --rows 1000000

Generated files and prep output go to ``--dir`` (default data/bench) and are reused when the
generator's file is already there (the prep reruns only if its inputs changed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

from fmprep import fm, mcmc, storage
from fmprep.config import FM_DEFAULTS, MANIFEST, PrepSettings


def prep(rows: int, directory: str, seed: int) -> str:
    """Generate ``rows`` reviews (once) and run make data's pipeline; returns OUTPUT."""
    from fmprep.pipeline import run_data
    from fmprep.sample import generate_reviews

    source = os.path.join(directory, f"reviews_{rows}_{seed}.tsv.gz")
    if not os.path.exists(source):
        generate_reviews(source, rows=rows, seed=seed)
    work = os.path.join(directory, f"work_{rows}_{seed}_years")
    output = os.path.join(directory, f"output_{rows}_{seed}_years")
    run_data(source, work, output, PrepSettings(days_scale="years"))
    return output


def rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2)))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def user_item(records, num_users):
    starts = records.indptr[:-1]
    return records.indices[starts], records.indices[starts + 1] - num_users


def run_sgd(train, test, hp):
    (model, _), seconds = timed(lambda: fm.train(train, None, hp))
    return rmse(model.predict(test.indptr, test.indices, test.values), test.labels), seconds


def run_mcmc(train, test, manifest, overrides, score_every_sweep=False):
    """Test RMSE and fit seconds of the deployable model; with ``score_every_sweep``, also the
    test RMSE of the mean over every sweep after burn-in (the sampler never sees the rows)."""
    groups = mcmc.groups_for(manifest["feature_dim"], manifest["num_users"],
                             manifest["num_items"])
    (model, metrics), seconds = timed(lambda: mcmc.train_mcmc(
        train, groups, valid=test if score_every_sweep else None, **overrides))
    score = rmse(model.predict(test.indptr, test.indices, test.values), test.labels)
    every = metrics["final"].get("valid:rmse_all_samples")
    return score, seconds, model.num_factors, every


def run_svd(train, test, num_users):
    from surprise import SVD, Dataset, Reader
    import pandas as pd

    u, i = user_item(train, num_users)
    df = pd.DataFrame({"u": u, "i": i, "r": train.labels.astype(np.float64)})

    def fit():
        data = Dataset.load_from_df(df, Reader(rating_scale=(1, 5))).build_full_trainset()
        return SVD(random_state=0).fit(data)

    algo, seconds = timed(fit)
    tu, ti = user_item(test, num_users)
    pred = [algo.predict(a, b).est for a, b in zip(tu.tolist(), ti.tolist())]
    return rmse(pred, test.labels), seconds


def run_myfm(train, test, manifest, rank=10, n_iter=200, init_stdev=0.1):
    import contextlib
    import io

    import myfm
    import scipy.sparse as sp

    dim = manifest["feature_dim"]
    users, items = manifest["num_users"], manifest["num_items"]

    def csr(r):
        return sp.csr_matrix((r.values.astype(np.float64), r.indices, r.indptr),
                             shape=(r.indptr.size - 1, dim))

    model = myfm.MyFMRegressor(rank=rank, init_stdev=init_stdev, random_seed=0)
    X = csr(train)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        _, seconds = timed(lambda: model.fit(X, train.labels.astype(np.float64), n_iter=n_iter,
                                             group_shapes=[users, items, dim - users - items]))
    return rmse(model.predict(csr(test)), test.labels), seconds


def bench(output: str, ns) -> None:
    manifest = storage.read_json(storage.join(output, MANIFEST))
    train = fm.read_channel(output, manifest, "train")
    test = fm.read_channel(output, manifest, "test")
    y_test = test.labels.astype(np.float64)
    print(f"\n{output}: {train.labels.size} train / {test.labels.size} test rows, "
          f"{manifest['num_users']} customers, {manifest['num_items']} products, days_since_first "
          f"scale {manifest.get('days_since_first', {}).get('scale', '?')}", flush=True)
    results = []

    def add(name, score, seconds, note=""):
        results.append((name, score, seconds, note))
        print(f"  {name}: test RMSE {score:.4f}, fit {seconds:.1f} s {note}", flush=True)

    add("global mean", rmse(np.full(y_test.size, train.labels.mean()), y_test), 0.0)
    base, seconds = timed(lambda: fm.biases_baseline(train, test))
    add("biases only (fm.biases_baseline)", base, seconds)
    if "sgd" not in ns.skip:
        add("fmprep SGD, FM_DEFAULTS (k=256, 3 epochs)", *run_sgd(train, test, dict(FM_DEFAULTS)))
        if hasattr(fm, "recommended_hyperparameters"):
            hp = fm.recommended_hyperparameters(train.labels.size)
            add(f"fmprep SGD, recommended (k={hp.get('num_factors')}, "
                f"{hp.get('epochs')} epochs)", *run_sgd(train, test, hp))
        else:
            print("  (fm.recommended_hyperparameters not present: skipped)")
    overrides = {}
    for item in ns.mcmc:
        key, _, value = item.partition("=")
        overrides[key] = float(value) if key == "init_std" else int(value)
    settings = {**mcmc.MCMC_DEFAULTS, **overrides}
    score, seconds, k, _ = run_mcmc(train, test, manifest, overrides)
    add(f"fmprep MCMC (rank {settings['rank']}, {settings['n_iter']} sweeps, "
        f"{settings['keep']} kept: k={k})", score, seconds)
    if not ns.no_every_sweep:
        _, seconds, _, every = run_mcmc(train, test, manifest, overrides, True)
        add("  same chain, mean of every sweep (not deployable)", every, seconds,
            "(fit time includes scoring every sweep)")
    svd_seconds = None
    if "surprise" in ns.skip:
        pass
    elif importlib.util.find_spec("surprise") is None:
        print("  note: scikit-surprise is not installed (pip install scikit-surprise); skipped")
    else:
        score, svd_seconds = run_svd(train, test, manifest["num_users"])
        add("surprise SVD (defaults: k=100, 20 epochs)", score, svd_seconds)
    if "myfm" in ns.skip:
        pass
    elif importlib.util.find_spec("myfm") is None:
        print("  note: myfm is not installed (pip install myfm); skipped")
    else:
        add("myfm Bayesian FM (rank 10, 200 sweeps, grouped)",
            *run_myfm(train, test, manifest))
        add("myfm, init_stdev 0.5 (rank 10, 200 sweeps, grouped)",
            *run_myfm(train, test, manifest, init_stdev=0.5))

    print(f"\n{'method':<56} {'test RMSE':>9} {'vs biases':>9} {'fit s':>7} {'x SVD':>7}")
    for name, score, seconds, _ in results:
        ratio = f"{seconds / svd_seconds:7.2f}" if svd_seconds else f"{'-':>7}"
        print(f"{name:<56} {score:9.4f} {score - base:+9.4f} {seconds:7.1f} {ratio}")
    sys.stdout.flush()


def tune(output: str, ns) -> None:
    """Validation study for the MCMC defaults; reads the train channel only."""
    manifest = storage.read_json(storage.join(output, MANIFEST))
    train = fm.read_channel(output, manifest, "train")
    fit, valid = mcmc.latest_per_user_split(train)
    groups = mcmc.groups_for(manifest["feature_dim"], manifest["num_users"],
                             manifest["num_items"])
    y = valid.labels.astype(np.float64)
    args = (valid.indptr.astype(np.int64), valid.indices.astype(np.int64),
            valid.values.astype(np.float64))
    print(f"\n{output}: {fit.labels.size} fit / {y.size} validation rows (from train only); "
          f"biases only {fm.biases_baseline(fit, valid):.4f}, global mean "
          f"{rmse(np.full(y.size, fit.labels.mean()), y):.4f}", flush=True)
    longest = max(ns.tune_sweeps)
    burn = ns.tune_burn_in
    keeps = (8, 16, 32)
    for rank in ns.tune_rank:
        for init in ns.tune_init:
            scores = {}
            for seed in range(ns.tune_seeds):
                draws, means = [], []
                out = np.empty(y.size)

                def hook(sweep, theta0, w, V, cw, cV):
                    mcmc._predict(*args, theta0[0], w, V, out)
                    draws.append(out.astype(np.float32))
                    mcmc._predict(*args, theta0[1], cw, cV, out)
                    means.append(out.astype(np.float32))

                (_, metrics), seconds = timed(lambda: mcmc.train_mcmc(
                    fit, groups, rank=rank, n_iter=longest, burn_in=longest - 1, keep=1,
                    seed=seed, init_std=init, sample_hook=hook))
                curve = [r["train:rmse"] for r in metrics["iterations"]]
                print(f"  rank {rank} init_std {init} seed {seed}: {seconds:.1f} s for {longest} "
                      f"sweeps; train RMSE after 25/50/100 sweeps "
                      + "/".join(f"{curve[i - 1]:.3f}" for i in (25, 50, 100) if i <= longest),
                      flush=True)
                for kind, preds in (("draws", np.array(draws)), ("cond. means", np.array(means))):
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, action="append",
                   help="generated reviews per run (repeatable; default 20000 and 1000000)")
    p.add_argument("--output", action="append", default=[],
                   help="an existing OUTPUT of make data instead of generating (repeatable)")
    p.add_argument("--dir", default="data/bench", help="where --rows writes (default %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default %(default)s)")
    p.add_argument("--mcmc", action="append", default=[], metavar="NAME=VALUE",
                   help="override an MCMC default (rank, n_iter, burn_in, keep, seed, init_std)")
    p.add_argument("--skip", action="append", default=[], choices=("sgd", "surprise", "myfm"),
                   help="leave a method out")
    p.add_argument("--no-every-sweep", action="store_true",
                   help="skip the second MCMC run that scores the mean of every sweep")
    p.add_argument("--tune", action="store_true",
                   help="run the validation study of the MCMC defaults instead (train rows only)")
    p.add_argument("--tune-rank", type=int, nargs="+", default=[4, 8], metavar="R")
    p.add_argument("--tune-init", type=float, nargs="+", default=[0.1, 0.5], metavar="S")
    p.add_argument("--tune-seeds", type=int, default=3, metavar="N")
    p.add_argument("--tune-sweeps", type=int, nargs="+", default=[150, 200, 300], metavar="N")
    p.add_argument("--tune-burn-in", type=int, default=50, metavar="N")
    ns = p.parse_args(argv)
    outputs = list(ns.output)
    if not outputs:
        for rows in ns.rows or [20_000, 1_000_000]:
            os.makedirs(ns.dir, exist_ok=True)
            t0 = time.perf_counter()
            outputs.append(prep(rows, ns.dir, ns.seed))
            print(f"generated and prepped {rows} reviews in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    for output in outputs:
        (tune if ns.tune else bench)(output, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
