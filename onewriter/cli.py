"""The ``onewriter`` command line.

Every flag has an ``ONEWRITER_<NAME>`` environment variable as its fallback, shown in
``--help``. Subcommands of other parts register themselves in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._config import Config
from ._database import connect
from ._errors import OneWriterError
from ._ops import Ops
from ._tables import print_stats


def env_default(name: str, default: Any = None) -> Any:
    """The value of ``ONEWRITER_<NAME>`` or ``default``."""
    return os.environ.get(f"ONEWRITER_{name.upper().replace('-', '_')}", default)


def add_flag(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs: Any) -> None:
    """Add ``--flag`` with its environment fallback named in the help text."""
    env = "ONEWRITER_" + flag.lstrip("-").upper().replace("-", "_")
    default = kwargs.pop("default", None)
    value = os.environ.get(env)
    if value is not None:
        kind = kwargs.get("type")
        default = kind(value) if callable(kind) else value
    shown = f" (default: {default})" if default not in (None, "") else ""
    parser.add_argument(flag, default=default, help=f"{help}{shown} [env {env}]", **kwargs)


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (``module.sub:obj.attr``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"expected module:attribute, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _config_from(args: argparse.Namespace, **fixed: Any) -> Config:
    migrations = tuple(load_object(args.migrations)) if getattr(args, "migrations", None) else ()
    return Config(
        durability=args.durability,
        max_pending=args.max_pending,
        max_batch=args.max_batch,
        migrations=migrations,
        **fixed,
    )


def _add_writer_flags(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--ops", "the ops registry to serve, as module:attribute")
    add_flag(p, "--migrations", "a list of migrations, as module:attribute")
    add_flag(p, "--durability", "normal or full", default="normal", choices=["normal", "full"])
    add_flag(p, "--max-pending", "queued requests before QUEUE_FULL", default=500, type=int)
    add_flag(p, "--max-batch", "most requests in one commit", default=1000, type=int)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run a dedicated writer for DB until SIGTERM or SIGINT, then drain and exit."""
    ops = load_object(args.ops) if args.ops else Ops()
    if not isinstance(ops, Ops):
        raise SystemExit(f"{args.ops} is not an onewriter.Ops registry")
    db = connect(args.database, ops=ops, config=_config_from(args, role="writer"))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR2, lambda *_: print_stats(db.stats()))
    print(f"READY writer pid={os.getpid()} database={db.path}", flush=True)
    stop.wait()
    db.close()
    print("stopped", flush=True)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Ask the running writer of DB for its figures and print them."""
    db = connect(args.database, role="client", failover_timeout=args.timeout)
    try:
        stats = db.stats()
    finally:
        db.close()
    if args.json:
        import json

        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        print_stats(stats)
    return 0


Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _register_core(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run a dedicated writer for a database",
        description=cmd_serve.__doc__,
    )
    serve.add_argument("database", help="path of the SQLite database file")
    _add_writer_flags(serve)
    serve.set_defaults(func=cmd_serve)

    stats = sub.add_parser(
        "stats", help="print the running writer's figures", description=cmd_stats.__doc__
    )
    stats.add_argument("database", help="path of the SQLite database file")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_flag(stats, "--timeout", "seconds to wait for a writer", default=3.0, type=float)
    stats.set_defaults(func=cmd_stats)


#: Subcommand registrars, one per part of onewriter.
COMMANDS: list[Register] = [_register_core]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onewriter",
        description="One SQLite database, many processes: parallel reads, one elected "
        "writer with group commit.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except OneWriterError as exc:
        print(f"onewriter: {exc.code}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
