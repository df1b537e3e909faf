"""The PEP 249 exception tree: the standard module's own classes.

A connection here *is* a ``sqlite3.Connection``, so SQLite's errors come out of it as
the standard module raises them; the module's names are those very classes, and
``except onewriter.dbapi.OperationalError`` catches whatever ``except
sqlite3.OperationalError`` would. The errors onewriter adds (the write turn stayed
taken, a transaction held it too long) are subclasses that carry onewriter's ``.code``.
"""

from __future__ import annotations

import sqlite3

from ..errors import DeadlineExceeded

Warning = sqlite3.Warning
Error = sqlite3.Error
InterfaceError = sqlite3.InterfaceError
DatabaseError = sqlite3.DatabaseError
DataError = sqlite3.DataError
OperationalError = sqlite3.OperationalError
IntegrityError = sqlite3.IntegrityError
InternalError = sqlite3.InternalError
ProgrammingError = sqlite3.ProgrammingError
NotSupportedError = sqlite3.NotSupportedError


class TurnBusy(sqlite3.OperationalError):
    """The write turn stayed taken for the connection's ``timeout``: what SQLite's busy
    timeout would have reported as ``database is locked``. Nothing was run."""

    code = DeadlineExceeded.code
    sqlite_errorcode = sqlite3.SQLITE_BUSY
    sqlite_errorname = "SQLITE_BUSY"


class TransactionTimeout(sqlite3.OperationalError):
    """The transaction held the write turn past ``transaction_timeout``; it was rolled
    back so that other writers could go on."""

    code = DeadlineExceeded.code
    sqlite_errorcode = sqlite3.SQLITE_INTERRUPT
    sqlite_errorname = "SQLITE_INTERRUPT"
