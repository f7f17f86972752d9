"""fmprep against the reference notebook workflow and the machine's floor, at several sizes.

For each size in ``--rows`` the generated file ``DIR/reviews_<rows>.tsv.gz`` is made if missing
(the same name bench_data.py uses), then each tool runs in its own child process, one after
the other, so that wall time and peak memory are per run:

==============  ==============================================================================
floor           benchmarks/floor.py: ISA-L / zlib decompression alone, and ISA-L + Arrow parse
                of the used columns with fmprep's parse options (the single-thread run is the
                floor that ``ratio to floor`` divides by)
reference       benchmarks/reference_workflow.py: the pandas notebook (docs/design.md §2)
threads         ``python -m fmprep data --force --scheduler threads``
local           the same with ``--scheduler local`` (a LocalCluster, one process per core)
dask-1w/dask-2w the same against ``dask scheduler`` + ``dask worker --nworkers 1|2 --nthreads 1``
                on 127.0.0.1 (benchmarks/dask_cluster_run.py), cluster start-up not timed
==============  ==============================================================================

Peak memory is sampled every 50 ms over the child's whole process tree (bench_data.py's
sampler): ``total`` is the largest sum over the tree, ``largest`` the largest single process.
fmprep's per-stage times are the ``seconds`` its stage loop records in each manifest. The reference's
wall time leaves out what it spends outside the workflow (a failed first read, diagnostics).

Prints one Markdown table and the goals (reported, not asserted): fmprep >= 5x faster than the
reference at the largest size, within 2x of the floor there, and peak memory flat as rows grow.
Writes everything as JSON to ``--out``. Timings on a shared 2-core machine are noisy: compare
rows of one run, not runs of different days.

Usage::

    python benchmarks/bench_scale.py [--rows 100000,1000000,4000000] [--quick]
        [--skip-reference-above N] [--tools floor,reference,duckdb,threads,local,dask-1w,dask-2w]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_data import peak_rss_of_tree, stage_manifests  # noqa: E402  (not a package)

TOOLS = ("floor", "reference", "duckdb", "threads", "local", "dask-1w", "dask-2w")
FMPREP_TOOLS = ("threads", "local", "dask-1w", "dask-2w")
LABELS = {"floor": "floor (1 thread)", "reference": "reference (pandas)",
          "duckdb": "DuckDB SQL prep (2 threads)",
          "threads": "fmprep threads", "local": "fmprep local (2 proc)",
          "dask-1w": "fmprep dask 1 worker", "dask-2w": "fmprep dask 2 workers"}
DEFAULT_ROWS = "100000,1000000,4000000"
QUICK_ROWS = "20000,100000"
GOAL_SPEEDUP = 5.0
GOAL_DUCKDB = 1.0  # make data's wall time / the DuckDB prep's, at most
GOAL_FLOOR_RATIO = 3.0  # issue 15: make data within 3x the floor
GOAL_FLAT = 1.25  # peak at the largest size / peak at the next size down, at most
GOAL_COST_FLAT = 0.15  # time per row at the largest size within ±15 % of that at FLAT_FROM
FLAT_FROM = 4_000_000
MIB = 2 ** 20


# --- child processes --------------------------------------------------------------------------
def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group led by ``proc`` until nothing is left in it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc.poll()  # reap the leader first: a zombie would keep the group alive
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_child(cmd: list[str], log_path: str, timeout: float) -> dict:
    """Run ``cmd`` in its own process group; measure wall time and peak RSS of its tree.

    Parameters
    ----------
    cmd : list of str
        The command.
    log_path : str
        Its stderr goes here.
    timeout : float
        Seconds before the whole group is killed.

    Returns
    -------
    dict
        ``wall_s``, ``returncode`` (or ``"timeout"``), ``stdout`` (text), ``stderr`` (text),
        ``peak_total_mib`` and ``peak_largest_mib``.
    """
    env = dict(os.environ, SAGEMAKER_SUPPRESS_V2_WARNING="1", PYTHONUNBUFFERED="1")
    env.pop("DASK_SCHEDULER_ADDRESS", None)  # every fmprep run names its scheduler
    peak, stop = {}, threading.Event()
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env,
                                start_new_session=True)
        watcher = threading.Thread(target=peak_rss_of_tree, args=(proc.pid, stop, peak),
                                   daemon=True)
        watcher.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            out, code = b"", "timeout"
        finally:
            wall = time.perf_counter() - t0
            stop.set()
            _kill_group(proc)
            watcher.join(timeout=5)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        err = f.read()
    return {"wall_s": wall, "returncode": code, "stdout": out.decode("utf-8", "replace"),
            "stderr": err, "peak_total_mib": peak["total"] / MIB if peak else None,
            "peak_largest_mib": peak["largest"] / MIB if peak else None}


def _rounded(obj):
    """Floats to 3 decimals, recursively, for a readable JSON file."""
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _fmprep_figures(work: str, output: str) -> dict:
    """Per-stage seconds and row counts from the manifests fmprep's stage loop wrote."""
    found = stage_manifests(work, output)
    stages = {k: m["seconds"] for k, m in found.items() if "seconds" in m}
    counts = {}
    if "ingest" in found:
        t = found["ingest"]["totals"]
        counts["rows_read"], counts["rows_rejected"] = t["rows_read"], t["rows_rejected"]
    if "prepare" in found:
        m = found["prepare"]
        counts.update(users=m["num_users"], items=m["num_items"],
                      train_rows=m["counts"]["train_rows"], test_rows=m["counts"]["test_rows"])
    return {"stages": stages, "counts": counts}


def _tail(text: str, n: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


# --- one size ---------------------------------------------------------------------------------
def _generate(path: str, rows: int, seed: int) -> str:
    if not os.path.exists(path):
        print(f"[bench] generating {path}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "fmprep", "-q", "sample", "--rows", str(rows),
                        "--seed", str(seed), "--out", path + ".tmp.gz"], check=True)
        os.replace(path + ".tmp.gz", path)
    return path


def ensure_source(directory: str, rows: int, seed: int,
                  rows_per_file: int | None = None) -> tuple[str, list[str]]:
    """The generated source for ``rows``, made once and kept: ``(SOURCE, its files)``.

    Up to ``rows_per_file`` rows, one file; beyond, files of ``rows_per_file`` rows (seeds
    ``seed``, ``seed + 1``, …; shared between sizes) linked into one folder per size, and
    SOURCE is that folder's glob: several files, as the largest categories come.
    """
    if not rows_per_file or rows <= rows_per_file:
        # Seed 42 files share bench_data.py's names, so either script reuses the other's file.
        suffix = "" if seed == 42 else f"_seed{seed}"
        path = _generate(os.path.join(directory, f"reviews_{rows}{suffix}.tsv.gz"), rows, seed)
        return path, [path]
    n_files = -(-rows // rows_per_file)
    folder = os.path.join(directory, f"reviews_{rows}_in_{n_files}_files_seed{seed}")
    os.makedirs(folder, exist_ok=True)
    files = []
    for i in range(n_files):
        size = min(rows_per_file, rows - i * rows_per_file)
        shared = _generate(os.path.join(directory, "files",
                                        f"reviews_{size}_seed{seed + i}.tsv.gz"), size, seed + i)
        link = os.path.join(folder, f"part-{i:03d}.tsv.gz")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(shared), link)
        files.append(link)
    return os.path.join(folder, "*.tsv.gz"), files


def run_tool(tool: str, source: str, rows: int, scratch: str, timeout: float,
             files: list[str] | None = None, memory_limit: str | None = None) -> dict:
    """Run one tool on ``source`` (whose ``files`` the floor reads) and return its result row
    (see :func:`main`); ``memory_limit`` caps each worker of the dask-Nw tools."""
    work, output = os.path.join(scratch, "work"), os.path.join(scratch, "output")
    fmprep = [sys.executable, "-m", "fmprep", "data", "--source", source, "--work", work,
              "--output", output, "--force"]
    cluster_dir = os.path.join(scratch, "cluster")
    if tool == "floor":
        cmd = [sys.executable, os.path.join(HERE, "floor.py"), *(files or [source]), "--json"]
        if files and len(files) > 1:  # only the 1-thread floor: the others cost minutes here
            cmd += ["--skip-zlib", "--skip-threads"]
    elif tool == "duckdb":
        cmd = [sys.executable, os.path.join(HERE, "duckdb_prep.py"), source, "--out",
               os.path.join(scratch, "duckdb"), "--threads", str(os.cpu_count() or 1), "--json"]
    elif tool == "reference":
        cmd = [sys.executable, os.path.join(HERE, "reference_workflow.py"), source, "--out",
               os.path.join(scratch, "reference"), "--rows-in-file", str(rows), "--json"]
    elif tool in ("threads", "local"):
        cmd = fmprep + ["--scheduler", tool]
    else:
        workers = tool.split("-")[1].rstrip("w")
        cmd = [sys.executable, os.path.join(HERE, "dask_cluster_run.py"), "--workers", workers,
               "--dir", cluster_dir, "--timeout", str(timeout)]
        if memory_limit:
            cmd += ["--memory-limit", memory_limit]
        cmd += ["--"] + fmprep + [
               "--scheduler", os.path.join(cluster_dir, "scheduler.json")]
    res = run_child(cmd, os.path.join(scratch, f"{tool}.log"), timeout + 120)
    row = {"rows": rows, "tool": tool, "label": LABELS[tool], "ok": res["returncode"] == 0,
           "wall_s": res["wall_s"], "stages": {}, "peak_total_mib": res["peak_total_mib"],
           "peak_largest_mib": res["peak_largest_mib"], "process_wall_s": res["wall_s"],
           "details": {}, "command": cmd}
    report = _last_json(res["stdout"])
    if not row["ok"]:
        row["error"] = f"exit status {res['returncode']}: {_tail(res['stderr'])}"
    elif report is None and tool in ("floor", "reference", "duckdb", "dask-1w", "dask-2w"):
        row["ok"], row["error"] = False, f"no JSON report on stdout: {_tail(res['stderr'])}"
    if tool == "floor" and report:
        row["wall_s"] = report["floor_s"]
        row["stages"] = {k: v["seconds"] for k, v in report["stages"].items()}
        row["details"] = report
    elif tool == "duckdb" and report:
        # Process wall time, as for make data: interpreter, imports and all.
        row["stages"] = report["stages"]
        row["details"] = {k: report[k] for k in ("users", "items", "train_rows", "test_rows")}
    elif tool == "reference" and report:
        # The failed first read and the diagnostics are not the workflow: leave them out.
        row["wall_s"] = res["wall_s"] - report["excluded_s"]
        row["stages"] = report["stages"]
        row["details"] = {k: v for k, v in report.items() if k not in ("stages", "tool")}
    elif tool in FMPREP_TOOLS:
        parsed = _fmprep_figures(work, output)
        row["stages"], row["details"] = parsed["stages"], parsed["counts"]
        if tool.startswith("dask-") and report:
            row["wall_s"] = report["wall_s"]  # the fmprep command, without cluster start-up
            row["details"]["cluster_startup_s"] = report["startup_s"]
            row["details"]["peak_mib"] = report["peak_mib"]  # client, scheduler, each worker
    row["rows_per_s"] = rows / row["wall_s"] if row["ok"] and row["wall_s"] > 0 else None
    row["s_per_million_rows"] = row["wall_s"] / (rows / 1e6) if row["ok"] else None
    # Memory per worker: the largest worker process of a cluster, else the largest process.
    workers = (row["details"].get("peak_mib") or {}).get("workers") if tool.startswith(
        "dask-") else None
    row["peak_worker_mib"] = max(workers) if workers else res["peak_largest_mib"]
    row["files"] = len(files or [source])
    if memory_limit and tool.startswith("dask-"):
        row["label"] += f", {memory_limit} each"
    if tool != "floor":
        # The stages' own time, without interpreter start, imports and Dask set-up.
        row["stages_total_s"] = round(sum(row["stages"].values()), 3)
    return row


# --- the table and the goals ------------------------------------------------------------------
STAGE_SHORT = {"decompress_isal": "isal", "decompress_zlib": "zlib", "parse_1thread": "parse",
               "parse_threads": "parse-mt", "filter_ids": "filter+ids"}


def _compare(rows: list[dict]) -> None:
    """Add speedup vs the reference and ratio to the floor, size by size."""
    by = {(r["rows"], r["tool"]): r for r in rows if r["ok"]}
    for r in rows:
        ref, floor = by.get((r["rows"], "reference")), by.get((r["rows"], "floor"))
        r["speedup_vs_reference"] = (ref["wall_s"] / r["wall_s"]
                                     if r["ok"] and ref and r["wall_s"] > 0 else None)
        r["ratio_to_floor"] = (r["wall_s"] / floor["wall_s"]
                               if r["ok"] and floor and floor["wall_s"] > 0 else None)
        duck = by.get((r["rows"], "duckdb"))
        r["ratio_to_duckdb"] = (r["wall_s"] / duck["wall_s"]
                                if r["ok"] and duck and duck["wall_s"] > 0 else None)


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "–" if v is None else format(v, spec) + suffix


def markdown_table(rows: list[dict]) -> str:
    """One Markdown table of every run."""
    head = ("| rows (files) | tool | wall s | s / M rows | per-stage s "
            "| peak MiB (tree / per worker) | speedup vs reference | ratio to floor "
            "| ratio to DuckDB |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        stages = " · ".join(f"{STAGE_SHORT.get(k, k)} {v:.2f}" for k, v in r["stages"].items())
        if not r["ok"]:
            stages = f"FAILED ({r.get('error', '')[:80]})"
        best = f" (best of {len(r['walls'])})" if len(r.get("walls", [])) > 1 else ""
        lines.append(
            f"| {r['rows']:,} ({r.get('files', 1)}) | {r['label']} "
            f"| {_fmt(r['wall_s'] if r['ok'] else None, '.2f')}{best} "
            f"| {_fmt(r.get('s_per_million_rows'), '.2f')} "
            f"| {stages} | {_fmt(r['peak_total_mib'], ',.0f')} / "
            f"{_fmt(r.get('peak_worker_mib'), ',.0f')} "
            f"| {_fmt(r['speedup_vs_reference'], '.1f', '×')} "
            f"| {_fmt(r['ratio_to_floor'], '.1f', '×')} "
            f"| {_fmt(r.get('ratio_to_duckdb'), '.2f', '×')} |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> dict:
    """Each goal per fmprep variant, measured at the largest size where it can be."""
    ok = [r for r in rows if r["ok"]]
    out = {"speedup_vs_reference": [], "ratio_to_floor": [], "ratio_to_duckdb": [],
           "peak_memory_flat": [], "cost_per_row_flat": [], "two_workers_speedup": []}
    for tool in FMPREP_TOOLS:
        mine = sorted((r for r in ok if r["tool"] == tool), key=lambda r: r["rows"])
        with_ref = [r for r in mine if r["speedup_vs_reference"] is not None]
        if with_ref:
            r = with_ref[-1]
            out["speedup_vs_reference"].append({
                "tool": tool, "rows": r["rows"], "value": round(r["speedup_vs_reference"], 2),
                "goal": f">= {GOAL_SPEEDUP}x", "met": r["speedup_vs_reference"] >= GOAL_SPEEDUP})
        # At every size: issue 15's check is at 4 M rows, not only at the largest.
        for r in (r for r in mine if r.get("ratio_to_duckdb") is not None):
            out["ratio_to_duckdb"].append({
                "tool": tool, "rows": r["rows"], "value": round(r["ratio_to_duckdb"], 2),
                "goal": f"<= {GOAL_DUCKDB}x", "met": r["ratio_to_duckdb"] <= GOAL_DUCKDB})
        with_floor = [r for r in mine if r["ratio_to_floor"] is not None]
        if with_floor:
            r = with_floor[-1]
            floor_s = r["wall_s"] / r["ratio_to_floor"]
            out["ratio_to_floor"].append({
                "tool": tool, "rows": r["rows"], "value": round(r["ratio_to_floor"], 2),
                "stages_only": round(r["stages_total_s"] / floor_s, 2),
                "goal": f"<= {GOAL_FLOOR_RATIO}x", "met": r["ratio_to_floor"] <= GOAL_FLOOR_RATIO})
    for tool in FMPREP_TOOLS:
        # From the first size >= FLAT_FROM rows to the largest: time per row and memory per
        # worker should not grow with the data.
        mine = sorted((r for r in ok if r["tool"] == tool and r["rows"] >= FLAT_FROM),
                      key=lambda r: r["rows"])
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            cost = b["s_per_million_rows"] / a["s_per_million_rows"]
            memory = b["peak_worker_mib"] / a["peak_worker_mib"]
            out["cost_per_row_flat"].append({
                "tool": tool, "rows": [a["rows"], b["rows"]],
                "s_per_million_rows": [round(a["s_per_million_rows"], 3),
                                       round(b["s_per_million_rows"], 3)],
                "peak_worker_mib": [round(a["peak_worker_mib"]), round(b["peak_worker_mib"])],
                "value": round(cost, 3), "memory_growth": round(memory, 3),
                "goal": f"within ±{GOAL_COST_FLAT:.0%} per row, memory ≤ {GOAL_FLAT}x",
                "met": abs(cost - 1) <= GOAL_COST_FLAT and memory <= GOAL_FLAT})
    by = {(r["rows"], r["tool"]): r for r in ok}
    for rows in sorted({r["rows"] for r in ok}):
        one, two = by.get((rows, "dask-1w")), by.get((rows, "dask-2w"))
        if one and two and one.get("files", 1) > 1:
            out["two_workers_speedup"].append({
                "rows": rows, "files": one["files"], "value": round(one["wall_s"] / two["wall_s"], 2),
                "wall_s": [round(one["wall_s"], 2), round(two["wall_s"], 2)]})
    for tool in ("reference",) + FMPREP_TOOLS:
        mine = sorted((r for r in ok if r["tool"] == tool), key=lambda r: r["rows"])
        if len(mine) >= 2:
            a, b = mine[-2], mine[-1]
            if not (a["peak_total_mib"] and b["peak_total_mib"]):
                continue
            growth = b["peak_total_mib"] / a["peak_total_mib"]
            slope = (b["peak_total_mib"] - a["peak_total_mib"]) / ((b["rows"] - a["rows"]) / 1e6)
            out["peak_memory_flat"].append({
                "tool": tool, "rows": [a["rows"], b["rows"]],
                "peak_mib": [round(a["peak_total_mib"]), round(b["peak_total_mib"])],
                "value": round(growth, 2),
                "mib_per_million_rows": round(slope, 1), "goal": f"<= {GOAL_FLAT}x",
                "met": growth <= GOAL_FLAT})
    return out


def goals_text(g: dict) -> str:
    """The goals as Markdown bullet lines."""
    def verdict(x):
        return "met" if x["met"] else "NOT met"

    lines = []
    for x in g["speedup_vs_reference"]:
        lines.append(f"- {LABELS[x['tool']]}: {x['value']:.1f}× faster than the reference at "
                     f"{x['rows']:,} rows (goal ≥ {GOAL_SPEEDUP:g}×): {verdict(x)}")
    for x in g["ratio_to_duckdb"]:
        lines.append(f"- {LABELS[x['tool']]}: {x['value']:.2f}× the DuckDB SQL prep's wall time "
                     f"at {x['rows']:,} rows (goal ≤ {GOAL_DUCKDB:g}×): {verdict(x)}")
    for x in g["ratio_to_floor"]:
        lines.append(f"- {LABELS[x['tool']]}: {x['value']:.1f}× the single-thread decompress+"
                     f"parse floor at {x['rows']:,} rows ({x['stages_only']:.1f}× counting its "
                     f"stages only; goal ≤ {GOAL_FLOOR_RATIO:g}×): {verdict(x)}")
    for x in g["cost_per_row_flat"]:
        lines.append(f"- {LABELS[x['tool']]}: {x['s_per_million_rows'][0]:.2f} → "
                     f"{x['s_per_million_rows'][1]:.2f} s per million rows from "
                     f"{x['rows'][0]:,} to {x['rows'][1]:,} rows ({x['value']:.2f}×), peak per "
                     f"worker {x['peak_worker_mib'][0]:,} → {x['peak_worker_mib'][1]:,} MiB "
                     f"({x['memory_growth']:.2f}×; goal: {x['goal']}): {verdict(x)}")
    for x in g["two_workers_speedup"]:
        lines.append(f"- {x['rows']:,} rows in {x['files']} files: 2 workers "
                     f"{x['value']:.2f}× as fast as 1 ({x['wall_s'][0]:.1f} s → "
                     f"{x['wall_s'][1]:.1f} s)")
    for x in g["peak_memory_flat"]:
        lines.append(f"- {LABELS[x['tool']]}: peak {x['peak_mib'][0]:,} → {x['peak_mib'][1]:,} "
                     f"MiB from {x['rows'][0]:,} to {x['rows'][1]:,} rows ({x['value']}×, "
                     f"{x['mib_per_million_rows']:+,.0f} MiB per M rows; flat = ≤ "
                     f"{GOAL_FLAT:g}×): {verdict(x)}")
    return "\n".join(lines)


def notes_text(rows: list[dict]) -> str:
    """What the reference lost to quote handling, next to what fmprep rejected."""
    lines = []
    fm = {r["rows"]: r for r in rows if r["tool"] == "threads" and r["ok"]}
    for r in rows:
        if r["tool"] != "reference" or not r["ok"]:
            continue
        d = r["details"]
        text = (f"- {r['rows']:,} rows: pandas (quoting {d['quoting']}) kept "
                f"{d['rows_kept_by_pandas']:,}, lost {d['rows_lost']:,} ({d['rows_lost_pct']} %), "
                f"{d['rows_merged']:,} kept rows hold merged lines, {d['rows_unusable']:,} "
                f"unusable; {d['users']:,} users / {d['items']:,} items")
        if d.get("read_error"):
            text += f"; default quoting raised: {d['read_error']}"
        f = fm.get(r["rows"])
        if f and "rows_rejected" in f["details"]:
            c = f["details"]
            text += (f". fmprep: {c['rows_rejected']:,} rejected (counted), "
                     f"{c.get('users', 0):,} users / {c.get('items', 0):,} items")
        lines.append(text)
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------
def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1000:
        raise SystemExit(f"--rows must be a comma-separated list of sizes >= 1000, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=DEFAULT_ROWS,
                        help="comma-separated file sizes in rows (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: --rows {QUICK_ROWS}")
    parser.add_argument("--dir", default="data/bench",
                        help="generated files and scratch space (default %(default)s)")
    parser.add_argument("--out", default=None,
                        help="JSON results (default DIR/results.json)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--skip-reference-above", type=int, default=None, metavar="N",
                        help="do not run the reference on files of more than N rows "
                             "(default: run it at every size)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument("--rows-per-file", type=int, default=5_000_000, metavar="N",
                        help="larger sizes come as several files of N rows (default %(default)s)")
    parser.add_argument("--memory-limit", default=None, metavar="SIZE",
                        help="memory limit of each worker of dask-1w / dask-2w, e.g. 1GiB")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="run every tool but floor and reference K times and keep the "
                             "fastest run, at sizes up to --repeat-up-to (default 1)")
    parser.add_argument("--repeat-up-to", type=int, default=4_000_000, metavar="ROWS")
    parser.add_argument("--max-rows", action="append", default=[], metavar="TOOL=ROWS",
                        help="run TOOL only on files of at most ROWS rows (repeatable), "
                             "e.g. dask-1w=10000000")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds one run may take before it is killed (default 3600)")
    args = parser.parse_args(argv)
    sizes = _sizes(QUICK_ROWS if args.quick else args.rows)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := sorted(set(tools) - set(TOOLS)):
        parser.error(f"unknown tools {unknown}; choose from {', '.join(TOOLS)}")
    tools = [t for t in TOOLS if t in tools]  # floor first: it also warms the page cache
    max_rows = {}
    for item in args.max_rows:
        tool, _, rows = item.partition("=")
        if tool not in TOOLS or not rows.isdigit():
            parser.error(f"--max-rows wants TOOL=ROWS with TOOL one of {', '.join(TOOLS)}, "
                         f"got {item!r}")
        max_rows[tool] = int(rows)
    out_path = args.out or os.path.join(args.dir, "results.json")

    results = []
    for rows in sizes:
        source, files = ensure_source(args.dir, rows, args.seed, args.rows_per_file)
        scratch = os.path.join(args.dir, "scale", str(rows))
        os.makedirs(scratch, exist_ok=True)
        for tool in tools:
            if (tool == "reference" and args.skip_reference_above is not None
                    and rows > args.skip_reference_above) or rows > max_rows.get(tool, rows):
                continue
            print(f"[bench] {rows:,} rows: {LABELS[tool]} …", file=sys.stderr, flush=True)
            times = (args.repeat if rows <= args.repeat_up_to
                     and tool not in ("floor", "reference") else 1)
            runs = [run_tool(tool, source, rows, scratch, args.timeout, files,
                             args.memory_limit) for _ in range(max(1, times))]
            good = [r for r in runs if r["ok"]]
            row = min(good, key=lambda r: r["wall_s"]) if good else runs[-1]
            row["walls"] = [round(r["wall_s"], 3) for r in good]
            status = f"{row['wall_s']:.2f} s" if row["ok"] else row.get("error", "failed")
            print(f"[bench]   {status}, peak {_fmt(row['peak_total_mib'], ',.0f')} MiB",
                  file=sys.stderr, flush=True)
            results.append(row)

    _compare(results)
    g = goals(results)
    table, goal_lines, notes = markdown_table(results), goals_text(g), notes_text(results)
    mem = psutil.virtual_memory().total
    print(f"\n{table}\n\nGoals (reported, not asserted):\n{goal_lines}")
    if notes:
        print(f"\nReference vs fmprep on the same files:\n{notes}")
    doc = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(mem / 2 ** 30, 1),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "settings": {"rows": sizes, "tools": tools, "dir": args.dir, "seed": args.seed,
                     "skip_reference_above": args.skip_reference_above,
                     "rows_per_file": args.rows_per_file, "memory_limit": args.memory_limit,
                     "repeat": args.repeat, "repeat_up_to": args.repeat_up_to,
                     "max_rows": max_rows},
        "runs": results, "goals": g, "table_markdown": table,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(_rounded(doc), f, indent=1, default=str)
    print(f"\nresults: {out_path}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # run_child's finally has already killed the running child's process group.
        print("\n[bench] interrupted", file=sys.stderr)
        sys.exit(130)
