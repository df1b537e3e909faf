"""The one place that opens SQLite connections, with tuned PRAGMAs.

Never ``locking_mode=EXCLUSIVE``: in WAL mode it would lock every other process out.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Literal

from ..config import Config
from ..errors import UnsupportedFilesystem
from . import cipher as _cipher
from . import readonly as _readonly

log = logging.getLogger("onewriter")

#: ``copy``: a backup's destination or a restore's source: the key and nothing else.
#: ``direct``: a process's own write connection (direct writes, docs/design.md).
ConnectionKind = Literal["writer", "direct", "reader", "copy"]

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


def open_connection(path: str, config: Config, kind: ConnectionKind) -> sqlite3.Connection:
    """Open ``path`` as the writer's connection, a direct writer's, a reader's, or a
    backup's (``copy``).

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
    if kind in ("writer", "direct"):
        mode = execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch the database to WAL (got {mode})")
        if kind == "writer" or config.checkpoint == "external":
            # The writer schedules its own checkpoints between batches. A direct
            # connection keeps SQLite's automatic one: it runs inside COMMIT, under the
            # write turn, and costs what it costs plain sqlite3.
            execute("PRAGMA wal_autocheckpoint = 0")
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
