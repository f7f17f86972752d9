"""What a data engineer could write in an afternoon: fmprep's prep as DuckDB SQL, to Parquet.

The baseline ``make data`` is measured against (benchmarks/bench_scale.py, tool ``duckdb``).
Same semantics as fmprep's prep (README "Semantics") on an Amazon Customer Reviews TSV:

- tab-separated, no quoting, header; rows with the wrong number of fields skipped
  (``ignore_errors``), and rows with an empty customer/product/review id, a star_rating that is
  not 1-5 or a review_date that is not a date dropped;
- one row per (customer, product): the latest by review_date, then review_id;
- customers with >= 5 and products with >= 10 of those rows (counted once, "single" mode);
- users 0..U-1 and items U..U+I-1 by number of ratings, descending, ties by id ascending;
- days_since_first from the customer's first kept review, in years (days / 365.25);
- each customer's latest review (review_date, then review_id) is test, the rest train.

Writes ``OUT/{train,test,users,items}.parquet``: the same users, items and rows as fmprep
(its counts are printed to compare), without RecordIO, titles or a report. Timed from start
to the last file written, on ``--threads`` threads.

Usage::

    python benchmarks/duckdb_prep.py SOURCE.tsv.gz --out DIR [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import duckdb

from fmprep.config import TSV_COLUMNS

MIN_CUSTOMER, MIN_PRODUCT = 5, 10


def prep(source: str, out: str, threads: int) -> dict:
    """Run the prep; return seconds per step and the counts."""
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in TSV_COLUMNS)
    times, t0 = {}, time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE valid AS
        SELECT customer_id, product_id, review_id,
               CAST(star_rating AS TINYINT) AS rating,
               CAST(review_date AS DATE) AS day
        FROM read_csv(?, delim = '\t', header = true, quote = '', escape = '',
                      columns = {{{columns}}}, ignore_errors = true,
                      strict_mode = true, null_padding = false)
        WHERE customer_id <> '' AND product_id <> '' AND review_id <> ''
          AND regexp_full_match(star_rating, '[1-5]')
          AND regexp_full_match(review_date, '\\d{{4}}-\\d{{2}}-\\d{{2}}')
          AND TRY_CAST(review_date AS DATE) IS NOT NULL
    """, [source])
    times["read"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE kept AS
        WITH deduped AS (
            SELECT * FROM valid
            QUALIFY row_number() OVER (PARTITION BY customer_id, product_id
                                       ORDER BY day DESC, review_id DESC) = 1),
        per_customer AS (SELECT customer_id FROM deduped GROUP BY customer_id
                         HAVING count(*) >= {MIN_CUSTOMER}),
        per_product AS (SELECT product_id FROM deduped GROUP BY product_id
                        HAVING count(*) >= {MIN_PRODUCT})
        SELECT d.* FROM deduped d
        SEMI JOIN per_customer USING (customer_id)
        SEMI JOIN per_product USING (product_id)
    """)
    con.execute("""
        CREATE TEMP TABLE users AS
        SELECT customer_id,
               row_number() OVER (ORDER BY count(*) DESC, customer_id) - 1 AS "user",
               count(*) AS n_ratings, min(day) AS first_review
        FROM kept GROUP BY customer_id
    """)
    n_users = con.execute("SELECT count(*) FROM users").fetchone()[0]
    con.execute(f"""
        CREATE TEMP TABLE items AS
        SELECT product_id,
               {n_users} + row_number() OVER (ORDER BY count(*) DESC, product_id) - 1 AS item,
               count(*) AS n_ratings
        FROM kept GROUP BY product_id
    """)
    con.execute("""
        CREATE TEMP TABLE numbered AS
        SELECT u."user", i.item,
               CAST(k.day - u.first_review AS DOUBLE) / 365.25 AS days_since_first,
               CAST(k.rating AS FLOAT) AS star_rating, k.day AS review_date,
               row_number() OVER (PARTITION BY k.customer_id
                                  ORDER BY k.day DESC, k.review_id DESC) = 1 AS is_test
        FROM kept k JOIN users u USING (customer_id) JOIN items i USING (product_id)
    """)
    times["prepare"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    for name, query in (
            ("train", "SELECT * EXCLUDE (is_test) FROM numbered WHERE NOT is_test"),
            ("test", "SELECT * EXCLUDE (is_test) FROM numbered WHERE is_test"),
            ("users", "SELECT * FROM users"), ("items", "SELECT * FROM items")):
        con.execute(f"COPY ({query}) TO '{os.path.join(out, name + '.parquet')}' "
                    "(FORMAT parquet)")
    times["write"] = time.perf_counter() - t2
    counts = dict(zip(("users", "items", "train_rows", "test_rows"), con.execute("""
        SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items),
               (SELECT count(*) FILTER (WHERE NOT is_test) FROM numbered),
               (SELECT count(*) FILTER (WHERE is_test) FROM numbered)""").fetchone()))
    total = time.perf_counter() - t0
    return {"tool": "duckdb", "duckdb": duckdb.__version__, "threads": threads,
            "seconds": round(total, 3), "stages": {k: round(v, 3) for k, v in times.items()},
            **counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()
    result = prep(args.source, args.out, args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"duckdb {result['seconds']:.2f} s ({result['stages']}); {result['users']:,} "
              f"users, {result['items']:,} items, {result['train_rows']:,} train / "
              f"{result['test_rows']:,} test rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
