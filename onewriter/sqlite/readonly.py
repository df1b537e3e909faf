"""Reader connections that cannot write or reach outside the database, whatever the SQL.

Every reader (the read pools, the DB-API's readers, the pool that serves reads for TCP
and Redis peers) runs this authorizer. ``PRAGMA query_only`` stays on as well, but it is
not the guard: it is a setting a statement can turn off (``PRAGMA query_only = OFF``),
and it does not stop ``ATTACH`` or ``VACUUM INTO`` from creating a file wherever the
writer's user may write. SQLite asks the authorizer about every action while it
*prepares* a statement, before anything runs, so a refused statement does nothing at
all, and a statement cached after being allowed is never asked about again (the check
costs nothing on repeated reads).

The policy is an allow list: a reader may select, read columns, recurse (``WITH
RECURSIVE``), call functions other than those in :data:`DENIED_FUNCTIONS`, and run the
pragmas in :data:`REPORTING_PRAGMAS` (without an argument) or
:data:`PRAGMAS_TAKING_A_NAME` (with one). Every other action is refused, including
actions of a future SQLite this table does not know: writes of any kind (temp objects
too), transactions and savepoints (a reader holding a snapshot past its statement would
starve checkpoints), ``ATTACH``/``DETACH`` (``VACUUM`` attaches its target, so it is
refused too) and pragma assignments.

Raw SQL on the writer's connection gets a narrower table (:func:`confine_sql`): it may
write, but not attach files, call file functions or assign pragmas that would change
the connection every client's writes share.

The last refusal is remembered on the refusing thread (SQLite prepares on the thread
that runs the statement), so that whoever ran it can say why (:func:`take_refusal`):
SQLite itself only says "not authorized".
"""

from __future__ import annotations

import sqlite3
import threading
from typing import NamedTuple

_OK = sqlite3.SQLITE_OK
_DENY = sqlite3.SQLITE_DENY
_SQLITE_AUTH = 23

#: What each authorizer action is, for messages; any action missing here is refused.
ACTIONS: dict[int, str] = {
    0: "COPY",
    1: "CREATE INDEX",
    2: "CREATE TABLE",
    3: "CREATE TEMP INDEX",
    4: "CREATE TEMP TABLE",
    5: "CREATE TEMP TRIGGER",
    6: "CREATE TEMP VIEW",
    7: "CREATE TRIGGER",
    8: "CREATE VIEW",
    9: "DELETE",
    10: "DROP INDEX",
    11: "DROP TABLE",
    12: "DROP TEMP INDEX",
    13: "DROP TEMP TABLE",
    14: "DROP TEMP TRIGGER",
    15: "DROP TEMP VIEW",
    16: "DROP TRIGGER",
    17: "DROP VIEW",
    18: "INSERT",
    19: "PRAGMA",
    20: "READ",
    21: "SELECT",
    22: "a transaction",
    23: "UPDATE",
    24: "ATTACH",
    25: "DETACH",
    26: "ALTER TABLE",
    27: "REINDEX",
    28: "ANALYZE",
    29: "CREATE VIRTUAL TABLE",
    30: "DROP VIRTUAL TABLE",
    31: "FUNCTION",
    32: "a savepoint",
    33: "RECURSIVE",
}

_PRAGMA, _READ, _SELECT, _UPDATE, _FUNCTION, _RECURSIVE = 19, 20, 21, 23, 31, 33

#: Actions whose refusal means "this is a write": the DB-API sends such statements on to
#: the writer, as it does with statements that a ``query_only`` reader refuses.
WRITE_ACTIONS = frozenset(range(1, 19)) | {_PRAGMA, _UPDATE, 26, 27, 28, 29, 30}

#: Pragmas that report a value and change nothing when called without an argument.
REPORTING_PRAGMAS = frozenset(
    {
        "analysis_limit",
        "application_id",
        "auto_vacuum",
        "automatic_index",
        "busy_timeout",
        "cache_size",
        "cache_spill",
        "case_sensitive_like",
        "cell_size_check",
        "checkpoint_fullfsync",
        "collation_list",
        "compile_options",
        "count_changes",
        "data_version",
        "database_list",
        "defer_foreign_keys",
        "empty_result_callbacks",
        "encoding",
        "foreign_key_check",
        "foreign_keys",
        "freelist_count",
        "full_column_names",
        "fullfsync",
        "function_list",
        "hard_heap_limit",
        "ignore_check_constraints",
        "integrity_check",
        "journal_mode",
        "journal_size_limit",
        "legacy_alter_table",
        "locking_mode",
        "max_page_count",
        "mmap_size",
        "module_list",
        "page_count",
        "page_size",
        "pragma_list",
        "query_only",
        "quick_check",
        "read_uncommitted",
        "recursive_triggers",
        "reverse_unordered_selects",
        "schema_version",
        "secure_delete",
        "short_column_names",
        "soft_heap_limit",
        "synchronous",
        "table_list",
        "temp_store",
        "threads",
        "trusted_schema",
        "user_version",
        "wal_autocheckpoint",
    }
)

#: Pragmas whose argument names what to report on (a table, an index, a row limit): with
#: an argument they still only report. Any other pragma with an argument assigns.
PRAGMAS_TAKING_A_NAME = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)

#: Functions that reach files, the process or memory addresses (most exist only where an
#: extension or the sqlite3 shell defines them; refused wherever they exist).
DENIED_FUNCTIONS = frozenset(
    {
        "edit",
        "fts3_tokenizer",
        "load_extension",
        "readfile",
        "sqlcipher_export",
        "writefile",
    }
)

#: Table-valued functions that read the filesystem (the shell's extensions).
DENIED_TABLES = frozenset({"fsdir", "zipfile"})

#: SQLite checks an UPDATE of its schema table while it declares an eponymous virtual
#: table (``json_each``, ``pragma_table_info``) and never runs it; a real UPDATE of the
#: schema table is refused by SQLite itself unless ``writable_schema``, a pragma
#: assignment this authorizer refuses.
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master"})


#: Pragmas raw SQL on the writer's connection may assign: they change the database, not
#: the connection that every client's writes share.
WRITABLE_PRAGMAS = frozenset(
    {"application_id", "defer_foreign_keys", "incremental_vacuum", "user_version"}
)
_ASSIGNABLE_ON_WRITER = WRITABLE_PRAGMAS | PRAGMAS_TAKING_A_NAME

_ATTACH, _DETACH = 24, 25


class Refusal(NamedTuple):
    """Why the authorizer refused a statement."""

    reason: str
    write: bool
    """Whether it would have written (the DB-API sends those on to the writer)."""


_refusals = threading.local()


def _refuse(action: int, arg1: str | None, arg2: str | None) -> int:
    what = ACTIONS.get(action, f"action {action}")
    detail = " ".join(a for a in (arg1, arg2) if a)[:200]
    reason = f"{what} {detail}".rstrip() if action != _FUNCTION else f"the function {arg2}()"
    _refusals.last = Refusal(reason, action in WRITE_ACTIONS)
    return _DENY


def authorize(
    action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
) -> int:
    """The authorizer of every reader connection (see the module's docstring)."""
    if action == _READ:
        return _refuse(action, arg1, arg2) if arg1 in DENIED_TABLES else _OK
    if action in (_SELECT, _RECURSIVE):
        return _OK
    if action == _FUNCTION:
        return _refuse(action, arg1, arg2) if (arg2 or "").lower() in DENIED_FUNCTIONS else _OK
    if action == _PRAGMA:
        name = (arg1 or "").lower()
        if name in (PRAGMAS_TAKING_A_NAME if arg2 is not None else REPORTING_PRAGMAS):
            return _OK
        return _refuse(action, arg1, arg2)
    if action == _UPDATE and arg1 in _SCHEMA_TABLES:
        return _OK
    return _refuse(action, arg1, arg2)


def confine_sql(action: int, arg1: str | None, arg2: str | None) -> bool:
    """Whether raw SQL on the writer's connection (``execute_write``, the DB-API) must be
    refused this action: it may write the database, but neither reach other files
    (``ATTACH``, file functions) nor change the connection that every client's writes
    share (pragma assignments other than :data:`WRITABLE_PRAGMAS`). Ops are the
    application's own code and are not confined."""
    if action == _PRAGMA:
        refused = arg2 is not None and (arg1 or "").lower() not in _ASSIGNABLE_ON_WRITER
    elif action == _FUNCTION:
        refused = (arg2 or "").lower() in DENIED_FUNCTIONS
    elif action == _READ:
        refused = arg1 in DENIED_TABLES
    else:
        refused = action in (_ATTACH, _DETACH)
    if refused:
        _refuse(action, arg1, arg2)
    return refused


def install(conn: sqlite3.Connection) -> None:
    """Make ``conn`` a reader that cannot write or reach files (after its own PRAGMAs)."""
    conn.set_authorizer(authorize)
    setlimit = getattr(conn, "setlimit", None)
    if setlimit is not None:  # a second lock on the door: no database can be attached
        setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)


def take_refusal(exc: BaseException) -> Refusal | None:
    """The authorizer's refusal behind ``exc`` (raised on this thread), if it was one.

    SQLite reports a refusal as ``not authorized`` (``SQLITE_AUTH``), ``not authorized
    to use function: ...`` or, inside ``VACUUM``, ``authorization denied``."""
    refusal: Refusal | None = getattr(_refusals, "last", None)
    _refusals.last = None
    if getattr(exc, "sqlite_errorcode", None) != _SQLITE_AUTH and "authoriz" not in str(exc):
        return None
    return refusal
