"""``onewriter demo serve`` (the multi-worker posts service) and ``onewriter demo run``
(start it, load it for a few seconds, report, stop it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
from typing import Any

from ..cli.tables import print_stats
from ..config import Config, resolve_paths
from ..extras import require_extra
from ..load._cli import add_load_flags, plan_from
from ..load.client import Connection, Target
from ..load.report import print_report
from ..load.runner import run_load
from .launch import ServiceProcess
from .primary import Primary, ServiceOptions, default_workers

DEFAULT_DATABASE = "data/demo.db"


def _add_service_flags(parser: argparse.ArgumentParser) -> None:
    from ..cli.flags import add_database, add_flag

    add_database(parser, default=DEFAULT_DATABASE)
    add_flag(parser, "--workers", "HTTP worker processes", default=default_workers(), type=int)
    add_flag(
        parser,
        "--naive",
        "for comparison: each worker writes on its own SQLite connection "
        "(busy_timeout, BEGIN IMMEDIATE) instead of through the one writer",
        action="store_true",
    )
    add_flag(
        parser,
        "--direct",
        "workers run each write themselves under the write turn instead of sending it "
        "to the primary",
        action="store_true",
    )
    add_flag(parser, "--durability", "normal or full", default="normal", choices=["normal", "full"])
    add_flag(parser, "--max-pending", "writes queued before 503", default=500, type=int)
    add_flag(parser, "--read-pool-size", "reader connections per worker", default=4, type=int)
    add_flag(
        parser,
        "--graceful-timeout",
        "seconds a stopping worker may take to finish its requests",
        default=20.0,
        type=float,
    )


def _options(args: argparse.Namespace, host: str, port: int) -> ServiceOptions:
    if args.workers < 1:
        raise SystemExit("onewriter demo: --workers must be at least 1")
    return ServiceOptions(
        database=args.database,
        host=host,
        port=port,
        workers=args.workers,
        naive=args.naive,
        direct=args.direct,
        durability=args.durability,
        max_pending=args.max_pending,
        read_pool_size=args.read_pool_size,
        graceful_timeout=args.graceful_timeout,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the posts API: this process is the writer and binds the port, N worker
    processes answer HTTP on it. Prints READY with the port when serving. SIGUSR2 prints
    the writer's figures; SIGTERM or Ctrl-C drains and stops."""
    require_extra("http", "onewriter demo serve")
    if args.database == DEFAULT_DATABASE:
        # The default's folder is the demo's own; a folder the user named must exist.
        os.makedirs(os.path.dirname(DEFAULT_DATABASE), exist_ok=True)
    return Primary(_options(args, args.host, args.port)).run()


def cmd_run(args: argparse.Namespace) -> int:
    """Start the demo service on a free port, load it for a few seconds, print the load
    report and the writer's figures, then stop the service cleanly."""
    require_extra("http", "onewriter demo run")
    if args.database != DEFAULT_DATABASE:
        resolve_paths(args.database, Config())  # a missing folder: one line, before starting
    service = ServiceProcess(
        args.database,
        workers=args.workers,
        naive=args.naive,
        direct=args.direct,
        durability=args.durability,
        extra=["--max-pending", str(args.max_pending)],
    )
    before = _count_posts(args.database) if os.path.exists(args.database) else 0
    print(f"starting the demo service ({args.workers} workers, database {args.database}) ...")
    try:
        service.start()
    except TimeoutError as exc:
        code = service.process.returncode if service.process is not None else None
        why = f"exited with {code} before it was ready" if code is not None else str(exc)
        raise SystemExit(f"onewriter demo run: the demo service {why}") from None
    with service:
        print(f"serving on {service.url}: primary pid {service.pid}, workers {service.worker_pids}")
        print(f"loading it for {args.duration:g} s ...", flush=True)
        summary = run_load(plan_from(args, url=service.url))
        print()
        print_report(summary)
        stats = asyncio.run(_get_json(service.url, "/stats"))
        if stats.get("writer"):
            print("\nthe writer's figures (GET /stats):")
            print_stats(stats["writer"])
        code = service.stop()
    after = _count_posts(args.database)
    print(
        f"\nposts in {args.database}: {after:,} ({after - before:,} added by this run, which had "
        f"{summary['acknowledged_writes']:,} writes acknowledged)"
    )
    print("service output:")
    for line in service.lines:
        print(f"  | {line}")
    print(f"service exited with {code}")
    return 0 if code == 0 else 1


async def _get_json(url: str, path: str) -> dict[str, Any]:
    connection = Connection(Target(url), timeout=10.0)
    try:
        response = await connection.request("GET", path)
    finally:
        connection.close()
    data: dict[str, Any] = json.loads(response.body)
    return data


def _count_posts(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count: int = conn.execute("SELECT count(*) FROM posts").fetchone()[0]
        return count
    finally:
        conn.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..cli.flags import add_flag

    demo = sub.add_parser("demo", help="the multi-worker posts service")
    demo_sub = demo.add_subparsers(title="demo commands", metavar="COMMAND")

    serve = demo_sub.add_parser("serve", help="serve the posts API", description=cmd_serve.__doc__)
    _add_service_flags(serve)
    add_flag(serve, "--host", "address to listen on", default="127.0.0.1")
    add_flag(serve, "--port", "TCP port (0: any free one)", default=3000, type=int)
    serve.set_defaults(func=cmd_serve)

    run = demo_sub.add_parser(
        "run", help="start the service, load it, report, stop", description=cmd_run.__doc__
    )
    _add_service_flags(run)
    add_load_flags(run, url=False)
    add_flag(run, "--duration", "seconds of load", default=5.0, type=float)
    run.set_defaults(func=cmd_run)

    def show_help(args: argparse.Namespace) -> int:
        demo.print_help()
        return 2

    demo.set_defaults(func=show_help)
