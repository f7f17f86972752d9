"""Credentials never appear in logs, manifests or error messages."""

from __future__ import annotations

import os
import subprocess
import sys

KEY_ID = "AKIAFMPREPTESTKEY123"
SECRET = "fmprepSuperSecret/ValueThatMustNotLeak"


def run(args, endpoint):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run([sys.executable, "-m", "fmprep", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_no_credentials_in_logs_manifests_or_errors(s3, moto_server, sample_file):
    source, _ = sample_file
    s3.put(source, "fmprep-test/in/r.tsv.gz")
    ok = run(["data", "--source", "s3://fmprep-test/in/r.tsv.gz", "--work",
              "s3://fmprep-test/work", "--output", "s3://fmprep-test/out"], moto_server)
    assert ok.returncode == 0, ok.stderr[-2000:]
    failed = run(["data", "--source", "s3://fmprep-test/in/r.tsv.gz", "--work",
                  "s3://no-such-bucket/work", "--output", "s3://no-such-bucket/out"], moto_server)
    assert failed.returncode == 2 and "fmprep: error:" in failed.stderr
    missing = run(["data", "--source", "s3://no-such-bucket/x.tsv.gz"], moto_server)
    assert missing.returncode == 2
    texts = [ok.stdout, ok.stderr, failed.stdout, failed.stderr, missing.stderr]
    texts += [s3.cat(p).decode() for p in s3.find("fmprep-test") if p.endswith(".json")]
    texts += [s3.cat(p).decode("utf-8", "replace") for p in s3.find("fmprep-test")
              if p.endswith(".jsonl")]
    for text in texts:
        assert SECRET not in text and KEY_ID not in text


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1", **extra)
    return env


def test_missing_credentials_is_a_one_line_error():
    done = subprocess.run([sys.executable, "-m", "fmprep", "data", "--source",
                           "s3://some-bucket/reviews.tsv.gz"], env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("fmprep: error: no AWS credentials")
    assert "Traceback" not in done.stderr


def test_unreachable_endpoint_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fmprep", "data", "--source",
                           "s3://some-bucket/reviews.tsv.gz"],
                          env=_clean_env(AWS_ENDPOINT_URL="http://127.0.0.1:9",
                                         AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
                                         AWS_MAX_ATTEMPTS="1"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot reach http://127.0.0.1:9" in done.stderr and SECRET not in done.stderr
