"""``onewriter jobs serve | work | stress``: the HTTP service, the worker runner and the
stress harness. Heavy imports (uvicorn, starlette, httpx) happen only when run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from ..extras import require_extra


def _require_store_extras(command: str, store: str | None) -> None:
    """The HTTP extra always, the PostgreSQL one for a postgresql:// store."""
    require_extra("http", command)
    if store and store.startswith(("postgresql://", "postgres://")):
        require_extra("postgres", f"{command} on PostgreSQL")


def _tokens(value: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (value or "").split(",") if t.strip())


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the job queue of DATABASE (a SQLite file or a postgresql:// URL) over HTTP: --workers
    processes share the port; on SQLite the primary hosts the writer, on PostgreSQL several
    instances may share one database. Prints READY {json} when serving; SIGTERM drains."""
    store = args.database
    _require_store_extras("onewriter jobs serve", store)
    from .http.io import Settings
    from .http.serve import ServeOptions, serve

    settings = Settings(
        database=store,
        producer_tokens=_tokens(args.producer_token),
        worker_tokens=_tokens(args.worker_token),
        payload_limit=args.payload_limit,
        pool_size=args.pool_size,
    )
    options = ServeOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        durability=args.durability,
        max_pending=args.max_pending,
        retention=args.retention,
    )
    return serve(settings, options, lambda line: print(line, flush=True))


def cmd_work(args: argparse.Namespace) -> int:
    """Run a handler on the jobs of a queue served over HTTP until SIGTERM/SIGINT, then
    finish or release what is held and print a summary."""
    require_extra("http", "onewriter jobs work")
    from ..cli.objects import load_object
    from .http.remote import RemoteQueue
    from .worker.runner import Worker, WorkerOptions

    if not args.queue or not args.handler:
        raise SystemExit("onewriter jobs work: --queue and --handler are required")
    handler = load_object(args.handler, "--handler")
    options = WorkerOptions(
        queue=args.queue,
        capabilities=tuple(args.capability or ()),
        concurrency=args.concurrency,
        batch=args.batch,
        lease=args.lease,
        wait=args.wait,
        grace=args.grace,
        name=args.name,
    )

    async def main() -> Worker:
        async with RemoteQueue(args.url, token=args.token, max_connections=64) as remote:
            worker = Worker(remote, handler, options)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            print(f"READY worker pid={os.getpid()} queue={args.queue}", flush=True)
            await worker.run()
            return worker

    worker = asyncio.run(main())
    print("stopped " + json.dumps(worker.stats.as_dict()), flush=True)
    if worker.abandoned:
        # Handler threads past the grace period: their jobs were released; do not wait.
        sys.stderr.flush()
        os._exit(0)
    return 0


def cmd_stress(args: argparse.Namespace) -> int:
    """Start the HTTP service on a scratch database and run the light, medium and heavy
    configurations with real HTTP workers; print workers, jobs, success %, p99 latency,
    throughput, duplicates and lost jobs."""
    _require_store_extras("onewriter jobs stress", args.database)
    from .stress import StressOptions, run_stress

    options = StressOptions(
        configs=tuple(c.strip() for c in args.configs.split(",") if c.strip()),
        http_workers=args.http_workers,
        batch=args.batch,
        work_ms=args.work_ms,
        database=args.database,
        instances=args.instances,
        plain=args.json,
    )
    return run_stress(options, json_out=args.json)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..cli.flags import add_database, add_flag

    jobs = sub.add_parser("jobs", help="the job queue: HTTP service, worker runner, stress")
    commands = jobs.add_subparsers(title="jobs commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve a queue over HTTP", description=cmd_serve.__doc__
    )
    add_database(
        serve,
        "path of the SQLite database file, or a postgresql:// URL",
        aliases=("--store", "--db", "--database"),
    )
    add_flag(serve, "--host", "address to listen on", default="127.0.0.1")
    add_flag(serve, "--port", "port to listen on (0: any free one)", default=8080, type=int)
    add_flag(
        serve, "--workers", "HTTP worker processes (0: serve in the primary)", default=2, type=int
    )
    add_flag(serve, "--producer-token", "bearer tokens for producers, comma-separated")
    add_flag(serve, "--worker-token", "bearer tokens for workers, comma-separated")
    add_flag(serve, "--payload-limit", "largest job payload in bytes", default=64 * 1024, type=int)
    add_flag(serve, "--durability", "normal or full", default="normal", choices=["normal", "full"])
    add_flag(
        serve, "--max-pending", "writes queued at the writer before 503", default=5000, type=int
    )
    add_flag(
        serve,
        "--retention",
        "seconds done jobs are kept",
        default=7 * 24 * 3600.0,
        type=float,
        shown="604800, 7 days",
    )
    add_flag(serve, "--pool-size", "PostgreSQL connections per HTTP process", default=10, type=int)
    serve.set_defaults(func=cmd_serve)

    work = commands.add_parser(
        "work", help="run a handler on a queue's jobs", description=cmd_work.__doc__
    )
    add_flag(work, "--url", "the service's base URL", default="http://127.0.0.1:8080")
    add_flag(work, "--queue", "the queue to work on")
    add_flag(work, "--capability", "a capability of this worker (repeat)", action="append")
    add_flag(work, "--handler", "the handler, as module:function (sync or async)")
    add_flag(work, "--concurrency", "jobs run at once", default=8, type=int)
    add_flag(work, "--batch", "most jobs per claim (default: free slots)", type=int)
    add_flag(work, "--lease", "lease seconds (heartbeats renew it)", default=30.0, type=float)
    add_flag(work, "--wait", "long-poll seconds per claim", default=2.0, type=float)
    add_flag(work, "--grace", "seconds to finish running jobs on SIGTERM", default=10.0, type=float)
    add_flag(work, "--token", "bearer token (a worker token)")
    add_flag(work, "--name", "worker name recorded on claimed jobs")
    work.set_defaults(func=cmd_work)

    stress = commands.add_parser(
        "stress", help="the published stress table, reproduced", description=cmd_stress.__doc__
    )
    add_flag(stress, "--configs", "configurations to run", default="light,medium,heavy")
    add_flag(stress, "--http-workers", "HTTP worker processes of the service", default=2, type=int)
    add_flag(stress, "--batch", "jobs per claim for each worker", default=8, type=int)
    add_flag(stress, "--work-ms", "simulated work per job, in ms", default=0.0, type=float)
    add_database(
        stress,
        "database file or postgresql:// URL (default: a temporary file)",
        required=False,
        aliases=("--database", "--db", "--store"),
    )
    add_flag(
        stress,
        "--instances",
        "service instances sharing the store (PostgreSQL only)",
        default=1,
        type=int,
    )
    add_flag(stress, "--json", "print the results as JSON too", action="store_true")
    stress.set_defaults(func=cmd_stress)

    def show_help(args: argparse.Namespace) -> int:
        jobs.print_help()
        return 2

    jobs.set_defaults(func=show_help)
