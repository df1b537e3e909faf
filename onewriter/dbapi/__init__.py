"""A DB-API 2.0 module (PEP 249): the standard ``sqlite3``, writing under the write turn.

``import onewriter.dbapi as sqlite3`` keeps code written for the standard module as it
is: each connection is a real ``sqlite3.Connection`` of this process, and its write
transactions take the database's write turn (one fair lock across processes) before
they begin, so no process sees ``database is locked``. docs/dbapi.md says what differs.
"""

from __future__ import annotations

import datetime
import os
import sqlite3 as _sqlite3
import warnings
from typing import Any

from ..database import Database
from ._connection import Connection
from ._cursor import Cursor
from ._errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    TransactionTimeout,
    TurnBusy,
    Warning,
)

apilevel = "2.0"
threadsafety = _sqlite3.threadsafety
paramstyle = "qmark"

sqlite_version = _sqlite3.sqlite_version
sqlite_version_info = _sqlite3.sqlite_version_info
version = _sqlite3.version
version_info = _sqlite3.version_info
PARSE_DECLTYPES = _sqlite3.PARSE_DECLTYPES
PARSE_COLNAMES = _sqlite3.PARSE_COLNAMES

# Values, adapters and converters are the standard module's own (one registry).
Binary = _sqlite3.Binary
Date = _sqlite3.Date
Time = _sqlite3.Time
Timestamp = datetime.datetime
DateFromTicks = _sqlite3.DateFromTicks
TimeFromTicks = _sqlite3.TimeFromTicks
TimestampFromTicks = _sqlite3.TimestampFromTicks
PrepareProtocol = _sqlite3.PrepareProtocol
adapters = _sqlite3.adapters
converters = _sqlite3.converters
register_adapter = _sqlite3.register_adapter
register_converter = _sqlite3.register_converter
complete_statement = _sqlite3.complete_statement
enable_callback_tracebacks = _sqlite3.enable_callback_tracebacks
enable_shared_cache = _sqlite3.enable_shared_cache
adapt = _sqlite3.adapt
Row = _sqlite3.Row
Blob = _sqlite3.Blob

globals().update(
    {name: getattr(_sqlite3, name) for name in dir(_sqlite3) if name.startswith("SQLITE_")}
)


def connect(
    database: str | bytes | os.PathLike[str] | os.PathLike[bytes] | Database,
    timeout: float = 5.0,
    detect_types: int = 0,
    isolation_level: str | None = "",
    check_same_thread: bool = True,
    factory: type[Connection] = Connection,
    cached_statements: int = 128,
    uri: bool = False,
    **onewriter_options: Any,
) -> Connection:
    """Open a connection, as ``sqlite3.connect`` does (the arguments go to ``factory``);
    ``timeout`` also bounds the wait for the write turn. ``config=`` and keyword
    overrides of ``Config`` fields set onewriter's options (see :class:`Connection`)."""
    return factory(
        database,
        timeout=timeout,
        detect_types=detect_types,
        isolation_level=isolation_level,
        check_same_thread=check_same_thread,
        factory=factory,
        cached_statements=cached_statements,
        uri=uri,
        **onewriter_options,
    )


__all__ = [
    "PARSE_COLNAMES",
    "PARSE_DECLTYPES",
    "Binary",
    "Blob",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "PrepareProtocol",
    "ProgrammingError",
    "Row",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "TransactionTimeout",
    "TurnBusy",
    "Warning",
    "adapt",
    "adapters",
    "apilevel",
    "complete_statement",
    "connect",
    "converters",
    "enable_callback_tracebacks",
    "enable_shared_cache",
    "paramstyle",
    "register_adapter",
    "register_converter",
    "sqlite_version",
    "sqlite_version_info",
    "threadsafety",
    "version",
    "version_info",
]


def __getattr__(name: str) -> Any:
    """The standard module's deprecated names (``OptimizedUnicode``), with its warning."""
    if name == "OptimizedUnicode":
        warnings.warn("OptimizedUnicode is deprecated. Use str.", DeprecationWarning, stacklevel=2)
        return str
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
