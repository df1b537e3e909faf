"""The one place that opens SQLite connections, with tuned PRAGMAs.

Never ``locking_mode=EXCLUSIVE``: in WAL mode it would lock every other process out.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Literal

from . import _cipher, _readonly
from ._config import Config
from ._errors import UnsupportedFilesystem

log = logging.getLogger("onewriter")

#: ``copy``: a backup's destination or a restore's source: the key and nothing else.
ConnectionKind = Literal["writer", "reader", "copy"]

#: Filesystems on which WAL's shared memory does not work across hosts.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "davfs",
    }
)

_version_logged = False


def open_connection(path: str, config: Config, kind: ConnectionKind) -> sqlite3.Connection:
    """Open ``path`` as the writer's connection, a reader's, or a backup's (``copy``).

    Both run in autocommit mode (``isolation_level=None``): the writer issues its own
    ``BEGIN IMMEDIATE``; a reader never holds a transaction past one statement, and its
    authorizer refuses anything but reading (``_readonly``). With
    ``config.key`` the connection is SQLCipher's, keyed before anything reads the file,
    and a wrong key (or a missing one) fails here with ``WrongKey``.
    """
    timeout = config.busy_timeout_ms / 1000
    _cipher.claim_library(os.path.realpath(path), encrypted=config.key is not None)
    if config.key is None:
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512,
            timeout=timeout,
        )
        row_type: type = sqlite3.Row
    else:
        conn = _cipher.connect(path, config.key, timeout)
        row_type = _cipher.driver().Row
    try:
        _cipher.check_readable(conn, path, keyed=config.key is not None)
        _apply_pragmas(conn, config, kind)
    except BaseException:
        conn.close()
        raise
    if kind == "reader":
        conn.row_factory = row_type
        _readonly.install(conn)
    return conn


def _apply_pragmas(conn: sqlite3.Connection, config: Config, kind: ConnectionKind) -> None:
    execute = conn.execute
    execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
    if kind == "copy":
        return
    if kind == "writer":
        mode = execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch the database to WAL (got {mode})")
        execute("PRAGMA wal_autocheckpoint = 0")  # the writer schedules its own checkpoints
        execute(f"PRAGMA journal_size_limit = {int(config.wal_size_limit)}")
    synchronous = "FULL" if config.durability == "full" else "NORMAL"
    execute(f"PRAGMA synchronous = {synchronous}")
    execute(f"PRAGMA cache_size = -{int(config.cache_size_kib)}")
    execute(f"PRAGMA mmap_size = {int(config.mmap_size)}")
    execute("PRAGMA temp_store = MEMORY")
    execute(f"PRAGMA foreign_keys = {'ON' if config.foreign_keys else 'OFF'}")
    if kind == "reader":
        execute("PRAGMA query_only = ON")


def filesystem_type(path: str, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path``, from ``/proc/mounts`` (Linux)."""
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
                mounts = f.read()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        prefix = mount_point.rstrip("/") + "/"
        if (target == mount_point or target.startswith(prefix) or mount_point == "/") and len(
            mount_point
        ) >= len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def check_filesystem(path: str, mounts: str | None = None) -> None:
    """Refuse a database on a network filesystem, where WAL cannot be shared safely."""
    directory = os.path.dirname(os.path.realpath(path)) or "."
    fs = filesystem_type(directory, mounts)
    if fs is not None and (fs in NETWORK_FILESYSTEMS or fs.startswith("nfs")):
        raise UnsupportedFilesystem(
            f"{path} is on a {fs} filesystem: SQLite's WAL needs shared memory on one host. "
            "Keep the database on a local disk and let producers on other machines reach "
            "the writer through the TCP or Redis transports."
        )


def wal_reset_bug_affects(version: tuple[int, int, int]) -> bool:
    """Whether this SQLite has the WAL-reset race (3.7.0 to 3.51.2; fixed in 3.51.3,
    backported to 3.50.7 and 3.44.6)."""
    if version < (3, 7, 0) or version >= (3, 51, 3):
        return False
    return not ((3, 50, 7) <= version < (3, 51, 0) or (3, 44, 6) <= version < (3, 45, 0))


def log_sqlite_version() -> None:
    """Log the SQLite version once per process (the writer calls it as it starts), with a
    note when it has the WAL-reset race; the note's links work from an installed package."""
    global _version_logged
    if _version_logged:
        return
    _version_logged = True
    version = sqlite3.sqlite_version_info
    if wal_reset_bug_affects(version):
        log.warning(
            "SQLite %s has the WAL-reset race (fixed in 3.51.3): only onewriter's writer "
            "writes and checkpoints, but any other tool writing this file (Litestream "
            "included) could trigger it. See https://www.sqlite.org/wal.html#walresetbug "
            "and onewriter's operations guide, 'SQLite versions and the WAL-reset race'.",
            sqlite3.sqlite_version,
        )
    else:
        log.info("SQLite %s", sqlite3.sqlite_version)
