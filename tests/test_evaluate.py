"""fmprep.model.evaluate against an independent, loop-by-loop numpy computation on small data."""

from __future__ import annotations

import numpy as np
import pytest

from fmprep.model import evaluate
from fmprep.errors import FmprepError
from fmprep.model.fm import FMModel
from fmprep.recordio import SparseRecords

U, I = 7, 9
F = U + I + 1


def records(rows):
    """rows: (user, item, days, rating) → SparseRecords in fmprep's layout."""
    indptr = np.arange(0, 3 * len(rows) + 1, 3)
    indices = np.array([[u, U + i, F - 1] for u, i, _, _ in rows]).ravel()
    values = np.array([[1.0, 1.0, d] for _, _, d, _ in rows], np.float32).ravel()
    labels = np.array([r for *_, r in rows], np.float32)
    return SparseRecords(indptr, indices, values, labels, F)


@pytest.fixture
def data():
    rng = np.random.default_rng(4)
    train_rows, test_rows = [], []
    for u in range(U):
        items = rng.choice(I, size=rng.integers(2, 6), replace=False)
        for j, i in enumerate(items[:-1]):
            train_rows.append((u, int(i), 0.1 * j, float(rng.integers(1, 6))))
        test_rows.append((u, int(items[-1]), 0.5, float(rng.integers(1, 6))))
    model = FMModel(w0=3.0, w=rng.normal(0, 0.3, F).astype(np.float32),
                    V=rng.normal(0, 0.5, (F, 3)).astype(np.float32), predictor_type="regressor",
                    hyperparameters={})
    return model, train_rows, test_rows


def brute_force(train_rows, test_rows, scorer, k):
    """HR@k / NDCG@k by scoring each candidate product one at a time."""
    hits, gains = [], []
    for u, target, d, _ in test_rows:
        rated = {i for uu, i, _, _ in train_rows if uu == u}
        own = scorer(u, target, d)
        rank = sum(1 for i in range(I) if i != target and i not in rated
                   and scorer(u, i, d) >= own)
        hits.append(rank < k)
        gains.append(1 / np.log2(rank + 2) if rank < k else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


def fm_score(model, u, i, d):
    return float(model.predict([0, 3], [u, U + i, F - 1], [1.0, 1.0, d])[0])


def test_metrics_equal_an_independent_computation(data):
    model, train_rows, test_rows = data
    got = evaluate.evaluate(model, records(train_rows), records(test_rows), U, I, k=3)
    # Rating errors.
    truth = np.array([r for *_, r in test_rows])
    pred = np.array([fm_score(model, u, i, d) for u, i, d, _ in test_rows])
    assert got["rating"]["model"]["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)),
                                                           rel=1e-5)
    assert got["rating"]["model"]["mae"] == pytest.approx(np.mean(np.abs(pred - truth)), rel=1e-5)
    mean = np.mean([r for *_, r in train_rows])
    assert got["rating"]["global_mean"]["rmse"] == pytest.approx(
        np.sqrt(np.mean((mean - truth) ** 2)))
    # Ranking, with k = 3 so that some customers miss.
    hr, ndcg = brute_force(train_rows, test_rows, lambda u, i, d: fm_score(model, u, i, d), 3)
    counts = np.bincount([i for _, i, _, _ in train_rows], minlength=I)
    pop_hr, pop_ndcg = brute_force(train_rows, test_rows, lambda u, i, d: float(counts[i]), 3)
    assert got["ranking"]["model"]["hr@3"] == pytest.approx(hr)
    assert got["ranking"]["model"]["ndcg@3"] == pytest.approx(ndcg)
    assert got["ranking"]["popularity"]["hr@3"] == pytest.approx(pop_hr)
    assert got["ranking"]["popularity"]["ndcg@3"] == pytest.approx(pop_ndcg)
    assert 0 < hr < 1  # the data make the check meaningful
    # Segments partition the test rows.
    segs = got["segments"]["customer_train_ratings"]
    assert sum(s["rows"] for s in segs.values()) == len(test_rows)


def test_biases_fit_matches_the_closed_form_on_one_user():
    # One user, two items, (almost) no regularisation: the biases reproduce the ratings.
    u = np.array([0, 0, 0, 0])
    i = np.array([1, 1, 2, 2])
    r = np.array([4.0, 4.0, 2.0, 2.0])
    mu, bu, bi = evaluate.fit_biases(u, i, r, reg=1e-9, sweeps=50)
    np.testing.assert_allclose(mu + bu[u] + bi[i], r, atol=1e-6)


def test_sampled_ranking_is_seeded(data):
    model, train_rows, test_rows = data
    a = evaluate.evaluate(model, records(train_rows), records(test_rows), U, I, max_ranked=4)
    b = evaluate.evaluate(model, records(train_rows), records(test_rows), U, I, max_ranked=4)
    assert a["ranking"]["customers"] == 4 and a == b


def test_rows_in_another_layout_are_refused():
    recs = SparseRecords(np.array([0, 1]), np.array([0]), np.array([1.0], np.float32),
                         np.array([3.0], np.float32), F)
    with pytest.raises(FmprepError, match="layout"):
        evaluate.fm_columns(recs, U, F)
