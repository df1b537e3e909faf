"""The PEP 249 exception tree, each class also a subclass of the standard module's own.

``except sqlite3.OperationalError`` keeps working in code that swapped the import, and
every exception carries onewriter's ``.code`` (``OP_FAILED`` for a statement SQLite
refused, ``TIMEOUT``, ``WRITER_UNAVAILABLE``, ... as in DESIGN.md).

::

    Warning
    Error
    ├── InterfaceError
    └── DatabaseError
        ├── DataError
        ├── OperationalError
        ├── IntegrityError
        ├── InternalError
        ├── ProgrammingError
        └── NotSupportedError
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from .._errors import (
    BadRequest,
    Closed,
    OneWriterError,
    OpFailed,
    SqlNotAllowed,
    TooLarge,
)

#: The code of an error SQLite raised for a statement, wherever it ran.
STATEMENT_FAILED = OpFailed.code


class Warning(sqlite3.Warning):
    """A warning (the standard module raises none of its own any more)."""

    code = "WARNING"


class Error(sqlite3.Error):
    """Any error of the DB-API module."""

    code = "ERROR"


class InterfaceError(Error, sqlite3.InterfaceError):
    """The module was misused."""


class DatabaseError(Error, sqlite3.DatabaseError):
    """The database failed."""


class DataError(DatabaseError, sqlite3.DataError):
    """A value could not be processed."""


class OperationalError(DatabaseError, sqlite3.OperationalError):
    """The database could not do what was asked (bad SQL, timeout, no writer)."""


class IntegrityError(DatabaseError, sqlite3.IntegrityError):
    """A constraint was violated."""


class InternalError(DatabaseError, sqlite3.InternalError):
    """SQLite met an internal error."""


class ProgrammingError(DatabaseError, sqlite3.ProgrammingError):
    """The API was used wrongly (closed object, wrong number of parameters)."""


class NotSupportedError(DatabaseError, sqlite3.NotSupportedError):
    """onewriter cannot offer this on a database shared by processes."""


BY_NAME: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        Warning,
        Error,
        InterfaceError,
        DatabaseError,
        DataError,
        OperationalError,
        IntegrityError,
        InternalError,
        ProgrammingError,
        NotSupportedError,
    )
}
#: Errors the standard module lets through unchanged (a too large int, a bad argument).
_PLAIN = {cls.__name__: cls for cls in (OverflowError, ValueError, TypeError, MemoryError)}

_SQL_RAISED = re.compile(r"SQL raised (\w+): (.*)", re.DOTALL)


def make_error(
    type_name: str,
    message: str,
    *,
    code: str = STATEMENT_FAILED,
    errorcode: int | None = None,
    errorname: str | None = None,
) -> Exception:
    """The exception the standard module would raise, by its class name."""
    plain = _PLAIN.get(type_name)
    if plain is not None:
        return plain(message)
    cls = BY_NAME.get(type_name, OperationalError)
    error = cls(message)
    error.code = code  # type: ignore[attr-defined]
    if errorcode is not None:
        error.sqlite_errorcode = errorcode  # type: ignore[attr-defined]
        error.sqlite_errorname = errorname  # type: ignore[attr-defined]
    return error


def from_sqlite(exc: sqlite3.Error | sqlite3.Warning) -> Exception:
    """A standard-module error raised on one of this process's readers."""
    return make_error(
        type(exc).__name__,
        str(exc),
        errorcode=getattr(exc, "sqlite_errorcode", None),
        errorname=getattr(exc, "sqlite_errorname", None),
    )


def from_result(error: dict[str, Any]) -> Exception:
    """The error a statement result from the writer carries."""
    return make_error(
        str(error.get("type", "OperationalError")),
        str(error.get("message", "")),
        errorcode=error.get("sqlite_errorcode"),
        errorname=error.get("sqlite_errorname"),
    )


def from_onewriter(exc: OneWriterError, context: str = "") -> Exception:
    """A onewriter error as the DB-API class that fits it, keeping its ``.code``."""
    if isinstance(exc, OpFailed):
        match = _SQL_RAISED.fullmatch(exc.message)
        if match is not None:
            return make_error(match.group(1), match.group(2))
    cls: type[Error] = OperationalError
    if isinstance(exc, Closed):
        cls = ProgrammingError
    elif isinstance(exc, BadRequest):
        cls = InterfaceError
    elif isinstance(exc, SqlNotAllowed):
        cls = NotSupportedError
    elif isinstance(exc, TooLarge):
        cls = DataError
    error = cls(f"{context}{exc.message}")
    error.code = exc.code
    return error
