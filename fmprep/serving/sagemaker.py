"""The ``sagemaker`` backend: train, deploy, query and remove the built-in FM algorithm (boto3).

Only boto3's ``sagemaker`` and ``sagemaker-runtime`` clients are used (docs/design.md §3): that is the
API both SDK generations wrap, and it runs against a moto server in tests. boto3 finds credentials,
region and endpoint the usual way (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID`` …, ``AWS_ENDPOINT_URL``).

What was created is recorded in ``OUTPUT/sagemaker.json`` beside the manifest::

    {"region": …,
     "training_job": {"name", "arn", "status", "image_uri", "instance_type", "instance_count",
                      "hyperparameters", "fmprep_defaults", "model_artifact", "metrics"},
     "endpoint": {"name", "endpoint_config", "model", "instance_type", "instance_count",
                  "image_uri", "model_artifact", "status"}}

so that ``deploy`` finds the model artifact, and ``predict`` and ``undeploy`` find the endpoint.
``hyperparameters`` is what the job was sent: the user's settings, and for every SGD setting
the user left unset fmprep's SageMaker default
(``fmprep.model.hyperparameters.sagemaker_default_hyperparameters``), whose names
``fmprep_defaults`` lists.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Callable

import boto3
from botocore.exceptions import (BotoCoreError, ClientError, NoCredentialsError,
                                 PartialCredentialsError, NoRegionError)

from .. import config, retries, storage
from ..config import MANIFEST
from ..freshness import data_stamp, trained_artifact
from ..errors import FmprepError, aside, command, setting
# The contract only (no numba): validating names must not load the local trainers.
from ..model.hyperparameters import (sagemaker_default_hyperparameters, sagemaker_hyperparameters,
                                     validate_hyperparameters)

__all__ = ["deploy", "fm_image_uri", "predict", "read_record", "resolve_region", "train",
           "undeploy"]

logger = logging.getLogger("fmprep.serving.sagemaker")

RECORDIO = "application/x-recordio-protobuf"
JSON = "application/json"
_NO_CREDENTIALS = ("no AWS credentials found; configure them (aws configure, AWS_PROFILE, or "
                   "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or use "
                   f"{setting('backend')}local")
_DONE = ("Completed", "Failed", "Stopped")
# Training jobs write OUTPUT/model/<job name>/output/model.tar.gz (SageMaker's layout).
ARTIFACTS_DIR = "model"
ARTIFACT_FILES = f"{ARTIFACTS_DIR}/*/output/model.tar.gz"


# --- small helpers ------------------------------------------------------------------------------

def resolve_region(region: str | None = None) -> str:
    """``region``, else the AWS configuration's region, else ``config.DEFAULT_REGION``."""
    return region or boto3.session.Session().region_name or config.DEFAULT_REGION


def fm_image_uri(region: str, override: str | None = None) -> str:
    """The Factorization Machines container image for ``region``.

    Parameters
    ----------
    region : str
        AWS region, e.g. ``us-east-1``.
    override : str, optional
        An image URI to use instead (the ``image_uri`` setting), returned unchanged.

    Returns
    -------
    str
        ``<account>.dkr.ecr.<region>.<domain>/factorization-machines:1``.

    Raises
    ------
    FmprepError
        For a region without a published FM image and no override.
    """
    if override:
        return override
    account = config.FM_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise FmprepError(f"no Factorization Machines image is known for region {region!r}; "
                          f"pass {setting('image_uri')}{aside('image_uri')} or choose another "
                          f"{setting('region')}{aside('region')}")
    domain = config.ECR_DOMAINS.get(region, "amazonaws.com")
    return f"{account}.dkr.ecr.{region}.{domain}/{config.FM_IMAGE_REPOSITORY}:{config.FM_IMAGE_TAG}"


def _clients(region: str):
    # Fail before any request when botocore finds no credentials at all, with the fix.
    if boto3.session.Session().get_credentials() is None:
        raise FmprepError(_NO_CREDENTIALS)
    try:
        # The retry budget of fmprep.retries, as for S3: an API that stumbles does not stop a
        # train or deploy that has already waited minutes.
        return (boto3.client("sagemaker", region_name=region, config=retries.botocore_config()),
                boto3.client("sagemaker-runtime", region_name=region,
                             config=retries.botocore_config()))
    except (BotoCoreError, ValueError) as err:
        raise FmprepError(f"cannot create SageMaker clients for region {region!r}: {err}; check "
                          f"{setting('region')}{aside('region')}") from None


def _is_missing(err: ClientError) -> bool:
    return "Could not find" in err.response.get("Error", {}).get("Message", "")


def _call(client, operation: str, missing_ok: bool = False, **params):
    """Call a boto3 operation; AWS and credential errors become one-line FmprepErrors.

    With ``missing_ok`` a "Could not find" error returns None (deleting what is already gone).
    """
    try:
        return getattr(client, operation)(**params)
    except (NoCredentialsError, PartialCredentialsError):
        raise FmprepError(_NO_CREDENTIALS) from None
    except NoRegionError:
        raise FmprepError(f"no AWS region configured; pass {setting('region')}"
                          f"{aside('region')}") from None
    except (BotoCoreError, ClientError) as err:
        if isinstance(err, ClientError) and missing_ok and _is_missing(err):
            return None
        # Throttling, 5xx or a lost connection that outlasted the retry budget: say so.
        transient = retries.describe_exhausted(err, service=f"SageMaker {operation}",
                                               resume="rerun the command")
        if transient is not None:
            raise FmprepError(transient) from None
        if not isinstance(err, ClientError):
            raise
        info = err.response.get("Error", {})
        message = info.get("Message", str(err))
        if len(message) > 300:  # moto lists every instance type; keep the line readable
            message = message[:300] + "…"
        raise FmprepError(f"SageMaker {operation} failed: {info.get('Code', 'Error')}: "
                          f"{message}") from None


def _check_output(output: str) -> None:
    if not output.startswith("s3://"):
        raise FmprepError(f"{setting('backend')}sagemaker reads its data from S3 but OUTPUT is "
                          f"{output}; run {command('data')} with {setting('output')}"
                          f"s3://bucket/prefix (or use {setting('backend')}local)")


def _check_role(role: str | None) -> None:
    if not role or not role.startswith("arn:") or ":role/" not in role:
        raise FmprepError(f"{setting('backend')}sagemaker needs an IAM role SageMaker can "
                          f"assume, got {role!r}; pass {setting('role')}{aside('role')} "
                          "arn:aws:iam::<account>:role/<name>")


def _new_name() -> str:
    """A unique, valid SageMaker resource name (≤ 63 characters)."""
    return "fmprep-fm-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def read_record(output: str, storage_options: dict | None = None) -> dict:
    """The contents of ``OUTPUT/sagemaker.json`` (an empty dict when there is none)."""
    return storage.read_json(storage.join(output, config.SAGEMAKER_RECORD), storage_options) or {}


def _write_record(output: str, record: dict, storage_options: dict | None) -> None:
    storage.write_json(storage.join(output, config.SAGEMAKER_RECORD), record, storage_options)


# --- train --------------------------------------------------------------------------------------

def _channel(output: str, name: str, distribution: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                        "S3Uri": storage.join(output, name) + "/",
                                        "S3DataDistributionType": distribution}},
        "ContentType": RECORDIO,
        "CompressionType": "None",
        "RecordWrapperType": "None",  # the shards are RecordIO already; SageMaker must not wrap
        "InputMode": "File",
    }


def train(output: str, role: str, hyperparameters: dict,
          instance_type: str = config.TRAIN_INSTANCE_TYPE,
          instance_count: int = config.TRAIN_INSTANCE_COUNT, image_uri: str | None = None,
          job_name: str | None = None, wait: bool = True, region: str | None = None,
          poll_seconds: float = config.SAGEMAKER_POLL_S, echo: Callable[[str], None] = print,
          storage_options: dict | None = None) -> dict:
    """Run a SageMaker Factorization Machines training job on OUTPUT's shards.

    The train channel is ``OUTPUT/train/`` with ``ShardedByS3Key`` (each instance reads about
    1/instance_count of the shards), the test channel ``OUTPUT/test/`` is ``FullyReplicated``;
    both RecordIO-protobuf. The model artifact goes under ``OUTPUT/model/``.

    Parameters
    ----------
    output : str
        The OUTPUT directory of ``make data``; must be an ``s3://`` URL.
    role : str
        ARN of the IAM role the job runs as.
    hyperparameters : dict
        The FM hyperparameters the user set (None values count as unset); ``feature_dim``
        comes from the manifest. Every SGD setting left unset gets fmprep's SageMaker default
        (:func:`fmprep.model.hyperparameters.sagemaker_default_hyperparameters`: fmprep's
        recommended SGD settings for the train rows, not SageMaker's own defaults, which barely
        move the model in 3 epochs); a user's value always wins. Validated with
        :func:`fmprep.model.hyperparameters.validate_hyperparameters` and sent as strings,
        without fmprep's local-only options (``seed``, ``solver``, ``mcmc_*``,
        ``early_stopping*`` ...). Pass only what the user set: a dict already filled with every
        default leaves nothing for fmprep's defaults to fill.
    instance_type, instance_count : str, int
        Training instances (default: the reference's 4 × ml.c5.2xlarge).
    image_uri : str, optional
        Container image; default :func:`fm_image_uri` of the region.
    job_name : str, optional
        Default ``fmprep-fm-<UTC time>``.
    wait : bool
        Poll until the job ends, echoing status changes and the final metrics.
    region : str, optional
        See :func:`resolve_region`.
    poll_seconds : float
        Interval between ``describe_training_job`` calls.
    echo : callable
        Receives progress lines (default ``print``).
    storage_options : dict, optional
        fsspec options for OUTPUT.

    Returns
    -------
    dict
        The ``training_job`` entry written to ``OUTPUT/sagemaker.json``: ``hyperparameters``
        is what was sent, ``fmprep_defaults`` the names among them whose value fmprep chose.

    Raises
    ------
    FmprepError
        For OUTPUT not on S3, a missing role or credentials, invalid hyperparameters, a rejected
        request, or a job that ends Failed or Stopped.
    """
    _check_output(output)
    _check_role(role)
    region = resolve_region(region)
    image = fm_image_uri(region, image_uri)
    sm, _ = _clients(region)
    manifest = storage.read_json(storage.join(output, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"no {MANIFEST} in {output}; run {command('data')} with "
                          f"{setting('output')}{output} first")
    given = {k: v for k, v in dict(hyperparameters or {}).items() if v is not None}
    # Unset SGD settings get values that train in SageMaker's FM, not its own defaults.
    defaults = {k: v for k, v in sagemaker_default_hyperparameters(
        int(manifest["channels"]["train"]["rows"])).items() if k not in given}
    hp = sagemaker_hyperparameters(validate_hyperparameters({**defaults, **given},
                                                            manifest["feature_dim"]))
    n_shards = len(manifest["channels"]["train"]["shards"])
    if n_shards < instance_count:
        logger.warning("%d train shards for %d instances: %d instances will get no data; "
                       "re-run %s with %s%d or more", n_shards, instance_count,
                       instance_count - n_shards, command("data"), setting("train_shards"),
                       instance_count)
    name = job_name or _new_name()
    created = _call(
        sm, "create_training_job", TrainingJobName=name, HyperParameters=hp,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=role,
        InputDataConfig=[_channel(output, "train", "ShardedByS3Key"),
                         _channel(output, "test", "FullyReplicated")],
        OutputDataConfig={"S3OutputPath": storage.join(output, ARTIFACTS_DIR) + "/"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": int(instance_count),
                        "VolumeSizeInGB": config.TRAIN_VOLUME_GB},
        StoppingCondition={"MaxRuntimeInSeconds": config.TRAIN_MAX_RUNTIME_S})
    echo(f"training job {name} created ({instance_count} × {instance_type}, {region})")
    if defaults:
        echo("fmprep's SageMaker defaults: " + ", ".join(f"{k}={hp[k]}" for k in defaults)
             + " (set any of them to override)")
    job = {"name": name, "arn": created["TrainingJobArn"], "status": "InProgress",
           "image_uri": image, "instance_type": instance_type,
           "instance_count": int(instance_count), "hyperparameters": hp,
           "fmprep_defaults": sorted(defaults), "model_artifact": None, "metrics": {},
           "data": data_stamp(manifest)}
    record = read_record(output, storage_options)
    record.update(region=region, training_job=job)
    _write_record(output, record, storage_options)  # a crash while waiting still names the job
    if not wait:
        return job

    desc = _wait_training(sm, name, poll_seconds, echo)
    job["status"] = desc["TrainingJobStatus"]
    job["model_artifact"] = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    job["metrics"] = {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])}
    _write_record(output, record, storage_options)
    if job["status"] != "Completed":
        raise FmprepError(f"training job {name} {job['status']}: "
                          f"{desc.get('FailureReason', 'no reason given')}; see its CloudWatch "
                          "log group /aws/sagemaker/TrainingJobs")
    for metric, value in sorted(job["metrics"].items()):
        echo(f"  {metric} = {value:.6g}")
    echo(f"model artifact: {job['model_artifact']}")
    return job


def poll(describe, shown, done, poll_seconds: float, echo, wait_s: float | None = None,
         late=None, key=None) -> dict:
    """Describe a SageMaker resource until ``done(desc)``; echo each new state once.

    Parameters
    ----------
    describe : callable
        ``describe()`` → the describe_* response.
    shown : callable
        ``shown(desc)`` → the state as one line (echoed when it changes).
    done : callable
        ``done(desc)`` → True when waiting is over (it may raise for a failed resource).
    wait_s : float, optional
        Give up after this long: raise FmprepError(``late(desc)``).
    key : callable, optional
        ``key(desc)`` → what counts as a new state (default: the shown line).
    """
    deadline = None if wait_s is None else time.monotonic() + wait_s
    last = None
    while True:
        desc = describe()
        state = key(desc) if key else shown(desc)
        if state != last:
            echo(shown(desc))
            last = state
        if done(desc):
            return desc
        if deadline is not None and time.monotonic() > deadline:
            raise FmprepError(late(desc))
        time.sleep(poll_seconds)


def _training_state(name: str, desc: dict) -> str:
    transitions = desc.get("SecondaryStatusTransitions") or [{}]
    detail = transitions[-1].get("StatusMessage", "")
    return (f"{name}: {desc['TrainingJobStatus']} / {desc.get('SecondaryStatus')}"
            + (f" – {detail}" if detail else ""))


def _wait_training(sm, name: str, poll_seconds: float, echo) -> dict:
    return poll(lambda: _call(sm, "describe_training_job", TrainingJobName=name),
                lambda d: _training_state(name, d),
                lambda d: d["TrainingJobStatus"] in _DONE, poll_seconds, echo,
                key=lambda d: (d["TrainingJobStatus"], d.get("SecondaryStatus")))


# --- deploy / undeploy --------------------------------------------------------------------------

def deploy(output: str, role: str, instance_type: str = config.ENDPOINT_INSTANCE_TYPE,
           instance_count: int = config.ENDPOINT_INSTANCE_COUNT, image_uri: str | None = None,
           name: str | None = None, model_artifact: str | None = None, wait: bool = True,
           region: str | None = None, poll_seconds: float = config.SAGEMAKER_POLL_S,
           echo: Callable[[str], None] = print, storage_options: dict | None = None) -> dict:
    """Create a model, an endpoint config and an endpoint for the trained FM artifact.

    If any step fails (or waiting for ``InService`` fails or is interrupted), whatever this call
    created is deleted again, newest first, so no half-built endpoint keeps costing money.

    Parameters
    ----------
    output : str
        OUTPUT directory holding ``sagemaker.json`` from :func:`train`.
    role : str
        ARN of the IAM role the model runs as.
    instance_type, instance_count : str, int
        Endpoint instances (default: the reference's 1 × ml.m4.xlarge).
    image_uri : str, optional
        Container image; default :func:`fm_image_uri` of the region.
    name : str, optional
        Name of the model, endpoint config and endpoint; default ``fmprep-fm-<UTC time>``.
    model_artifact : str, optional
        ``s3://…/model.tar.gz``; default the recorded training job's artifact.
    wait : bool
        Poll until the endpoint is ``InService``.
    region, poll_seconds, echo, storage_options
        As for :func:`train`; the region defaults to the recorded one.

    Returns
    -------
    dict
        The ``endpoint`` entry written to ``OUTPUT/sagemaker.json``.

    Raises
    ------
    FmprepError
        For a missing role, credentials or trained model, an endpoint already recorded and
        live, a rejected request, or an endpoint that ends ``Failed``.
    """
    _check_role(role)
    record = read_record(output, storage_options)
    job = record.get("training_job") or {}
    trained_on = None
    if model_artifact is None:
        job, model_artifact = trained_artifact(
            output, f"run train with {setting('backend')}sagemaker first", storage_options)
        trained_on = job.get("data")
    region = resolve_region(region or record.get("region"))
    image = fm_image_uri(region, image_uri)
    sm, _ = _clients(region)
    live = record.get("endpoint")
    if live and _call(sm, "describe_endpoint", missing_ok=True, EndpointName=live["name"]):
        raise FmprepError(f"endpoint {live['name']} is already deployed; run undeploy first")

    name = name or _new_name()
    created: list[tuple[str, str]] = []
    try:
        _call(sm, "create_model", ModelName=name, ExecutionRoleArn=role,
              PrimaryContainer={"Image": image, "ModelDataUrl": model_artifact})
        created.append(("model", name))
        _call(sm, "create_endpoint_config", EndpointConfigName=name,
              ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name,
                                   "InitialInstanceCount": int(instance_count),
                                   "InstanceType": instance_type,
                                   "InitialVariantWeight": 1.0}])
        created.append(("endpoint_config", name))
        _call(sm, "create_endpoint", EndpointName=name, EndpointConfigName=name)
        created.append(("endpoint", name))
        echo(f"endpoint {name} created ({instance_count} × {instance_type}, {region})")
        status = _wait_endpoint(sm, name, poll_seconds, echo) if wait else "Creating"
    except BaseException:
        _delete(sm, created[::-1], echo)
        raise

    endpoint = {"name": name, "endpoint_config": name, "model": name,
                "instance_type": instance_type, "instance_count": int(instance_count),
                "image_uri": image, "model_artifact": model_artifact, "status": status,
                "data": trained_on}
    record.update(region=region, endpoint=endpoint)
    _write_record(output, record, storage_options)
    return endpoint


def _wait_endpoint(sm, name: str, poll_seconds: float, echo) -> str:
    def in_service(desc: dict) -> bool:
        if desc["EndpointStatus"] == "Failed":
            raise FmprepError(f"endpoint {name} failed: {desc.get('FailureReason', 'no reason')}; "
                              "check the model artifact, image and instance type")
        return desc["EndpointStatus"] == "InService"

    desc = poll(lambda: _call(sm, "describe_endpoint", EndpointName=name),
                lambda d: f"{name}: {d['EndpointStatus']}", in_service, poll_seconds, echo,
                config.ENDPOINT_WAIT_S,
                lambda d: (f"endpoint {name} not InService after {config.ENDPOINT_WAIT_S} s "
                           f"(status {d['EndpointStatus']}); it was deleted, try deploy again"))
    return desc["EndpointStatus"]


_DELETE = {"endpoint": ("delete_endpoint", "EndpointName"),
           "endpoint_config": ("delete_endpoint_config", "EndpointConfigName"),
           "model": ("delete_model", "ModelName")}


def _delete(sm, resources: list[tuple[str, str]], echo) -> list[tuple[str, str]]:
    """Delete (kind, name) pairs in order; report but do not stop on a failure."""
    deleted = []
    for kind, name in resources:
        operation, param = _DELETE[kind]
        try:
            if _call(sm, operation, missing_ok=True, **{param: name}) is not None:
                deleted.append((kind, name))
                echo(f"deleted {kind.replace('_', ' ')} {name}")
        except FmprepError as err:
            logger.error("could not delete %s %s: %s", kind, name, err)
    return deleted


def undeploy(output: str, name: str | None = None, region: str | None = None,
             echo: Callable[[str], None] = print,
             storage_options: dict | None = None) -> list[tuple[str, str]]:
    """Delete the endpoint, its endpoint config and its model.

    Parameters
    ----------
    output : str
        OUTPUT directory holding ``sagemaker.json``.
    name : str, optional
        Endpoint to delete (with the config and model of that name) instead of the recorded one.
    region, echo, storage_options
        As for :func:`deploy`.

    Returns
    -------
    list of (kind, name)
        What was deleted; resources already gone are skipped, so undeploy can be repeated.

    Raises
    ------
    FmprepError
        If no endpoint is recorded and no ``name`` is given.
    """
    record = read_record(output, storage_options)
    live = record.get("endpoint")
    if name is None and not live:
        raise FmprepError(f"nothing to undeploy: {storage.join(output, config.SAGEMAKER_RECORD)} "
                          "records no endpoint")
    if name is None or (live and live["name"] == name):
        resources = [("endpoint", live["name"]), ("endpoint_config", live["endpoint_config"]),
                     ("model", live["model"])]
    else:
        resources = [("endpoint", name), ("endpoint_config", name), ("model", name)]
    sm, _ = _clients(resolve_region(region or record.get("region")))
    deleted = _delete(sm, resources, echo)
    if live and resources[0][1] == live["name"]:
        record.pop("endpoint")
        _write_record(output, record, storage_options)
    return deleted


# --- predict ------------------------------------------------------------------------------------

def predict(endpoint_name: str, body: bytes, region: str | None = None,
            content_type: str = JSON, accept: str = JSON) -> dict:
    """Send one request body to an endpoint with ``invoke_endpoint``.

    Parameters
    ----------
    endpoint_name : str
        A deployed endpoint.
    body : bytes
        The request, e.g. :func:`fmprep.serving.serve.sparse_json_body`; at most 6,291,456 bytes.
    region : str, optional
        See :func:`resolve_region`.
    content_type, accept : str
        Request and response content types (JSON by default).

    Returns
    -------
    dict
        The decoded JSON response, ``{"predictions": [{"score": …}, …]}``.

    Raises
    ------
    FmprepError
        For a body over the cap, a rejected request or a response that is not JSON.
    """
    if len(body) > config.INVOKE_MAX_BYTES:
        raise FmprepError(f"request body of {len(body)} bytes exceeds InvokeEndpoint's "
                          f"{config.INVOKE_MAX_BYTES}-byte limit; send fewer instances per call")
    _, runtime = _clients(resolve_region(region))
    resp = _call(runtime, "invoke_endpoint", EndpointName=endpoint_name, Body=body,
                 ContentType=content_type, Accept=accept)
    raw = resp["Body"].read()
    try:
        return json.loads(raw)
    except ValueError:
        raise FmprepError(f"endpoint {endpoint_name} answered {resp.get('ContentType')} that is "
                          f"not JSON: {raw[:80]!r}") from None
