"""The Amazon Reviews 2023 JSON Lines layout: reviews and product metadata.

Additive to the TSV layout: a chunk's rows are the TSV rows of the same positions (made without
the TSV faults), re-laid as one JSON object per line, then given the JSON faults.
"""

from __future__ import annotations

import json

import numpy as np

from ..config import TSV_COLUMNS
from .faults import _cut_line, _faults_2023, _spoil_review_2023
from .ids import _product_ids, _user_ids_2023
from .model import _Plan
from .tsv import _chunk
from .words import _titles

DEFAULT_SAMPLE_2023 = "data/sample/reviews_2023_sample.jsonl.gz"
_MAIN_CATEGORY_2023 = "Movies & TV"
_MS_PER_DAY = 86_400_000


def _lines_2023(plan: _Plan, start: int, stop: int, faults: bool, tally: dict,
                seen_customers: np.ndarray, seen_products: np.ndarray) -> list[str]:
    """Rows ``start:stop`` of :func:`generate_reviews` (without its TSV faults) as 2023 JSON."""
    rows = [line.split("\t") for line in _chunk(plan, start, stop, False, tally,
                                                seen_customers, seen_products)]
    cols = dict(zip(TSV_COLUMNS, zip(*rows))) if rows else {c: () for c in TSV_COLUMNS}
    pos = np.arange(start, stop, dtype=np.int64)
    users = _user_ids_2023(plan, np.array(cols["customer_id"], dtype=np.int64))
    days = np.array(cols["review_date"], dtype="datetime64[D]").astype(np.int64)
    # The 2023 files stamp reviews to the millisecond: the date plus a time of day.
    stamps = (days * _MS_PER_DAY + plan.h.below(pos, "time_of_day_2023", _MS_PER_DAY)).tolist()
    fault = _faults_2023(plan.h, pos, faults, tally)
    out = []
    for i, (user, asin, stars, headline, body, votes, verified, ms) in enumerate(zip(
            users, cols["product_id"], cols["star_rating"], cols["review_headline"],
            cols["review_body"], cols["helpful_votes"], cols["verified_purchase"], stamps)):
        review = {"rating": float(stars), "title": headline, "text": body, "images": [],
                  "asin": asin, "parent_asin": asin, "user_id": user, "timestamp": ms,
                  "helpful_vote": int(votes), "verified_purchase": verified == "Y"}
        f = int(fault[i])
        if f > 0:
            _spoil_review_2023(review, f, i)
        line = json.dumps(review, ensure_ascii=False)
        out.append(_cut_line(line) if f == 0 else line)
    return out


def _meta_lines_2023(plan: _Plan, ranks: np.ndarray, chunk_rows: int):
    """Yield lists of metadata lines, one line per product rank in ``ranks``."""
    for i in range(0, len(ranks), chunk_rows):
        r = ranks[i:i + chunk_rows]
        yield [json.dumps({"main_category": _MAIN_CATEGORY_2023, "title": title,
                           "features": [], "description": [], "price": None,
                           "images": [], "videos": [], "store": "", "categories": [],
                           "details": {}, "parent_asin": asin,
                           "bought_together": None}, ensure_ascii=False)
               for asin, title in zip(_product_ids(plan, r), _titles(plan, r))]


def meta_path_2023(path) -> str:
    """Where :func:`generate_reviews_2023` puts the metadata file: ``meta_<name>`` beside it.

    Parameters
    ----------
    path : str or os.PathLike
        The reviews file, local or an fsspec URL.

    Returns
    -------
    str
        ``path`` with its last component prefixed by ``meta_``.
    """
    path = str(path)
    head, name = path.rsplit("/", 1) if "/" in path else ("", path)
    return f"{head}/meta_{name}" if head else f"meta_{name}"
