"""``make score``, ``sagemaker`` backend: a SageMaker batch transform job of the trained FM model.

The job reads RecordIO-protobuf objects that :mod:`fmprep.score` wrote under
``SCORES/transform-input/`` (one FM row per input row, no labels), splits them by record
(``SplitType=RecordIO``) into mini-batches of up to ``MaxPayloadInMB``, and writes one
``<object>.out`` per input object under ``SCORES/transform-output/``: a JSON line per record,
``{"score": s}`` (``predicted_label`` too for a binary classifier), in the records' order —
the order SageMaker's own input/output join (``DataProcessing.JoinSource``) relies on.

The model is the training job recorded in ``OUTPUT/sagemaker.json`` (:mod:`fmprep.serving.sagemaker`).
A deployed endpoint's SageMaker model is reused when it serves that artifact; otherwise a
model is created for the job and deleted when the job has ended. The job itself is recorded
in ``OUTPUT/sagemaker.json`` under ``transform_job`` as soon as it exists, so that a crash
while waiting still names it.

Like the rest of the backend this is boto3 only; it runs against a moto server in tests (moto
accepts the job and completes it at once, but writes no output: docs/design.md §4).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import posixpath
from collections.abc import Callable

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from .. import config, storage
from ..errors import FmprepError, command, setting
from ..freshness import trained_artifact
from .sagemaker import (_DONE, RECORDIO, _call, _check_output, _check_role, _clients, poll,
                        _write_record, fm_image_uri, read_record, resolve_region)

__all__ = ["JSONLINES", "TRANSFORM_INSTANCE_COUNT", "TRANSFORM_INSTANCE_TYPE",
           "TRANSFORM_MAX_PAYLOAD_MB", "find_outputs", "read_scores", "transform"]

logger = logging.getLogger("fmprep.serving.sagemaker")

JSONLINES = "application/jsonlines"
# Defaults of the job (candidates for fmprep/config.py): the endpoint's instance type, one
# instance, and InvokeEndpoint's 6 MB cap as the mini-batch payload.
TRANSFORM_INSTANCE_TYPE = config.ENDPOINT_INSTANCE_TYPE
TRANSFORM_INSTANCE_COUNT = 1
TRANSFORM_MAX_PAYLOAD_MB = 6
TRANSFORM_WAIT_S = 48 * 3600          # give up waiting after this long (the job goes on)


def _job_name() -> str:
    """A unique, valid SageMaker name (≤ 63 characters) for the transform job and its model."""
    return "fmprep-score-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def _model_for(sm, record: dict, artifact: str, image: str, role: str | None, name: str,
               echo) -> tuple[str, bool]:
    """The SageMaker model to run: the endpoint's when it serves ``artifact``, else a new one.

    Returns ``(model name, created)``.
    """
    live = record.get("endpoint") or {}
    if (live.get("model") and live.get("model_artifact") == artifact
            and live.get("image_uri") == image
            and _call(sm, "describe_model", missing_ok=True, ModelName=live["model"])):
        return live["model"], False
    _check_role(role)  # only creating a model needs a role
    _call(sm, "create_model", ModelName=name, ExecutionRoleArn=role,
          PrimaryContainer={"Image": image, "ModelDataUrl": artifact})
    echo(f"model {name} created for the transform job")
    return name, True


def transform(output: str, input_uri: str, output_uri: str, role: str | None = None,
              instance_type: str = TRANSFORM_INSTANCE_TYPE,
              instance_count: int = TRANSFORM_INSTANCE_COUNT, image_uri: str | None = None,
              job_name: str | None = None, region: str | None = None,
              max_payload_mb: int = TRANSFORM_MAX_PAYLOAD_MB,
              poll_seconds: float = config.SAGEMAKER_POLL_S,
              echo: Callable[[str], None] = print, storage_options: dict | None = None) -> dict:
    """Run a batch transform job of the recorded training job's model and wait for it.

    Parameters
    ----------
    output : str
        OUTPUT of ``make data`` (``s3://``), holding ``manifest.json`` and ``sagemaker.json``
        with a completed training job.
    input_uri : str
        ``s3://`` prefix of the RecordIO-protobuf objects to score (every object under it).
    output_uri : str
        ``s3://`` prefix for the ``<object>.out`` JSON Lines results.
    role : str, optional
        IAM role ARN for the SageMaker model; needed only when no deployed endpoint's model
        can be reused.
    instance_type, instance_count : str, int
        Transform instances (default 1 × ``ml.m4.xlarge``).
    image_uri : str, optional
        Container image; default :func:`fmprep.serving.sagemaker.fm_image_uri` of the region.
    job_name : str, optional
        Default ``fmprep-score-<UTC time>``; a model created for the job gets the same name.
    region : str, optional
        Default: the region recorded with the training job.
    max_payload_mb : int
        Largest mini-batch SageMaker sends to the container.
    poll_seconds : float
        Interval between ``describe_transform_job`` calls.
    echo : callable
        Receives progress lines.
    storage_options : dict, optional
        fsspec options for OUTPUT.

    Returns
    -------
    dict
        The ``transform_job`` entry written to ``OUTPUT/sagemaker.json``: ``name``, ``arn``,
        ``status``, ``model``, ``model_artifact``, ``input``, ``output``, ``instance_type``,
        ``instance_count``, ``data``.

    Raises
    ------
    FmprepError
        For OUTPUT not on S3, no completed training job, a model trained on other data, missing
        credentials or role, a rejected request, or a job that ends Failed or Stopped.
    """
    _check_output(output)
    record = read_record(output, storage_options)
    job, artifact = trained_artifact(
        output, f"run {command('train')} {setting('backend')}sagemaker first (or use "
                f"{setting('backend')}local)", storage_options)
    region = resolve_region(region or record.get("region"))
    image = fm_image_uri(region, image_uri)
    sm, _ = _clients(region)
    name = job_name or _job_name()
    model, created = _model_for(sm, record, artifact, image, role, name, echo)
    entry = {"name": name, "arn": None, "status": "InProgress", "model": model,
             "model_created": created, "model_artifact": artifact,
             "input": input_uri, "output": output_uri, "instance_type": instance_type,
             "instance_count": int(instance_count), "data": job.get("data")}
    ended = False
    try:
        made = _call(
            sm, "create_transform_job", TransformJobName=name, ModelName=model,
            BatchStrategy="MultiRecord", MaxPayloadInMB=int(max_payload_mb),
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                            "S3Uri": input_uri}},
                            "ContentType": RECORDIO, "CompressionType": "None",
                            "SplitType": "RecordIO"},
            TransformOutput={"S3OutputPath": output_uri, "Accept": JSONLINES,
                             "AssembleWith": "Line"},
            TransformResources={"InstanceType": instance_type,
                                "InstanceCount": int(instance_count)})
        entry["arn"] = made["TransformJobArn"]
        echo(f"transform job {name} created ({instance_count} × {instance_type}, {region})")
        record.update(region=region, transform_job=entry)
        _write_record(output, record, storage_options)  # a crash while waiting names the job
        desc = _wait_transform(sm, name, poll_seconds, echo)
        ended = True
    except BaseException:
        if entry["arn"] is not None and not ended:
            # Interrupted or lost while waiting: a transform job bills until it ends.
            try:
                sm.stop_transform_job(TransformJobName=name)
                echo(f"stopped transform job {name}")
            except (BotoCoreError, ClientError) as err:  # best effort: it ends by itself too
                logger.error("could not stop transform job %s (%s); stop it in the console or "
                             "with aws sagemaker stop-transform-job", name, err)
        raise
    finally:
        # A model made for this job alone is deleted once the job no longer needs it.
        if created and (ended or entry["arn"] is None):
            try:
                _call(sm, "delete_model", missing_ok=True, ModelName=model)
            except FmprepError as err:
                logger.error("could not delete model %s: %s", model, err)
    entry["status"] = desc["TransformJobStatus"]
    record.update(region=region, transform_job=entry)
    _write_record(output, record, storage_options)
    if entry["status"] != "Completed":
        raise FmprepError(f"transform job {name} {entry['status']}: "
                          f"{desc.get('FailureReason') or 'no reason given'}; see its CloudWatch "
                          "log group /aws/sagemaker/TransformJobs")
    return entry


def _wait_transform(sm, name: str, poll_seconds: float, echo) -> dict:
    return poll(lambda: _call(sm, "describe_transform_job", TransformJobName=name),
                lambda d: f"{name}: {d['TransformJobStatus']}",
                lambda d: d["TransformJobStatus"] in _DONE, poll_seconds, echo, TRANSFORM_WAIT_S,
                lambda d: (f"transform job {name} still {d['TransformJobStatus']} after "
                           f"{TRANSFORM_WAIT_S} s; see it in the SageMaker console"))


def find_outputs(output_uri: str, names: list[str],
                 storage_options: dict | None = None) -> dict[str, str]:
    """The ``<name>.out`` object of each input object name, found anywhere under ``output_uri``.

    SageMaker keeps an input object's path below the input prefix; fmprep's inputs sit directly
    under it, but the search does not depend on that.

    Returns
    -------
    dict
        Input name → output URL, for the names that have one.
    """
    fs, path = storage.filesystem(output_uri, storage_options)
    path = path.rstrip("/")
    fs.invalidate_cache(path)
    try:
        found = fs.find(path)
    except FileNotFoundError:
        found = []
    wanted = {f"{n}.out": n for n in names}
    out = {}
    for p in sorted(found):
        base = posixpath.basename(p)
        if base in wanted and wanted[base] not in out:
            out[wanted[base]] = storage.to_url(fs, p)
    return out


def read_scores(url: str, rows: int, storage_options: dict | None = None) -> np.ndarray:
    """The ``score`` of every JSON line of a transform output object, as float32.

    Parameters
    ----------
    url : str
        A ``<object>.out`` written with ``Accept: application/jsonlines``.
    rows : int
        Records in the input object: the output must have exactly as many lines.

    Raises
    ------
    FmprepError
        If the object is not JSON Lines with a ``score`` per line, or has another number of
        lines than the input had records.
    """
    import pyarrow.json as pa_json

    with storage.open_file(url, "rb", storage_options) as f:
        data = f.read()
    try:
        table = pa_json.read_json(io.BytesIO(data))  # vectorised: no Python loop per line
        scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float32)
    except (KeyError, ValueError, TypeError) as err:
        raise FmprepError(f"{url} is not JSON Lines with a score per line "
                          f"({str(err).splitlines()[0][:120]}); rerun {command('score')}") from None
    if scores.size != rows:
        raise FmprepError(f"{url} holds {scores.size} scores for {rows} input records; rerun "
                          f"{command('score')}")
    return scores
