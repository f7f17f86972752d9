"""fmprep's local Factorization Machines: hyperparameters, the model file, predictions, training."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fmprep.config import FM_DEFAULTS, FM_LOCAL_OPTIONS, FM_OPTIONAL, FM_REQUIRED
from fmprep.errors import FmprepError
from fmprep.model import sgd, training
from fmprep.model.fm import MODEL_FORMAT, FMModel
from fmprep.model.hyperparameters import (recommended_hyperparameters,
                                          sagemaker_default_hyperparameters,
                                          sagemaker_hyperparameters, validate_hyperparameters)
from fmprep.recordio import SparseRecords, decode_records, encode_fm_rows

# Learning rates that fit small data; SageMaker's defaults need far more updates (sgd docstring).
# Early stopping off: these tests are about the optimizer over a fixed number of epochs.
FAST = {"num_factors": 8, "epochs": 25, "mini_batch_size": 50, "bias_lr": 0.05, "bias_wd": 0,
        "linear_lr": 0.02, "linear_wd": 1e-4, "factors_lr": 0.01, "factors_wd": 1e-4,
        "factors_init_sigma": 0.1, "seed": 1, "early_stopping": False}


def low_rank(n_users=150, n_items=60, per_user=30, rank=3, seed=0):
    """Ratings with biases and a strong rank-``rank`` interaction, in fmprep's FM layout.

    Returns (train SparseRecords, test SparseRecords, feature_dim); the test set holds one unseen
    (user, item) pair per user.
    """
    rng = np.random.default_rng(seed)
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    U, V = rng.normal(0, 0.7, (n_users, rank)), rng.normal(0, 0.7, (n_items, rank))
    items = np.array([rng.choice(n_items, per_user + 1, replace=False) for _ in range(n_users)])
    users = np.repeat(np.arange(n_users), per_user + 1).reshape(n_users, -1)
    score = 3.5 + bu[users] + bi[items] + np.einsum("uik,uk->ui", V[items], U) \
        + rng.normal(0, 0.3, users.shape)
    labels = np.clip(score, 1, 5).astype(np.float32)
    days = rng.uniform(0, 2, users.shape).astype(np.float32)
    feature_dim = n_users + n_items + 1

    def records(sl):
        u, i = users[:, sl].ravel(), items[:, sl].ravel() + n_users
        return decode_records(encode_fm_rows(u, i, days[:, sl].ravel(), labels[:, sl].ravel(),
                                             feature_dim))

    return records(slice(0, per_user)), records(slice(per_user, None)), feature_dim


def dense(indptr, indices, values, n_cols):
    X = np.zeros((len(indptr) - 1, n_cols))
    for r in range(len(indptr) - 1):
        for j in range(indptr[r], indptr[r + 1]):
            X[r, indices[j]] += values[j]
    return X


# --- hyperparameters ---------------------------------------------------------------------------


def test_every_configured_name_is_validated():
    names = set(FM_DEFAULTS) | set(FM_OPTIONAL) | set(FM_REQUIRED) | set(FM_LOCAL_OPTIONS)
    assert set(validate_hyperparameters({"feature_dim": 5})) == names


def test_strings_are_coerced_and_defaults_filled():
    hp = validate_hyperparameters({"feature_dim": "1063", "num_factors": "64", "epochs": "2.0",
                                   "linear_lr": "1e-3", "predictor_type": " regressor ",
                                   "clip_gradient": "5"})
    assert hp["feature_dim"] == 1063 and hp["num_factors"] == 64 and hp["epochs"] == 2
    assert isinstance(hp["num_factors"], int) and hp["linear_lr"] == pytest.approx(1e-3)
    assert hp["predictor_type"] == "regressor" and hp["clip_gradient"] == 5.0
    assert hp["factors_wd"] == FM_DEFAULTS["factors_wd"] and hp["eps"] is None
    assert hp["seed"] == 0 and hp["binary_threshold"] is None


def test_feature_dim_comes_from_the_data_and_must_match():
    assert validate_hyperparameters({}, feature_dim=99)["feature_dim"] == 99
    with pytest.raises(FmprepError, match="feature_dim=100 but the data has feature_dim 99"):
        validate_hyperparameters({"feature_dim": 100}, feature_dim=99)
    with pytest.raises(FmprepError, match="feature_dim is required"):
        validate_hyperparameters({})


@pytest.mark.parametrize("name, value, message", [
    ("num_factor", 8, "unknown FM hyperparameter 'num_factor'; did you mean num_factors"),
    ("linear_lr", "-0.1", "linear_lr='-0.1' is out of range; it must be >= 0"),
    ("num_factors", 0, "num_factors=0 is out of range; it must be >= 1"),
    ("epochs", "2.5", "epochs='2.5' is not an integer"),
    ("mini_batch_size", "many", "is not an integer"),
    ("predictor_type", "classifier", "use one of regressor, binary_classifier"),
    ("factors_init_method", "xavier", "use one of normal, uniform, constant"),
    ("eps", 0, "it must be > 0"),
    ("bias_wd", "nan", "must be finite"),
    ("early_stopping", "maybe",
     "early_stopping='maybe' is not true or false; pass e.g. early_stopping=false"),
    ("early_stopping", 2, "is not true or false"),
    ("early_stopping_patience", 0, "early_stopping_patience=0 is out of range; it must be >= 1"),
    ("early_stopping_tolerance", -0.1, "it must be >= 0"),
])
def test_bad_values_are_rejected_with_one_line(name, value, message):
    with pytest.raises(FmprepError, match=message) as err:
        validate_hyperparameters({"feature_dim": 10, name: value})
    assert "\n" not in str(err.value)


def test_init_methods_need_their_parameter_and_threshold_needs_a_classifier():
    with pytest.raises(FmprepError, match="linear_init_method=uniform needs linear_init_scale"):
        validate_hyperparameters({"feature_dim": 10, "linear_init_method": "uniform"})
    hp = validate_hyperparameters({"feature_dim": 10, "bias_init_method": "constant",
                                   "bias_init_value": "4"})
    assert hp["bias_init_value"] == 4.0
    with pytest.raises(FmprepError, match="binary_threshold applies only"):
        validate_hyperparameters({"feature_dim": 10, "binary_threshold": 4})


def test_sagemaker_form_drops_local_options_and_unset_values():
    hp = validate_hyperparameters({"feature_dim": 10, "seed": 3, "eps": 1e-6})
    sm = sagemaker_hyperparameters(hp)
    assert sm["feature_dim"] == "10" and sm["eps"] == "1e-06" and sm["num_factors"] == "256"
    assert "seed" not in sm and "binary_threshold" not in sm and "clip_gradient" not in sm
    assert all(isinstance(v, str) for v in sm.values())
    local = validate_hyperparameters({"feature_dim": 10, "solver": "sgd",
                                      "early_stopping": "off", "early_stopping_patience": 4,
                                      "early_stopping_tolerance": 0.01, "mcmc_rank": 2})
    assert not set(sagemaker_hyperparameters(local)) & set(FM_LOCAL_OPTIONS)


@pytest.mark.parametrize("raw, value", [("true", True), (" Off ", False), ("1", True),
                                        (0, False), (True, True), ("no", False)])
def test_early_stopping_flag_accepts_the_usual_spellings(raw, value):
    hp = validate_hyperparameters({"feature_dim": 10, "early_stopping": raw})
    assert hp["early_stopping"] is value


def test_early_stopping_options_mean_sgd_and_default_on():
    hp = validate_hyperparameters({"feature_dim": 10})
    assert hp["solver"] == "mcmc" and hp["early_stopping"] is True
    assert hp["early_stopping_patience"] == FM_LOCAL_OPTIONS["early_stopping_patience"]
    for name, value in (("early_stopping", "false"), ("early_stopping_patience", 5),
                        ("early_stopping_tolerance", 0.001)):
        assert validate_hyperparameters({"feature_dim": 10, name: value})["solver"] == "sgd"


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("predictor_type", ["regressor", "binary_classifier"])
def test_predict_matches_the_plain_formula(predictor_type):
    rng = np.random.default_rng(3)
    n_cols, k = 12, 5
    model = FMModel(0.3, rng.normal(0, 0.5, n_cols), rng.normal(0, 0.5, (n_cols, k)),
                    predictor_type)
    indptr = np.array([0, 3, 3, 7, 9])  # includes an empty row
    indices = np.array([0, 4, 11, 1, 2, 3, 9, 5, 6])
    values = rng.uniform(0.5, 2.0, indices.size).astype(np.float32)
    X = dense(indptr, indices, values, n_cols)
    XV = X @ model.V.astype(np.float64)
    y = 0.3 + X @ model.w + 0.5 * (XV ** 2 - (X ** 2) @ (model.V.astype(np.float64) ** 2)).sum(1)
    if predictor_type == "binary_classifier":
        y = 1 / (1 + np.exp(-y))
    got = model.predict(indptr, indices, values)
    assert got.dtype == np.float32 and got.shape == (4,)
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)


def test_predict_rejects_indices_outside_the_model():
    model = FMModel(0.0, np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(FmprepError, match="feature index 4 is outside"):
        model.predict([0, 1], [4], [1.0])


def test_save_and_load_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    model = FMModel(4.2, rng.normal(size=20), rng.normal(size=(20, 3)), "binary_classifier",
                    {"feature_dim": 20, "num_factors": 3})
    model.save(str(tmp_path))
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["V", "w", "w0"] and z["V"].dtype == np.float32
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["feature_dim"] == 20 and meta["num_factors"] == 3
    assert meta["predictor_type"] == "binary_classifier" and meta["format"] == MODEL_FORMAT
    back = FMModel.load(str(tmp_path))
    assert back.w0 == model.w0 and back.predictor_type == model.predictor_type
    np.testing.assert_array_equal(back.V, model.V)
    np.testing.assert_array_equal(back.predict([0, 2], [1, 7], [1.0, 1.0]),
                                  model.predict([0, 2], [1, 7], [1.0, 1.0]))
    with pytest.raises(FmprepError, match="no fmprep model"):
        FMModel.load(str(tmp_path / "missing"))


# --- training ----------------------------------------------------------------------------------


def test_training_learns_a_low_rank_problem_and_beats_the_biases_baseline():
    train, test, feature_dim = low_rank()
    seen = []
    model, metrics = sgd.train(train, test, FAST, progress=seen.append)
    rmse = [e["test:rmse"] for e in metrics["epochs"]]
    baseline = training.biases_baseline(train, test)
    assert len(seen) == FAST["epochs"] and model.w.shape == (feature_dim,)
    assert rmse[-1] < 0.8 * rmse[0]
    assert rmse[-1] < 0.9 * baseline, (rmse, baseline)
    assert metrics["final"]["test:rmse"] == rmse[-1] and metrics["rows_per_second"] > 0


def test_training_is_reproducible_with_a_seed():
    train, test, _ = low_rank(n_users=40, per_user=10)
    hp = {**FAST, "epochs": 2}
    a, _ = sgd.train(train, test, hp)
    b, _ = sgd.train(train, test, hp)
    np.testing.assert_array_equal(a.V, b.V)


# --- early stopping ----------------------------------------------------------------------------

# Fast learning rates on little data: the validation RMSE bottoms out within a few epochs.
STOPPING = {**FAST, "epochs": 200, "early_stopping": True, "early_stopping_patience": 2}


def rows_of(records):
    """Each row as a hashable (indices, values, label) tuple."""
    return [(tuple(records.indices[a:b]), tuple(records.values[a:b]), float(records.labels[r]))
            for r, (a, b) in enumerate(zip(records.indptr[:-1], records.indptr[1:]))]


def test_early_stopping_holds_out_train_rows_only(monkeypatch):
    train, test, _ = low_rank(n_users=60, per_user=12)
    calls = []
    real = sgd._sgd

    def spy(records, y, hp, epochs, test=None, valid=None, progress=None):
        calls.append((records, valid, test))
        return real(records, y, hp, epochs, test, valid, progress)

    monkeypatch.setattr(sgd, "_sgd", spy)
    _, metrics = sgd.train(train, test, STOPPING)
    (fit, (valid, _), scored), (refit, no_valid, _) = calls
    fit_rows, valid_rows = rows_of(fit), rows_of(valid)
    train_rows, test_rows = rows_of(train), rows_of(test)
    # Validation: one row per customer (all have 12), each their latest train row.
    assert len(valid_rows) == 60 and not set(valid_rows) & set(fit_rows)
    assert sorted(fit_rows + valid_rows) == sorted(train_rows)
    assert not set(valid_rows) & set(test_rows) and not set(fit_rows) & set(test_rows)
    users, days = valid.indices[valid.indptr[:-1]], valid.values[valid.indptr[1:] - 1]
    for u, d in zip(users, days):
        mine = train.indptr[:-1][train.indices[train.indptr[:-1]] == u]
        assert d == train.values[mine + 2].max()
    # The test channel is only scored; the refit sees every train row and no validation.
    assert scored[0] is test and rows_of(refit) == train_rows and no_valid is None
    assert metrics["early_stopping"]["fit_rows"] == len(fit_rows)
    assert metrics["early_stopping"]["valid_rows"] == 60


def test_test_rows_never_steer_early_stopping():
    train, test, _ = low_rank(n_users=60, per_user=12)
    scrambled = test._replace(labels=np.random.default_rng(5).permutation(test.labels[::-1]))
    a, ma = sgd.train(train, test, STOPPING)
    b, mb = sgd.train(train, scrambled, STOPPING)
    c, mc = sgd.train(train, None, STOPPING)
    assert ma["best_epoch"] == mb["best_epoch"] == mc["best_epoch"]
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.V, c.V)


@pytest.mark.parametrize("predictor, patience", [("regressor", 1), ("regressor", 2),
                                                 ("binary_classifier", 2)])
def test_early_stopping_stops_before_the_limit(predictor, patience):
    train, test, _ = low_rank(n_users=60, per_user=12)
    hp = {**STOPPING, "early_stopping_patience": patience, "predictor_type": predictor,
          **({"binary_threshold": 4} if predictor == "binary_classifier" else {})}
    seen = []
    model, metrics = sgd.train(train, test, hp, progress=seen.append)
    run, best = metrics["epochs_run"], metrics["best_epoch"]
    assert metrics["stopped_early"] is True and 1 <= best < run < hp["epochs"]
    assert run == best + patience == len(metrics["epochs"])
    name = metrics["early_stopping"]["metric"]
    assert name == ("valid:rmse" if predictor == "regressor"
                    else "valid:binary_classification_cross_entropy")
    curve = [e[name] for e in metrics["epochs"]]
    assert curve[best - 1] == min(curve) == metrics["early_stopping"]["best"]
    # The returned model is the refit on every train row for the best epoch count.
    refit = metrics["early_stopping"]["refit"]
    assert [e["epoch"] for e in refit] == list(range(1, best + 1))
    assert len(seen) == run + best
    alone, _ = sgd.train(train, None, {**hp, "epochs": best, "early_stopping": False})
    np.testing.assert_array_equal(model.V, alone.V)
    assert metrics["final"] == {k: v for k, v in refit[-1].items() if k.startswith("test:")}


def test_early_stopping_is_reproducible_with_a_seed():
    train, test, _ = low_rank(n_users=60, per_user=12)
    a, ma = sgd.train(train, test, STOPPING)
    b, mb = sgd.train(train, test, STOPPING)
    assert a.w0 == b.w0
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.V, b.V)
    drop = ("seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in ma["epochs"]] == \
        [{k: v for k, v in e.items() if k not in drop} for e in mb["epochs"]]
    c, _ = sgd.train(train, test, {**STOPPING, "seed": 2})
    assert not np.array_equal(a.V, c.V)


def test_without_early_stopping_every_epoch_runs():
    train, test, _ = low_rank(n_users=60, per_user=12)
    _, metrics = sgd.train(train, test, {**STOPPING, "epochs": 12, "early_stopping": "false"})
    assert metrics["epochs_run"] == len(metrics["epochs"]) == 12
    assert metrics["best_epoch"] is None and metrics["stopped_early"] is False
    assert metrics["early_stopping"] is None
    assert all(not k.startswith("valid:") for e in metrics["epochs"] for k in e)


def test_early_stopping_without_repeat_customers_runs_every_epoch():
    # One row per customer: nothing to hold out, so all epochs run, with a warning.
    from fmprep.model.mcmc import latest_per_user_split

    _, single = latest_per_user_split(low_rank(n_users=60, per_user=12)[0])
    _, metrics = sgd.train(single, None, {**STOPPING, "epochs": 3})
    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] is None
    assert "early stopping skipped" in metrics["warnings"][-1]


def test_binary_classifier_metrics_are_in_range():
    train, test, _ = low_rank()
    hp = {**FAST, "predictor_type": "binary_classifier", "binary_threshold": 4, "epochs": 10}
    model, metrics = sgd.train(train, test, hp)
    final = metrics["final"]
    assert set(final) == {"test:binary_classification_accuracy", "test:binary_f_beta",
                          "test:binary_classification_cross_entropy"}
    assert 0.6 < final["test:binary_classification_accuracy"] <= 1
    assert 0 < final["test:binary_f_beta"] <= 1
    assert 0 < final["test:binary_classification_cross_entropy"] < np.log(2)
    p = model.predict(test.indptr, test.indices, test.values)
    assert ((p >= 0) & (p <= 1)).all()
    with pytest.raises(FmprepError, match="set binary_threshold"):
        sgd.train(train, test, {**hp, "binary_threshold": None})


def test_weight_decay_is_the_mean_loss_penalty_for_rare_and_frequent_features():
    # One feature per row, label 1, w0 pinned at 0: the penalised mean loss has the ridge
    # solution w = n / (n + l2) with l2 = linear_wd * rows. Decay applied only in the batches
    # holding a feature would shrink every weight alike, to 1 / (1 + linear_wd * batch).
    counts = np.tile([1, 2, 5, 20, 80], 20)
    rows = np.random.default_rng(0).permutation(np.repeat(np.arange(counts.size), counts))
    n, l2 = rows.size, 4.0
    records = SparseRecords(np.arange(n + 1), rows, np.ones(n, np.float32),
                            np.ones(n, np.float32), counts.size)
    hp = {"num_factors": 1, "factors_lr": 0, "factors_init_sigma": 0, "bias_lr": 0,
          "bias_init_method": "constant", "bias_init_value": 0, "linear_init_sigma": 0,
          "linear_lr": 0.002, "linear_wd": l2 / n, "epochs": 300, "mini_batch_size": 20}
    model, _ = sgd.train(records, None, {**hp, "early_stopping": False})
    np.testing.assert_allclose(model.w, counts / (counts + l2), atol=0.02)


def test_w0_starts_at_the_mean_label_unless_constant():
    train, _, _ = low_rank(n_users=20, per_user=5)
    hp = {**FAST, "epochs": 1, "bias_lr": 0}
    model, _ = sgd.train(train, None, hp)
    assert model.w0 == pytest.approx(float(np.mean(train.labels)), abs=0.05)
    model, _ = sgd.train(train, None, {**hp, "bias_init_method": "constant",
                                       "bias_init_value": 0})
    assert model.w0 == 0.0


def test_recommended_hyperparameters_scale_weight_decay_with_the_rows():
    from fmprep.config import FM_LOCAL_L2, FM_LOCAL_RECOMMENDED

    small, large = recommended_hyperparameters(1000), recommended_hyperparameters(100_000)
    assert small["linear_wd"] == pytest.approx(FM_LOCAL_L2["linear"] / 1000)
    assert large["factors_wd"] == pytest.approx(FM_LOCAL_L2["factors"] / 100_000)
    assert FM_LOCAL_RECOMMENDED.items() <= small.items()
    validate_hyperparameters(small, feature_dim=10)
    with pytest.raises(FmprepError, match="positive integer"):
        recommended_hyperparameters(0)


def test_sagemaker_default_hyperparameters_are_the_recommended_sgd_settings():
    sent = sagemaker_default_hyperparameters(71_188)
    recommended = recommended_hyperparameters(71_188)
    assert sent == {k: v for k, v in recommended.items() if k != "solver"}
    assert set(sent) <= set(FM_DEFAULTS) | set(FM_OPTIONAL)  # SageMaker's names only
    assert sagemaker_hyperparameters(validate_hyperparameters(sent, 10)).keys() >= \
        sent.keys()
    with pytest.raises(FmprepError, match="positive integer"):
        sagemaker_default_hyperparameters(0)


def test_sagemaker_defaults_do_not_diverge_on_raw_days():
    # Days up to ~6000 as in the reference prep (DAYS_SCALE=raw).
    train, test, _ = low_rank(n_users=60, per_user=10)
    for r in (train, test):
        r.values[r.indices == r.shape - 1] *= 3000
    _, metrics = sgd.train(train, test, {"num_factors": 16, "epochs": 2})
    assert np.isfinite(metrics["final"]["test:rmse"])
    assert "DAYS_SCALE=years" in metrics["warnings"][0]


def write_output(root, train, test, feature_dim, train_shards=3):
    """An OUTPUT directory like make data's, with shards encoded by encode_fm_rows."""
    manifest = {"feature_dim": feature_dim, "channels": {}}
    for channel, records, n_shards in (("train", train, train_shards), ("test", test, 1)):
        os.makedirs(root / channel)
        rows = np.array_split(np.arange(records.indptr.size - 1), n_shards)
        shards = []
        for s, idx in enumerate(rows):
            starts = records.indptr[idx]
            buf = encode_fm_rows(records.indices[starts], records.indices[starts + 1],
                                 records.values[starts + 2], records.labels[idx], feature_dim)
            name = f"{channel}/part-{s:05d}.pbr"
            (root / name).write_bytes(buf.tobytes())
            shards.append({"file": name, "rows": len(idx), "bytes": buf.size})
        manifest["channels"][channel] = {"rows": records.indptr.size - 1, "shards": shards}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_train_from_output_reads_shards_and_writes_model_and_metrics(tmp_path):
    train, test, feature_dim = low_rank(n_users=50, per_user=10)
    out, model_dir = tmp_path / "out", tmp_path / "model"
    write_output(out, train, test, feature_dim)
    hp = {**FAST, "epochs": 3, "solver": "sgd"}
    metrics = training.train_from_output(str(out), str(model_dir),
                                         {k: str(v) for k, v in hp.items()})
    assert metrics["train_rows"] == 500 and metrics["test_rows"] == 50
    saved = json.loads((model_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2, 3]
    assert saved["epochs_run"] == 3 and saved["best_epoch"] is None
    assert saved["stopped_early"] is False and saved["early_stopping"] is None
    assert saved["final"]["test:rmse"] == pytest.approx(metrics["final"]["test:rmse"])
    assert saved["hyperparameters"]["feature_dim"] == feature_dim
    model = FMModel.load(str(model_dir))
    direct, _ = sgd.train(train, test, hp)  # same rows, same order, same seed
    np.testing.assert_allclose(model.V, direct.V, rtol=1e-6)
    with pytest.raises(FmprepError, match="but the data has feature_dim"):
        training.train_from_output(str(out), str(model_dir), {"feature_dim": feature_dim + 1})
    with pytest.raises(FmprepError, match="run make data first"):
        training.train_from_output(str(tmp_path / "nowhere"), str(model_dir), {})


def test_train_from_output_records_early_stopping(tmp_path):
    train, test, feature_dim = low_rank(n_users=50, per_user=10)
    out, model_dir = tmp_path / "out", tmp_path / "model"
    write_output(out, train, test, feature_dim)
    metrics = training.train_from_output(str(out), str(model_dir),
                                         {k: str(v) for k, v in STOPPING.items()})
    saved = json.loads((model_dir / "metrics.json").read_text())
    assert saved["stopped_early"] is True and saved["solver"] == "sgd"
    assert saved["best_epoch"] < saved["epochs_run"] < STOPPING["epochs"]
    assert saved["early_stopping"]["valid_rows"] == 50
    assert saved["final"]["test:rmse"] == pytest.approx(metrics["final"]["test:rmse"])
    assert FMModel.load(str(model_dir)).hyperparameters["early_stopping"] is True


def test_recommended_settings_beat_the_biases_baseline_on_the_generated_sample(tmp_path):
    # The quality bar, on a file the size of the bundled sample, prepped as recommended.
    from fmprep.config import FM_LOCAL_OPTIONS, SAMPLE_ROWS, SAMPLE_SEED, PrepSettings
    from fmprep.pipeline import run_data
    from fmprep.sample import generate_reviews

    source, output = str(tmp_path / "reviews.tsv.gz"), str(tmp_path / "output")
    generate_reviews(source, rows=SAMPLE_ROWS, seed=SAMPLE_SEED)
    manifest = run_data(source, str(tmp_path / "work"), output, PrepSettings(days_scale="years"))
    train = training.read_channel(output, manifest, "train")
    test = training.read_channel(output, manifest, "test")
    baseline = training.biases_baseline(train, test)
    hp = recommended_hyperparameters(manifest["channels"]["train"]["rows"])
    metrics = training.train_from_output(output, str(tmp_path / "model"), hp)
    rmse = metrics["final"]["test:rmse"]
    # ~0.07 below on this file; 0.03 leaves room for seed-to-seed noise, not for a tie.
    assert rmse < baseline - 0.03, (rmse, baseline)
    # SageMaker's defaults, for contrast, stay near the global mean in 3 epochs.
    mean = float(np.sqrt(np.mean((test.labels - train.labels.mean()) ** 2)))
    assert rmse < mean - 0.1

    # No settings at all: solver=auto is the Bayesian FM sampler, which needs no tuning.
    metrics = training.train_from_output(output, str(tmp_path / "default"), {})
    assert metrics["solver"] == "mcmc" and FMModel.load(str(tmp_path / "default")).num_factors \
        == FM_LOCAL_OPTIONS["mcmc_rank"] * FM_LOCAL_OPTIONS["mcmc_keep"]
    # ~0.09 below the baseline on this file (0.07 for the recommended SGD settings above).
    assert metrics["final"]["test:rmse"] < baseline - 0.05, (metrics["final"], baseline)
    # make train also evaluates: the model's test RMSE as in metrics.json, fmprep's own biases
    # baseline as training.biases_baseline computes it, and the ranking metrics of both rankers.
    evaluation = json.loads((tmp_path / "default" / "evaluation.json").read_text())
    assert evaluation["rating"]["model"]["rmse"] == pytest.approx(metrics["final"]["test:rmse"])
    assert evaluation["rating"]["biases"]["rmse"] == pytest.approx(baseline)
    assert {"hr@10", "ndcg@10"} <= evaluation["ranking"]["model"].keys()
    assert evaluation["ranking"]["popularity"]["hr@10"] > 0
