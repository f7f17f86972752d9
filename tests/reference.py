"""An independent, row-by-row computation of fmprep's prep semantics, used as a test oracle.

Written without any fmprep code: plain Python parsing and pandas, the way docs/design.md §2 and the
README describe the semantics (with fmprep's two documented fixes).
"""

from __future__ import annotations

import datetime as dt
import gzip
import re

import numpy as np
import pandas as pd

RATING = re.compile(r"^[1-5]$")


def parse_tsv(path):
    """Valid rows of a review TSV(.gz) as a DataFrame; quoting off; bad rows dropped."""
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    with opener(path, "rb") as f:
        f.readline()
        for raw in f:
            fields = raw.rstrip(b"\n").rstrip(b"\r").split(b"\t")
            if len(fields) != 15:
                continue
            try:
                customer, review_id, product, title, rating, date = (
                    fields[i].decode("utf-8") for i in (1, 2, 3, 5, 7, 14))
                day = dt.datetime.strptime(date, "%Y-%m-%d").date()
            except (UnicodeDecodeError, ValueError):
                continue
            if not (customer and product and review_id and RATING.match(rating)):
                continue
            rows.append((customer, review_id, product, title, int(rating), day))
    return pd.DataFrame(rows, columns=["customer_id", "review_id", "product_id",
                                       "product_title", "star_rating", "review_date"])


def expected_prep(df, min_customer=5, min_product=10):
    """Expected (user, item, days, rating) arrays per channel, id maps and counts."""
    n_valid = len(df)
    df = df.sort_values(["customer_id", "product_id", "review_date", "review_id"])
    df = df.drop_duplicates(["customer_id", "product_id"], keep="last")
    n_dedup = len(df)
    cn = df["customer_id"].map(df["customer_id"].value_counts())
    pn = df["product_id"].map(df["product_id"].value_counts())
    kept = df[(cn >= min_customer) & (pn >= min_product)].copy()

    def ids(col, start):
        counts = kept[col].value_counts().rename("n").reset_index()
        counts = counts.sort_values(["n", col], ascending=[False, True]).reset_index(drop=True)
        return dict(zip(counts[col], range(start, start + len(counts))))

    users = ids("customer_id", 0)
    items = ids("product_id", len(users))
    first = kept.groupby("customer_id")["review_date"].transform("min")
    kept["days"] = [(a - b).days for a, b in zip(kept["review_date"], first)]
    kept["user"] = kept["customer_id"].map(users)
    kept["item"] = kept["product_id"].map(items)
    kept = kept.sort_values(["customer_id", "review_date", "review_id"])
    is_test = ~kept["customer_id"].duplicated(keep="last")

    def records(frame):
        out = np.stack([frame["user"].to_numpy(float), frame["item"].to_numpy(float),
                        frame["days"].to_numpy(float), frame["star_rating"].to_numpy(float)], 1)
        return out[np.lexsort(out.T[::-1])]

    return {"train": records(kept[~is_test]), "test": records(kept[is_test]),
            "users": users, "items": items,
            "counts": {"rows_valid": n_valid, "duplicates_removed": n_valid - n_dedup,
                       "removed_by_customer_filter": int((cn < min_customer).sum()),
                       "removed_by_product_filter": int(((cn >= min_customer) &
                                                          (pn < min_product)).sum())}}
