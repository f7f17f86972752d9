"""Dense ids over tables in parts (fmprep.ids) against one pandas sort of the whole table."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest

from fmprep import ids


def _parts(rng, sizes, prefix):
    names = [f"{prefix}{i:04d}{'é' if i % 7 == 0 else ''}" for i in rng.permutation(sum(sizes))]
    counts = rng.integers(1, 6, sum(sizes))  # few counts: long runs of ties, cut inside them
    df = pd.DataFrame({"name": names, "n": counts.astype("int64"),
                       "part": np.repeat(np.arange(len(sizes)), sizes)})
    bounds = np.r_[0, np.cumsum(sizes)]
    return [df.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("per_range", [1000, 7, 1])
def test_ids_equal_one_sort_of_the_whole_table(per_range):
    rng = np.random.default_rng(per_range)
    users = _parts(rng, [0, 40, 3, 97, 0, 1, 60], "c")
    items = _parts(rng, [25, 0, 18], "p")
    tables = [ids.Table([dask.delayed(p) for p in users], "n", "name", "user",
                        rows=200, per_range=per_range),
              ids.Table(items, "n", "name", "item", rows=43, per_range=per_range)]
    (user_ranges, n_users), (item_ranges, n_items) = ids.number_tables(tables)
    assert (n_users, n_items) == (201, 43)
    got_users = pd.concat(dask.compute(user_ranges)[0], ignore_index=True)
    got_items = pd.concat(dask.compute(item_ranges)[0], ignore_index=True)
    for got, parts, first in ((got_users, users, 0), (got_items, items, 201)):
        want = pd.concat(parts).sort_values(["n", "name"], ascending=[False, True])
        assert got["name"].tolist() == want["name"].tolist()
        assert got.iloc[:, -1].tolist() == list(range(first, first + len(want)))
    # Ranges cut the table: more than one when asked, none far above its budget.
    sizes = [len(r) for r in dask.compute(user_ranges)[0]]
    assert len(sizes) == tables[0].n_ranges
    if per_range == 7:
        assert max(sizes) <= 3 * per_range


def test_split_by_bounds_cuts_inside_a_run_of_equal_counts():
    df = pd.DataFrame({"n": [5, 3, 3, 3, 1], "name": ["z", "a", "b", "c", "a"]})
    pieces = ids.split_by_bounds(df, "n", "name", [(-3, "b"), (-1, "a")])
    assert [p["name"].tolist() for p in pieces] == [["z", "a"], ["b", "c"], ["a"]]
