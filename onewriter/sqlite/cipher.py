"""SQLCipher: loading it, applying a key, and telling a wrong key apart.

With a key, every connection to the file (writer, readers, backups) goes through
SQLCipher and nothing else: two copies of SQLite in one process on one file defeat each
other's POSIX lock bookkeeping (sqlite.org/howtocorrupt.html §2.2-2.3), so a process
that opened a file through one library is refused the other.

When SQLCipher loads, its exception classes are placed under the standard ``sqlite3``
ones, so ``except sqlite3.IntegrityError`` (in an op, and in onewriter itself) catches
SQLCipher's errors as well. Only its two roots, ``Error`` and ``Warning``, cannot be
re-parented (CPython refuses: their layout differs); no SQLite error code maps to them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sqlite3
import stat
import threading
from types import ModuleType
from typing import cast

from ..errors import WrongKey
from ..extras import missing_extra

log = logging.getLogger("onewriter")

Key = bytes | str

#: A raw key is 256 bits; a passphrase goes through SQLCipher's PBKDF2 instead.
RAW_KEY_BYTES = 32

_SQLITE_NOTADB = 26
_EXCEPTIONS = (
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
)

_driver: ModuleType | None = None
_driver_lock = threading.Lock()
_libraries: dict[str, bool] = {}


def check_key(key: object) -> None:
    """Refuse a key SQLCipher could not take (called when a Config is made)."""
    if key is None:
        return
    if isinstance(key, bytes):
        if len(key) != RAW_KEY_BYTES:
            raise ValueError(f"a raw key must be {RAW_KEY_BYTES} bytes, not {len(key)}")
    elif isinstance(key, str):
        if not key or "\x00" in key:
            raise ValueError("a passphrase must be a non-empty string without NUL characters")
    else:
        raise TypeError(f"key must be bytes, str or None, not {type(key).__name__}")


def key_statement(key: Key) -> str:
    """``PRAGMA key`` for ``key``: bytes are a raw key, a str is SQLCipher's key string
    (a passphrase, or ``x'<64 hex digits>'`` for a raw key)."""
    text = f"x'{key.hex()}'" if isinstance(key, bytes) else key
    quoted = text.replace("'", "''")
    return f"PRAGMA key = '{quoted}'"


def driver() -> ModuleType:
    """The ``sqlcipher3`` DB-API module, loaded once."""
    global _driver
    with _driver_lock:
        if _driver is None:
            _driver = _load_driver()
        return _driver


def _load_driver() -> ModuleType:
    try:
        module = importlib.import_module("sqlcipher3.dbapi2")
    except ImportError as exc:
        raise missing_extra("sqlcipher", "a key (SQLCipher)", exc) from None
    for name in _EXCEPTIONS:
        cls = getattr(module, name)
        standard = getattr(sqlite3, name)
        if not issubclass(cls, standard):
            cls.__bases__ = (standard, *cls.__bases__)
    from .versions import wal_reset_bug_affects

    version = tuple(module.sqlite_version_info)
    if wal_reset_bug_affects(version):
        log.warning(
            "SQLCipher's SQLite %s has the WAL-reset race (fixed in 3.51.3); onewriter avoids "
            "it by letting only the writer write and checkpoint.",
            module.sqlite_version,
        )
    else:
        log.info("SQLCipher on SQLite %s", module.sqlite_version)
    return module


def connect(path: str, key: Key, timeout: float) -> sqlite3.Connection:
    """Open ``path`` through SQLCipher with ``key`` applied before anything reads the file.

    The connection quacks like :class:`sqlite3.Connection` (same DB-API, same methods).
    """
    conn = driver().connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=512,
        timeout=timeout,
    )
    try:
        # Wrong keys are reported as WrongKey; SQLCipher's own stderr log would repeat it.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(key_statement(key))
    except BaseException:
        conn.close()
        raise
    return cast(sqlite3.Connection, conn)


def check_readable(conn: sqlite3.Connection, path: str, keyed: bool) -> None:
    """Read the schema once, so that a wrong or missing key fails here, before any write."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_NOTADB:
            raise
        if keyed:
            why = "the key does not open it (a wrong key, or the file is not encrypted)"
        else:
            why = "it is encrypted (pass its key: key=... or --key-file) or it is not a database"
        raise WrongKey(f"{path} cannot be read: {why}") from None


def claim_library(path: str, encrypted: bool) -> None:
    """Keep one SQLite library per file in this process: refuse to mix them."""
    previous = _libraries.setdefault(path, encrypted)
    if previous != encrypted:
        had, wants = ("SQLCipher", "sqlite3") if previous else ("sqlite3", "SQLCipher")
        raise ValueError(
            f"{path} was opened through {had} in this process; opening it through {wants} "
            "too would break SQLite's locks. Use the same key setting everywhere."
        )


def read_key_file(path: str) -> str:
    """The key in ``path`` (one line: a passphrase, or ``x'<64 hex digits>'``)."""
    with open(path, encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by other users (chmod 600 it)", path)
    key = text.rstrip("\r\n")
    check_key(key)
    return key
