"""fmprep.model.mcmc: Bayesian FM by Gibbs sampling, on small synthetic data."""

import numpy as np
import pytest

from fmprep.model import mcmc, training
from fmprep.model.fm import FMModel
from fmprep.errors import FmprepError
from fmprep.recordio import SparseRecords

NOISE = 0.3


def fm_rows(user, item, days, labels, num_users, num_items):
    """fmprep's FM layout: user column, item column, days at feature_dim - 1."""
    n = len(user)
    dim = num_users + num_items + 1
    indices = np.stack([user, num_users + item, np.full(n, dim - 1)], axis=1).ravel()
    values = np.stack([np.ones(n), np.ones(n), days], axis=1).ravel().astype(np.float32)
    return SparseRecords(np.arange(0, 3 * n + 1, 3, dtype=np.int64), indices.astype(np.int64),
                         values, np.asarray(labels, np.float32), dim)


def make_synthetic():
    """Ratings from a known rank-2 FM with biases plus N(0, NOISE^2); random held-out rows."""
    rng = np.random.default_rng(7)
    U, I, per_user, rank = 300, 120, 25, 2
    bu = rng.normal(0, 0.5, U)
    bi = rng.normal(0, 0.4, I)
    P = rng.normal(0, 0.9, (U, rank))
    Q = rng.normal(0, 0.9, (I, rank))
    user = np.repeat(np.arange(U), per_user)
    item = np.concatenate([rng.choice(I, per_user, replace=False) for _ in range(U)])
    days = rng.uniform(0, 3, user.size)
    clean = 3.5 + bu[user] + bi[item] + np.sum(P[user] * Q[item], axis=1)
    y = clean + rng.normal(0, NOISE, user.size)
    test = rng.random(user.size) < 0.1
    rec = lambda m: fm_rows(user[m], item[m], days[m], y[m], U, I)  # noqa: E731
    return rec(~test), rec(test), mcmc.groups_for(U + I + 1, U, I)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic()


def rmse(model, records):
    pred = model.predict(records.indptr, records.indices, records.values).astype(np.float64)
    return float(np.sqrt(np.mean((pred - records.labels) ** 2)))


def test_groups_for():
    g = mcmc.groups_for(8, 3, 4)
    assert g.tolist() == [0, 0, 0, 1, 1, 1, 1, 2]
    with pytest.raises(FmprepError, match="do not fit"):
        mcmc.groups_for(5, 3, 4)


def test_same_seed_same_model_other_seed_differs(synthetic):
    train, _, groups = synthetic
    kw = dict(rank=3, n_iter=12, burn_in=4, keep=4)
    a, ma = mcmc.train_mcmc(train, groups, seed=3, **kw)
    b, mb = mcmc.train_mcmc(train, groups, seed=3, **kw)
    c, _ = mcmc.train_mcmc(train, groups, seed=4, **kw)
    assert a.w0 == b.w0
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.V, b.V)
    assert [r["train:rmse"] for r in ma["iterations"]] == \
        [r["train:rmse"] for r in mb["iterations"]]
    assert not np.array_equal(a.V, c.V)


def test_recovers_a_low_rank_fm(synthetic):
    train, test, groups = synthetic
    model, metrics = mcmc.train_mcmc(train, groups, rank=4, n_iter=120, burn_in=30, keep=30,
                                     seed=0, valid=test)
    got = rmse(model, test)
    base = training.biases_baseline(train, test)
    # The noise level is the floor; a biases-only model cannot see <p_u, q_i> (sd ~1.1).
    assert got < 1.25 * NOISE, (got, base)
    assert got < base - 0.4, (got, base)
    assert metrics["final"]["valid:rmse"] == pytest.approx(got, abs=1e-5)
    assert metrics["iterations"][-1]["train:rmse"] < 1.1 * NOISE
    assert model.num_factors == 4 * 30
    assert len(metrics["iterations"]) == 120 and len(metrics["kept_iterations"]) == 30
    assert metrics["kept_iterations"][-1] == 120
    assert "valid:rmse" not in metrics["iterations"][29]
    assert "valid:rmse" in metrics["iterations"][30]


def test_stacked_model_is_the_mean_of_its_samples(synthetic):
    train, test, groups = synthetic
    model, metrics = mcmc.train_mcmc(train, groups, rank=3, n_iter=30, burn_in=10, keep=5,
                                     seed=1, return_samples=True)
    samples = metrics["samples"]
    assert len(samples) == 5 and all(s.num_factors == 3 for s in samples)
    assert model.num_factors == 15
    args = (test.indptr, test.indices, test.values)
    mean = np.mean([s.predict(*args).astype(np.float64) for s in samples], axis=0)
    np.testing.assert_allclose(model.predict(*args), mean.astype(np.float32), rtol=1e-5,
                               atol=1e-5)
    # the kept sweeps are evenly spaced and end with the last one
    assert metrics["kept_iterations"] == [14, 18, 22, 26, 30]


def test_model_saves_and_loads_as_an_fm_model(synthetic, tmp_path):
    train, test, groups = synthetic
    model, _ = mcmc.train_mcmc(train, groups, rank=2, n_iter=6, burn_in=2, keep=2)
    model.save(str(tmp_path))
    back = FMModel.load(str(tmp_path))
    args = (test.indptr, test.indices, test.values)
    np.testing.assert_array_equal(back.predict(*args), model.predict(*args))
    assert back.hyperparameters["solver"] == "mcmc"


def test_features_without_train_rows_get_their_group_mean():
    # users 0..5, items 0..3; users 3, 4, 5 and items 2, 3 never occur in train
    rec = fm_rows(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 0, 1, 0, 1]),
                  np.zeros(6), np.array([5, 4, 3, 2, 4, 4]), 6, 4)
    groups = mcmc.groups_for(rec.shape, 6, 4)
    model, metrics = mcmc.train_mcmc(rec, groups, rank=2, n_iter=20, burn_in=10, keep=2,
                                     return_samples=True)
    assert np.isfinite(model.w).all() and np.isfinite(model.V).all()
    for s in metrics["samples"]:   # in each sample, every unseen feature of a group alike
        for same in ([3, 4, 5], [6 + 2, 6 + 3]):
            assert len({(float(s.w[j]), *s.V[j].tolist()) for j in same}) == 1
        assert s.V[3].tolist() != s.V[0].tolist()
    unseen = fm_rows(np.array([4]), np.array([3]), np.zeros(1), np.array([4.0]), 6, 4)
    assert np.isfinite(model.predict(unseen.indptr, unseen.indices, unseen.values)).all()


def test_latest_per_user_split():
    # rows: (user, item, days); user 2 has one row, user 1 a tie on its latest days
    user = np.array([0, 1, 0, 2, 1, 0, 1, 3, 3])
    item = np.array([0, 1, 2, 0, 2, 1, 0, 1, 2])
    days = np.array([0.5, 1.0, 2.0, 0.0, 3.0, 1.5, 3.0, 0.0, 0.0])
    labels = np.arange(9, dtype=np.float32)   # the label names the row
    rec = fm_rows(user, item, days, labels, 4, 3)
    fit, valid = mcmc.latest_per_user_split(rec)
    assert valid.labels.tolist() == [2.0, 6.0, 8.0]   # latest; ties: last in row order
    assert fit.labels.tolist() == [0.0, 1.0, 3.0, 4.0, 5.0, 7.0]
    vu = valid.indices[valid.indptr[:-1]]
    assert sorted(vu.tolist()) == [0, 1, 3]           # one row per user with >= 2 rows
    for part in (fit, valid):                          # rows come through whole
        assert part.shape == rec.shape
        for r in range(part.indptr.size - 1):
            row = int(part.labels[r])
            a, b = part.indptr[r], part.indptr[r + 1]
            np.testing.assert_array_equal(part.indices[a:b], rec.indices[3 * row:3 * row + 3])
            np.testing.assert_array_equal(part.values[a:b], rec.values[3 * row:3 * row + 3])


def test_latest_per_user_split_of_train_never_touches_test(synthetic):
    train, test, _ = synthetic
    fit, valid = mcmc.latest_per_user_split(train)
    assert fit.labels.size + valid.labels.size == train.labels.size
    key = lambda r: {(tuple(r.indices[a:b]), tuple(r.values[a:b]), lab)  # noqa: E731
                     for a, b, lab in zip(r.indptr[:-1], r.indptr[1:], r.labels)}
    fit_rows, valid_rows = key(fit), key(valid)
    assert not fit_rows & valid_rows
    assert (fit_rows | valid_rows) == key(train)
    users = valid.indices[valid.indptr[:-1]]
    train_users, counts = np.unique(train.indices[train.indptr[:-1]], return_counts=True)
    assert np.array_equal(np.sort(users), train_users[counts >= 2])


@pytest.mark.parametrize("kw, match", [
    (dict(burn_in=10, n_iter=10), "burn_in < n_iter"),
    (dict(n_iter=10, burn_in=5, keep=6), "keep <= n_iter - burn_in"),
    (dict(rank=0), "rank=0"),
    (dict(init_std=float("nan")), "init_std"),
])
def test_bad_arguments(synthetic, kw, match):
    train, _, groups = synthetic
    with pytest.raises(FmprepError, match=match):
        mcmc.train_mcmc(train, groups, **kw)


def test_repeated_feature_in_a_row_is_refused():
    rec = SparseRecords(np.array([0, 2]), np.array([1, 1]), np.ones(2, np.float32),
                        np.array([3.0], np.float32), 3)
    with pytest.raises(FmprepError, match="twice"):
        mcmc.train_mcmc(rec, np.zeros(3, np.int64), n_iter=2, burn_in=1, keep=1)
