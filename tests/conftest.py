"""Shared fixtures: small review files, a moto S3 server on 127.0.0.1, Dask configuration."""

from __future__ import annotations

import gzip
import os
import socket

import pytest

from fmprep.config import TSV_COLUMNS

# Tests talk to loopback only; dummy credentials keep botocore from looking elsewhere.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # the v2 SDK is our test oracle


@pytest.fixture(scope="session", autouse=True)
def make_spelling():
    """Messages spell settings as make variables (``SOURCE=``), as under ``make test``.

    The suite's assertions are written in the Makefile's words, and they must hold however
    pytest is started: the Makefile exports FMPREP_SPELLING as ``make``, but ``pytest`` run
    directly would not, and then every in-process ``main()`` (which calls
    ``errors.use_spelling()``) and every ``python -m fmprep`` subprocess would spell
    ``--source``. So the environment variable is set here for the whole session, and the
    library's spelling reset to ``make``. Tests of the other spelling set it themselves
    (tests/test_spelling.py).
    """
    from fmprep import errors

    old = os.environ.get("FMPREP_SPELLING")
    os.environ["FMPREP_SPELLING"] = "make"
    errors.use_spelling("make")
    yield
    if old is None:
        os.environ.pop("FMPREP_SPELLING", None)
    else:
        os.environ["FMPREP_SPELLING"] = old


def review_line(customer, product, rating, date, review_id, title="A title", body="Fine."):
    """One TSV data line in the Amazon Customer Reviews layout."""
    fields = ["US", customer, review_id, product, "123", title, "Video", str(rating), "0", "0",
              "N", "Y", "Headline", body, date]
    return "\t".join(fields)


def write_tsv_gz(path, lines, header=True):
    """Write ``lines`` (already joined fields) as a gzip TSV with the standard header."""
    text = ("\t".join(TSV_COLUMNS) + "\n" if header else "") + "".join(l + "\n" for l in lines)
    with gzip.open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    return str(path)


@pytest.fixture(scope="session")
def sample_file(tmp_path_factory):
    """The generated sample (20 k rows, with faults), written once per session."""
    from fmprep.sample import generate_reviews

    path = tmp_path_factory.mktemp("sample") / "reviews.tsv.gz"
    summary = generate_reviews(str(path), rows=20_000, seed=7)
    return str(path), summary


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 / SageMaker protocol server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port())
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = old
    server.stop()


@pytest.fixture
def s3(moto_server):
    """Fresh moto state and a bucket named ``fmprep-test``; yields an s3fs filesystem."""
    import boto3
    import requests
    import s3fs

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="fmprep-test")
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server})
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
