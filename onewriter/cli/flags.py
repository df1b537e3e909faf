"""The command line's conventions: every flag falls back on ``ONEWRITER_<FLAG>``, and a
database is the positional ``DATABASE`` of every command that opens one.

The older spellings of the database (``--db``, ``--database``, ``--store``) still work,
hidden from ``--help``; giving two different databases is an error.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off", "")

#: Where the database's hidden spellings are parsed to, before main() merges them.
DATABASE_ALIAS = "database_alias"

#: The environment variable of the positional database.
DATABASE_ENV = "ONEWRITER_DATABASE"


def env_name(flag: str) -> str:
    return "ONEWRITER_" + flag.lstrip("-").upper().replace("-", "_")


def _from_env(env: str, value: str, kwargs: dict[str, Any]) -> Any:
    """The environment's text as the flag's value, or one line saying why it is not one."""
    action = kwargs.get("action")
    if action == "store_true":
        if value.strip().lower() not in _YES + _NO:
            raise SystemExit(f"onewriter: {env}={value!r}: expected one of {', '.join(_YES)}")
        return value.strip().lower() in _YES
    if action == "append":
        return [part.strip() for part in value.split(",") if part.strip()]
    kind = kwargs.get("type")
    try:
        parsed = kind(value) if callable(kind) else value
    except ValueError:
        name = getattr(kind, "__name__", "value")
        raise SystemExit(f"onewriter: {env}={value!r}: not a valid {name}") from None
    choices = kwargs.get("choices")
    if choices is not None and parsed not in choices:
        raise SystemExit(f"onewriter: {env}={value!r}: expected one of {', '.join(choices)}")
    return parsed


def _shown(default: Any) -> str:
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def add_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    shown: str | None = None,
    short: str | None = None,
    **kwargs: Any,
) -> None:
    """Add ``--flag`` with its environment fallback named in the help text (``shown``
    replaces the default in the help, for a default better said in words)."""
    env = env_name(flag)
    default = kwargs.pop("default", False if kwargs.get("action") == "store_true" else None)
    value = os.environ.get(env)
    if value is not None:
        default = _from_env(env, value, kwargs)
        shown = None
    if shown is None and default not in (None, "", False, []):
        shown = _shown(default)
    note = f" (default: {shown})" if shown else ""
    names = (short, flag) if short else (flag,)
    parser.add_argument(*names, default=default, help=f"{help}{note} [env {env}]", **kwargs)


def add_database(
    parser: argparse.ArgumentParser,
    help: str = "path of the SQLite database file",
    *,
    default: str | None = None,
    required: bool = True,
    aliases: tuple[str, ...] = ("--db", "--database"),
) -> None:
    """The positional ``DATABASE`` (its fallback ``ONEWRITER_DATABASE``, then ``default``),
    and its older spellings as hidden flags."""
    fallback = os.environ.get(DATABASE_ENV) or default
    note = f" (default: {fallback})" if fallback else ""
    parser.add_argument(
        "database",
        nargs="?",
        default=None,
        metavar="DATABASE",
        help=f"{help}{note} [env {DATABASE_ENV}]",
    )
    for alias in aliases:
        parser.add_argument(alias, dest=DATABASE_ALIAS, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(database_fallback=fallback, database_required=required)


def merge_database(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Settle ``args.database`` from the positional, a hidden alias or the fallback."""
    if not hasattr(args, "database_fallback"):
        return
    alias = getattr(args, DATABASE_ALIAS, None)
    if alias is not None and args.database is not None and alias != args.database:
        parser.error(f"two databases given: {args.database} and {alias}")
    args.database = args.database or alias or args.database_fallback
    if args.database is None and args.database_required:
        parser.error("the DATABASE argument is required")
