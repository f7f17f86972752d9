"""Generated review data in the Amazon Customer Reviews TSV and Amazon Reviews 2023 layouts.

The bundled sample and every benchmark input come from :func:`generate_reviews` (or
:func:`generate_reviews_2023`). The file looks like a real ``amazon_reviews_us_*.tsv.gz`` (same
15 columns, same value shapes, the same kinds of faults) and its ratings carry structure a
Factorization Machines model can learn.

Every random value is a hash of ``(seed, stream, key)`` where the key is a file position, a
slot, a customer or a product. The output therefore depends only on ``(rows, seed)``, never on
the chunk size, and memory stays flat however many rows are written. All of it is vectorized
numpy per chunk, with no state carried between chunks.

The rooms of the package:

- :mod:`.hashing`: the hash streams and the keyed permutation everything draws from;
- :mod:`.model`: the generative model (customers, products, ratings, dates, votes);
- :mod:`.words` and :mod:`.ids`: the text and the id strings of a row;
- :mod:`.faults`: the malformed rows of each layout;
- :mod:`.tsv` and :mod:`.jsonl`: the two layouts, and the 2023 product metadata;
- :mod:`.output`: reproducible gzip, written atomically.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..config import SAMPLE_ROWS, SAMPLE_SEED, TSV_COLUMNS
from ..errors import FmprepError
from .faults import _FAULT_RATES, BAD_REASONS, BAD_REASONS_2023
from .jsonl import DEFAULT_SAMPLE_2023, _lines_2023, _meta_lines_2023, meta_path_2023
from .model import _CUSTOMER_IDS, FIRST_DATE, LAST_DATE, _Plan
from .output import _gzip_lines
from .tsv import CATEGORY, _chunk

__all__ = ["BAD_REASONS", "BAD_REASONS_2023", "CATEGORY", "DEFAULT_SAMPLE_2023", "FIRST_DATE",
           "LAST_DATE", "generate_reviews", "generate_reviews_2023"]


def _plan(rows: int, seed: int) -> _Plan:
    """The population behind ``(rows, seed)``, refused when customer ids would overflow."""
    plan = _Plan(rows, seed)
    if plan.customers >= _CUSTOMER_IDS:
        raise FmprepError(f"rows={rows} is too many: customer ids would not fit in 8 digits; "
                          "generate several files with different seeds instead.")
    return plan


def generate_reviews(path, rows=SAMPLE_ROWS, seed=SAMPLE_SEED, faults=True, chunk_rows=200_000,
                     compresslevel=1, storage_options=None) -> dict:
    """Write a gzip TSV of generated reviews in the Amazon Customer Reviews layout.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, local or any fsspec URL (``s3://bucket/key.tsv.gz``). For local paths the
        parent directory is created and the file appears atomically (written to a temporary
        file beside it, then renamed), so a crash never leaves a file that looks complete.
    rows : int, default ``config.SAMPLE_ROWS``
        Data lines to write (bad lines included), after one header line.
    seed : int, default ``config.SAMPLE_SEED``
        The content depends only on ``(rows, seed)``.
    faults : bool, default True
        Inject the faults real files have, at small fixed rates: rows with a stray tab in the
        body (too many fields), truncated rows (too few fields), non-numeric star ratings, and
        valid rows whose title, headline or body opens with an unclosed ``"``.
    chunk_rows : int, default 200_000
        Rows built and written per step; bounds memory (~1.5 KB per row) and does not change
        the content.
    compresslevel : int, default 1
        ISA-L gzip level, 0 (fastest) to 3.
    storage_options : dict, optional
        Passed to :func:`fsspec.open`.

    Returns
    -------
    dict
        ``rows`` (data lines written), ``bad`` (lines a strict parser rejects, by reason:
        ``too_many_fields``, ``too_few_fields``, ``bad_rating``), ``quoted_fields`` (valid
        lines with a field opening with ``"``), ``duplicate_pairs`` (valid lines whose
        (customer_id, product_id) pair already occurs on another valid line), ``customers`` and
        ``products`` (distinct ids among valid lines), plus ``path`` and ``seed``.
        ``rows - sum(bad.values())`` lines parse.

    Raises
    ------
    FmprepError
        On an argument out of range.

    Notes
    -----
    Customers and products have long-tailed popularity and their numbers grow in proportion to
    ``rows``: with the reference filters (customers >= 5, products >= 10 ratings) 35-40 % of
    the rows survive at any size. Ratings follow
    ``round(clip(mean + b_customer + b_product + <u_customer, v_product> + noise, 1, 5))`` with
    rank-2 factors (interaction sd ~0.9 against noise sd 0.5), skewed toward 4 and 5 stars
    (about 60 % 5-star, more 1s than 2s). After the reference filters a Bayesian FM (myfm)
    beats the biases-only baseline by ~0.1 RMSE at 20 k and 1 M rows. A customer's review dates
    fall within one span of activity; ratings do not depend on dates.
    """
    for name, value, low in (("rows", rows, 0), ("seed", seed, 0), ("chunk_rows", chunk_rows, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise FmprepError(f"{name} must be an integer >= {low}, got {value!r}.")
    if not isinstance(compresslevel, (int, np.integer)) or not 0 <= compresslevel <= 3:
        raise FmprepError(f"compresslevel must be 0..3 (ISA-L levels), got {compresslevel!r}.")
    rows, seed, chunk_rows = int(rows), int(seed), int(chunk_rows)
    plan = _plan(rows, seed)
    tally = dict.fromkeys([name for name, _ in _FAULT_RATES] + ["duplicate_pairs"], 0)
    seen_customers = np.zeros(max(plan.customers, 1), dtype=bool)
    seen_products = np.zeros(plan.products, dtype=bool)
    # The header goes in as a one-line first chunk. `_chunk` is looked up in this module at each
    # call, so patching fmprep.sample._chunk reaches it.
    _gzip_lines(path, storage_options, compresslevel, itertools.chain(
        [["\t".join(TSV_COLUMNS)]],
        (_chunk(plan, start, min(rows, start + chunk_rows), faults, tally, seen_customers,
                seen_products) for start in range(0, rows, chunk_rows))))
    return {
        "path": str(path),
        "seed": seed,
        "rows": rows,
        "bad": {name: tally[name] for name in BAD_REASONS},
        "quoted_fields": tally["quoted"],
        "duplicate_pairs": tally["duplicate_pairs"],
        "customers": int(seen_customers.sum()),
        "products": int(seen_products.sum()),
    }


def generate_reviews_2023(path, rows=SAMPLE_ROWS, seed=SAMPLE_SEED, faults=True, meta=True,
                          chunk_rows=200_000, compresslevel=1, storage_options=None) -> dict:
    """Write generated reviews in the Amazon Reviews 2023 JSON Lines layout, and their metadata.

    The reviews are those :func:`generate_reviews` writes for the same ``(rows, seed)`` with
    ``faults=False``, laid out as the 2023 dataset's ``<Category>.jsonl.gz``: one object per
    line with ``rating`` (float), ``title`` (the review's headline), ``text``, ``images``,
    ``asin`` and ``parent_asin`` (both the product id), ``user_id`` (a 28-character id derived
    from the customer id), ``timestamp`` (Unix ms: the review date plus a time of day),
    ``helpful_vote`` and ``verified_purchase``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``.jsonl.gz``), local or any fsspec URL; written atomically when local.
    rows, seed : int
        As for :func:`generate_reviews`.
    faults : bool, default True
        Replace a few lines, at fixed small rates, by the faults a JSON Lines reader must
        survive: a line cut in half (``bad_json``), an empty ``user_id`` (``missing_id``), a
        rating that is 0, 6, null or a string (``bad_rating``), a timestamp in seconds or as a
        string (``bad_timestamp``).
    meta : bool, default True
        Also write ``meta_<name>`` beside ``path`` (see :func:`meta_path_2023`): one line per
        product of the file, in the layout of the dataset's ``meta_<Category>.jsonl.gz``
        (``parent_asin``, ``title`` = the product title, and empty lists and objects for the
        other fields).
    chunk_rows, compresslevel, storage_options
        As for :func:`generate_reviews`.

    Returns
    -------
    dict
        ``path``, ``seed``, ``rows`` (lines written), ``bad`` (lines a strict reader rejects,
        by reason, see :data:`BAD_REASONS_2023`), ``customers`` and ``products`` (distinct ids
        over all lines, faulty ones included), and ``meta_path`` / ``meta_products`` when
        ``meta``.
    """
    for name, value, low in (("rows", rows, 0), ("seed", seed, 0), ("chunk_rows", chunk_rows, 1),
                             ("compresslevel", compresslevel, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise FmprepError(f"{name} must be an integer >= {low}, got {value!r}.")
    if compresslevel > 3:
        raise FmprepError(f"compresslevel must be 0..3 (ISA-L levels), got {compresslevel!r}.")
    rows, seed, chunk_rows = int(rows), int(seed), int(chunk_rows)
    plan = _plan(rows, seed)
    tally = dict.fromkeys([name for name, _ in _FAULT_RATES] + ["duplicate_pairs"]
                          + list(BAD_REASONS_2023), 0)
    seen_customers = np.zeros(max(plan.customers, 1), dtype=bool)
    seen_products = np.zeros(plan.products, dtype=bool)
    _gzip_lines(path, storage_options, compresslevel, (
        _lines_2023(plan, start, min(rows, start + chunk_rows), faults, tally, seen_customers,
                    seen_products)
        for start in range(0, rows, chunk_rows)))
    summary = {"path": str(path), "seed": seed, "rows": rows,
               "bad": {name: tally[name] for name in BAD_REASONS_2023},
               "customers": int(seen_customers.sum()), "products": int(seen_products.sum())}
    if meta:
        ranks = np.flatnonzero(seen_products)
        summary["meta_path"] = meta_path_2023(path)
        _gzip_lines(summary["meta_path"], storage_options, compresslevel,
                    _meta_lines_2023(plan, ranks, chunk_rows))
        summary["meta_products"] = len(ranks)
    return summary
