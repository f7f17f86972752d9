"""``make score``: a score for every (customer_id, product_id[, review_date]) row of a file.

Input
    A CSV file or glob (header naming ``customer_id`` and ``product_id``, optionally
    ``review_date`` as YYYY-MM-DD; other columns are ignored; ``.csv.gz`` and friends too) or a
    Parquet file or directory, local or ``s3://``. Ids are read as strings, so leading zeros
    survive (a Parquet integer column is turned into its decimal string). Dask reads it in
    partitions (CSV: ``blocksize`` bytes each, a compressed file is one partition; Parquet:
    Dask's row-group splitting), and nothing but the id lookups below passes through the client.

Row → FM row
    Exactly what ``make predict`` sends (:func:`fmprep.serving.predict.fm_row`): the user's
    one-hot, the item's one-hot and ``days_since_first`` = days from the customer's first review
    (WORK/users ``first_review``) to ``review_date``, divided by the manifest's divisor and
    clipped to the range training saw (``days_since_first.train_range``: an FM extrapolates a
    linear term without bound). A row without a date is scored at the latest review date of the
    data (the manifest's ``review_dates[1]``, predict's default).

Unknown ids: scored, and flagged
    A customer or product that is not in WORK's id maps (never seen, or filtered out for too few
    ratings) gets ``known_customer`` / ``known_product`` = False and is still scored, with that
    one-hot left out of the row. An FM reads an absent feature as x = 0, so the score is the
    model's own cold-start estimate: an unknown customer gets the global bias plus the product's
    bias (and ``days_since_first`` = 0: this would be their first review); an unknown product
    gets the global bias plus the customer's terms; both unknown gives the global bias. That is
    what the SageMaker container returns for the same sparse row, so both backends agree, and
    the flags let a consumer drop or re-weight those rows; a null would make every consumer
    invent its own fallback.

Bad dates: flagged, not fatal
    A ``review_date`` that is not YYYY-MM-DD gives ``date_ok`` = False, a null ``score`` and a
    null ``review_date``; the other rows are scored. If none of the first rows' dates parses the
    column is taken to be in another format and the run stops with one line naming it.

Output: SCORES (default OUTPUT/scores)
    ``part-NNNNN.parquet``, one per input partition, columns :data:`SCHEMA`: ``customer_id``,
    ``product_id`` (as given), ``review_date`` (the date scored, date32), ``score`` (a
    regressor's clipped to the manifest's ``label_range``; a binary classifier's probability),
    ``raw_score`` (the model's unclipped output), ``known_customer``, ``known_product``,
    ``date_ok``, ``days_clipped`` (the date lay outside the days training saw). Each part holds
    its partition's rows in input order, so the parts in name order are the input in order (CSV:
    files in name order, lines in file order; Parquet: Dask's file and row-group order).
    ``_manifest.json`` is written last: rows, the unknown and bad-date counts, the model, the
    input and every file written. SCORES is claimed and cleaned with :mod:`fmprep.owned`: a
    directory holding files fmprep did not write is refused with one line, and a rerun deletes
    only the files its previous run listed or that carry fmprep's names here.

Joins
    The id maps can hold millions of rows, more than a task should copy for every partition of
    the input. So the maps are first cut down, with a Dask merge, to the ids the input asks for
    (a semi-join over the input's distinct ids: one pass over the input's id columns), and those
    rows, one partition each, are what every scoring task looks its rows up in (a vectorised
    hash lookup, ``pandas.Index.get_indexer``). Scores are one ``FMModel.predict`` call per
    partition.

Backends
    ``local``: the model in OUTPUT/model (``make train``). ``sagemaker``: a batch transform job
    (:mod:`fmprep.serving.transform`) of the training job recorded in OUTPUT/sagemaker.json;
    the FM rows are written as RecordIO-protobuf under SCORES/transform-input/, SageMaker writes
    JSON Lines under SCORES/transform-output/, and the scores are joined back to the rows
    (staged under SCORES/transform-rows/ while the job runs) by position.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import warnings
from collections.abc import Callable

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import config, layout, owned, partio, retries, storage
from .cluster import dask_client
from .config import MANIFEST, PARQUET_OPTIONS, size_in_bytes
from .errors import FmprepError, command, setting
from .freshness import check_model, data_stamp, read_manifest

__all__ = ["DEFAULT_BLOCKSIZE", "MANIFEST_NAME", "SCHEMA", "SCORES_DIR", "read_pairs",
           "score_pairs"]

log = logging.getLogger(__name__)

SCORES_DIR = "scores"                    # OUTPUT/scores unless the scores setting says otherwise
MANIFEST_NAME = "_manifest.json"         # "_": Parquet readers skip it when reading the parts
FORMAT = "fmprep-scores/1"
TRANSFORM_INPUT = "transform-input"      # backend sagemaker: the RecordIO the job reads
TRANSFORM_OUTPUT = "transform-output"    # … the JSON Lines it writes
TRANSFORM_ROWS = "transform-rows"        # … the rows waiting for their scores (removed after)
# fmprep's own names under SCORES (fmprep.owned): a crashed run leaves no manifest listing them.
OWN_FILES = ("part-*.parquet", f"{TRANSFORM_INPUT}/part-*.pbr",
             f"{TRANSFORM_ROWS}/part-*.parquet", f"{TRANSFORM_OUTPUT}/part-*.pbr.out")
REQUIRED = ("customer_id", "product_id")
DATE_COLUMN = "review_date"
DEFAULT_BLOCKSIZE = "64MB"
_DATE_SAMPLE = 1000                      # first rows whose dates must not all be unparseable
_STRING = pd.StringDtype("pyarrow")
_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")

SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("product_id", pa.string()), ("review_date", pa.date32()),
    ("score", pa.float32()), ("raw_score", pa.float32()),
    ("known_customer", pa.bool_()), ("known_product", pa.bool_()),
    ("date_ok", pa.bool_()), ("days_clipped", pa.bool_()),
])
_FLAGS = ("known_customer", "known_product", "date_ok", "days_clipped")
# What a staged part holds while the transform job runs: everything but the scores.
_ROWS_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in ("score", "raw_score")])


# --- input --------------------------------------------------------------------------------------

def _dask_options(url: str, storage_options: dict | None) -> dict:
    # S3 reads get fmprep's retry budget, as everywhere else (fmprep.retries).
    if retries.is_s3(url):
        retries.quiet_orphan_request_errors()
        return retries.s3_storage_options(storage_options)
    return dict(storage_options or {})


def _kind_by_name(name: str) -> str | None:
    name = name.lower()
    for comp in _COMPRESSIONS:
        if name.endswith(comp):
            name = name[:-len(comp)]
            break
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    return None


def _resolve_input(input: str, input_format: str, storage_options: dict | None) -> str:
    """``csv`` or ``parquet`` for ``input``, after checking that it exists."""
    if input_format not in ("auto", "csv", "parquet"):
        var = setting("input_format")
        raise FmprepError(f"{var}{input_format} is not one of auto, csv, parquet; use e.g. "
                          f"{var}csv")
    fs, path = storage.filesystem(input, storage_options)
    if any(ch in path for ch in "*?["):
        matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
        kind = "glob" if matches else None
        names = [path] + matches[:1]
    else:
        try:
            kind = fs.info(path)["type"]
        except FileNotFoundError:
            kind = None
        names = [path]
    if kind is None:
        raise FmprepError(f"{setting('input')}{input} not found; set {setting('input')} to an "
                          "existing CSV or Parquet file, a Parquet directory, an s3:// URI or a "
                          "glob")
    if kind == "directory":
        if input_format == "csv":
            raise FmprepError(f"{setting('input')}{input} is a directory; for CSV give a file or "
                              f"a glob such as {setting('input')}'{input.rstrip('/')}/*.csv'")
        return "parquet"  # a directory is a Parquet dataset
    if input_format != "auto":
        return input_format
    for name in names:
        found = _kind_by_name(name)
        if found:
            return found
    var = setting("input_format")
    raise FmprepError(f"cannot tell whether {setting('input')}{input} is CSV or Parquet from its "
                      f"name; name it .csv or .parquet, or pass {var}csv or {var}parquet")


def _as_ids(s: pd.Series) -> pd.Series:
    """Ids as strings: integers as their digits (never ``"123.0"``), missing stays missing."""
    if pd.api.types.is_float_dtype(s.dtype):
        whole = s.dropna()
        if (whole == np.floor(whole)).all():
            s = s.astype("Int64")  # a Parquet integer column with nulls arrives as float
    return s.astype(_STRING)


def _as_date_text(s: pd.Series) -> pd.Series:
    """Dates as YYYY-MM-DD text ("" = none given), from text or a Parquet date/timestamp."""
    if not pd.api.types.is_string_dtype(s.dtype):
        s = pd.to_datetime(s, errors="coerce").dt.strftime("%Y-%m-%d")
    return s.astype(_STRING).fillna("")


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: _as_ids(df[c]).reset_index(drop=True) for c in REQUIRED})
    if DATE_COLUMN in df.columns:
        out[DATE_COLUMN] = _as_date_text(df[DATE_COLUMN]).reset_index(drop=True)
    else:
        out[DATE_COLUMN] = pd.Series("", index=out.index, dtype=_STRING)
    return out.astype(_STRING)


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=_STRING) for c in (*REQUIRED, DATE_COLUMN)})


def read_pairs(input: str, input_format: str = "auto", blocksize: str | int | None =
               DEFAULT_BLOCKSIZE, storage_options: dict | None = None) -> tuple[dd.DataFrame,
                                                                                  str]:
    """The rows to score as a Dask DataFrame of strings, without reading more than a sample.

    Parameters
    ----------
    input : str
        CSV file or glob, or Parquet file or directory; local or a URL (``s3://``).
    input_format : {"auto", "csv", "parquet"}
        ``auto`` decides by the name (``.csv``, ``.csv.gz`` …, ``.parquet``; a directory is
        Parquet).
    blocksize : str or int or None
        CSV bytes per partition (None: one partition per file). Compressed CSV files are always
        one partition each.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    pairs : dask.dataframe.DataFrame
        Columns ``customer_id``, ``product_id``, ``review_date`` (text, ``""`` where none was
        given), all ``string[pyarrow]``, partitions in input order.
    input_format : str
        ``csv`` or ``parquet``.

    Raises
    ------
    FmprepError
        If the input is missing, of an unknown kind, unreadable, or lacks ``customer_id`` or
        ``product_id``.
    """
    fmt = _resolve_input(input, input_format, storage_options)
    blocksize = _blocksize(blocksize)
    options = _dask_options(input, storage_options)
    with _reading(input, fmt):
        if fmt == "csv":
            compressed = input.lower().endswith(_COMPRESSIONS)  # a stream: no byte ranges
            # keep_default_na=False: an id "NA" or "null" is an id; only empty fields are empty.
            ddf = dd.read_csv(input, dtype=str, keep_default_na=False,
                              blocksize=None if compressed else blocksize,
                              compression="infer", storage_options=options)
        else:
            ddf = dd.read_parquet(input, storage_options=options)
    columns = list(ddf.columns)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        shown = ", ".join(map(str, columns[:8])) + (", …" if len(columns) > 8 else "")
        raise FmprepError(f"{setting('input')}{input} has no column {missing[0]} (its columns: "
                          f"{shown or 'none'}); its header must name customer_id and "
                          "product_id (review_date YYYY-MM-DD optional)")
    keep = list(REQUIRED) + ([DATE_COLUMN] if DATE_COLUMN in columns else [])
    return ddf[keep].map_partitions(_normalize, meta=_empty_pairs()), fmt


def _blocksize(value: str | int | None) -> int | None:
    """CSV bytes per partition, or one line naming the part size setting."""
    return None if value is None else size_in_bytes(value, DEFAULT_BLOCKSIZE)


@contextlib.contextmanager
def _reading(input: str, fmt: str):
    """Turn a parser's complaint about the input into one line naming the input setting."""
    try:
        yield
    except FmprepError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            pa.ArrowInvalid) as err:
        reason = " ".join(str(err).split())[:200]
        raise FmprepError(f"cannot read {setting('input')}{input} as {fmt.upper()}: {reason}; "
                          "fix the file "
                          "(CSV: UTF-8, comma-separated, a header line, fields with commas "
                          "quoted)") from None


def _check_dates(pairs: dd.DataFrame, input: str, fmt: str) -> None:
    """Refuse a review_date column in another format, judged by the first rows."""
    with _reading(input, fmt), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "only n elements available": expected
        head = pairs[DATE_COLUMN].head(_DATE_SAMPLE, npartitions=1)
    given = head[head != ""]
    if len(given) and pd.to_datetime(given, format="%Y-%m-%d", errors="coerce").isna().all():
        raise FmprepError(f"{setting('input')}{input}: no review_date among its first rows is "
                          "a date "
                          f"YYYY-MM-DD (e.g. {given.iloc[0]!r}); write dates as YYYY-MM-DD, or "
                          "leave the column out to score at the data's latest review date")


# --- id maps ------------------------------------------------------------------------------------

def _work(manifest: dict, work: str | None, storage_options: dict | None) -> tuple[str, dict]:
    work = work or manifest.get("work")
    prepared = storage.read_json(storage.join(work, MANIFEST), storage_options) if work else None
    if prepared is None or prepared.get("stage") != "prepare":
        raise FmprepError(f"no finished prepare stage in {setting('work')}{work}; pass "
                          f"{setting('work')} (the one {command('data')} used for this OUTPUT) or "
                          f"run {command('data')}")
    for key in ("feature_dim", "num_users", "num_items"):
        if prepared.get(key) != manifest.get(key):
            raise FmprepError(f"{setting('work')}{work} holds the id maps of other data ({key} "
                              f"{prepared.get(key)}, OUTPUT has {manifest.get(key)}); pass the "
                              f"WORK that {command('data')} used for this OUTPUT, or rerun "
                              f"{command('data')}")
    return work, prepared


def _semi_join(mapping: dd.DataFrame, ids: dd.DataFrame, key: str) -> dd.DataFrame:
    """The rows of an id map whose ``key`` the input asks for."""
    wanted = ids.dropna().drop_duplicates()
    mapping = mapping.astype({key: _STRING})
    return mapping.merge(wanted, on=key, how="inner")


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


def _lookups(pairs: dd.DataFrame, work: str, prepared: dict, storage_options: dict | None):
    """Delayed pandas frames: (customer_id, user, first_review) and (product_id, item) of the
    ids in ``pairs``.

    Computed first, in a pass of their own, and kept where the scheduler keeps data: in one
    graph with the scoring tasks, every input partition read for the distinct ids would have
    to stay in memory until the last one was read.
    """
    def urls(stage):
        return [storage.join(work, stage, p["file"]) for p in prepared["parts"][stage]]
    users = partio.read_parts(urls("users"), ["customer_id", "user", "first_review"],
                              storage_options)
    items = partio.read_parts(urls("items"), ["product_id", "item"], storage_options)
    users = _semi_join(users, pairs[["customer_id"]], "customer_id")
    items = _semi_join(items, pairs[["product_id"]], "product_id")
    users, items = dask.persist(users, items)
    # One task each joins the persisted pieces; every scoring task then shares its result.
    return (dask.delayed(_concat, pure=True)(users.to_delayed()),
            dask.delayed(_concat, pure=True)(items.to_delayed()))


# --- rows → FM rows -----------------------------------------------------------------------------

def _spec(manifest: dict) -> dict:
    """What every task needs from the manifest (small, JSON-able)."""
    days = manifest.get("days_since_first") or {}
    dates = manifest.get("review_dates")
    return {"feature_dim": int(manifest["feature_dim"]),
            "divisor": float(days.get("divisor") or 1.0),
            "train_range": days.get("train_range"),
            "label_range": manifest.get("label_range"),
            "default_date": dates[1] if dates else None,
            "predictor_type": "regressor"}


def _positions(lookup: pd.DataFrame, key: str, ids: pd.Series) -> np.ndarray:
    """Row of each id in ``lookup`` (-1: unknown), by a hash lookup that keeps ``ids``' order."""
    index = pd.Index(lookup[key].astype(_STRING))
    if not index.is_unique:  # prepare writes each id once; anything else is a broken WORK
        raise FmprepError(f"the {key} map in WORK lists an id twice; rerun {command('data')} "
                          f"{setting('force')}1")
    return index.get_indexer(ids.astype(_STRING))


def _take(values: np.ndarray, pos: np.ndarray, fill) -> np.ndarray:
    if len(values) == 0:
        return np.full(len(pos), fill, dtype=np.asarray(values).dtype)
    return values[np.where(pos >= 0, pos, 0)]


def _features(part: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, spec: dict):
    """The flags and FM rows (CSR) of one partition, vectorised.

    Returns
    -------
    frame : pandas.DataFrame
        ``customer_id``, ``product_id``, ``review_date`` (datetime64[D], NaT when bad) and
        the four flags, in the partition's order.
    csr : tuple of numpy.ndarray
        ``indptr``, ``indices`` (ascending within a row: user < item < feature_dim - 1) and
        ``values`` (float32).
    """
    n = len(part)
    F = spec["feature_dim"]
    upos = _positions(users, "customer_id", part["customer_id"])
    ipos = _positions(items, "product_id", part["product_id"])
    known_c, known_p = upos >= 0, ipos >= 0

    text = part[DATE_COLUMN].fillna("").astype(_STRING)
    given = (text != "").to_numpy(bool)
    parsed = pd.to_datetime(text.where(given), format="%Y-%m-%d", errors="coerce")
    parsed = parsed.to_numpy().astype("datetime64[D]")
    date_ok = ~given | ~np.isnat(parsed)
    if (~given).any():
        if spec["default_date"] is None:
            raise FmprepError(f"{MANIFEST} predates review_dates, so rows without a review_date "
                              "have no date; give every row one or rerun "
                              f"{command('data')} {setting('force')}1")
        parsed[~given] = np.datetime64(spec["default_date"], "D")
    used = np.where(date_ok, parsed, np.datetime64(0, "D"))  # placeholder where the date is bad

    first = _take(users["first_review"].to_numpy().astype("datetime64[D]"), upos,
                  np.datetime64(0, "D"))
    # An unknown customer counts 0 days: the row would be their first review.
    days = np.where(known_c & date_ok, (used - first).astype(np.int64), 0)
    clipped, days_clipped = layout.scale_days(days, spec)
    days_clipped = days_clipped & date_ok

    user = _take(users["user"].to_numpy(np.int64), upos, 0)
    item = _take(items["item"].to_numpy(np.int64), ipos, 0)
    present = np.column_stack([known_c, known_p, np.ones(n, bool)])
    keys = np.column_stack([user, item, np.full(n, layout.days_column(F), np.int64)])
    vals = np.column_stack([np.ones(n), np.ones(n), clipped])
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    # Boolean indexing walks row-major: each row keeps the order user, item, days.
    csr = (indptr, keys[present], vals[present].astype(np.float32))
    frame = pd.DataFrame({"customer_id": part["customer_id"].reset_index(drop=True),
                          "product_id": part["product_id"].reset_index(drop=True),
                          "review_date": np.where(date_ok, parsed, np.datetime64("NaT", "D")),
                          "known_customer": known_c, "known_product": known_p,
                          "date_ok": date_ok, "days_clipped": days_clipped})
    return frame, csr


def _stats(frame: pd.DataFrame) -> dict:
    kc, kp = frame["known_customer"].to_numpy(bool), frame["known_product"].to_numpy(bool)
    ok = frame["date_ok"].to_numpy(bool)
    return {"rows": len(frame), "scored_rows": int(ok.sum()),
            "unknown_customer_rows": int((~kc).sum()),
            "unknown_product_rows": int((~kp).sum()),
            "unknown_both_rows": int((~kc & ~kp).sum()), "bad_date_rows": int((~ok).sum()),
            "clipped_days_rows": int(frame["days_clipped"].to_numpy(bool).sum())}


# --- parts --------------------------------------------------------------------------------------

def _base_columns(frame: pd.DataFrame) -> dict:
    dates = frame["review_date"].to_numpy().astype("datetime64[D]")
    cols = {"customer_id": pa.array(frame["customer_id"], pa.string(), from_pandas=True),
            "product_id": pa.array(frame["product_id"], pa.string(), from_pandas=True),
            "review_date": pa.array(dates, pa.date32(), mask=np.isnat(dates))}
    for flag in _FLAGS:
        cols[flag] = pa.array(frame[flag].to_numpy(bool), pa.bool_())
    return cols


def _scored_table(frame: pd.DataFrame, raw: np.ndarray, spec: dict) -> pa.Table:
    raw = np.asarray(raw, np.float32)
    score = raw
    if spec["predictor_type"] == "regressor" and spec["label_range"]:
        lo, hi = spec["label_range"]
        score = np.clip(raw, lo, hi).astype(np.float32)  # on the rating scale, as predict shows
    bad = ~frame["date_ok"].to_numpy(bool)
    cols = _base_columns(frame)
    cols["score"] = pa.array(score, pa.float32(), mask=bad)
    cols["raw_score"] = pa.array(raw, pa.float32(), mask=bad)
    return pa.table([cols[f.name] for f in SCHEMA], schema=SCHEMA)


def _write_table(table: pa.Table, url: str, storage_options: dict | None) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes(), storage_options)


def _score_local(part, users, items, model, spec, url, storage_options) -> dict:
    frame, (indptr, indices, values) = _features(part, users, items, spec)
    raw = model.predict(indptr, indices, values) if len(frame) else np.zeros(0, np.float32)
    _write_table(_scored_table(frame, raw, spec), url, storage_options)
    return _stats(frame)


def _stage_part(part, users, items, spec, rows_url, pbr_url, storage_options) -> dict:
    """Backend sagemaker: the partition's rows (for later) and its FM rows as RecordIO."""
    from .recordio import encode_csr

    frame, (indptr, indices, values) = _features(part, users, items, spec)
    cols = _base_columns(frame)
    _write_table(pa.table([cols[f.name] for f in _ROWS_SCHEMA], schema=_ROWS_SCHEMA), rows_url,
                 storage_options)
    if len(frame):  # no empty objects: SageMaker would have nothing to split
        buf = encode_csr(indptr, indices, values, None, spec["feature_dim"])
        storage.write_bytes_atomic(pbr_url, buf.tobytes(), storage_options)
    return _stats(frame)


def _collect_part(rows_url, out_url, rows, spec, url, storage_options) -> None:
    """Backend sagemaker: the staged rows with the transform job's scores, as a final part."""
    from .serving.transform import read_scores

    frame = partio.read_part(rows_url, None, storage_options)
    raw = read_scores(out_url, rows, storage_options) if rows else np.zeros(0, np.float32)
    _write_table(_scored_table(frame, raw, spec), url, storage_options)


# --- the command --------------------------------------------------------------------------------

def _check_apart(input: str, scores: str, storage_options: dict | None) -> None:
    """Refuse an INPUT inside SCORES: clearing old scores would delete what is to be read."""
    fs_in, path_in = storage.filesystem(input, storage_options)
    fs_out, path_out = storage.filesystem(scores, storage_options)
    inside, out = path_in.rstrip("/"), path_out.rstrip("/")
    if not storage.is_remote(input):
        inside, out = os.path.abspath(inside), os.path.abspath(out)
    if fs_in.protocol == fs_out.protocol and (inside == out or inside.startswith(out + "/")):
        raise FmprepError(f"{setting('input')}{input} lies inside {setting('scores')}{scores}, "
                          f"which {command('score')} clears first; copy the input elsewhere or "
                          f"set {setting('scores')} to another directory")


def _clear(scores: str, backend: str, storage_options: dict | None) -> None:
    """Claim SCORES and remove this stage's earlier files, manifest first."""
    owned.claim(scores, "scores", storage_options)
    old = storage.read_json(storage.join(scores, MANIFEST_NAME), storage_options)
    # Manifest first: from here on the folder never looks complete until this run is done.
    owned.remove_files(scores, [MANIFEST_NAME], storage_options)
    owned.remove_files(scores, owned.listed_files(old) + owned.fmprep_files(
        scores, OWN_FILES, storage_options), storage_options)
    sub = (TRANSFORM_INPUT, TRANSFORM_ROWS) if backend == "sagemaker" else ()
    owned.make_dirs(scores, sub, storage_options)


def _totals(stats: list[dict]) -> dict:
    keys = ("rows", "scored_rows", "unknown_customer_rows", "unknown_product_rows",
            "unknown_both_rows", "bad_date_rows", "clipped_days_rows")
    return {k: int(sum(s[k] for s in stats)) for k in keys}


def _local_model(output: str, model_dir: str | None, manifest: dict,
                 storage_options: dict | None) -> tuple[str, dict]:
    model_dir = model_dir or storage.join(output, config.LOCAL_MODEL_DIR)
    meta = storage.read_json(storage.join(model_dir, "model.json"), storage_options)
    if meta is None:
        raise FmprepError(f"no model in {model_dir}; run {command('train')} first (or pass "
                          f"{setting('model_dir')})")
    check_model(meta, manifest, model_dir)
    return model_dir, meta


def _load_model(model_dir: str, storage_options: dict | None):
    from .model.fm import FMModel

    return FMModel.load(model_dir, storage_options)


def score_pairs(output: str, input: str, work: str | None = None, model_dir: str | None = None,
                scores: str | None = None, backend: str = "local", input_format: str = "auto",
                blocksize: str | int | None = DEFAULT_BLOCKSIZE, scheduler: str | None = None,
                storage_options: dict | None = None, role: str | None = None,
                region: str | None = None, instance_type: str | None = None,
                instance_count: int | None = None, image_uri: str | None = None,
                poll_seconds: float = config.SAGEMAKER_POLL_S,
                echo: Callable[[str], None] = print) -> dict:
    """Score every row of ``input`` with the trained FM model; write SCORES and its manifest.

    Parameters
    ----------
    output : str
        OUTPUT of ``make data`` (its manifest, and the model or SageMaker record beside it).
    input : str
        The rows to score: see :func:`read_pairs`.
    work : str, optional
        WORK with the id maps; default the manifest's ``work``.
    model_dir : str, optional
        ``local``: the model (default OUTPUT/model).
    scores : str, optional
        Where the scores go (default OUTPUT/scores); must be ``s3://`` for ``sagemaker``.
    backend : {"local", "sagemaker"}
        Score with the local model, or with a SageMaker batch transform job.
    input_format, blocksize
        See :func:`read_pairs`.
    scheduler : str, optional
        Dask scheduler, as for ``make data`` (:func:`fmprep.cluster.dask_client`).
    storage_options : dict, optional
        fsspec options for every path.
    role, region, instance_type, instance_count, image_uri, poll_seconds, echo
        ``sagemaker`` only: see :func:`fmprep.serving.transform.transform`.

    Returns
    -------
    dict
        The manifest written to ``SCORES/_manifest.json``: ``rows``, ``scored_rows``,
        ``unknown_customer_rows``, ``unknown_product_rows``, ``unknown_both_rows``,
        ``bad_date_rows``, ``clipped_days_rows``, ``model``, ``input``, ``parts``, ``files`` …

    Raises
    ------
    FmprepError
        For a missing manifest, WORK or model, a stale model, an unreadable input or one without
        ``customer_id`` / ``product_id``, dates in another format, a SCORES directory holding
        files fmprep did not write, and the SageMaker errors of
        :func:`fmprep.serving.transform.transform`.
    """
    if backend not in ("local", "sagemaker"):
        raise FmprepError(f"{setting('backend')}{backend} is not one of local, sagemaker; use "
                          f"e.g. {setting('backend')}local")
    so = storage_options
    manifest = read_manifest(output, so)
    scores = scores or storage.join(output, SCORES_DIR)
    work, prepared = _work(manifest, work, so)
    spec = _spec(manifest)
    if backend == "local":
        model_dir, meta = _local_model(output, model_dir, manifest, so)
        spec["predictor_type"] = meta.get("predictor_type", "regressor")
        model_info = {"backend": "local", "dir": model_dir, "data": meta.get("data")}
    else:
        from .serving.sagemaker import _check_output, read_record

        _check_output(output)
        if not retries.is_s3(scores):
            raise FmprepError(f"{setting('backend')}sagemaker writes its input and results to "
                              f"S3 but SCORES is {scores}; leave {setting('scores')} unset or "
                              "give an s3:// URI")
        job = read_record(output, so).get("training_job") or {}
        if job.get("status") != "Completed" or not job.get("model_artifact"):
            raise FmprepError(f"no completed training job recorded in "
                              f"{storage.join(output, config.SAGEMAKER_RECORD)}; run "
                              f"{command('train')} {setting('backend')}sagemaker first (or use "
                              f"{setting('backend')}local)")
        check_model({"data": job.get("data")}, manifest,
                    f"training job {job.get('name')} ({job['model_artifact']})")
        spec["predictor_type"] = (job.get("hyperparameters") or {}).get("predictor_type",
                                                                        "regressor")
        model_info = {"backend": "sagemaker", "training_job": job.get("name"),
                      "model_artifact": job["model_artifact"], "data": job.get("data")}

    started = dt.datetime.now(dt.timezone.utc)
    with dask_client(scheduler):
        pairs, fmt = read_pairs(input, input_format, blocksize, so)
        _check_dates(pairs, input, fmt)
        _check_apart(input, scores, so)
        # Everything the user can get wrong is checked: only now may old scores go.
        _clear(scores, backend, so)
        with _reading(input, fmt):
            users, items = _lookups(pairs, work, prepared, so)
            parts = pairs.to_delayed()
            names = [f"part-{i:05d}.parquet" for i in range(len(parts))]
            pbr = [f"part-{i:05d}.pbr" for i in range(len(parts))]
            if backend == "local":
                model = dask.delayed(_load_model, pure=True)(model_dir, so)  # once per worker
                tasks = [dask.delayed(_score_local)(p, users, items, model, spec,
                                                   storage.join(scores, name), so)
                         for p, name in zip(parts, names)]
            else:
                tasks = [dask.delayed(_stage_part)(
                    p, users, items, spec, storage.join(scores, TRANSFORM_ROWS, name),
                    storage.join(scores, TRANSFORM_INPUT, b), so)
                    for p, name, b in zip(parts, names, pbr)]
            (stats,) = dask.compute(tasks)
    files = list(names)
    if backend == "sagemaker":
        files += _run_transform(output, scores, names, pbr, stats, spec, model_info, scheduler,
                                so, role=role, region=region, instance_type=instance_type,
                                instance_count=instance_count, image_uri=image_uri,
                                poll_seconds=poll_seconds, echo=echo)
    totals = _totals(stats)
    result = {
        "format": FORMAT, "stage": "score",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 3),
        "input": input, "input_format": fmt, "work": work, "model": model_info,
        "predictor_type": spec["predictor_type"], "data": data_stamp(manifest),
        "default_date": spec["default_date"], "label_range": spec["label_range"],
        "days_since_first": {"divisor": spec["divisor"], "train_range": spec["train_range"]},
        **totals,
        "columns": SCHEMA.names,
        "order": "parts in name order, rows in input order",
        "parts": [{"file": n, **s} for n, s in zip(names, stats)],
        "files": files,
    }
    storage.write_json(storage.join(scores, MANIFEST_NAME), result, so)
    log.info("score: %d rows (%d unknown customers, %d unknown products, %d bad dates) → %s",
             totals["rows"], totals["unknown_customer_rows"], totals["unknown_product_rows"],
             totals["bad_date_rows"], scores)
    return result


def _run_transform(output, scores, names, pbr, stats, spec, model_info, scheduler, so,
                   **options) -> list[str]:
    """Run the transform job on the staged RecordIO, then join its scores to the rows.

    Returns the files written besides the final parts (RecordIO inputs and JSON Lines outputs).
    """
    from .serving import transform as st

    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("instance_type", st.TRANSFORM_INSTANCE_TYPE)
    options.setdefault("instance_count", st.TRANSFORM_INSTANCE_COUNT)
    staged = [(name, b, s["rows"]) for name, b, s in zip(names, pbr, stats)]
    inputs = [b for _, b, rows in staged if rows]
    out_uri = storage.join(scores, TRANSFORM_OUTPUT) + "/"
    if inputs:
        job = st.transform(output, storage.join(scores, TRANSFORM_INPUT) + "/", out_uri,
                           storage_options=so, **options)
        model_info.update(transform_job=job["name"], transform_model=job["model"])
    found = st.find_outputs(out_uri, inputs, so)
    missing = [b for b in inputs if b not in found]
    if missing:
        raise FmprepError(f"the transform job completed but wrote no {missing[0]}.out under "
                          f"{out_uri} ({len(missing)} of {len(inputs)} results missing); "
                          f"check the job in the SageMaker console, then rerun "
                          f"{command('score')}")
    with dask_client(scheduler):
        dask.compute([dask.delayed(_collect_part)(
            storage.join(scores, TRANSFORM_ROWS, name), found.get(b), rows, spec,
            storage.join(scores, name), so) for name, b, rows in staged])
    owned.remove_files(scores, [f"{TRANSFORM_ROWS}/{n}" for n in names], so)
    base = storage.filesystem(scores, so)[1].rstrip("/")
    outs = [storage.filesystem(found[b], so)[1][len(base) + 1:] for b in inputs]
    return [f"{TRANSFORM_INPUT}/{b}" for b in inputs] + outs
