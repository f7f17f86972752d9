"""The Amazon Customer Reviews TSV layout: one chunk of rows as tab-separated lines."""

from __future__ import annotations

import itertools

import numpy as np

from .faults import _inject_tsv_faults, _slot_faults, _truncate_lines
from .ids import _product_ids, _review_ids
from .model import _days, _Plan, _ratings, _review_slots, _vine_verified, _votes
from .words import _bodies, _headlines, _titles

CATEGORY = "Digital_Video_Download"


def _product_columns(plan: _Plan, prod: np.ndarray) -> tuple[list, list, list]:
    """``(titles, product ids, product parents)`` per row, each made once per distinct product."""
    uniq, inv = np.unique(prod, return_inverse=True)
    titles = np.array(_titles(plan, uniq), dtype=object)[inv].tolist()
    asins = np.array(_product_ids(plan, uniq), dtype=object)[inv].tolist()
    parents = (100_000_000 + plan.h.below(uniq, "parent", 900_000_000))[inv].tolist()
    return titles, asins, parents


def _chunk(plan: _Plan, start: int, stop: int, faults: bool, tally: dict,
           seen_customers: np.ndarray, seen_products: np.ndarray) -> list[str]:
    """Rows ``start:stop`` of the file as TSV lines (no newline), faults included if ``faults``.

    Adds the chunk's fault and duplicate-pair counts to ``tally`` and marks the customers and
    products of its valid rows in ``seen_customers`` / ``seen_products``.
    """
    h = plan.h
    s = _review_slots(plan, start, stop)
    fault, bad, prev_bad = _slot_faults(h, s.cust, s.k, s.key, faults)
    good = ~bad
    # A pair counts when both of its rows parse: this one and the slot it repeats.
    tally["duplicate_pairs"] += int((s.dup & good & ~prev_bad).sum())
    seen_customers[s.cust[good]] = True
    seen_products[s.prod[good]] = True

    rating = _ratings(h, s)
    day = _days(h, s)
    helpful, total = _votes(h, s.key, rating)
    vine, verified = _vine_verified(h, s.key)
    bodies = _bodies(h, s.key, rating)
    headlines = _headlines(h, s.key, rating)
    titles, asins, parents = _product_columns(plan, s.prod)
    cust_ids = plan.customer_ids(s.cust).tolist()
    ratings = [str(r) for r in rating.tolist()]

    truncate = {}
    if faults:
        truncate = _inject_tsv_faults(h, s.key, fault, tally, bodies, ratings, titles, headlines)

    # Columns in config.TSV_COLUMNS order.
    rep = itertools.repeat
    lines = list(map("\t".join, zip(
        rep("US"), map(str, cust_ids), _review_ids(plan, s.pos), asins, map(str, parents),
        titles, rep(CATEGORY), ratings, map(str, helpful.tolist()), map(str, total.tolist()),
        vine, verified, headlines, bodies, plan.day_strings[day].tolist())))
    _truncate_lines(lines, truncate)
    return lines
