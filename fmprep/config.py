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
# Only these are read: reading all 15 costs ~3.4x the memory (docs/design.md §6).
USED_COLUMNS = ("customer_id", "review_id", "product_id", "product_title", "star_rating",
                "review_date")

# --- file names inside WORK and OUTPUT --------------------------------------------------------
MANIFEST = "manifest.json"          # each stage directory's completion marker, written last
# WORK's Parquet: no dictionary pages. Most string columns are ids with few repeats, and
# dictionary-encoding them made writing 3.5x slower for the same file size (snappy either way).
PARQUET_OPTIONS = {"compression": "snappy", "use_dictionary": False}
REVIEWS_DIR = "reviews"             # WORK/reviews: ingest's Parquet parts
# Ingest's manifest sits with its parts; the "_" makes pandas, pyarrow and Dask skip it when
# they read WORK/reviews as a dataset.
INGEST_MANIFEST = f"{REVIEWS_DIR}/_manifest.json"
REJECTS_DIR = "rejects"             # WORK/rejects: samples of rejected rows, outside any dataset
REJECTS_SAMPLE = "rejects.jsonl"    # per source file: WORK/rejects/NNNN-rejects.jsonl
REJECTS_SAMPLE_SIZE = 100           # rejected rows kept per file and reason
SHARD_SUFFIX = ".pbr"
MANIFEST_FORMAT = "fmprep/1"


@dataclass(frozen=True)
class PrepSettings:
    """Settings of the prep stages; defaults are the reference workflow's (docs/design.md §2).

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
        ``days_since_first`` in years (days / 365.25, the default), as whole days (the
        reference notebook's, for exact parity), or divided by the largest value so it lies in
        [0, 1]. Not raw by default: values in the thousands make every FM trainer diverge,
        fmprep's and SageMaker's alike (a public run of the reference logged test:rmse 50.31).
    part_size : str or int
        Uncompressed source bytes per ingested Parquet part (a Dask partition downstream).
    """

    min_customer_ratings: int = 5
    min_product_ratings: int = 10
    filter_mode: str = "single"
    train_shards: int = 10
    test_shards: int = 1
    days_scale: str = "years"
    part_size: str | int = "128MB"

    FILTER_MODES = ("single", "kcore")
    DAYS_SCALES = ("raw", "years", "unit")

    def to_dict(self) -> dict:
        return asdict(self)

    def part_bytes(self) -> int:
        """``part_size`` in bytes: ``"128MB"``, ``"1GiB"``, ``"1e6"`` or an int.

        Raises
        ------
        fmprep.errors.FmprepError
            If it is not a size, or not more than 0 bytes.
        """
        return size_in_bytes(self.part_size, PrepSettings.part_size)

    def validate(self) -> None:
        """Reject settings that cannot work, before any data is read.

        Raises
        ------
        fmprep.errors.FmprepError
            One line naming the setting, the value given and one that works, e.g.
            ``--train-shards=0 must be a whole number ≥ 1; use e.g. --train-shards=10`` (the
            make variable instead under make: :mod:`fmprep.errors`).
        """
        import numbers

        from .errors import FmprepError, setting

        for name in ("min_customer_ratings", "min_product_ratings", "train_shards",
                     "test_shards"):
            value, var = getattr(self, name), setting(name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise FmprepError(f"{var}{value} must be a whole number ≥ 1; use e.g. "
                                  f"{var}{getattr(PrepSettings, name)}")
        for name, choices in (("filter_mode", self.FILTER_MODES),
                              ("days_scale", self.DAYS_SCALES)):
            value, var = getattr(self, name), setting(name)
            if value not in choices:
                raise FmprepError(f"{var}{value} is not one of {', '.join(choices)}; use e.g. "
                                  f"{var}{choices[0]}")
        self.part_bytes()


# --- SageMaker Factorization Machines hyperparameters (names are the contract, docs/design.md §3) --
# Every value here is valid to send to SageMaker as a string. SageMaker's own defaults, except
# num_factors / epochs (required / 1 there), which follow the reference workflow (docs/design.md §2).
FM_DEFAULTS = {
    "num_factors": 256,
    "predictor_type": "regressor",
    "epochs": 3,
    "mini_batch_size": 1000,
    "bias_init_method": "normal",
    "bias_init_sigma": 0.01,
    "bias_lr": 0.1,
    "bias_wd": 0.01,
    "linear_init_method": "normal",
    "linear_init_sigma": 0.01,
    "linear_lr": 0.001,
    "linear_wd": 0.001,
    "factors_init_method": "normal",
    "factors_init_sigma": 0.001,
    "factors_lr": 0.0001,
    "factors_wd": 0.00001,
}
# Required by SageMaker with no default: the manifest supplies it.
FM_REQUIRED = ("feature_dim",)
# SageMaker hyperparameters whose default is "None" (unset): leave them out unless given.
FM_OPTIONAL = (
    "bias_init_scale", "bias_init_value", "linear_init_scale", "linear_init_value",
    "factors_init_scale", "factors_init_value", "clip_gradient", "eps", "rescale_grad",
)
# fmprep-only options of the local trainer; never sent to SageMaker. ``seed`` seeds the
# initialisation and the per-epoch shuffle; ``binary_threshold`` turns ratings into 0/1 labels
# (label >= threshold -> 1) for predictor_type=binary_classifier (None: labels must be 0/1).
#
# ``solver``: ``mcmc`` (Bayesian FM by Gibbs sampling, fmprep.model.mcmc: no learning rates or weight
# decays to tune, and it beat SGD, surprise SVD and the biases baseline in
# benchmarks/bench_fm.py), ``sgd`` (mini-batch Adam with SageMaker's hyperparameters, the
# twin of a SageMaker job), or ``auto``: mcmc, unless the predictor is a binary_classifier (the
# sampler models ratings, not 0/1 labels) or a setting only SGD reads is given (epochs,
# num_factors, a learning rate...: the user means SGD). The mcmc_* options are the sampler's; its
# model has mcmc_rank * mcmc_keep factors (defaults chosen on validation rows, fmprep.model.mcmc).
#
# ``early_stopping*`` (SGD only, so giving one makes ``auto`` choose sgd; on by default): ``epochs``
# becomes a limit. Each customer's latest TRAIN review
# is held out (never a test row); training stops once the validation metric (RMSE, or
# cross-entropy for binary_classifier) has not improved by more than ``early_stopping_tolerance``
# for ``early_stopping_patience`` epochs, and the model is refitted on every train row for the
# best epoch count (fmprep.model.sgd.train, which records the figures that chose this).
FM_LOCAL_OPTIONS = {
    "seed": 0,
    "binary_threshold": None,
    "solver": "auto",
    "mcmc_rank": 4,
    "mcmc_sweeps": 200,
    "mcmc_burn_in": 50,
    "mcmc_keep": 32,
    "mcmc_init_std": 0.5,
    "early_stopping": True,
    "early_stopping_patience": 3,
    "early_stopping_tolerance": 0.0,
}
# Recommended settings for the SGD solver: with Adam, SageMaker's learning rates barely move the
# weights in 3 epochs (fmprep.model.sgd docstring). A SageMaker job gets them (without
# ``solver``) for every name the user leaves unset:
# fmprep.model.hyperparameters.sagemaker_default_hyperparameters. Chosen on fmprep.sample data
# at 20 k and 1 M rows prepped with days_scale years (benchmarks/bench_fm.py). The weight
# decays depend on the data size: linear_wd = FM_LOCAL_L2["linear"] / train_rows and
# factors_wd = FM_LOCAL_L2["factors"] / train_rows (L2 penalties in least-squares units, like
# the biases baseline's reg=5); fmprep.model.hyperparameters.recommended_hyperparameters(
# train_rows) returns the whole set.
FM_LOCAL_RECOMMENDED = {
    "solver": "sgd",
    "num_factors": 8,
    "epochs": 10,
    "mini_batch_size": 100,
    "bias_wd": 0.0,
    "linear_lr": 0.03,
    "factors_lr": 0.03,
}
FM_LOCAL_L2 = {"linear": 3.0, "factors": 4.0}


# --- training and serving: scripts/train_deploy.py, fmprep.serving.serve, fmprep.serving.sagemaker -------------
# Instance types and counts are the reference workflow's (docs/design.md §2).
DEFAULT_REGION = "us-east-1"          # used when neither --region nor the AWS config names one
TRAIN_INSTANCE_TYPE = "ml.c5.2xlarge"
TRAIN_INSTANCE_COUNT = 4
TRAIN_VOLUME_GB = 30
TRAIN_MAX_RUNTIME_S = 24 * 3600
ENDPOINT_INSTANCE_TYPE = "ml.m4.xlarge"
ENDPOINT_INSTANCE_COUNT = 1
SAGEMAKER_POLL_S = 30                 # describe_* polling interval while waiting
ENDPOINT_WAIT_S = 3600                # give up waiting for InService after this long

# The built-in FM container: <account>.dkr.ecr.<region>.<domain>/factorization-machines:1.
# Account ids per region are published with the SageMaker Python SDK
# (sagemaker/image_uri_config/factorization-machines.json, version "1").
FM_IMAGE_REPOSITORY = "factorization-machines"
FM_IMAGE_TAG = "1"
FM_IMAGE_ACCOUNTS = {
    "af-south-1": "455444449433", "ap-east-1": "286214385809",
    "ap-northeast-1": "351501993468", "ap-northeast-2": "835164637446",
    "ap-northeast-3": "867004704886", "ap-south-1": "991648021394",
    "ap-south-2": "628508329040", "ap-southeast-1": "475088953585",
    "ap-southeast-2": "712309505854", "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589", "ca-central-1": "469771592824",
    "ca-west-1": "190319476487", "cn-north-1": "390948362332",
    "cn-northwest-1": "387376663083", "eu-central-1": "664544806723",
    "eu-central-2": "680994064768", "eu-north-1": "669576153137",
    "eu-south-1": "257386234256", "eu-south-2": "104374241257",
    "eu-west-1": "438346466558", "eu-west-2": "644912444149",
    "eu-west-3": "749696950732", "il-central-1": "898809789911",
    "me-central-1": "272398656194", "me-south-1": "249704162688",
    "sa-east-1": "855470959533", "us-east-1": "382416733822",
    "us-east-2": "404615174143", "us-gov-east-1": "237065988967",
    "us-gov-west-1": "226302683700", "us-iso-east-1": "490574956308",
    "us-isob-east-1": "765400339828", "us-isof-east-1": "108575199400",
    "us-isof-south-1": "124985052026", "us-west-1": "632365934929",
    "us-west-2": "174872318107",
}
# ECR hosts outside the commercial partition; every other region uses amazonaws.com.
ECR_DOMAINS = {
    "cn-north-1": "amazonaws.com.cn", "cn-northwest-1": "amazonaws.com.cn",
    "us-iso-east-1": "c2s.ic.gov", "us-isob-east-1": "sc2s.sgov.gov",
    "us-isof-east-1": "csp.hci.ic.gov", "us-isof-south-1": "csp.hci.ic.gov",
}

# The local inference server (fmprep.serving.serve) speaks the SageMaker container contract.
SERVE_HOST = "127.0.0.1"              # loopback only unless the user asks for more
SERVE_PORT = 8080                     # the port SageMaker containers listen on
SERVE_START_TIMEOUT_S = 60
INVOKE_MAX_BYTES = 6_291_456          # InvokeEndpoint's request body cap
# Connections the kernel holds until the server accepts them (capped by net.core.somaxconn).
# The standard library's 5 dropped and reset clients from about 8 concurrent connects on.
SERVE_LISTEN_BACKLOG = 1024
# Open connections served at once, a thread each; more wait in the listen backlog.
SERVE_MAX_CONNECTIONS = 512
# After SIGTERM, requests in flight get this long to finish (undeploy waits 10 s for the exit).
SERVE_DRAIN_S = 8

# Files beside OUTPUT/manifest.json.
LOCAL_MODEL_DIR = "model"             # OUTPUT/model: the local backend's trained model
SAGEMAKER_RECORD = "sagemaker.json"   # training job, model artifact, metrics, endpoint
ENDPOINT_RECORD = "endpoint.json"     # the running local server: url, pid
SERVER_LOG = "serve.log"

# --- S3 and AWS API retries: one budget for s3fs and every boto3 client (fmprep.retries) -------
# The environment variable named beside each setting overrides it (the FMPREP_ one first).
# botocore tries each request up to S3_MAX_ATTEMPTS times, waiting a random 0..2^n s (at most
# 20 s) between tries: 95 s on average before it gives up (simulated p1-p99: 56-135 s;
# a request still failing after 30 s of waits: 2 in 100 000).
# Measured with tests/faultproxy.py in front of moto, `fmprep data` on 3000 rows: an endpoint
# refusing connections for 30 s (3 of 3 runs) or 60 s (2 of 2) is ridden out, 90 s and 120 s
# are not; a dead endpoint is reported after 76-108 s; 60 s and 180 s of 503 SlowDown to every
# request are ridden out (after botocore, s3fs retries SlowDown up to S3FS_RETRIES times).
# standard mode's retry quota (500 tokens per client, 5 per retry) runs dry when ~16 or more
# threads of one process wait out one outage (32 threads: all failed after 2.7 s);
# FMPREP_S3_RETRY_MODE=legacy has no quota (its waits are not capped at 20 s).
S3_RETRY_MODE = "standard"   # FMPREP_S3_RETRY_MODE, AWS_RETRY_MODE: standard, adaptive, legacy
S3_MAX_ATTEMPTS = 14         # FMPREP_S3_MAX_ATTEMPTS, AWS_MAX_ATTEMPTS: tries per request
S3FS_RETRIES = 5             # FMPREP_S3FS_RETRIES: s3fs's re-runs of a broken download (and of
                             # a request botocore gave up on after SlowDown or a dropped reply)
S3_CONNECT_TIMEOUT_S = 10    # FMPREP_S3_CONNECT_TIMEOUT: seconds to open a connection
S3_READ_TIMEOUT_S = 30       # FMPREP_S3_READ_TIMEOUT: seconds of silence from a connection


def size_in_bytes(value, example: str, name: str = "part_size") -> int:
    """A size setting in bytes (``"128MB"``, ``"1GiB"``, ``"1e6"`` or an int).

    Raises
    ------
    fmprep.errors.FmprepError
        One line naming the setting ``name`` and ``example``, if ``value`` is not a size or
        not more than 0 bytes.
    """
    from dask.utils import parse_bytes  # the parser ingest uses: the same sizes pass

    from .errors import FmprepError, setting

    # The error names the setting as the user set it (make variable or option).
    var = setting(name)
    fix = f"use e.g. {var}{example}"
    try:
        size = int(parse_bytes(value) if isinstance(value, str) else value)
    except (ValueError, TypeError, OverflowError):
        raise FmprepError(f"{var}{value} is not a size; {fix}") from None
    if size <= 0:
        raise FmprepError(f"{var}{value} must be more than 0 bytes; {fix}")
    return size
