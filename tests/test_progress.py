"""Progress shows on a terminal, stays out of logs, and --quiet silences it."""

from __future__ import annotations

import os
import subprocess
import sys


def run_on_terminal(args):
    """Run fmprep with stderr on a pseudo-terminal; return what the terminal received."""
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fmprep", *args], stderr=follower,
                            stdout=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_terminal_not_in_logs_and_quiet(tmp_path, sample_file):
    source, _ = sample_file
    args = ["data", "--source", source, "--work", str(tmp_path / "w"), "--output",
            str(tmp_path / "o"), "--force", "--part-size", "300kB"]
    shown = run_on_terminal(args)
    assert "ingest: " in shown and "MiB (100%)" in shown

    logged = subprocess.run([sys.executable, "-m", "fmprep", *args], capture_output=True,
                            text=True, timeout=300)
    assert logged.returncode == 0
    assert "MiB (" not in logged.stderr and "Completed" not in logged.stderr
    assert "fmprep: prepare:" in logged.stderr

    quiet = run_on_terminal(["-q", *args])
    assert quiet.strip() == ""
