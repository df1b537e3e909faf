"""One handle per process on each database, shared by all its DB-API connections.

``sqlite3.connect`` is cheap and often called per request; what it stands for here is
not: the writer role, the election, reader connections. So a DB-API connection is a
light object over a per-process :class:`Shared` handle that lives until the process
exits (or :func:`close_all`): closing a connection never hands the writer role on.

``:memory:`` cannot be shared between processes; it becomes a private database in a
temporary directory, with the writer in this process, removed when its one connection
closes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import threading
import urllib.parse
import weakref
from typing import Any

from .._config import Config
from .._core import Core
from .._database import Database, connect, make_config
from .._errors import OneWriterError
from .._ops import Ops
from ._errors import OperationalError, from_onewriter
from ._readers import Functions, Readers

#: Objects of a parent process that a forked child must never close.
_abandoned: list[Any] = []


class Shared:
    """A database as this process's DB-API connections see it."""

    def __init__(self, database: Database, *, owned: bool, private_dir: str | None = None):
        self.database = database
        self.owned = owned
        self.private_dir = private_dir
        self.file_id = _file_id(database.path)
        self.functions = Functions()
        self._readers: Readers | None = None
        self._readers_core: Core | None = None
        self._lock = threading.Lock()
        self.closed = False

    @property
    def config(self) -> Config:
        return self.database.config

    def core(self) -> Core:
        """This process's core (a new one in a forked child)."""
        return self.database._live_core()

    def readers(self) -> Readers:
        core = self.core()
        with self._lock:
            if self._readers is None or self._readers_core is not core:
                if self._readers is not None:
                    _abandoned.append(self._readers)  # the parent's, after fork
                self._readers = Readers(core.db_path, core.config, self.functions)
                self._readers_core = core
            return self._readers

    def close(self) -> None:
        """Close readers and, when this handle opened the database, the database."""
        if self.closed:
            return
        self.closed = True
        if self._readers is not None and self._readers_core is self.database._core:
            self._readers.close()
        if self.owned:
            self.database.close()
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


_registry_lock = threading.Lock()
_by_path: dict[tuple[str, str], Shared] = {}
_by_database: weakref.WeakKeyDictionary[Database, Shared] = weakref.WeakKeyDictionary()
_private: weakref.WeakSet[Shared] = weakref.WeakSet()


def _reset_lock_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


_MEMORY = frozenset({":memory:", ""})


def open_shared(
    database: str | bytes | os.PathLike[str] | os.PathLike[bytes] | Database,
    *,
    uri: bool,
    ops: Ops | None,
    config: Config | None,
    overrides: dict[str, Any],
) -> tuple[Shared, bool]:
    """The handle a DB-API connection to ``database`` uses, and whether it is read-only."""
    if isinstance(database, Database):
        return shared_for_database(database), False
    path = os.fsdecode(database)
    mode = "rwc"
    if uri:
        path, mode = _parse_uri(path)
    settings = make_config(config, overrides)
    try:
        if path in _MEMORY or mode == "memory":
            return private_memory(settings, ops), False
        _check_openable(path, create=mode == "rwc")
        return shared_for_path(path, settings, ops), mode == "ro"
    except OneWriterError as exc:
        raise from_onewriter(exc) from exc


def _parse_uri(uri: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "file":
        raise OperationalError(f"not a file: URI: {uri!r}")
    mode = urllib.parse.parse_qs(parts.query).get("mode", ["rwc"])[-1]
    if mode not in ("ro", "rw", "rwc", "memory"):
        raise OperationalError(f"no such access mode: {mode}")
    return urllib.parse.unquote(parts.path), mode


def _check_openable(path: str, *, create: bool) -> None:
    """Fail as ``sqlite3.connect`` does for a path that cannot be opened."""
    directory = os.path.dirname(os.path.abspath(path))
    missing = not create and not os.path.exists(path)
    if missing or os.path.isdir(path) or not os.path.isdir(directory):
        error = OperationalError("unable to open database file")
        error.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN
        error.sqlite_errorname = "SQLITE_CANTOPEN"
        raise error


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def shared_for_path(path: str, config: Config, ops: Ops | None) -> Shared:
    """This process's handle on ``path``, opened (and the writer found) on first use.

    A handle whose file was deleted or replaced since is closed and opened again:
    otherwise it would go on serving the old file.
    """
    key = (os.path.realpath(path), repr((config, ops)))
    with _registry_lock:
        shared = _by_path.get(key)
        if shared is not None and not shared.closed and shared.file_id != _file_id(path):
            shared.close()
        if shared is None or shared.closed:
            shared = Shared(connect(path, ops=ops, config=config), owned=True)
            _by_path[key] = shared
        return shared


def shared_for_database(database: Database) -> Shared:
    """A handle over a ``Database`` the application opened (and will close) itself."""
    with _registry_lock:
        shared = _by_database.get(database)
        if shared is None or shared.closed:
            shared = Shared(database, owned=False)
            _by_database[database] = shared
        return shared


def private_memory(config: Config, ops: Ops | None) -> Shared:
    """A private database standing in for ``:memory:``."""
    directory = tempfile.mkdtemp(prefix="onewriter-memory-")
    try:
        database = connect(
            os.path.join(directory, "memory.db"), ops=ops, config=config.replace(role="standalone")
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    shared = Shared(database, owned=True, private_dir=directory)
    _private.add(shared)
    return shared


@atexit.register
def _remove_private_databases() -> None:
    """``:memory:`` databases whose connections were never closed go with the process."""
    for shared in list(_private):
        if shared.database._core.pid == os.getpid():
            shared.close()


def close_all() -> None:
    """Close this process's shared handles (the writer role, if held here, is handed on
    after the queued writes commit). Connections opened before fail from then on."""
    with _registry_lock:
        handles = list(_by_path.values()) + list(_by_database.values())
        _by_path.clear()
        _by_database.clear()
    for shared in handles:
        shared.close()
