"""What a statement is, from its first words: where it runs and what it does to a
transaction.

Reads run on this process's readers, writes on the writer, and transaction control
is the connection's business. Statements whose first word does not settle it (``WITH``,
most ``PRAGMA``\\ s) are tried on a reader first: readers are ``query_only``, so a write
fails there with ``SQLITE_READONLY`` before doing anything, and then goes to the writer.
"""

from __future__ import annotations

import enum
import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache


class Kind(enum.Enum):
    EMPTY = "empty"
    """Only comments or whitespace."""
    READ = "read"
    MAYBE_READ = "maybe_read"
    """Try a reader; a ``SQLITE_READONLY`` refusal sends it to the writer."""
    DML = "dml"
    """INSERT, UPDATE, DELETE, REPLACE: the standard module opens a transaction first."""
    WRITE = "write"
    BEGIN = "begin"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    SAVEPOINT = "savepoint"
    """SAVEPOINT, RELEASE, ROLLBACK TO: run inside the connection's transaction."""
    SETTING = "setting"
    """A connection setting onewriter owns (``PRAGMA journal_mode = ...``): answered with
    the current value, changed nowhere."""
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Statement:
    kind: Kind
    keyword: str = ""
    returning: bool = False
    """Whether it may return rows from the writer (``... RETURNING``)."""
    query: str = ""
    """For a setting: the statement that reads its current value."""
    reason: str = ""
    """For an unsupported statement: why."""


#: Settings of one SQLite connection. onewriter configures them on its own connections
#: (Config); a client's assignment would change one pooled reader, or the writer that
#: every client shares, so it is answered with the current value instead.
CONNECTION_SETTINGS = frozenset(
    {
        "analysis_limit",
        "automatic_index",
        "busy_timeout",
        "cache_size",
        "cache_spill",
        "case_sensitive_like",
        "cell_size_check",
        "checkpoint_fullfsync",
        "count_changes",
        "empty_result_callbacks",
        "foreign_keys",
        "full_column_names",
        "fullfsync",
        "hard_heap_limit",
        "ignore_check_constraints",
        "journal_mode",
        "journal_size_limit",
        "legacy_alter_table",
        "locking_mode",
        "mmap_size",
        "query_only",
        "read_uncommitted",
        "recursive_triggers",
        "reverse_unordered_selects",
        "short_column_names",
        "soft_heap_limit",
        "synchronous",
        "temp_store",
        "threads",
        "trusted_schema",
        "wal_autocheckpoint",
    }
)
#: Pragmas that only make sense inside the writer's transaction.
TRANSACTION_PRAGMAS = frozenset({"defer_foreign_keys"})

_READS = {"SELECT": Kind.READ, "VALUES": Kind.READ, "EXPLAIN": Kind.READ}
_FIXED = {
    "INSERT": Kind.DML,
    "UPDATE": Kind.DML,
    "DELETE": Kind.DML,
    "REPLACE": Kind.DML,
    "CREATE": Kind.WRITE,
    "DROP": Kind.WRITE,
    "ALTER": Kind.WRITE,
    "REINDEX": Kind.WRITE,
    "ANALYZE": Kind.WRITE,
    "BEGIN": Kind.BEGIN,
    "COMMIT": Kind.COMMIT,
    "END": Kind.COMMIT,
    "SAVEPOINT": Kind.SAVEPOINT,
    "RELEASE": Kind.SAVEPOINT,
}
_UNSUPPORTED = {
    "VACUUM": "VACUUM cannot run inside the writer's transactions; run it while no "
    "writer serves the file (the sqlite3 shell), or keep auto_vacuum on",
    "ATTACH": "ATTACH is not supported: onewriter's connections are pooled and shared",
    "DETACH": "DETACH is not supported: onewriter's connections are pooled and shared",
}

#: Connection methods of the standard module not offered here, and why.
UNSUPPORTED_METHODS = {
    "create_aggregate": "SQL functions run on this process's readers only; the writer "
    "is another process",
    "create_collation": "collations would be missing on the writer, another process",
    "create_window_function": "window functions would be missing on the writer",
    "set_authorizer": "statements run on shared connections",
    "set_progress_handler": "statements run on shared connections",
    "set_trace_callback": "statements run on shared connections",
    "enable_load_extension": "extensions would load on shared connections only",
    "load_extension": "extensions would load on shared connections only",
    "backup": "use onewriter's online backup through the writer",
    "blobopen": "incremental blob I/O needs a connection of its own",
    "serialize": "the database belongs to the writer",
    "deserialize": "the database belongs to the writer",
    "iterdump": "read the schema with SELECT from sqlite_schema",
    "getlimit": "limits are set on onewriter's own connections",
    "setlimit": "limits are set on onewriter's own connections",
}

_SPACE_AND_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]+")
_PRAGMA = re.compile(
    r"\s*(?:(?P<schema>[\w\"`\[\]]+)\s*\.\s*)?(?P<name>\w+)\s*(?P<assign>[=(])?", re.ASCII
)
_TEMP = re.compile(r"\s*(?:TEMP|TEMPORARY)\b", re.IGNORECASE)
_ROLLBACK_TO = re.compile(r"\s*(?:TRANSACTION\b\s*)?TO\b", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)


def _skip(sql: str, pos: int) -> int:
    match = _SPACE_AND_COMMENTS.match(sql, pos)
    return match.end() if match else pos


@lru_cache(maxsize=1024)
def classify(sql: str) -> Statement:
    """The kind of the (first) statement in ``sql``."""
    start = _skip(sql, 0)
    word = _WORD.match(sql, start)
    if word is None:
        return Statement(Kind.EMPTY)
    keyword = word.group().upper()
    rest = word.end()
    kind = _READS.get(keyword) or _FIXED.get(keyword)
    if keyword in _UNSUPPORTED:
        return Statement(Kind.UNSUPPORTED, keyword, reason=_UNSUPPORTED[keyword])
    if keyword == "CREATE" and _TEMP.match(sql, rest):
        reason = (
            "TEMP tables, views and triggers are not supported: they would live on one "
            "pooled connection (or on the writer, shared by every client)"
        )
        return Statement(Kind.UNSUPPORTED, keyword, reason=reason)
    if keyword == "ROLLBACK":
        kind = Kind.SAVEPOINT if _ROLLBACK_TO.match(sql, rest) else Kind.ROLLBACK
    elif keyword == "PRAGMA":
        return _pragma(sql, rest)
    elif kind is None:
        kind = Kind.MAYBE_READ
    returning = kind in (Kind.DML, Kind.MAYBE_READ) and _RETURNING.search(sql, rest) is not None
    return Statement(kind, keyword, returning=returning)


def _pragma(sql: str, pos: int) -> Statement:
    match = _PRAGMA.match(sql, pos)
    if match is None:
        return Statement(Kind.MAYBE_READ, "PRAGMA")
    name = match.group("name").lower()
    assigns = match.group("assign") is not None
    if name == "wal_checkpoint":
        reason = "the writer owns checkpoints (Config.checkpoint); see docs/operations.md"
        return Statement(Kind.UNSUPPORTED, "PRAGMA", reason=reason)
    if name in TRANSACTION_PRAGMAS:
        return Statement(Kind.SAVEPOINT if assigns else Kind.READ, "PRAGMA")
    if name in CONNECTION_SETTINGS:
        if not assigns:
            return Statement(Kind.READ, "PRAGMA")
        schema = match.group("schema")
        query = f"PRAGMA {schema}.{name}" if schema else f"PRAGMA {name}"
        return Statement(Kind.SETTING, "PRAGMA", query=query)
    return Statement(Kind.WRITE if match.group("assign") == "=" else Kind.MAYBE_READ, "PRAGMA")


def split_script(script: str) -> list[str]:
    """The statements of a script, each complete (as ``executescript`` runs them)."""
    statements: list[str] = []
    start = 0
    pos = script.find(";")
    while pos >= 0:
        piece = script[start : pos + 1]
        if sqlite3.complete_statement(piece):
            statements.append(piece)
            start = pos + 1
        pos = script.find(";", pos + 1)
    tail = script[start:]
    if classify(tail).kind is not Kind.EMPTY:
        statements.append(tail)
    return statements
