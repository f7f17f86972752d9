"""Dense ids for tables that come in parts: rows numbered by a count, descending, then a name.

prepare numbers users by ratings (most first), ties by customer_id, and items alike by
product_id; each table comes as one part per bucket. A sample sort numbers them without ever
holding a whole table in one task: every part is sorted and sampled, the samples cut the global
order into ranges of about ``per_range`` rows, one task gathers and sorts each range, and a
range's first id is the number of rows before it. A table that fits one range skips the
sampling: its parts are gathered and sorted at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SAMPLES_PER_RANGE = 16  # samples taken per part and range: ranges come out within ~10 % of even


@dataclass(frozen=True)
class Table:
    """One table to number (see :func:`number_tables`).

    Attributes
    ----------
    parts : list
        Its parts: pandas DataFrames or Dask delayed ones, any number of rows each.
    count, name : str
        Columns of the order: ``count`` descending, then ``name`` ascending (unique).
    id_column : str
        Column added with the ids.
    rows : int
        Rows of the whole table (sizes the ranges).
    per_range : int
        Rows a range holds at most, about: what one task may sort.
    """

    parts: list
    count: str
    name: str
    id_column: str
    rows: int
    per_range: int

    @property
    def n_ranges(self) -> int:
        return max(1, -(-self.rows // self.per_range))


def order_by_count(df: pd.DataFrame, count: str, name: str) -> pd.DataFrame:
    """``df`` by ``count`` descending, then ``name`` ascending, on a fresh index.

    Sorted by Arrow, 4x faster than pandas on strings; both order strings by code point.
    """
    keys = pa.table({"count": df[count].to_numpy(), "name": pa.array(df[name], pa.string())})
    order = pc.sort_indices(keys, sort_keys=[("count", "descending"), ("name", "ascending")])
    return df.take(order.to_numpy()).reset_index(drop=True)


def sample_keys(df: pd.DataFrame, count: str, name: str, n: int) -> list[tuple]:
    """``n`` (or all, if fewer) evenly spaced sort keys ``(-count, name)`` of a sorted part."""
    if n <= 0 or len(df) == 0:
        return []
    at = np.unique(np.linspace(0, len(df) - 1, min(n, len(df))).astype(np.int64))
    return list(zip((-df[count].to_numpy()[at]).tolist(), df[name].to_numpy(object)[at].tolist()))


def range_bounds(samples: list[tuple], n_ranges: int) -> list[tuple]:
    """The ``n_ranges - 1`` keys that cut the sorted ``samples`` into runs of equal length."""
    ordered = sorted(samples)
    if n_ranges <= 1 or not ordered:
        return []
    return [ordered[len(ordered) * j // n_ranges] for j in range(1, n_ranges)]


def split_by_bounds(df: pd.DataFrame, count: str, name: str,
                    bounds: list[tuple]) -> list[pd.DataFrame]:
    """A sorted part cut at ``bounds``: piece ``j`` holds the keys from bound ``j - 1``
    (included) to bound ``j`` (excluded)."""
    neg = -df[count].to_numpy()
    names = df[name].to_numpy(object)
    cuts = [0]
    for neg_count, text in bounds:
        lo, hi = np.searchsorted(neg, neg_count, "left"), np.searchsorted(neg, neg_count, "right")
        cuts.append(int(lo + np.searchsorted(names[lo:hi], text, "left")))
    cuts.append(len(df))
    return [df.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def gather_range(pieces: list[pd.DataFrame], count: str, name: str) -> pd.DataFrame:
    """One range: its pieces from every part, in order."""
    return order_by_count(pd.concat(pieces, ignore_index=True), count, name)


def numbered(df: pd.DataFrame, first_id: int, id_column: str) -> pd.DataFrame:
    """``df`` with ``id_column`` = ``first_id``, ``first_id + 1``, … in row order."""
    return df.assign(**{id_column: np.arange(first_id, first_id + len(df), dtype="int64")})


def number_tables(tables: list[Table]) -> list[tuple[list, int]]:
    """Number the rows of ``tables`` consecutively, table after table, each in its order.

    Returns
    -------
    list of (list, int)
        Per table, its ranges (delayed DataFrames, in id order, each with ``id_column``) and
        its rows.
    """
    delayed = dask.delayed
    parts = [t.parts for t in tables]
    bounds = [[] for _ in tables]  # per table: the keys that cut it into ranges
    sampled = [i for i, t in enumerate(tables) if t.n_ranges > 1]
    if sampled:
        sorted_parts = dask.persist([[delayed(order_by_count)(p, tables[i].count, tables[i].name)
                                      for p in parts[i]] for i in sampled])[0]
        (samples,) = dask.compute([[delayed(sample_keys)(p, tables[i].count, tables[i].name,
                                                         SAMPLES_PER_RANGE * tables[i].n_ranges)
                                    for p in table_parts]
                                   for i, table_parts in zip(sampled, sorted_parts)])
        for i, table_parts, part_samples in zip(sampled, sorted_parts, samples):
            parts[i] = table_parts
            bounds[i] = range_bounds([k for s in part_samples for k in s], tables[i].n_ranges)
    pieces = []  # per table, per range: its piece of every part
    for t, table_parts, table_bounds in zip(tables, parts, bounds):
        if not table_bounds:
            pieces.append([table_parts])
            continue
        splits = [delayed(split_by_bounds, nout=len(table_bounds) + 1)(p, t.count, t.name,
                                                                      table_bounds)
                  for p in table_parts]
        pieces.append([[s[j] for s in splits] for j in range(len(table_bounds) + 1)])
    ranges = dask.persist([[delayed(gather_range)(r, t.count, t.name) for r in table_pieces]
                           for t, table_pieces in zip(tables, pieces)])[0]
    (lengths,) = dask.compute([[delayed(len)(r) for r in table_ranges] for table_ranges in ranges])
    out, first = [], 0
    for t, table_ranges, table_lengths in zip(tables, ranges, lengths):
        starts = first + np.concatenate([[0], np.cumsum(table_lengths)[:-1]]).astype(int)
        rows = int(sum(table_lengths))
        out.append(([delayed(numbered)(r, int(s), t.id_column)
                     for r, s in zip(table_ranges, starts)], rows))
        first += rows
    return out
