"""The reference notebook workflow (docs/design.md §2), standalone, timed stage by stage.

This is what fmprep replaces, written the way the notebook does it so that the benchmarks
compare against what users come from, faults included:

1. ``pandas.read_csv`` of the whole .tsv.gz with the default quote handling and
   ``on_bad_lines="skip"`` (pandas >= 2 spelling of ``error_bad_lines=False``), then keep
   customer_id, product_id, product_title, star_rating, review_date;
2. count ratings per customer and per product over the whole frame, keep customers with >= 5
   and products with >= 10 in one pass;
3. number customers 0..U-1 and products U..U+I-1 in ``value_counts`` order after the filter;
4. ``days_since_first`` = days since the customer's first review (after the filter);
5. test = ``groupby('customer_id').last()``, train = every other (customer, product) pair;
6. float32 CSR, 3 non-zeros per row (user, item, days at feature_dim-1), feature_dim = U+I+1;
7. ``sagemaker.amazon.common.write_spmatrix_to_sparse_tensor`` into 10 train and 1 test shard.

Stages timed: ``read`` (1), ``filter_ids`` (2-4), ``split`` (5), ``csr`` (6), ``write`` (7).

Two departures, both needed to get to the end on files with the faults real files have, and
both reported in the output rather than hidden:

- Default quoting makes a field that opens with ``"`` swallow tabs and lines up to the next
  ``"``. When the file holds an odd number of such fields, the last one runs to the end of the
  file and pandas raises ``ParserError: EOF inside string``: the notebook stops there. This
  script then reads again with ``quoting=csv.QUOTE_NONE`` (what fmprep does), reports the error
  and the time of the failed attempt separately (``excluded_s``), and carries on.
- Merged and truncated rows leave non-numeric star ratings and unparsable dates, on which the
  notebook's float conversion raises. Such rows are dropped right after the read and counted
  (``rows_unusable``).

Usage::

    python benchmarks/reference_workflow.py SOURCE.tsv.gz --out DIR [--json] [--rows-in-file N]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
# The SDK logs its config lookup at INFO to stdout, which would corrupt --json output.
logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
# Imported up front, as the notebook does: the SDK takes ~1 s to import, which is not writing.
from sagemaker.amazon.common import write_spmatrix_to_sparse_tensor  # noqa: E402

KEPT_COLUMNS = ["customer_id", "product_id", "product_title", "star_rating", "review_date"]
MIN_CUSTOMER_RATINGS = 5
MIN_PRODUCT_RATINGS = 10
TRAIN_SHARDS = 10
TEST_SHARDS = 1


class _Clock:
    """Per-stage wall times; time spent outside the workflow itself is kept apart."""

    def __init__(self):
        self.stages: dict[str, float] = {}
        self.excluded: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str, excluded: bool = False) -> None:
        now = time.perf_counter()
        target = self.excluded if excluded else self.stages
        target[stage] = target.get(stage, 0.0) + now - self._t
        self._t = now


def count_data_lines(path: str) -> int:
    """Newline-terminated lines after the header, counted on the raw decompressed bytes."""
    from isal import igzip

    opener = igzip.open if path.endswith(".gz") else open
    lines = 0
    with opener(path, "rb") as f:
        while chunk := f.read(16 << 20):
            lines += chunk.count(b"\n")
    return max(0, lines - 1)


def _merged_rows(df: pd.DataFrame) -> int:
    """Rows with a tab or newline inside a field: proof that default quoting merged lines."""
    hit = np.zeros(len(df), dtype=bool)
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]):
            continue
        s = df[col].astype("str")
        hit |= (s.str.contains("\n", regex=False) | s.str.contains("\t", regex=False)).to_numpy(
            dtype=bool, na_value=False)
    return int(hit.sum())


def read_reviews(source: str, clock: _Clock, report: dict) -> pd.DataFrame:
    """Stage 1: the notebook's read, with the retry described in the module docstring."""
    try:
        df = pd.read_csv(source, delimiter="\t", on_bad_lines="skip")
        report["quoting"] = "default"
    except pd.errors.ParserError as err:
        clock.lap("read_failed", excluded=True)
        report["read_error"] = str(err).strip()
        df = pd.read_csv(source, delimiter="\t", on_bad_lines="skip", quoting=csv.QUOTE_NONE)
        report["quoting"] = "none (retry after ParserError)"
    report["rows_kept_by_pandas"] = len(df)
    clock.lap("read")
    report["rows_merged"] = _merged_rows(df)
    clock.lap("diagnostics", excluded=True)

    df = df[KEPT_COLUMNS]
    # The notebook converts these without errors="coerce" and would raise on merged rows.
    rating = pd.to_numeric(df["star_rating"], errors="coerce")
    date = pd.to_datetime(df["review_date"], format="%Y-%m-%d", errors="coerce")
    usable = rating.between(1, 5).to_numpy(dtype=bool, na_value=False) & date.notna().to_numpy()
    report["rows_unusable"] = int(len(df) - usable.sum())
    df = df.assign(star_rating=rating, review_date=date)[usable]
    clock.lap("read")
    return df


def filter_and_number(df: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Stages 2-4: one-pass long-tail filter, ids in value_counts order, days_since_first."""
    customers = df["customer_id"].value_counts()
    products = df["product_id"].value_counts()
    customers = customers[customers >= MIN_CUSTOMER_RATINGS]
    products = products[products >= MIN_PRODUCT_RATINGS]
    reduced = (df.merge(pd.DataFrame({"customer_id": customers.index}))
                 .merge(pd.DataFrame({"product_id": products.index})))

    customers = reduced["customer_id"].value_counts()
    products = reduced["product_id"].value_counts()
    n_users, n_items = len(customers), len(products)
    customer_index = pd.DataFrame({"customer_id": customers.index,
                                   "user": np.arange(n_users)})
    product_index = pd.DataFrame({"product_id": products.index,
                                  "item": np.arange(n_items) + n_users})
    reduced = reduced.merge(customer_index).merge(product_index)

    first = (reduced.groupby("customer_id")["review_date"].min()
             .rename("first_review_date").reset_index())
    reduced = reduced.merge(first)
    reduced["days_since_first"] = (reduced["review_date"]
                                   - reduced["first_review_date"]).dt.days
    return reduced, n_users, n_items


def split(reduced: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage 5: test = each customer's last row (file order, per column), train = the rest."""
    test = reduced.groupby("customer_id").last().reset_index()
    marked = reduced.merge(test[["customer_id", "product_id"]], on=["customer_id", "product_id"],
                           how="outer", indicator=True)
    train = marked[marked["_merge"] == "left_only"].drop(columns="_merge")
    return train, test


def to_csr(frame: pd.DataFrame, feature_dim: int) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Stage 6: 1.0 at user, 1.0 at item, days_since_first at feature_dim-1; float32."""
    n = len(frame)
    user = frame["user"].to_numpy(dtype=np.int64)
    item = frame["item"].to_numpy(dtype=np.int64)
    days = frame["days_since_first"].to_numpy(dtype=np.float32)
    indices = np.column_stack([user, item, np.full(n, feature_dim - 1)]).ravel()
    data = np.column_stack([np.ones(n, np.float32), np.ones(n, np.float32), days]).ravel()
    indptr = np.arange(0, 3 * n + 1, 3)
    matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, feature_dim),
                                     dtype=np.float32)
    return matrix, frame["star_rating"].to_numpy(dtype=np.float32)


def write_shards(matrix, labels, directory: str, shards: int) -> list[str]:
    """Stage 7: the SDK v2 writer, one call per shard of consecutive rows."""
    os.makedirs(directory, exist_ok=True)
    files = []
    for i, rows in enumerate(np.array_split(np.arange(matrix.shape[0]), shards)):
        path = os.path.join(directory, f"shard-{i:02d}.protobuf")
        start, stop = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
        with open(path, "wb") as f:
            write_spmatrix_to_sparse_tensor(f, matrix[start:stop], labels[start:stop])
        files.append(path)
    return files


def run(source: str, out: str, rows_in_file: int | None = None) -> dict:
    """Run the whole reference workflow on ``source`` and write its shards under ``out``.

    Parameters
    ----------
    source : str
        A review .tsv.gz (or .tsv) in the Amazon Customer Reviews layout.
    out : str
        Directory for ``train/shard-NN.protobuf`` and ``test/shard-00.protobuf``.
    rows_in_file : int, optional
        Data lines in ``source``; counted (outside the timed stages) when not given.

    Returns
    -------
    dict
        ``stages`` (seconds per stage), ``total_s`` (their sum), ``excluded_s`` (time spent in
        a failed first read and in diagnostics, not part of the workflow), ``rows_in_file``,
        ``rows_kept_by_pandas``, ``rows_lost`` (the difference), ``rows_merged`` (kept rows
        with a tab or newline inside a field), ``rows_unusable``, ``quoting``, ``read_error``
        (if any), ``users``, ``items``, ``feature_dim``, ``train_rows``, ``test_rows``.
    """
    report: dict = {"tool": "reference", "source": source, "read_error": None}
    clock = _Clock()
    df = read_reviews(source, clock, report)

    reduced, n_users, n_items = filter_and_number(df)
    del df
    clock.lap("filter_ids")

    train, test = split(reduced)
    del reduced
    clock.lap("split")

    feature_dim = n_users + n_items + 1
    x_train, y_train = to_csr(train, feature_dim)
    x_test, y_test = to_csr(test, feature_dim)
    del train, test
    clock.lap("csr")

    write_shards(x_train, y_train, os.path.join(out, "train"), TRAIN_SHARDS)
    write_shards(x_test, y_test, os.path.join(out, "test"), TEST_SHARDS)
    clock.lap("write")

    if rows_in_file is None:
        rows_in_file = count_data_lines(source)
        clock.lap("count_lines", excluded=True)
    kept = report["rows_kept_by_pandas"]
    report.update({
        "stages": {k: round(v, 3) for k, v in clock.stages.items()},
        "total_s": round(sum(clock.stages.values()), 3),
        "excluded": {k: round(v, 3) for k, v in clock.excluded.items()},
        "excluded_s": round(sum(clock.excluded.values()), 3),
        "rows_in_file": rows_in_file,
        "rows_lost": rows_in_file - kept,
        "rows_lost_pct": round(100.0 * (rows_in_file - kept) / max(rows_in_file, 1), 2),
        "users": n_users, "items": n_items, "feature_dim": feature_dim,
        "train_rows": int(x_train.shape[0]), "test_rows": int(x_test.shape[0]),
    })
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="review .tsv.gz in the Amazon Customer Reviews layout")
    parser.add_argument("--out", default="data/bench/reference",
                        help="directory for the shards (default %(default)s)")
    parser.add_argument("--rows-in-file", type=int, default=None,
                        help="data lines in SOURCE, if known (else counted, untimed)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    report = run(args.source, args.out, args.rows_in_file)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"reference workflow on {args.source}, quoting: {report['quoting']}")
        if report["read_error"]:
            print(f"  default quoting failed: {report['read_error']}")
        print(f"  rows in file {report['rows_in_file']:,}, kept by pandas "
              f"{report['rows_kept_by_pandas']:,} (lost {report['rows_lost']:,}, "
              f"{report['rows_lost_pct']} %), merged {report['rows_merged']:,}, "
              f"unusable {report['rows_unusable']:,}")
        print(f"  {report['users']:,} users, {report['items']:,} items, train "
              f"{report['train_rows']:,}, test {report['test_rows']:,}")
        print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in report["stages"].items())
              + f"; total {report['total_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
