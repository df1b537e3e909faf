"""A DB-API 2.0 module (PEP 249) that behaves like the standard ``sqlite3``.

``import onewriter.dbapi as sqlite3`` gives code written for the standard module
onewriter's guarantees: reads run in parallel on this process's readers, writes go to
the one writer, and no process sees ``database is locked``. Inside a transaction
(opened before INSERT/UPDATE/DELETE/REPLACE as the standard module does, or by BEGIN)
every statement runs on the writer in one open write transaction, held for at most
``transaction_timeout``. docs/dbapi.md lists what differs from the standard module.
"""

from __future__ import annotations

import datetime
import os
import sqlite3 as _sqlite3
from typing import Any

from .._database import Database
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
    Warning,
)
from ._row import Row
from ._shared import close_all

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"

sqlite_version = _sqlite3.sqlite_version
sqlite_version_info = _sqlite3.sqlite_version_info
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

_NO_ALTERNATIVE = object()

globals().update(
    {name: getattr(_sqlite3, name) for name in dir(_sqlite3) if name.startswith("SQLITE_")}
)


def adapt(obj: Any, proto: Any = PrepareProtocol, alt: Any = _NO_ALTERNATIVE, /) -> Any:
    """The standard module's ``adapt``, raising this module's ``ProgrammingError``."""
    try:
        if alt is _NO_ALTERNATIVE:
            return _sqlite3.adapt(obj, proto)
        return _sqlite3.adapt(obj, proto, alt)
    except _sqlite3.ProgrammingError as exc:
        raise ProgrammingError(str(exc)) from None


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
    """Open a connection, as ``sqlite3.connect`` does (arguments as there, handed to
    ``factory``); see :class:`Connection` for what ``database`` may be and for
    onewriter's own keyword options."""
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
    "Warning",
    "adapt",
    "adapters",
    "apilevel",
    "close_all",
    "complete_statement",
    "connect",
    "converters",
    "enable_callback_tracebacks",
    "paramstyle",
    "register_adapter",
    "register_converter",
    "sqlite_version",
    "sqlite_version_info",
    "threadsafety",
]
