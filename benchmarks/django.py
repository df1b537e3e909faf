"""The Django example under gunicorn: onewriter.django against the stock sqlite3 backend.

``examples/django/serve`` runs with 4 sync workers on a fresh file for each backend in
turn, all at ``synchronous=NORMAL`` in WAL mode:

- ``onewriter``: ``ENGINE: "onewriter.django"``;
- ``stock-immediate``: Django's sqlite3 backend, ``transaction_mode="IMMEDIATE"``;
- ``stock``: Django's sqlite3 backend with its defaults (deferred transactions).

Client processes (threads in each, one request in flight per thread) send a bounded
number of requests: 80 % ``POST /counters/<c>/increment`` (read the counter, add one,
save it, inside ``atomic()``, spending ``--work-ms`` there as a view's own work would)
on a few counters, 20 % ``GET /counters/``. Lost updates are acknowledged increments
minus the counters' final sum. The backends run in turn, for several rounds, and each
one's samples are pooled, so that a busy moment of the machine falls on all of them.

    python -m benchmarks.django                    # 3 rounds, 4 x 4 clients, 100 requests each
    python -m benchmarks.django --quick            # 1 round, 50 requests each
    python -m benchmarks.django --write-share 0.5  # half reads
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _cli, _report

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "examples" / "django" / "serve"
BACKENDS = ("onewriter", "stock-immediate", "stock")
COUNTERS = ("a", "b", "c", "d")
#: Longest a single request may take before it counts as an error.
REQUEST_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(port: int, method: str, path: str, timeout: float = REQUEST_TIMEOUT) -> Any:
    """One request on a fresh connection (gunicorn's sync workers close each one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            detail = body.decode(errors="replace")[:200]
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(body).get("error", detail)
            raise RuntimeError(f"HTTP {response.status}: {detail}")
        return json.loads(body)
    finally:
        conn.close()


def start_site(backend: str, db: str, port: int, log: Any, workers: int = 4) -> Any:
    """``examples/django/serve`` as a user runs it, on ``port``; ready when it returns."""
    env = {
        **os.environ,
        "EXAMPLE_BACKEND": backend,
        "EXAMPLE_DB": db,
        "BIND": f"127.0.0.1:{port}",
        "WORKERS": str(workers),
        "PYTHON": sys.executable,
    }
    proc = subprocess.Popen(
        [str(SERVE), "--access-logfile", "/dev/null"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the example exited with {proc.returncode}")
        try:
            request(port, "GET", "/counters/", timeout=2)
            return proc
        except (OSError, RuntimeError):
            time.sleep(0.1)
    stop_site(proc)
    raise RuntimeError("the example did not answer within 60 s")


def stop_site(proc: Any) -> None:
    """SIGTERM to gunicorn's master (it stops its workers), then SIGKILL the group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclass(frozen=True)
class Load:
    """What the clients send: ``clients`` processes of ``threads`` threads, each sending
    ``requests`` requests, ``share`` of them increments spending ``work_ms`` inside
    their transaction (the view's own work: rendering, a call to another service)."""

    clients: int
    threads: int
    requests: int
    share: float
    work_ms: float


def _client(port: int, load: Load, seed: int, out: Any) -> None:
    """One client process: its threads' samples, sent back through ``out``."""
    threads, requests, share, work_ms = load.threads, load.requests, load.share, load.work_ms
    samples: list[tuple[str, float, str]] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        mine: list[tuple[str, float, str]] = []
        for _ in range(requests):
            write = rng.random() < share
            counter = rng.choice(COUNTERS)
            path = f"/counters/{counter}/increment?work_ms={work_ms}" if write else "/counters/"
            started = time.perf_counter()
            try:
                request(port, "POST" if write else "GET", path)
                outcome = "ok"
            except Exception as exc:
                outcome = type(exc).__name__ + ": " + str(exc)[:80]
            mine.append(("write" if write else "read", time.perf_counter() - started, outcome))
        with lock:
            samples.extend(mine)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    out.send(samples)
    out.close()


@dataclass
class Result:
    backend: str
    seconds: float
    writes: list[float]
    reads: list[float]
    errors: dict[str, int]
    acknowledged: int
    final_sum: int

    def merge(self, other: Result) -> None:
        """Add another round's samples to this backend's."""
        self.seconds += other.seconds
        self.writes += other.writes
        self.reads += other.reads
        for outcome, count in other.errors.items():
            self.errors[outcome] = self.errors.get(outcome, 0) + count
        self.acknowledged += other.acknowledged
        self.final_sum += other.final_sum

    @property
    def lost(self) -> int:
        return self.acknowledged - self.final_sum

    @property
    def rate(self) -> float:
        return (len(self.writes) + len(self.reads) + sum(self.errors.values())) / self.seconds


def run_backend(backend: str, load: Load) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-django-") as tmp:
        db, port = os.path.join(tmp, "counters.sqlite3"), free_port()
        with open(os.path.join(tmp, "site.log"), "w") as log:
            proc = start_site(backend, db, port, log)
            try:
                for name in COUNTERS:  # create them before the clock starts
                    request(port, "POST", f"/counters/{name}/increment")
                ctx = multiprocessing.get_context("spawn")
                pipes, procs = [], []
                for seed in range(load.clients):
                    receive, send = ctx.Pipe(duplex=False)
                    child = ctx.Process(target=_client, args=(port, load, seed, send))
                    pipes.append(receive)
                    procs.append(child)
                started = time.perf_counter()
                for child in procs:
                    child.start()
                samples = [s for pipe in pipes for s in pipe.recv()]
                seconds = time.perf_counter() - started
                for child in procs:
                    child.join(30)
                final = request(port, "GET", "/counters/")["counters"]
            finally:
                stop_site(proc)
    writes = [t for kind, t, o in samples if kind == "write" and o == "ok"]
    errors: dict[str, int] = {}
    for _, _, outcome in samples:
        if outcome != "ok":
            errors[outcome] = errors.get(outcome, 0) + 1
    return Result(
        backend=backend,
        seconds=seconds,
        writes=writes,
        reads=[t for kind, t, o in samples if kind == "read" and o == "ok"],
        errors=errors,
        acknowledged=len(writes) + len(COUNTERS),
        final_sum=sum(int(row["value"]) for row in final),
    )


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render(results: Sequence[Result]) -> str:
    ms = 1000.0
    lines = [
        "| backend | req/s | write p50 ms | write p99 ms | slowest write ms | "
        "read p99 ms | errors | lost updates |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.rate:,.0f} | {percentile(r.writes, 0.5) * ms:.1f} | "
            f"{percentile(r.writes, 0.99) * ms:.1f} | {max(r.writes, default=0) * ms:.1f} | "
            f"{percentile(r.reads, 0.99) * ms:.1f} | {sum(r.errors.values()):,} | {r.lost:,} |"
        )
    by = {r.backend: r for r in results}
    ours, stock = by.get("onewriter"), by.get("stock-immediate")
    if ours and stock and ours.writes and stock.writes:
        lines += [
            "",
            f"onewriter against stock-immediate: {ours.rate / stock.rate:.2f}x the req/s, "
            f"write p99 {percentile(ours.writes, 0.99) / percentile(stock.writes, 0.99):.2f}x, "
            f"slowest write {max(ours.writes) / max(stock.writes):.2f}x.",
        ]
    for r in results:
        for outcome, count in sorted(r.errors.items(), key=lambda kv: -kv[1])[:3]:
            lines.append(f"\n{r.backend}: {count:,} x `{outcome}`")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _cli.parser("django", __doc__)
    parser.add_argument("--quick", action="store_true", help="50 requests per client thread")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per client (default 4)")
    parser.add_argument(
        "--requests", type=int, default=None, help="per thread and round (default 100)"
    )
    parser.add_argument(
        "--write-share", type=float, default=0.8, help="share of increments (default 0.8)"
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=2.0,
        help="ms each increment spends inside its transaction (default 2)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every backend in turn (default 3)"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 50 if args.quick else 100
    if args.quick:
        args.rounds = 1
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    load = Load(args.clients, args.threads, args.requests, args.write_share, args.work_ms)
    results: dict[str, Result] = {}
    for round_ in range(args.rounds):  # interleaved, so that a busy moment hits all
        for backend in args.backends.split(","):
            result = run_backend(backend, load)
            print(
                f"round {round_ + 1} {backend}: {result.rate:,.0f} req/s, "
                f"{sum(result.errors.values()):,} errors, {result.lost:,} lost",
                file=sys.stderr,
                flush=True,
            )
            if backend in results:
                results[backend].merge(result)
            else:
                results[backend] = result
    body = render(list(results.values()))
    print(body)
    command = shlex.join(["python", "-m", "benchmarks.django", *(argv or sys.argv[1:])])
    if not args.no_write:
        _report.update_section(
            "django", "Django under gunicorn: 4 workers, one SQLite file", command, body
        )


if __name__ == "__main__":
    main()
