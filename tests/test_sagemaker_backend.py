"""BACKEND=sagemaker against a moto server on 127.0.0.1: what we send, what we record, cleanup.

moto completes training jobs at once (no artifact is written), endpoints are InService at once,
and invoke_endpoint answers from a queue filled through /moto-api (docs/design.md §4).
"""

from __future__ import annotations

import base64
import json
import logging
import os

import boto3
import pytest
import requests

from fmprep import config, recordio, storage
from fmprep.model.hyperparameters import sagemaker_default_hyperparameters
from fmprep.serving import sagemaker
from fmprep.errors import FmprepError
from fmprep.serving.serve import sparse_json_body

OUTPUT = "s3://fmprep-test/fm"
ROLE = "arn:aws:iam::123456789012:role/fmprep-sagemaker"
F = 9


@pytest.fixture
def output(s3):
    """An OUTPUT on (moto) S3: manifest and tiny train/test shards, as make data writes them."""
    shards = {"train": ["train/part-00000.pbr", "train/part-00001.pbr"],
              "test": ["test/part-00000.pbr"]}
    for files in shards.values():
        for f in files:
            buf = recordio.encode_fm_rows([0, 1], [4, 5], [0.0, 2.0], [5.0, 3.0], F)
            storage.write_bytes_atomic(f"{OUTPUT}/{f}", buf.tobytes())
    manifest = {"feature_dim": F, "num_users": 4, "num_items": 4,
                "channels": {ch: {"rows": 2 * len(files),
                                  "shards": [{"file": f, "rows": 2} for f in files]}
                             for ch, files in shards.items()}}
    storage.write_json(f"{OUTPUT}/manifest.json", manifest)
    return OUTPUT


@pytest.fixture
def sm(moto_server):
    return boto3.client("sagemaker", region_name="us-east-1")


def _quiet(_line):
    pass


def _train(**kw):
    args = dict(output=OUTPUT, role=ROLE, hyperparameters={"epochs": 2, "num_factors": 8},
                poll_seconds=0, echo=_quiet)
    args.update(kw)
    return sagemaker.train(**args)


def _record():
    return storage.read_json(f"{OUTPUT}/{config.SAGEMAKER_RECORD}")


# --- image -------------------------------------------------------------------------------------

def test_image_uri_matches_the_sdk_in_every_region():
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    image_uris = pytest.importorskip("sagemaker.image_uris")
    for region in config.FM_IMAGE_ACCOUNTS:
        assert sagemaker.fm_image_uri(region) == \
            image_uris.retrieve("factorization-machines", region), region


def test_image_uri_override_and_unknown_region():
    assert sagemaker.fm_image_uri("xx-nowhere-1", "my/image:2") == "my/image:2"
    with pytest.raises(FmprepError, match="IMAGE_URI"):
        sagemaker.fm_image_uri("xx-nowhere-1")


# --- train -------------------------------------------------------------------------------------

def test_train_sends_the_reference_job(output, sm):
    lines = []
    job = _train(echo=lines.append)
    desc = sm.describe_training_job(TrainingJobName=job["name"])

    channels = {c["ChannelName"]: c for c in desc["InputDataConfig"]}
    assert set(channels) == {"train", "test"}
    for name, distribution in (("train", "ShardedByS3Key"), ("test", "FullyReplicated")):
        c = channels[name]
        s3src = c["DataSource"]["S3DataSource"]
        assert s3src["S3Uri"] == f"{OUTPUT}/{name}/"
        assert s3src["S3DataType"] == "S3Prefix"
        assert s3src["S3DataDistributionType"] == distribution
        assert c["ContentType"] == "application/x-recordio-protobuf"
        assert c["RecordWrapperType"] == "None"
    assert desc["OutputDataConfig"]["S3OutputPath"] == f"{OUTPUT}/model/"
    assert desc["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge"
    assert desc["ResourceConfig"]["InstanceCount"] == 4
    assert desc["RoleArn"] == ROLE
    assert desc["AlgorithmSpecification"]["TrainingImage"] == \
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/factorization-machines:1"
    hp = desc["HyperParameters"]
    assert all(isinstance(v, str) for v in hp.values())
    assert hp["feature_dim"] == str(F) and hp["epochs"] == "2" and hp["num_factors"] == "8"
    # Unset: fmprep's SageMaker defaults (test_train_sends_fmprep_defaults_when_nothing_is_set).
    assert hp["predictor_type"] == "regressor" and hp["mini_batch_size"] == "100"

    record = _record()
    assert record["region"] == "us-east-1"
    assert record["training_job"] == job
    assert job["status"] == "Completed"
    assert job["model_artifact"] == f"{OUTPUT}/model/{job['name']}/output/model.tar.gz"
    assert job["metrics"] == {"train:progress": 100.0}  # moto's canned final metric
    assert any("train:progress = 100" in line for line in lines)


def _expected_defaults():
    """fmprep's SageMaker defaults for the fixture's 4 train rows, as strings."""
    return {k: str(v) for k, v in sagemaker_default_hyperparameters(4).items()}


def test_train_sends_fmprep_defaults_when_nothing_is_set(output, sm):
    lines = []
    job = _train(hyperparameters={}, echo=lines.append)
    sent = sm.describe_training_job(TrainingJobName=job["name"])["HyperParameters"]
    defaults = _expected_defaults()
    assert defaults.items() <= sent.items()
    assert sent["linear_lr"] == "0.03" and sent["epochs"] == "10" and sent["num_factors"] == "8"
    assert sent["linear_wd"] == str(config.FM_LOCAL_L2["linear"] / 4)
    # Every other name: SageMaker's own default (stated, so the job record is complete).
    others = {k: str(v) for k, v in config.FM_DEFAULTS.items() if k not in defaults}
    assert sent == {"feature_dim": str(F), **others, **defaults}
    assert not set(sent) & set(config.FM_LOCAL_OPTIONS)
    assert all(isinstance(v, str) for v in sent.values())
    record = _record()["training_job"]
    assert record["hyperparameters"] == sent
    assert record["fmprep_defaults"] == sorted(defaults)
    assert any(line.startswith("fmprep's SageMaker defaults: ") and "linear_lr=0.03" in line
               for line in lines)


def test_user_settings_win_over_fmprep_defaults(output, sm):
    given = {"epochs": "7", "linear_lr": 0.005, "mini_batch_size": 1000, "factors_wd": None,
             "seed": 4, "solver": "sgd", "early_stopping": "false",
             "early_stopping_patience": 2, "mcmc_rank": 3}
    job = _train(hyperparameters=given)
    sent = sm.describe_training_job(TrainingJobName=job["name"])["HyperParameters"]
    # mini_batch_size=1000 is SageMaker's default, but the user set it: it is sent as given.
    assert sent["epochs"] == "7" and sent["linear_lr"] == "0.005"
    assert sent["mini_batch_size"] == "1000"
    defaults = _expected_defaults()
    assert sent["factors_wd"] == defaults["factors_wd"]  # None means unset
    assert sent["num_factors"] == defaults["num_factors"]
    assert not set(sent) & set(config.FM_LOCAL_OPTIONS)
    assert _record()["training_job"]["fmprep_defaults"] == \
        sorted(set(defaults) - {"epochs", "linear_lr", "mini_batch_size"})


def test_train_options_reach_the_job(output, sm):
    job = _train(instance_type="ml.c5.xlarge", instance_count=2, image_uri="my/fm:1",
                 job_name="my-job", hyperparameters={"predictor_type": "binary_classifier"})
    desc = sm.describe_training_job(TrainingJobName="my-job")
    assert job["name"] == "my-job"
    assert desc["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert desc["ResourceConfig"]["InstanceCount"] == 2
    assert desc["AlgorithmSpecification"]["TrainingImage"] == "my/fm:1"
    assert desc["HyperParameters"]["predictor_type"] == "binary_classifier"


def test_train_warns_when_instances_outnumber_shards(output, caplog):
    with caplog.at_level(logging.WARNING, logger="fmprep.serving.sagemaker"):
        _train(instance_count=3)
    assert "2 train shards for 3 instances" in caplog.text


def test_train_without_waiting_records_the_job(output, sm):
    job = _train(wait=False)
    assert _record()["training_job"]["status"] == "InProgress"
    assert sm.describe_training_job(TrainingJobName=job["name"])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"output": "data/output"}, "OUTPUT=s3://"),
    ({"role": None}, "--role"),
    ({"role": "my-role"}, "--role"),
    ({"hyperparameters": {"num_factor": 8}}, "num_factors"),
    ({"hyperparameters": {"epochs": "many"}}, "epochs"),
])
def test_train_user_errors(output, sm, kwargs, fragment):
    with pytest.raises(FmprepError, match=fragment):
        _train(**kwargs)
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []


def test_train_without_manifest(s3, sm):
    with pytest.raises(FmprepError, match="make data"):
        _train()


def test_missing_credentials_name_the_fix(output, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    with pytest.raises(FmprepError, match="no AWS credentials") as err:
        _train()
    assert "testing" not in str(err.value)


# --- deploy / predict / undeploy ----------------------------------------------------------------

def _all(sm):
    return (sorted(m["ModelName"] for m in sm.list_models()["Models"]),
            sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
            sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]))


def test_endpoint_lifecycle(output, sm, moto_server):
    job = _train()
    endpoint = sagemaker.deploy(OUTPUT, ROLE, poll_seconds=0, echo=_quiet)
    name = endpoint["name"]
    assert _all(sm) == ([name], [name], [name])

    model = sm.describe_model(ModelName=name)
    assert model["PrimaryContainer"]["ModelDataUrl"] == job["model_artifact"]
    assert model["PrimaryContainer"]["Image"] == job["image_uri"]
    assert model["ExecutionRoleArn"] == ROLE
    variant, = sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"]
    assert variant["ModelName"] == name
    assert variant["InstanceType"] == "ml.m4.xlarge" and variant["InitialInstanceCount"] == 1
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    assert _record()["endpoint"] == endpoint and endpoint["status"] == "InService"

    with pytest.raises(FmprepError, match="already deployed"):
        sagemaker.deploy(OUTPUT, ROLE, poll_seconds=0, echo=_quiet)

    # invoke_endpoint: moto answers from its queue and keeps what it received per endpoint.
    answer = {"predictions": [{"score": 4.25}]}
    requests.post(f"{moto_server}/moto-api/static/sagemaker/endpoint-results", timeout=10,
                  json={"results": [{"Body": json.dumps(answer),
                                     "ContentType": "application/json"}]})
    body = sparse_json_body([0, 3], [1, 6, F - 1], [1.0, 1.0, 0.5], F)
    assert sagemaker.predict(name, body) == answer
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    # The threaded server shares this process, so its backend shows what arrived over the wire.
    # moto files invocations under endpoint None (it drops the name from the URL path).
    backend = sagemakerruntime_backends["123456789012"]["us-east-1"]
    sent, = [json.loads(base64.b64decode(k)) for per_endpoint in backend.results.values()
             for k in per_endpoint]
    assert json.loads(sent["Body"]) == {"instances": [{"data": {"features": {
        "keys": [1, 6, F - 1], "shape": [F], "values": [1.0, 1.0, 0.5]}}}]}
    assert sent["Accept"] == "application/json"

    deleted = sagemaker.undeploy(OUTPUT, echo=_quiet)
    assert deleted == [("endpoint", name), ("endpoint_config", name), ("model", name)]
    assert _all(sm) == ([], [], [])
    assert "endpoint" not in _record() and _record()["training_job"] == job
    with pytest.raises(FmprepError, match="nothing to undeploy"):
        sagemaker.undeploy(OUTPUT, echo=_quiet)


def test_deploy_cleans_up_when_a_later_step_fails(output, sm):
    _train()
    # moto validates the instance type in create_endpoint_config: step 2 of 3 fails over the wire.
    with pytest.raises(FmprepError, match="create_endpoint_config failed"):
        sagemaker.deploy(OUTPUT, ROLE, instance_type="ml.bogus.xlarge", poll_seconds=0,
                         echo=_quiet)
    assert _all(sm) == ([], [], [])
    assert "endpoint" not in _record()


def test_deploy_cleanup_keeps_what_it_did_not_create(output, sm):
    _train()
    sm.create_model(ModelName="other", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "x", "ModelDataUrl": "s3://fmprep-test/m.tar.gz"})
    with pytest.raises(FmprepError):
        sagemaker.deploy(OUTPUT, ROLE, name="mine", instance_type="ml.bogus.xlarge",
                         poll_seconds=0, echo=_quiet)
    assert _all(sm) == (["other"], [], [])


def test_deploy_needs_a_trained_model(output):
    with pytest.raises(FmprepError, match="run train"):
        sagemaker.deploy(OUTPUT, ROLE, poll_seconds=0, echo=_quiet)


def test_undeploy_by_name_skips_what_is_gone(output, sm):
    _train()
    endpoint = sagemaker.deploy(OUTPUT, ROLE, name="ep1", poll_seconds=0, echo=_quiet)
    sm.delete_endpoint(EndpointName="ep1")  # deleted behind our back
    assert sagemaker.undeploy(OUTPUT, name=endpoint["name"], echo=_quiet) == \
        [("endpoint_config", "ep1"), ("model", "ep1")]
    assert _all(sm) == ([], [], [])


def test_predict_refuses_bodies_over_the_cap(moto_server):
    with pytest.raises(FmprepError, match="6291456"):
        sagemaker.predict("any", b" " * (config.INVOKE_MAX_BYTES + 1))
