"""The ``onewriter`` command line.

Every flag has an ``ONEWRITER_<NAME>`` environment variable as its fallback, shown in
``--help``, and every command that opens a database takes it as its positional
``DATABASE`` (``flags.py``). Subcommands of other parts register themselves in
:data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from sqlite3 import sqlite_version
from typing import Any

from .. import __version__
from ..client.remote import REMOTE_SCHEMES
from ..config import Config, resolve_paths
from ..database import Database, connect
from ..demo._cli import register as register_demo
from ..errors import OneWriterError, WriterUnavailable
from ..extras import require_extra
from ..jobs.cli import register as register_jobs
from ..load._cli import register as register_load
from ..ops import Ops
from ..sqlite.backup import backup_database, integrity_check, restore_database
from ..sqlite.cipher import read_key_file
from ..writer.election import lock_is_held
from .flags import add_database, add_flag, merge_database
from .objects import load_object
from .tables import print_stats


def _key_from(args: argparse.Namespace) -> str | None:
    """The key in ``--key-file``, if one was given."""
    path = getattr(args, "key_file", None)
    if not path:
        return None
    require_extra("sqlcipher", "a key (SQLCipher)")
    try:
        return read_key_file(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"onewriter: cannot use key file {path}: {exc}") from None


def _config_from(args: argparse.Namespace, **fixed: Any) -> Config:
    spec = getattr(args, "migrations", None)
    migrations = tuple(load_object(spec, "--migrations")) if spec else ()
    return Config(
        durability=args.durability,
        max_pending=args.max_pending,
        max_batch=args.max_batch,
        migrations=migrations,
        checkpoint=getattr(args, "checkpoint", "writer"),
        writer_loop=getattr(args, "writer_loop", "asyncio"),
        key=_key_from(args),
        **fixed,
    )


def _add_key_flag(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--key-file", "open the database through SQLCipher with the key in this file")


def _add_writer_flags(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--ops", "the ops registry to serve, as module:attribute")
    add_flag(p, "--migrations", "a list of migrations, as module:attribute")
    add_flag(p, "--durability", "normal or full", default="normal", choices=["normal", "full"])
    add_flag(p, "--max-pending", "queued requests before QUEUE_FULL", default=500, type=int)
    add_flag(p, "--max-batch", "most requests in one commit", default=1000, type=int)
    add_flag(
        p,
        "--checkpoint",
        "who checkpoints the WAL: the writer, or an external tool such as Litestream",
        default="writer",
        choices=["writer", "external"],
    )
    add_flag(
        p,
        "--writer-loop",
        "the writer's event loop: asyncio, uvloop (the speed extra) or auto (uvloop if installed)",
        default="asyncio",
        choices=["auto", "asyncio", "uvloop"],
    )
    _add_key_flag(p)


def _add_remote_flags(p: argparse.ArgumentParser) -> None:
    """Producers on other machines (docs/remote.md)."""
    add_flag(p, "--listen", "also serve TCP at tcp://HOST:PORT (needs --token-file)")
    add_flag(p, "--token-file", "the TCP transport's shared secret, in this file")
    add_flag(p, "--tls-cert", "speak TLS on --listen with this PEM certificate chain")
    add_flag(p, "--tls-key", "the PEM private key of --tls-cert")
    add_flag(p, "--allow-sql", "accept raw SQL writes over TCP and Redis", action="store_true")
    add_flag(
        p,
        "--remote-reads",
        "which remote transports may send reads and ask for stats",
        default="tcp",
        choices=["off", "tcp", "all"],
    )
    add_flag(p, "--max-connections", "most TCP connections at once", default=256, type=int)
    add_flag(p, "--redis", "also take requests from a Redis list at redis://HOST:PORT/DB")
    add_flag(p, "--redis-queue", "the Redis list's name", default="onewriter")


def _remote_fields(args: argparse.Namespace) -> dict[str, Any]:
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:
            raise SystemExit(f"{args.token_file} holds no token")
    return {
        "listen": args.listen,
        "token": token,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "allow_sql_remote": args.allow_sql,
        "remote_reads": args.remote_reads,
        "max_connections": args.max_connections,
        "redis_url": args.redis,
        "redis_queue": args.redis_queue,
    }


def _remote_words(db: Database) -> str:
    """Where the writer can be reached from other hosts, for READY (from its stats)."""
    remote = db.stats().get("remote") or {}
    words = []
    if "tcp" in remote:
        words.append(f"listen={remote['tcp']['url']}")
    if "redis" in remote:
        words += [f"redis={remote['redis']['url']}", f"queue={remote['redis']['queue']}"]
    return "".join(f" {word}" for word in words)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run a dedicated writer for DATABASE until SIGTERM or SIGINT, then drain and exit."""
    if args.redis:
        require_extra("redis", "onewriter serve --redis")
    ops = load_object(args.ops, "--ops") if args.ops else Ops()
    if not isinstance(ops, Ops):
        raise SystemExit(f"onewriter: --ops {args.ops} is not an onewriter.Ops registry")
    try:
        config = _config_from(args, role="writer", **_remote_fields(args))
    except ValueError as exc:
        raise SystemExit(f"onewriter serve: {exc}") from None
    db = connect(args.database, ops=ops, config=config)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR2, lambda *_: print_stats(db.stats()))
    if not args.ops:
        print(
            "onewriter serve: no --ops given: the writer serves an empty registry, "
            "so every op call gets UNKNOWN_OP",
            file=sys.stderr,
            flush=True,
        )
    print(f"READY writer pid={os.getpid()} database={db.path}{_remote_words(db)}", flush=True)
    stop.wait()
    db.close()
    print("stopped", flush=True)
    return 0


def _no_writer(database: str, config: Config) -> WriterUnavailable | None:
    """The error to give at once when no process holds the writer lock of ``database``."""
    db_path, _, lock_path = resolve_paths(database, config)
    if lock_is_held(lock_path):
        return None
    return WriterUnavailable(
        f"no writer is running for {db_path}: start one with onewriter serve {database}"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    """Ask the running writer of DATABASE for its figures and print them."""
    if not args.database.startswith(REMOTE_SCHEMES):
        missing = _no_writer(args.database, Config())
        if missing is not None:
            raise missing
    db = connect(args.database, role="client", failover_timeout=args.timeout, key=_key_from(args))
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
    add_database(serve)
    _add_writer_flags(serve)
    _add_remote_flags(serve)
    serve.set_defaults(func=cmd_serve)

    stats = sub.add_parser(
        "stats", help="print the running writer's figures", description=cmd_stats.__doc__
    )
    add_database(stats, "path of the SQLite database file (or a tcp:// or redis:// address)")
    add_flag(stats, "--json", "print JSON instead of a table", action="store_true")
    add_flag(stats, "--timeout", "seconds to wait for a writer", default=3.0, type=float)
    _add_key_flag(stats)
    stats.set_defaults(func=cmd_stats)


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy DATABASE to DEST from one read snapshot while its writer goes on writing, then
    check the copy with PRAGMA integrity_check."""
    config = Config(key=_key_from(args))
    result = backup_database(args.database, args.dest, config)
    problems = [] if args.no_check else integrity_check(result.path, config)
    print(
        f"backup {result.path}: {result.pages} pages, {result.bytes} bytes "
        f"in {result.seconds:.3f} s; integrity: {'; '.join(problems) or 'ok'}",
        flush=True,
    )
    return 1 if problems else 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace DATABASE with BACKUP through SQLite's backup API, refusing a backup that
    fails PRAGMA integrity_check; stop DATABASE's writer first."""
    result = restore_database(args.backup, args.database, Config(key=_key_from(args)))
    print(f"restored {result.path}: {result.pages} pages, integrity: ok", flush=True)
    return 0


def _register_backup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser(
        "backup", help="copy a live database consistently", description=cmd_backup.__doc__
    )
    backup.add_argument("database", metavar="DATABASE", help="path of the SQLite database file")
    backup.add_argument("dest", metavar="DEST", help="where to write the copy")
    add_flag(backup, "--no-check", "skip the integrity check of the copy", action="store_true")
    _add_key_flag(backup)
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore", help="replace a database with a checked backup", description=cmd_restore.__doc__
    )
    restore.add_argument("backup", metavar="BACKUP", help="the backup file")
    restore.add_argument(
        "database", metavar="DATABASE", help="path of the SQLite database file to replace"
    )
    _add_key_flag(restore)
    restore.set_defaults(func=cmd_restore)


#: Subcommand registrars, one per part of onewriter.
COMMANDS: list[Register] = [_register_core, _register_backup]
COMMANDS += [register_demo, register_load]
COMMANDS.append(register_jobs)


_EXAMPLES = """examples:
  onewriter serve app.db --ops myapp.ops:ops --migrations myapp.ops:MIGRATIONS
  onewriter stats app.db
  onewriter demo run                       serve the demo, load it, report, stop
  onewriter jobs serve app.db --port 8080 --workers 2
  onewriter backup app.db app-backup.db

a command that opens a database takes it as DATABASE, its first argument; every flag
falls back to an ONEWRITER_<FLAG> environment variable; COMMAND --help says more."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onewriter",
        description="One SQLite database, many processes: parallel reads, one elected "
        "writer with group commit.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flag(parser, "--verbose", "log at INFO level", short="-v", action="store_true")
    parser.add_argument(
        "--version", action="version", version=f"onewriter {__version__} (SQLite {sqlite_version})"
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    merge_database(parser, args)
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
