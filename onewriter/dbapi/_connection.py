"""The connection: a real ``sqlite3.Connection`` of this process, writing under the
database's write turn.

Everything the standard module offers is its own here (TEMP tables, ATTACH, functions,
collations, hooks, blobs, backup, ``detect_types``, ...). What onewriter adds is the turn
(``_gate.py``): a write transaction takes it before it starts (``BEGIN IMMEDIATE``) and
gives it back when it ends, so no process meets ``database is locked``. A connection to
``:memory:`` or a temporary database is private and takes no turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any

from ..config import Config
from ..database import Database
from ..turn import turn_for
from ._classify import Kind, known
from ._cursor import Cursor
from ._errors import NotSupportedError
from ._gate import Gate

log = logging.getLogger("onewriter.dbapi")

_new_cursor = sqlite3.Connection.cursor
_execute = sqlite3.Cursor.execute
READ = Kind.READ
_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(Config))
_DEFAULT_CONFIG = Config()
#: The standard connection's own ``isolation_level`` (what its implicit BEGIN says).
_NATIVE_LEVEL: Any = vars(sqlite3.Connection)["isolation_level"]
#: Levels whose implicit BEGIN runs as BEGIN IMMEDIATE under the turn.
_DEFERRED_LEVELS = frozenset({"", "DEFERRED"})
_IMMEDIATE = "IMMEDIATE"
#: onewriter's own table, left out of dumps (``_applied.py`` keeps exactly-once records).
_OWN_TABLE = re.compile(r'(CREATE TABLE (IF NOT EXISTS )?|INSERT INTO )"?_onewriter_')

DATABASE_LIST = "PRAGMA database_list"
BUSY_TIMEOUT = "PRAGMA busy_timeout"
JOURNAL_MODE = "PRAGMA journal_mode"
SET_WAL = "PRAGMA journal_mode = WAL"
SYNCHRONOUS = {"normal": "PRAGMA synchronous = NORMAL", "full": "PRAGMA synchronous = FULL"}
FOREIGN_KEYS = {True: "PRAGMA foreign_keys = ON", False: "PRAGMA foreign_keys = OFF"}
NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint = 0"


class Connection(sqlite3.Connection):
    """A ``sqlite3.Connection`` whose writes take the database's write turn.

    Arguments are ``sqlite3.connect``'s. ``database`` may also be a
    :class:`onewriter.Database` (its file and ``Config``); ``config=`` and keyword
    overrides of :class:`onewriter.Config` fields (``transaction_timeout=2.0``,
    ``durability="full"``, ...) set what onewriter configures.
    """

    _gate: Gate | None = None
    _trace: Any = None
    _level: str | None = None

    def __init__(self, *args: Any, config: Config | None = None, **kwargs: Any) -> None:
        overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in _CONFIG_FIELDS}
        args, config = _unwrap_database(args, kwargs, config)
        settings = (config or _DEFAULT_CONFIG).replace(**overrides) if overrides else config
        settings = settings or _DEFAULT_CONFIG
        if settings.key is not None:
            raise NotSupportedError(
                "encrypted databases need SQLCipher's driver: use onewriter.connect(key=...)"
            )
        if self._gate is not None:  # __init__ again: the old connection is gone
            self._gate.release()
        super().__init__(*args, **kwargs)
        self._gate = None
        self._trace = None
        self._level = _NATIVE_LEVEL.__get__(self)
        path = _main_file(self)
        if path is None:
            return
        try:
            turn = turn_for(path)
        except OSError as exc:  # a read-only directory: nothing here can write anyway
            log.info("no write turn for %s: %s", path, exc)
            return
        (timeout_ms,) = sqlite3.Connection.execute(self, BUSY_TIMEOUT).fetchone()
        self._gate = Gate(self, turn, timeout_ms / 1000, settings.transaction_timeout)
        self._configure(settings)
        if self._level in _DEFERRED_LEVELS:
            _NATIVE_LEVEL.__set__(self, _IMMEDIATE)

    def _configure(self, config: Config) -> None:
        """onewriter's settings: WAL (switched under the turn), durability, caches."""
        execute = super().execute
        execute(SYNCHRONOUS[config.durability])
        execute(f"PRAGMA cache_size = -{int(config.cache_size_kib)}")
        execute(f"PRAGMA mmap_size = {int(config.mmap_size)}")
        execute(FOREIGN_KEYS[bool(config.foreign_keys)])
        if config.checkpoint == "external":
            execute(NO_AUTOCHECKPOINT)
        assert self._gate is not None
        try:
            if str(execute(JOURNAL_MODE).fetchone()[0]).lower() != "wal":
                self._gate.take()
                try:
                    execute(SET_WAL)
                finally:
                    self._gate.release()
        except sqlite3.OperationalError as exc:
            # Locked by another tool, or read-only: the statements will say so, as the
            # standard module's would.
            log.info("could not switch %s to WAL: %s", self._gate.turn.path, exc)

    # -- statements ----------------------------------------------------------------

    def cursor(self, factory: Callable[..., Any] = Cursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        cursor = _new_cursor(self, Cursor)
        gate = self._gate
        if gate is None or (gate.hold is None and known.get(sql) is READ):
            return _execute(cursor, sql, parameters)  # the common case, as Cursor's
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        return sqlite3.Connection.cursor(self, Cursor).executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Any:
        return sqlite3.Connection.cursor(self, Cursor).executescript(sql_script)

    # -- how transactions end ------------------------------------------------------

    def commit(self) -> None:
        gate = self._gate
        if gate is None:
            return super().commit()
        gate.expire_if_overdue(self)
        try:
            super().commit()
        finally:
            gate.settle(self)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            if self._gate is not None:
                self._gate.settle(self)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._gate is not None:
                self._gate.release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        gate = self._gate
        if gate is None:
            return super().__exit__(exc_type, exc, tb)
        if exc_type is None:
            gate.expire_if_overdue(self)
        try:
            return super().__exit__(exc_type, exc, tb)
        finally:
            gate.settle(self)

    def __del__(self) -> None:
        gate = self.__dict__.get("_gate")
        if gate is not None and gate.hold is not None:
            with contextlib.suppress(sqlite3.Error):
                sqlite3.Connection.close(self)  # roll back before giving the turn on
            gate.release()

    @property  # type: ignore[override]
    def isolation_level(self) -> str | None:
        level: str | None = _NATIVE_LEVEL.__get__(self)
        return level if self._gate is None else self._level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        _NATIVE_LEVEL.__set__(self, value)  # checks it; None commits
        gate = self._gate
        if gate is None:
            return
        self._level = _NATIVE_LEVEL.__get__(self)
        if self._level in _DEFERRED_LEVELS:
            _NATIVE_LEVEL.__set__(self, _IMMEDIATE)
        gate.settle(self)

    # -- what needs the turn or the statements' text -------------------------------

    def set_trace_callback(self, trace_callback: Callable[[str], object] | None) -> None:
        super().set_trace_callback(trace_callback)
        self._trace = trace_callback

    def backup(self, target: sqlite3.Connection, **kwargs: Any) -> None:
        """As the standard module's; writing ``target`` takes its write turn."""
        gate = getattr(target, "_gate", None)
        if gate is None or gate.hold is not None:
            return super().backup(target, **kwargs)
        gate.take()
        try:
            return super().backup(target, **kwargs)
        finally:
            gate.settle(target)

    def iterdump(self) -> Generator[str, None, None]:
        """As the standard module's, without onewriter's own table."""
        return (line for line in super().iterdump() if not _OWN_TABLE.match(line))


def _unwrap_database(
    args: tuple[Any, ...], kwargs: dict[str, Any], config: Config | None
) -> tuple[tuple[Any, ...], Config | None]:
    """A :class:`onewriter.Database` given as ``database`` stands for its file."""
    if args and isinstance(args[0], Database):
        database = args[0]
        args = (database.path, *args[1:])
    elif isinstance(kwargs.get("database"), Database):
        database = kwargs["database"]
        kwargs["database"] = database.path
    else:
        return args, config
    return args, config or database.config


def _main_file(conn: sqlite3.Connection) -> str | None:
    """The main database's file, or ``None`` for ``:memory:`` and temporary ones."""
    text_factory, conn.text_factory = conn.text_factory, bytes  # paths need not be UTF-8
    try:
        rows = sqlite3.Connection.execute(conn, DATABASE_LIST).fetchall()
    finally:
        conn.text_factory = text_factory
    for row in rows:
        if row[1] == b"main":
            return os.path.realpath(os.fsdecode(row[2])) if row[2] else None
    return None
