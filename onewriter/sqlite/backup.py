"""Online backup and restore through SQLite's backup API.

A backup is copied in one step from a reader connection: one WAL read snapshot, so the
copy is consistent and the writer (which only appends to the WAL) is never blocked. A
paged backup would not do: SQLite restarts it whenever another connection writes the
source, so under steady writes it might never finish (docs/backup.md).

A restore refuses to run while a writer holds the database, checks the backup with
``PRAGMA integrity_check`` first and the result after, and writes through the backup API
so that the database's ``-wal`` and ``-shm`` stay coherent.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import Config, resolve_paths
from ..errors import BackupFailed
from ..writer.election import ElectionLock
from .connect import ConnectionKind, open_connection


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a backup or restore wrote."""

    path: str
    """The file written."""

    pages: int
    """Database pages copied."""

    bytes: int
    """The written database's size."""

    seconds: float
    """Time spent copying (the read snapshot was held this long)."""


def backup_database(source: str, dest: str, config: Config) -> BackupResult:
    """Copy ``source`` to ``dest`` from one read snapshot, while writes go on.

    ``dest`` is written with the same key as ``source`` (or none); an existing ``dest``
    is replaced through the backup API, in one transaction of its own.
    """
    source, dest = os.path.realpath(source), os.path.realpath(dest)
    if source == dest:
        raise BackupFailed(f"the backup of {source} cannot be written over itself")
    if not os.path.exists(source):
        raise BackupFailed(f"{source} does not exist")
    return _copy(source, dest, config, into="copy")


def restore_database(backup: str, database: str, config: Config) -> BackupResult:
    """Replace ``database`` with ``backup``, both checked with ``PRAGMA integrity_check``.

    Refused while a writer holds ``database``: stop it first. Readers in other
    processes may stay; they see the restored content from their next read on.
    """
    backup, database = os.path.realpath(backup), os.path.realpath(database)
    if backup == database:
        raise BackupFailed(f"{backup} cannot be restored over itself")
    if not os.path.exists(backup):
        raise BackupFailed(f"{backup} does not exist")
    problems = integrity_check(backup, config)
    if problems:
        raise BackupFailed(f"{backup} failed its integrity check: {'; '.join(problems[:5])}")
    lock = ElectionLock(resolve_paths(database, config)[2])
    if not lock.try_acquire():
        raise BackupFailed(f"a writer is running on {database}: stop it before restoring")
    # An empty database takes the backup's page size; a WAL database must share it.
    into: ConnectionKind = "writer" if _has_pages(database) else "copy"
    try:
        result = _copy(backup, database, config, into=into)
        problems = integrity_check(database, config)
        if problems:
            raise BackupFailed(
                f"{database} failed its integrity check after the restore: "
                + "; ".join(problems[:5])
            )
        return result
    finally:
        lock.release()


def integrity_check(path: str, config: Config) -> list[str]:
    """The problems ``PRAGMA integrity_check`` finds in ``path`` (empty when it is sound)."""
    with _connection(path, config, "reader") as conn:
        conn.row_factory = None
        try:
            rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:  # damage bad enough to stop the check itself
            return [str(exc)]
    return [] if rows == ["ok"] else rows


def _has_pages(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _copy(source: str, dest: str, config: Config, into: ConnectionKind) -> BackupResult:
    with (
        _connection(source, config, "reader") as src,
        _connection(dest, config, into) as dst,
    ):
        started = time.perf_counter()
        try:
            src.backup(dst, pages=-1)
        except sqlite3.Error as exc:
            raise BackupFailed(f"copying {source} to {dest} failed: {exc}") from exc
        seconds = time.perf_counter() - started
        if into == "copy":
            # The copy took the source's WAL flag; a backup is better one self-contained file.
            dst.execute("PRAGMA journal_mode = DELETE").fetchone()
        pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
    return BackupResult(dest, pages, os.path.getsize(dest), seconds)


@contextlib.contextmanager
def _connection(path: str, config: Config, kind: ConnectionKind) -> Iterator[sqlite3.Connection]:
    conn = open_connection(path, config, kind)
    try:
        yield conn
    finally:
        conn.close()
