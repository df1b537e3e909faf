"""The same load on two versions of the code, rounds interleaved (A, B, A, B, ...) so that
the machine's drift hits both alike: the working tree against an earlier commit
(exported with ``git archive`` into a temporary directory, never checked out). Not one
of ``scripts/bench``'s standing benchmarks: it needs the commit to compare with.

    python -m benchmarks._before_after stress --before REV   # jobs service, heavy config
    python -m benchmarks._before_after demo --before REV     # demo service, mixed load
    python -m benchmarks._before_after observe --before REV  # cost of counting a request

``stress`` runs ``onewriter jobs stress --configs heavy`` (40 workers, 2,000 jobs, two
HTTP worker processes); ``demo`` starts ``onewriter demo serve --workers 2`` and runs the
load client (half reads, half writes, 32 connections) for ``--seconds``; ``observe``
times the per-request counting of both services' metrics (in a process set up as their
workers are, with a multiprocess directory). Each run is a
fresh process with ``PYTHONPATH`` set to its tree. Writes the "before-after-KIND"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from onewriter.cli.tables import format_table

from . import _cli, _report

ROOT = Path(__file__).resolve().parent.parent

#: Run in the tree under test; prints one JSON line of figures. Uses only APIs that both
#: versions have (the demo launcher and the load client).
_DEMO = """
import json, sys, tempfile
from onewriter.demo.launch import ServiceProcess
from onewriter.load import LoadPlan, run_load
seconds = float(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp, ServiceProcess(tmp + "/d.db", workers=2) as svc:
    run_load(LoadPlan(url=svc.url, reads=100, writes=100, connections=8),
             progress=False, handle_signals=False)
    s = run_load(LoadPlan(url=svc.url, reads=1, writes=1, connections=32, duration=seconds),
                 progress=False, handle_signals=False)
print("FIGURES " + json.dumps({"req/s": s["total"]["throughput"],
      "p99 ms": s["total"]["latency_ms"]["p99"], "errors": s["total"]["errors"]}))
"""


_OBSERVE = """
import json, time
from onewriter.demo.metrics import RequestCounts
from onewriter.jobs.http.metrics import HttpMetrics

def per_call_us(fn):
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for i in range(20000):
            fn(i)
        best = min(best, (time.perf_counter() - started) / 20000 * 1e6)
    return best

demo, jobs = RequestCounts(), HttpMetrics()
routes = ["/posts", "/posts/{id}", "/healthz"]
print("FIGURES " + json.dumps({
    "demo µs": per_call_us(lambda i: demo.add("GET", routes[i % 3], 200, 0.001)),
    "jobs µs": per_call_us(lambda i: jobs.observe(routes[i % 3], 200, 0.001)),
}))
"""


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_once(kind: str, tree: Path, seconds: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if kind == "observe":
        scratch = tempfile.mkdtemp(prefix="ow-observe-")
        env["PROMETHEUS_MULTIPROC_DIR"] = scratch
        try:
            out = subprocess.run(
                [sys.executable, "-c", _OBSERVE],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            ).stdout
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return _figures(out)
    if kind == "stress":
        command = [sys.executable, "-m", "onewriter.cli", "jobs", "stress"]
        command += ["--configs", "heavy", "--json"]
    else:
        command = [sys.executable, "-c", _DEMO, str(seconds)]
    out = subprocess.run(
        command, cwd=tree, env=env, check=True, capture_output=True, text=True, timeout=600
    ).stdout
    return _figures(out)


def _figures(out: str) -> dict[str, float]:
    for line in out.splitlines():
        if line.startswith("RESULTS "):
            [result] = json.loads(line[len("RESULTS ") :])
            return {"jobs/s": result["throughput"], "p99 ms": result["p99_ms"]}
        if line.startswith("FIGURES "):
            figures: dict[str, float] = json.loads(line[len("FIGURES ") :])
            return figures
    raise RuntimeError(f"no figures in the output: {out[-500:]}")


def main() -> None:
    parser = _cli.parser("_before_after", __doc__)
    parser.add_argument("kind", choices=["stress", "demo", "observe"])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="demo load per run")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ow-before-") as tmp:
        trees = {"before": export(args.before, Path(tmp)), "after": ROOT}
        for round_ in range(args.rounds):
            for label, tree in trees.items():
                figures = run_once(args.kind, tree, args.seconds)
                print(f"round {round_ + 1} {label}: {figures}", file=sys.stderr, flush=True)
                runs[label].append(figures)
    keys = list(runs["before"][0])
    rows: list[list[Any]] = []
    for label, figures in runs.items():
        medians = [statistics.median(f[k] for f in figures) for k in keys]
        rows.append([label, *[f"{v:,.1f}" for v in medians]])
    main_key = keys[0]
    ratio = statistics.median(f[main_key] for f in runs["after"]) / statistics.median(
        f[main_key] for f in runs["before"]
    )
    rows.append(["after/before", f"{ratio:.2f}x", *["" for _ in keys[1:]]])
    table = format_table(["version", *keys], rows)
    print(table)
    rounds = "; ".join(
        f"{b[main_key]:,.2f} / {a[main_key]:,.2f}"
        for b, a in zip(runs["before"], runs["after"], strict=True)
    )
    what = {
        "stress": "the jobs service, the stress harness's heavy configuration",
        "demo": f"the demo service (2 workers), mixed load for {args.seconds:g} s",
        "observe": "counting one request in a worker process (best of 5 x 20,000 calls)",
    }[args.kind]
    lower = " (lower is better)" if args.kind == "observe" else ""
    body = (
        f"{what}; medians of {args.rounds} interleaved rounds, before = `{args.before}`; "
        f"load average {load:.1f} when it started (the machine is shared).\n"
        f"{main_key}{lower} per round (before / after): {rounds}.\n\n```\n{table}\n```\n"
    )
    command = shlex.join(["python", "-m", "benchmarks._before_after", *sys.argv[1:]])
    title = (
        "Before and after: "
        + {
            "stress": "jobs HTTP stress",
            "demo": "demo load",
            "observe": "metrics, cost per request",
        }[args.kind]
    )
    if not args.no_write:
        _report.update_section(f"before-after-{args.kind}", title, command, body)


if __name__ == "__main__":
    main()
