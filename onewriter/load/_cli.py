"""``onewriter load``: the load client on the command line."""

from __future__ import annotations

import argparse
import json

from .report import print_report
from .runner import LoadPlan, run_load


def add_load_flags(parser: argparse.ArgumentParser, *, url: bool = True) -> None:
    """The flags shared by ``onewriter load`` and ``onewriter demo run``."""
    from ..cli.flags import add_flag

    if url:
        add_flag(parser, "--url", "the service to load", default="http://127.0.0.1:3000")
    add_flag(parser, "--reads", "GET /posts per batch (or share)", default=20, type=int)
    add_flag(parser, "--writes", "POST /posts per batch (or share)", default=50, type=int)
    add_flag(parser, "--connections", "keep-alive connections", default=32, type=int)
    add_flag(parser, "--rate", "requests per second in all (default: no limit)", type=float)
    add_flag(
        parser, "--response-timeout", "seconds to wait for one response", default=30.0, type=float
    )


def plan_from(args: argparse.Namespace, url: str | None = None) -> LoadPlan:
    try:
        return LoadPlan(
            url=url or args.url,
            reads=args.reads,
            writes=args.writes,
            connections=args.connections,
            rate=args.rate,
            duration=args.duration,
            timeout=args.response_timeout,
        )
    except ValueError as exc:
        raise SystemExit(f"onewriter load: {exc}") from None


def cmd_load(args: argparse.Namespace) -> int:
    """Send reads and writes to the demo service and report throughput, latency
    percentiles, errors by code and requests per worker. Without --duration: one batch
    of concurrent requests; with it: sustained load at --rate (or as fast as answered)."""
    summary = run_load(plan_from(args), plain=args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_report(summary)
    return 0 if summary["total"]["ok"] else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..cli.flags import add_flag

    parser = sub.add_parser(
        "load", help="load the demo service and report", description=cmd_load.__doc__
    )
    add_load_flags(parser)
    add_flag(parser, "--duration", "seconds of sustained load (default: one batch)", type=float)
    add_flag(parser, "--json", "print the summary as JSON", action="store_true")
    parser.set_defaults(func=cmd_load)
