"""Which SQLite this process runs, and whether it has the WAL-reset race."""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("onewriter")

_version_logged = False


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
            "SQLite %s has the WAL-reset race (fixed in 3.51.3): onewriter's own writes "
            "and checkpoints all take the write turn, but any other tool writing this file "
            "(Litestream included) could trigger it. See "
            "https://www.sqlite.org/wal.html#walresetbug and onewriter's operations guide, "
            "'SQLite versions and the WAL-reset race'.",
            sqlite3.sqlite_version,
        )
    else:
        log.info("SQLite %s", sqlite3.sqlite_version)
