"""Every path, default and constant of fmprep, in one place.

The Makefile, the CLI and scripts/train_deploy.py read their defaults from here; nothing else
hard-codes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# --- paths (relative to the project root when run through make) -------------------------------
DEFAULT_SAMPLE = "data/sample/reviews_us_sample.tsv.gz"
DEFAULT_WORK = "data/work"
DEFAULT_OUTPUT = "data/output"
SAMPLE_ROWS = 20_000
SAMPLE_SEED = 42

# --- the Amazon Customer Reviews TSV layout ---------------------------------------------------
TSV_COLUMNS = (
    "marketplace", "customer_id", "review_id", "product_id", "product_parent", "product_title",
    "product_category", "star_rating", "helpful_votes", "total_votes", "vine",
    "verified_purchase", "review_headline", "review_body", "review_date",
)
# Only these are read: reading all 15 costs ~3.4x the memory (DESIGN.md §6).
USED_COLUMNS = ("customer_id", "review_id", "product_id", "product_title", "star_rating",
                "review_date")

# --- file names inside WORK and OUTPUT --------------------------------------------------------
MANIFEST = "manifest.json"          # each stage directory's completion marker, written last
REJECTS_SAMPLE = "rejects.jsonl"    # per source file, beside the Parquet parts
REJECTS_SAMPLE_SIZE = 100           # rejected rows kept per file and reason
SHARD_SUFFIX = ".pbr"
MANIFEST_FORMAT = "fmprep/1"


@dataclass(frozen=True)
class PrepSettings:
    """Settings of the prep stages; defaults are the reference workflow's (DESIGN.md §2).

    Parameters
    ----------
    min_customer_ratings, min_product_ratings : int
        Keep customers / products with at least this many ratings.
    filter_mode : {"single", "kcore"}
        ``single`` counts once over the deduplicated rows, as the reference does; ``kcore``
        repeats the filter until every remaining customer and product meets its minimum.
    train_shards, test_shards : int
        RecordIO shards per channel. Write at least as many train shards as training instances.
    days_scale : {"raw", "years", "unit"}
        ``days_since_first`` as whole days (reference), in years (days / 365.25), or divided by
        the largest value so it lies in [0, 1].
    part_size : str or int
        Uncompressed source bytes per ingested Parquet part (a Dask partition downstream).
    """

    min_customer_ratings: int = 5
    min_product_ratings: int = 10
    filter_mode: str = "single"
    train_shards: int = 10
    test_shards: int = 1
    days_scale: str = "raw"
    part_size: str | int = "128MB"

    FILTER_MODES = ("single", "kcore")
    DAYS_SCALES = ("raw", "years", "unit")

    def to_dict(self) -> dict:
        return asdict(self)


# --- SageMaker Factorization Machines hyperparameters (names are the contract, DESIGN.md §3) --
FM_DEFAULTS = {
    "num_factors": 256,
    "predictor_type": "regressor",
    "epochs": 3,
    "mini_batch_size": 1000,
}
