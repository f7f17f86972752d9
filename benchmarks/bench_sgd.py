"""fmprep's SGD solver (the twin of a SageMaker job): early stopping, and SageMaker's defaults.

Generated reviews (``fmprep.sample.generate_reviews``) go through ``make data``'s pipeline with
``days_scale="years"`` (``bench_fm.prep``); every run fits the train channel and is scored on
the test rows (each customer's latest review), which never steer anything: early stopping holds
out each customer's latest TRAIN review (``mcmc.latest_per_user_split``).

``--study stopping`` compares, per size and seed, fmprep's recommended local settings
(``hyperparameters.recommended_hyperparameters``: 10 epochs) run for a fixed 10 and ``--limit``
epochs with early stopping at a limit of ``--limit`` epochs, for each patience of
``--patience``: the model refitted on every train row for the best epoch count (fmprep's
choice) and the best epoch's weights of the run on the rows left after the hold-out (the
alternative, reproduced by training on those rows for the best epoch count: same seed, same
shuffles, same weights).

``--study sagemaker`` scores the settings a SageMaker job can get, in the twin, each for a fixed
number of epochs as SageMaker runs them (no early stopping there): SageMaker's own defaults
(``config.FM_DEFAULTS``), fmprep's SageMaker defaults
(``hyperparameters.sagemaker_default_hyperparameters``) and variants that probe what the twin
cannot know of SageMaker's optimizer: weight decay applied lazily (only in the batches holding
a feature, without fmprep's ``1 / P(in batch)`` scaling, as MXNet's sparse Adam does with
``lazy_update``), w0 starting at 0 (fmprep centres it at the mean label), and SageMaker's
default weight decays instead of fmprep's. The train mean and the biases baseline are printed
for scale.

Examples::

    python benchmarks/bench_sgd.py --study stopping --rows 20000 --rows 200000
    python benchmarks/bench_sgd.py --study sagemaker --rows 1000000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_fm import prep

from fmprep.model import hyperparameters, mcmc, sgd, training
from fmprep import storage
from fmprep.config import FM_DEFAULTS, MANIFEST


def rmse(model, records) -> float:
    pred = model.predict(records.indptr, records.indices, records.values).astype(np.float64)
    return float(np.sqrt(np.mean((pred - records.labels) ** 2)))


def load(output):
    manifest = storage.read_json(storage.join(output, MANIFEST))
    return (training.read_channel(output, manifest, "train"),
            training.read_channel(output, manifest, "test"))


def study_stopping(train, test, seeds, patiences, limit):
    base = hyperparameters.recommended_hyperparameters(int(train.labels.size))
    fit, _ = mcmc.latest_per_user_split(train)
    print(f"  {'seed':>4} {'method':<34} {'test rmse':>9} {'best':>4} {'run':>4} {'s':>6}")
    table = {}
    for seed in seeds:
        hp = {**base, "seed": seed}
        for epochs in sorted({base["epochs"], limit}):
            t0 = time.perf_counter()
            model, _ = sgd.train(train, None, {**hp, "epochs": epochs, "early_stopping": False})
            fixed = rmse(model, test)
            name = f"fixed {epochs} epochs"
            table.setdefault(name, []).append(fixed)
            print(f"  {seed:>4} {name:<34} {fixed:9.4f} {'':>4} {epochs:>4} "
                  f"{time.perf_counter() - t0:6.1f}", flush=True)
        for patience in patiences:
            t0 = time.perf_counter()
            model, m = sgd.train(train, None, {**hp, "epochs": limit,
                                               "early_stopping_patience": patience})
            seconds = time.perf_counter() - t0
            refit = rmse(model, test)
            best, run = m["best_epoch"], m["epochs_run"]
            kept, _ = sgd.train(fit, None, {**hp, "epochs": best, "early_stopping": False})
            weights = rmse(kept, test)
            for name, value in ((f"patience {patience}: refit", refit),
                                (f"patience {patience}: best-epoch weights", weights)):
                table.setdefault(name, []).append(value)
                print(f"  {seed:>4} {name:<34} {value:9.4f} {best:>4} {run:>4} {seconds:6.1f}",
                      flush=True)
    print("  mean over seeds:")
    for name, values in table.items():
        print(f"       {name:<34} {np.mean(values):9.4f}")


def lazy_decay(indices, n_rows, batch, feature_dim):
    return np.ones(feature_dim)


def study_sagemaker(train, test, seeds):
    n = int(train.labels.size)
    proposed = hyperparameters.sagemaker_default_hyperparameters(n)
    sagemaker_wd = {**proposed, "linear_wd": FM_DEFAULTS["linear_wd"],
                    "factors_wd": FM_DEFAULTS["factors_wd"]}
    runs = [("SageMaker defaults (config.FM_DEFAULTS)", dict(FM_DEFAULTS), None),
            ("  same, weight decay lazy", dict(FM_DEFAULTS), lazy_decay),
            ("fmprep's SageMaker defaults", proposed, None),
            ("  same, weight decay lazy", proposed, lazy_decay),
            ("  same, w0 starts at 0", {**proposed, "bias_init_method": "constant",
                                        "bias_init_value": 0.0}, None),
            ("  same, SageMaker's weight decays", sagemaker_wd, None),
            ("  same, SageMaker's weight decays, lazy", sagemaker_wd, lazy_decay)]
    mean = float(np.sqrt(np.mean((test.labels - train.labels.mean()) ** 2)))
    print(f"  predict the train mean {mean:.4f}; biases baseline "
          f"{training.biases_baseline(train, test):.4f}")
    original = sgd._decay_scale
    for name, hp, decay in runs:
        scores, seconds = [], []
        try:
            if decay is not None:
                sgd._decay_scale = decay
            for seed in seeds:
                t0 = time.perf_counter()
                model, _ = sgd.train(train, None, {**hp, "seed": seed, "early_stopping": False})
                seconds.append(time.perf_counter() - t0)
                scores.append(rmse(model, test))
        finally:
            sgd._decay_scale = original
        each = ", ".join(f"{s:.4f}" for s in scores)
        print(f"  {name:<40} test rmse {np.mean(scores):.4f} (seeds {each}), "
              f"{np.mean(seconds):.1f} s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", choices=("stopping", "sagemaker"), required=True)
    p.add_argument("--rows", type=int, action="append", help="generated reviews (repeatable; "
                   "default 20000, 200000 and 1000000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--patience", type=int, nargs="+", default=[1, 2, 3, 5])
    p.add_argument("--limit", type=int, default=40, help="epochs limit with early stopping")
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--dir", default="data/bench")
    ns = p.parse_args(argv)
    os.makedirs(ns.dir, exist_ok=True)
    for rows in ns.rows or [20_000, 200_000, 1_000_000]:
        train, test = load(prep(rows, ns.dir, ns.data_seed))
        print(f"\n{rows} generated reviews: {train.labels.size} train / {test.labels.size} test "
              "rows", flush=True)
        if ns.study == "stopping":
            study_stopping(train, test, ns.seeds, ns.patience, ns.limit)
        else:
            study_sagemaker(train, test, ns.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
