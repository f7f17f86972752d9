"""S3 that stumbles does not stop a run (issue #11), and a run it does stop says why in one line.

``fmprep data`` runs as a subprocess with SOURCE, WORK and OUTPUT on the moto S3 server, seen
through ``tests/faultproxy.py`` on 127.0.0.1: 503 SlowDown / 500 InternalError answers, and an
outage (connections refused) mid-run. Also: commands keep botocore's and distributed's log
lines off stderr unless asked (-v, VERBOSE=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from faultproxy import FaultProxy
from fmprep import recordio, storage
from fmprep.errors import FmprepError

BUCKET = "fmprep-faults"
SOURCE = f"s3://{BUCKET}/raw/reviews.tsv.gz"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_deploy.py"


def fmprep(*args, endpoint: str, timeout: float = 300, **env):
    """``python -m fmprep …`` against ``endpoint``; the CompletedProcess and its seconds."""
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fmprep", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "AWS_ENDPOINT_URL": endpoint, **env})
    return done, time.monotonic() - t0


def data_args(prefix: str, *extra: str) -> list[str]:
    return ["data", "--source", SOURCE, "--work", f"s3://{BUCKET}/{prefix}/work",
            "--output", f"s3://{BUCKET}/{prefix}/out", "--train-shards", "2", *extra]


def shards(client, prefix: str) -> dict[str, bytes]:
    """Every shard of ``prefix``'s OUTPUT, by file name, read straight from moto."""
    body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/out/manifest.json")["Body"].read()
    manifest = json.loads(body)
    files = [s["file"] for ch in ("train", "test") for s in manifest["channels"][ch]["shards"]]
    return {f: client.get_object(Bucket=BUCKET, Key=f"{prefix}/out/{f}")["Body"].read()
            for f in files}


def only_fmprep_lines(stderr: str) -> list[str]:
    """The stderr lines that fmprep did not print itself (tracebacks, library logs)."""
    return [line for line in stderr.splitlines() if line and not line.startswith("fmprep: ")]


@pytest.fixture(scope="module")
def reference(moto_server, tmp_path_factory):
    """A bucket with the generated sample, and a fault-free run through the proxy.

    Yields the moto S3 client and the number of requests the fault-free run made.
    """
    import requests

    from fmprep.sample import generate_reviews

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    client = boto3.client("s3", endpoint_url=moto_server)
    client.create_bucket(Bucket=BUCKET)
    sample = tmp_path_factory.mktemp("faults") / "reviews.tsv.gz"
    generate_reviews(str(sample), rows=3000, seed=7)
    client.upload_file(str(sample), BUCKET, "raw/reviews.tsv.gz")
    with FaultProxy(moto_server) as proxy:
        done, _ = fmprep(*data_args("clean"), endpoint=proxy.url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert proxy.faults == 0 and proxy.requests > 20
    yield client, proxy.requests


@pytest.mark.slow
def test_throttling_errors_and_a_20s_outage_do_not_change_the_shards(reference):
    client, requests_made = reference
    outage = 20
    with FaultProxy(client.meta.endpoint_url, error_rate=0.2, down_after=requests_made // 2,
                    down_seconds=outage, seed=11) as proxy:
        done, seconds = fmprep(*data_args("faulty"), endpoint=proxy.url)
    assert done.returncode == 0, done.stderr[-3000:]
    # The faults happened: errors answered, and connections refused for the whole outage.
    assert proxy.faults > requests_made // 10 and proxy.refused >= 1 and seconds > outage
    # Nothing but fmprep's own lines: no tracebacks, no "Task exception was never retrieved".
    assert only_fmprep_lines(done.stderr) == []
    assert shards(client, "faulty") == shards(client, "clean")


@pytest.mark.slow
def test_an_outage_longer_than_the_budget_is_one_line_and_a_rerun_resumes(reference):
    client, requests_made = reference
    budget = {"FMPREP_S3_MAX_ATTEMPTS": "3"}  # ~3 s of tries instead of ~95 s
    with FaultProxy(client.meta.endpoint_url, down_after=requests_made * 3 // 4,
                    down_seconds=600, seed=3) as proxy:
        done, _ = fmprep(*data_args("outage"), "-q", endpoint=proxy.url, **budget)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmprep: error: cannot reach "), lines
    message = lines[0]
    for words in ("connection refused", "after 3 attempts", "transient",
                  "rerun the same command to resume", "stages already done are skipped",
                  "FMPREP_S3_MAX_ATTEMPTS"):
        assert words in message, message

    with FaultProxy(client.meta.endpoint_url) as proxy:
        rerun, _ = fmprep(*data_args("outage"), endpoint=proxy.url, **budget)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "up to date" in rerun.stderr  # a stage done before the outage was skipped
    assert shards(client, "outage") == shards(client, "clean")


def test_exhausted_throttling_names_the_code_and_attempts(reference):
    client, _ = reference
    with FaultProxy(client.meta.endpoint_url, error_rate=1.0, seed=5) as proxy:
        done, _ = fmprep(*data_args("throttled"), "-q", endpoint=proxy.url,
                         FMPREP_S3_MAX_ATTEMPTS="2", FMPREP_S3FS_RETRIES="1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "kept answering" in lines[0] and "after 2 attempts" in lines[0]
    assert "transient" in lines[0] and "rerun the same command to resume" in lines[0]
    assert "check the bucket name" not in lines[0]


def test_describe_storage_error_one_line_for_every_network_failure():
    import aiohttp
    from botocore.exceptions import ClientError, ReadTimeoutError

    def chained(outer, inner):
        try:
            try:
                raise inner
            except BaseException as e:
                raise outer from e
        except BaseException as e:
            return e

    def raised_in(package, exc):
        # As if raised inside a library: bare errors count only when the S3 stack raised them.
        try:
            exec(compile("raise exc", f"/site-packages/{package}/core.py", "exec"), {"exc": exc})
        except BaseException as e:
            return e

    payload = aiohttp.ClientPayloadError("Response payload is not completed:\n<ContentLengthError>")
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request "
                                  "rate."},
                        "ResponseMetadata": {"HTTPStatusCode": 503, "RetryAttempts": 13}},
                       "GetObject")
    cases = {
        "kept breaking off": chained(OSError("read failed"), payload),
        "503 SlowDown after 14 attempts": chained(OSError(16, "Please reduce"), slow),
        "did not answer within": ReadTimeoutError(endpoint_url="http://h/b/k?X-Amz-Signature=s"),
        "did not answer in time": chained(RuntimeError("x"), raised_in("s3fs", TimeoutError())),
        "connection reset by peer": raised_in("aiohttp", ConnectionResetError(104, "reset")),
        "kept answering 503": raised_in("s3fs", OSError(16, "Service Unavailable")),
        "connection to S3 failed (connection reset": aiohttp.ClientOSError(104, "reset"),
    }
    for expected, err in cases.items():
        message = storage.describe_storage_error(err)
        assert message is not None and expected in message, (expected, message)
        assert "\n" not in message and "transient" in message and "rerun" in message
        assert "X-Amz-Signature" not in message
    # Dask has timeouts and connections of its own: not called S3's.
    assert storage.describe_storage_error(chained(RuntimeError("x"), TimeoutError())) is None
    refused = ClientError({"Error": {"Code": "AccessDenied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    assert "refused the request (AccessDenied)" in storage.describe_storage_error(refused)


def test_retry_budget_reaches_s3fs_and_boto3(monkeypatch):
    from fmprep import retries

    monkeypatch.setenv("FMPREP_S3_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("FMPREP_S3FS_RETRIES", "4")
    fs, _ = storage.filesystem("s3://some-bucket/key")
    assert fs.retries == 4
    assert fs.config_kwargs["retries"] == {"mode": "standard", "total_max_attempts": 7}
    assert storage.open_file("s3://some-bucket/key").fs.retries == 4
    # The caller's own retry settings win.
    own, _ = storage.filesystem("s3://some-bucket/key",
                                {"config_kwargs": {"retries": {"max_attempts": 2}}})
    assert own.config_kwargs["retries"] == {"mode": "standard", "max_attempts": 2}
    assert retries.botocore_config().retries == {"mode": "standard", "total_max_attempts": 7}
    monkeypatch.setenv("FMPREP_S3_MAX_ATTEMPTS", "")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    assert retries.budget().max_attempts == 5
    monkeypatch.setenv("FMPREP_S3_RETRY_MODE", "sometimes")
    with pytest.raises(FmprepError, match="FMPREP_S3_RETRY_MODE=sometimes"):
        storage.filesystem("s3://some-bucket/key")


# --- quiet by default -----------------------------------------------------------------------------

def test_local_cluster_run_prints_no_library_lines(reference):
    client, _ = reference
    done, _ = fmprep(*data_args("local"), "--scheduler", "local",
                     endpoint=client.meta.endpoint_url, FMPREP_VERBOSE="")
    assert done.returncode == 0, done.stderr[-3000:]
    # Not every foreign line: distributed rightly warns of an event loop stalled on a busy box.
    chatter = [line for line in only_fmprep_lines(done.stderr)
               if "shuffle" in line.lower() or "botocore" in line or "Traceback" in line]
    assert chatter == []


def _train(endpoint: str, **env):
    role = "arn:aws:iam::123456789012:role/fmprep-sagemaker"
    return subprocess.run([sys.executable, str(SCRIPT), "train", "--backend", "sagemaker",
                           "--output", f"s3://{BUCKET}/sm", "--role", role, "--epochs", "1",
                           "--num-factors", "4", "--region", "us-east-1"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "AWS_ENDPOINT_URL": endpoint, **env})


def test_sagemaker_command_prints_botocore_lines_only_when_verbose(reference, moto_server):
    buf = recordio.encode_fm_rows([0, 1], [2, 3], [0.0, 1.0], [5.0, 3.0], 5)
    for f in ("train/part-00000.pbr", "test/part-00000.pbr"):
        storage.write_bytes_atomic(f"s3://{BUCKET}/sm/{f}", buf.tobytes())
    storage.write_json(f"s3://{BUCKET}/sm/manifest.json", {
        "feature_dim": 5, "num_users": 2, "num_items": 2,
        "channels": {ch: {"rows": 2, "shards": [{"file": f"{ch}/part-00000.pbr", "rows": 2}]}
                     for ch in ("train", "test")}})
    quiet = _train(moto_server, FMPREP_VERBOSE="")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "botocore" not in quiet.stderr and "Found credentials" not in quiet.stderr
    assert "distributed" not in quiet.stderr
    verbose = _train(moto_server, FMPREP_VERBOSE="1")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "botocore.credentials: Found credentials" in verbose.stderr


def test_only_network_errors_of_forgotten_request_tasks_are_silenced(caplog):
    import asyncio
    import gc

    import aiohttp

    storage.filesystem("s3://some-bucket/key")  # installs the asyncio log filter

    async def fail(exc):
        raise exc

    async def forget(exc):
        asyncio.get_running_loop().create_task(fail(exc))
        await asyncio.sleep(0.01)

    def logged(exc) -> bool:
        caplog.clear()
        asyncio.run(forget(exc))
        gc.collect()
        return any("never retrieved" in r.getMessage() for r in caplog.records)

    assert not logged(aiohttp.ClientOSError(104, "Connection reset by peer"))
    assert not logged(ConnectionResetError(104, "Connection reset by peer"))
    assert logged(ValueError("a bug"))
