"""fmprep's local Factorization Machines against established libraries, on one train/test split.

Every method trains on the same rows and is scored on the same test rows (each customer's
latest review): fmprep's FM reads the RecordIO shards of OUTPUT; scikit-surprise (BaselineOnly,
SVD) and myfm (Bayesian FM, Gibbs sampling) read the Parquet split of WORK (user, item,
star_rating). The biases baseline (global mean + customer + product bias, regularised least
squares) and the global mean are printed for reference. fmprep's FM runs twice: with SageMaker's
defaults and with fmprep's recommended local settings (``fm.recommended_hyperparameters``,
``config.FM_LOCAL_RECOMMENDED``). myfm runs with its defaults and with ``init_stdev=0.5`` and
separate priors for customers and products: from the default ``init_stdev=0.1`` its sampler can
stay at near-zero factors on larger files. Timings are wall seconds of the fit alone, on
whatever this machine is doing at the time; nothing is asserted.

Examples::

    python benchmarks/bench_fm.py --output data/output --work data/work
    python benchmarks/bench_fm.py --rows 1000000 --dir /tmp/bench --days-scale years

``--rows`` writes a fresh generated file each run (seconds per million rows), so results
always reflect the current generator. The libraries are the ``bench`` extra:
``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd

from fmprep import fm, storage
from fmprep.config import MANIFEST, PrepSettings


def prep(rows: int, directory: str, days_scale: str) -> tuple[str, str]:
    """Generate ``rows`` reviews and run the default prep; returns (output, work)."""
    from fmprep.pipeline import run_data
    from fmprep.sample import generate_reviews

    source = os.path.join(directory, f"reviews_{rows}.tsv.gz")
    generate_reviews(source, rows=rows)
    work = os.path.join(directory, f"work_{rows}_{days_scale}")
    output = os.path.join(directory, f"output_{rows}_{days_scale}")
    run_data(source, work, output, PrepSettings(days_scale=days_scale))
    return output, work


def rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2)))


def run_fm(name, train, test, hp):
    _, metrics = fm.train(train, test, hp)
    curve = " ".join(f"{e['test:rmse']:.4f}" for e in metrics["epochs"])
    note = f"{json.dumps(hp)}\n    test RMSE per epoch: {curve}" if hp else \
        f"test RMSE per epoch: {curve}"
    return (name, metrics["final"]["test:rmse"], metrics["train_seconds"],
            metrics["rows_per_second"], note)


def run_surprise(train_df, test_df):
    from surprise import SVD, BaselineOnly, Dataset, Reader

    data = Dataset.load_from_df(train_df[["user", "item", "star_rating"]],
                                Reader(rating_scale=(1, 5))).build_full_trainset()
    truth = test_df["star_rating"].to_numpy(np.float64)
    for name, algo in (("surprise BaselineOnly (ALS)", BaselineOnly(verbose=False)),
                       ("surprise SVD (defaults: k=100, 20 epochs)", SVD(random_state=0))):
        t0 = time.perf_counter()
        algo.fit(data)
        seconds = time.perf_counter() - t0
        pred = [algo.predict(u, i).est for u, i in zip(test_df["user"], test_df["item"])]
        yield name, rmse(pred, truth), seconds, None, ""


def run_myfm(train_df, test_df, rank=10, n_iter=100, init_stdev=0.1, grouped=False):
    import myfm
    import scipy.sparse as sp

    dim = int(max(train_df["item"].max(), test_df["item"].max())) + 1
    users = int(max(train_df["user"].max(), test_df["user"].max())) + 1

    def one_hot(df):
        n = len(df)
        cols = np.stack([df["user"].to_numpy(), df["item"].to_numpy()], axis=1).ravel()
        return sp.csr_matrix((np.ones(2 * n), (np.repeat(np.arange(n), 2), cols)),
                             shape=(n, dim))

    model = myfm.MyFMRegressor(rank=rank, init_stdev=init_stdev, random_seed=0)
    # Users are columns [0, users), items the rest: one prior per group when grouped.
    groups = {"group_shapes": [users, dim - users]} if grouped else {}
    t0 = time.perf_counter()
    model.fit(one_hot(train_df), train_df["star_rating"].to_numpy(np.float64), n_iter=n_iter,
              n_kept_samples=n_iter - 10, **groups)
    seconds = time.perf_counter() - t0
    pred = model.predict(one_hot(test_df))
    how = (f"init {init_stdev}" + (", grouped" if grouped else "")
           if grouped or init_stdev != 0.1 else "defaults")
    return (f"myfm (Bayesian FM, rank {rank}, {n_iter} sweeps, {how})",
            rmse(pred, test_df["star_rating"].to_numpy(np.float64)), seconds, None, "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", help="an OUTPUT directory of make data")
    p.add_argument("--work", help="its WORK directory (train/ and test/ Parquet)")
    p.add_argument("--rows", type=int, help="generate this many reviews and prep them first")
    p.add_argument("--dir", default="data/bench", help="where --rows writes (default %(default)s)")
    p.add_argument("--days-scale", default="raw", choices=PrepSettings.DAYS_SCALES,
                   help="prep setting for --rows (default %(default)s, the reference)")
    p.add_argument("--fm", action="append", default=[], metavar="NAME=VALUE",
                   help="override a hyperparameter of the recommended local FM run "
                        "(repeatable)")
    p.add_argument("--skip", action="append", default=[], choices=("surprise", "myfm"),
                   help="leave a library out")
    ns = p.parse_args(argv)
    if ns.rows:
        os.makedirs(ns.dir, exist_ok=True)
        output, work = prep(ns.rows, ns.dir, ns.days_scale)
    elif ns.output and ns.work:
        output, work = ns.output, ns.work
    else:
        p.error("give --output and --work, or --rows")

    manifest = storage.read_json(storage.join(output, MANIFEST))
    train = fm.read_channel(output, manifest, "train")
    test = fm.read_channel(output, manifest, "test")
    train_df = pd.read_parquet(os.path.join(work, "train"), columns=["user", "item", "star_rating"])
    test_df = pd.read_parquet(os.path.join(work, "test"), columns=["user", "item", "star_rating"])
    days = manifest.get("days_since_first", {}).get("scale", "?")
    print(f"{output}: {len(train_df)} train / {len(test_df)} test rows, feature_dim "
          f"{manifest['feature_dim']}, days_since_first scale {days}", flush=True)

    recommended = fm.recommended_hyperparameters(len(train_df))
    for item in ns.fm:
        name, _, value = item.partition("=")
        recommended[name] = value
    results = [("global mean", rmse(np.full(len(test_df), train.labels.mean()), test.labels),
                0.0, None, "")]
    t0 = time.perf_counter()
    base = fm.biases_baseline(train, test)
    results.append(("biases baseline (fmprep, ALS, reg 5)", base, time.perf_counter() - t0,
                    None, ""))
    results.append(run_fm("fmprep FM, defaults (SageMaker's; k=256, 3 epochs)", train, test,
                          {}))
    results.append(run_fm("fmprep FM, recommended local settings", train, test, recommended))
    if "surprise" not in ns.skip:
        results.extend(run_surprise(train_df, test_df))
    if "myfm" not in ns.skip:
        results.append(run_myfm(train_df, test_df))
        results.append(run_myfm(train_df, test_df, init_stdev=0.5, grouped=True))

    print(f"\n{'method':<60} {'test RMSE':>9} {'vs base':>8} {'fit s':>7} {'rows/s':>9}")
    for name, score, seconds, speed, note in results:
        label = name if len(name) <= 60 else name[:57] + "..."
        rate = f"{speed:9.0f}" if speed else f"{'':>9}"
        print(f"{label:<60} {score:9.4f} {score - base:+8.4f} {seconds:7.1f} {rate}")
        if note:
            print(f"{'':<4}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
