"""The ranking model (fmprep.model.ranking) and make recommend (fmprep.recommend) on small data."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmprep.model import ranking
from fmprep import recommend
from fmprep.config import LOCAL_MODEL_DIR, PrepSettings
from fmprep.errors import FmprepError
from fmprep.model.evaluate import rank_metrics
from fmprep.model.fm import FMModel
from fmprep.pipeline import run_data
from fmprep.recordio import SparseRecords


def records(rows, num_users, num_items):
    """rows: (user, item, days) → SparseRecords in fmprep's layout, label 5."""
    fdim = num_users + num_items + 1
    indptr = np.arange(0, 3 * len(rows) + 1, 3)
    indices = np.array([[u, num_users + i, fdim - 1] for u, i, _ in rows]).ravel()
    values = np.array([[1.0, 1.0, d] for _, _, d in rows], np.float32).ravel()
    return SparseRecords(indptr, indices, values, np.full(len(rows), 5.0, np.float32), fdim)


def planted(seed=0):
    """Customers in 3 taste groups of unequal size, each rating only its group's 10 products.

    Popularity ranks the big group's products first, so it misses the small groups' next
    review; a model that learns the groups does not. Each customer's latest row is held out.
    """
    rng = np.random.default_rng(seed)
    sizes, num_items = (40, 25, 15), 30
    train, held = [], []
    user = 0
    for group, size in enumerate(sizes):
        for _ in range(size):
            chosen = rng.choice(10, size=6, replace=False) + 10 * group
            for day, item in enumerate(chosen):
                (held if day == 5 else train).append((user, int(item), float(day)))
            user += 1
    return train, held, user, num_items


def test_ranking_learns_what_popularity_misses():
    train_rows, held_rows, nu, ni = planted()
    model, metrics = ranking.train_ranking(records(train_rows, nu, ni), nu, ni, seed=1)
    assert ranking.is_ranking_model(model) and model.hyperparameters["method"] == "ials"
    assert metrics["candidates"][0]["kind"] == "popularity"
    assert metrics["valid_customers"] == nu  # every customer's latest train row
    tu = np.array([u for u, _, _ in held_rows])
    ti = np.array([nu + i for _, i, _ in held_rows])
    seen = sp.csr_matrix((np.ones(len(train_rows)), ([u for u, _, _ in train_rows],
                                                     [i for _, i, _ in train_rows])),
                         shape=(nu, ni))
    scores = (model.V[:nu].astype(np.float64) @ model.V[nu:nu + ni].T.astype(np.float64)
              + model.w[nu:nu + ni])
    ours = rank_metrics(lambda b: scores[tu[b]], tu, ti, seen, nu, k=5)
    counts = np.bincount([i for _, i, _ in train_rows], minlength=ni).astype(float)
    pop = rank_metrics(lambda b: np.broadcast_to(counts, (b.size, ni)), tu, ti, seen, nu, k=5)
    assert ours["hr"] > 0.9 and pop["hr"] < 0.6


def test_ranking_is_reproducible_and_reads_only_train():
    train_rows, _, nu, ni = planted(3)
    recs = records(train_rows, nu, ni)
    a, ma = ranking.train_ranking(recs, nu, ni, seed=5)
    b, mb = ranking.train_ranking(recs, nu, ni, seed=5)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.w, b.w)
    assert ma["chosen"] == mb["chosen"]
    c, _ = ranking.train_ranking(recs, nu, ni, seed=6)
    assert not np.array_equal(a.V, c.V)
    # Customer biases and the days feature carry nothing: scores depend on (customer, product).
    assert a.w0 == 0 and not a.w[:nu].any() and not a.V[-1].any() and a.w[-1] == 0


def test_popularity_stays_unless_beaten_by_more_than_noise():
    # Customers rate products drawn by popularity alone: nothing to personalise.
    rng = np.random.default_rng(2)
    nu, ni = 200, 40
    weights = 1.0 / np.arange(1, ni + 1)
    rows = [(u, int(i), float(d)) for u in range(nu)
            for d, i in enumerate(rng.choice(ni, 6, replace=False, p=weights / weights.sum()))]
    model, metrics = ranking.train_ranking(records(rows, nu, ni), nu, ni)
    chosen, pop = metrics["chosen"], metrics["candidates"][0]
    if chosen["kind"] != "popularity":
        assert chosen["hr@10"] - pop["hr@10"] > chosen["margin"]
    # Factors regularised to nothing score every product alike: popularity must be kept.
    model, metrics = ranking.train_ranking(records(rows, nu, ni), nu, ni,
                                           settings={"regs": (1e9,), "alphas": (1.0,),
                                                     "betas": (0.0,)})
    assert metrics["chosen"]["kind"] == "popularity" and not model.V.any()
    counts = np.bincount([i for _, i, _ in rows], minlength=ni)
    assert np.array_equal(np.argsort(-model.w[nu:nu + ni], kind="stable"),
                          np.argsort(-counts, kind="stable"))


def test_top_k_breaks_ties_by_index_and_skips_seen():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0],
                       [5.0, 4.0, 3.0, 2.0, 1.0]])
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]]))
    items, values = recommend.top_k(scores.copy(), seen, 3)
    assert items.tolist() == [[2, 4, 3], [0, 1, 2], [4, -1, -1]]
    assert values[0].tolist() == [3.0, 3.0, 2.0] and np.isneginf(values[2, 1:]).all()


@pytest.fixture(scope="module")
def prepped(sample_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    work, output = str(root / "work"), str(root / "output")
    manifest = run_data(sample_file[0], work, output, PrepSettings(train_shards=3,
                                                                   days_scale="years"))
    return output, work, manifest


def test_recommend_every_customer_never_a_train_product(prepped):
    output, work, manifest = prepped
    result = recommend.recommend_output(output, k=5, users_per_part=97)  # many parts
    assert len(result["files"]) > 3
    recs = pd.read_parquet(os.path.join(output, "recommendations"))
    users = pd.read_parquet(os.path.join(work, "users"))
    items = pd.read_parquet(os.path.join(work, "items"))
    train = pd.read_parquet(os.path.join(work, "train"), columns=["user", "item"])
    assert set(recs["customer_id"]) == set(users["customer_id"])
    assert (recs.groupby("customer_id").size() == 5).all()
    assert result["rows"] == len(recs) == 5 * len(users)
    named = (train.merge(users[["user", "customer_id"]])
             .merge(items[["item", "product_id"]]))[["customer_id", "product_id"]]
    assert recs.merge(named).empty
    # Each list is the brute-force top 5 of the saved ranking model's own FM scores.
    model = FMModel.load(os.path.join(output, LOCAL_MODEL_DIR, ranking.RANKING_SUBDIR))
    nu, ni = manifest["num_users"], manifest["num_items"]
    for customer in users["customer_id"].sample(25, random_state=0):
        u = int(users.loc[users["customer_id"] == customer, "user"].iloc[0])
        rated = set(train.loc[train["user"] == u, "item"])
        cand = [i for i in range(nu, nu + ni) if i not in rated]
        rows = np.ravel([[u, i] for i in cand])
        s = model.predict(np.arange(0, 2 * len(cand) + 1, 2), rows, np.ones(rows.size))
        best = sorted(zip(-s, cand))[:5]
        expect = items.set_index("item").loc[[i for _, i in best], "product_id"].tolist()
        got = recs[recs["customer_id"] == customer].sort_values("rank")
        assert got["product_id"].tolist() == expect
        assert got["rank"].tolist() == [1, 2, 3, 4, 5]
        assert np.allclose(got["score"], [-v for v, _ in best], atol=1e-5)


def test_recommend_rerun_replaces_only_its_own_files(prepped):
    output, work, _ = prepped
    many = recommend.recommend_output(output, k=3, users_per_part=50)
    folder = os.path.join(output, "recommendations")
    keep = os.path.join(folder, "notes.txt")
    with open(keep, "w") as f:
        f.write("mine")
    one = recommend.recommend_output(output, k=3)
    assert len(many["files"]) > 1 and len(one["files"]) == 1
    on_disk = sorted(n for n in os.listdir(folder) if n.endswith(".parquet"))
    assert on_disk == one["files"]
    assert open(keep).read() == "mine"
    os.remove(keep)
    single = pd.read_parquet(folder)
    assert len(single) == one["rows"] == many["rows"]


def test_one_customer_and_bad_requests(prepped):
    output, work, _ = prepped
    recommend.recommend_output(output, k=4)
    recs = pd.read_parquet(os.path.join(output, "recommendations"))
    customer = recs["customer_id"].iloc[0]
    one = recommend.recommend_customer(output, customer, k=4)
    expect = recs[recs["customer_id"] == customer].sort_values("rank")
    assert one["product_id"].tolist() == expect["product_id"].tolist()
    assert one["product_title"].tolist() == expect["product_title"].tolist()
    with pytest.raises(FmprepError, match="not in .*users"):
        recommend.recommend_customer(output, "no-such-customer")
    with pytest.raises(FmprepError, match="K=0"):
        recommend.recommend_output(output, k=0)
