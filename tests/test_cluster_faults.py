"""Real multi-process clusters and faults: worker killed mid-run, whole run killed and rerun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

from fmprep import pipeline
from fmprep.config import PrepSettings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = dict(train_shards=4, part_size="1MB")


def start_cluster(tmp_path, n_workers=2, memory_limit="1GiB"):
    """A `dask scheduler` and `dask worker` processes on 127.0.0.1, each with its own dir."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    for i in range(n_workers):
        local = tmp_path / f"worker{i}"
        local.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(sched_file),
             "--nthreads", "1", "--memory-limit", memory_limit, "--local-directory", str(local),
             "--host", "127.0.0.1", "--no-dashboard"], cwd=local,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    with Client(scheduler_file=str(sched_file), timeout="60s") as client:
        client.wait_for_workers(n_workers, timeout=90)
    return str(sched_file), procs


def stop(procs):
    for p in procs[::-1]:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def local_run(tmp_path, source, name="local"):
    out = tmp_path / name
    manifest = pipeline.run_data(source, str(out / "work"), str(out / "output"),
                                 PrepSettings(**SETTINGS))
    return manifest, out / "output"


def shard_bytes(manifest, read):
    return {s["file"]: read(s["file"]) for ch in ("train", "test")
            for s in manifest["channels"][ch]["shards"]}


@pytest.mark.cluster
def test_make_data_on_scheduler_and_worker_processes_with_s3(tmp_path, s3, sample_file):
    source, _ = sample_file
    want, want_dir = local_run(tmp_path, source)
    s3.put(source, "fmprep-test/in/reviews.tsv.gz")
    sched_file, procs = start_cluster(tmp_path)
    try:
        env = {**os.environ, "PY": sys.executable}
        done = subprocess.run(
            ["make", "-C", str(ROOT), "data", "STAMP=", f"PY={sys.executable}",
             "SOURCE=s3://fmprep-test/in/*.tsv.gz", "WORK=s3://fmprep-test/work",
             "OUTPUT=s3://fmprep-test/out", f"SCHEDULER={sched_file}", "TRAIN_SHARDS=4",
             "PART_SIZE=1MB"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        # The dashboard link is printed, and it serves the dashboard (bokeh is installed).
        link = re.search(r"dashboard (http://127\.0\.0\.1:\d+/status)", done.stderr)
        assert link, done.stderr[-2000:]
        page = urllib.request.urlopen(link.group(1), timeout=30).read().decode("utf-8", "replace")
        assert "needs bokeh" not in page and "<html" in page.lower()
    finally:
        stop(procs)
    got = json.loads(s3.cat("fmprep-test/out/manifest.json"))
    assert got["counts"] == want["counts"] and got["feature_dim"] == want["feature_dim"]
    assert shard_bytes(got, lambda f: s3.cat(f"fmprep-test/out/{f}")) == \
        shard_bytes(want, lambda f: (want_dir / f).read_bytes())


@pytest.mark.cluster
def test_killing_a_worker_mid_run_still_gives_identical_output(tmp_path, sample_file):
    source, _ = sample_file
    want, want_dir = local_run(tmp_path, source)
    sched_file, procs = start_cluster(tmp_path)
    try:
        with Client(scheduler_file=sched_file) as client:
            result, errors = {}, []

            def run():
                try:
                    result["m"] = pipeline.run_data(source, str(tmp_path / "c" / "work"),
                                                    str(tmp_path / "c" / "output"),
                                                    PrepSettings(**SETTINGS))
                except Exception as err:  # surfaced below
                    errors.append(err)

            worker_pids = sorted(client.run(os.getpid).values())
            thread = threading.Thread(target=run)
            thread.start()
            # Kill one worker once the cluster is busy with prepare's tasks.
            deadline = time.time() + 60
            while not (tmp_path / "c" / "work" / "_deduped").exists() and time.time() < deadline:
                time.sleep(0.05)
            assert thread.is_alive(), "the run finished before the worker could be killed"
            os.kill(worker_pids[0], signal.SIGKILL)
            thread.join(timeout=240)
            assert not errors, errors
            assert sorted(client.run(os.getpid).values()) != worker_pids  # nanny restarted it
    finally:
        stop(procs)
    got = result["m"]
    assert got["counts"] == want["counts"]
    assert shard_bytes(got, lambda f: (tmp_path / "c" / "output" / f).read_bytes()) == \
        shard_bytes(want, lambda f: (want_dir / f).read_bytes())


def test_killing_the_whole_run_and_rerunning_gives_identical_output(tmp_path, sample_file):
    source, _ = sample_file
    want, want_dir = local_run(tmp_path, source)
    work, output = tmp_path / "k" / "work", tmp_path / "k" / "output"
    cmd = [sys.executable, "-m", "fmprep", "data", "--source", source, "--work", str(work),
           "--output", str(output), "--train-shards", "4", "--part-size", "1MB"]
    for stage in ("prepare:", "encode:"):
        proc = subprocess.Popen(cmd + ["--force"], stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.startswith(f"fmprep: {stage}"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=120)
        # A killed run never leaves a manifest pointing at a missing or partial shard.
        manifest_file = output / "manifest.json"
        if manifest_file.exists():
            m = json.loads(manifest_file.read_text())
            for ch in ("train", "test"):
                for s in m["channels"][ch]["shards"]:
                    assert (output / s["file"]).stat().st_size == s["bytes"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads((output / "manifest.json").read_text())
    assert got["counts"] == want["counts"]
    assert shard_bytes(got, lambda f: (output / f).read_bytes()) == \
        shard_bytes(want, lambda f: (want_dir / f).read_bytes())
    # No stale or partial shard next to the listed ones.
    listed = {s["file"] for ch in ("train", "test") for s in got["channels"][ch]["shards"]}
    on_disk = {str(p.relative_to(output)) for p in output.rglob("*.pbr")}
    assert on_disk == listed
    assert not list(output.rglob("*.tmp-*"))
