"""Test databases in WAL mode: their ``-wal`` and ``-shm`` files go with them.

Django's sqlite3 creation deletes and copies only the main file. In WAL mode the
newest commits may still be in ``-wal``, and a ``-wal`` left beside a fresh file would
be replayed into it, so clones are made with SQLite's backup API and the siblings are
removed with the file. The turn file (``<db>.onewriter.turn``) stays: other processes
may still have it mapped.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any

from django.db.backends.sqlite3 import creation as sqlite_creation

SIBLINGS = ("-wal", "-shm", "-journal")


def remove_siblings(path: str) -> None:
    """Remove what SQLite keeps beside the database file at ``path``."""
    for suffix in SIBLINGS:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


class DatabaseCreation(sqlite_creation.DatabaseCreation):
    """Django's sqlite3 test-database handling, aware of the WAL's sibling files."""

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> Any:
        name = super()._create_test_db(verbosity, autoclobber, keepdb)
        if not keepdb and not self.is_in_memory_db(name):
            remove_siblings(str(name))
        return name

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        source = self.connection.settings_dict["NAME"]
        if self.is_in_memory_db(source):
            super()._clone_test_db(suffix, verbosity, keepdb)
            return
        target = str(self.get_test_db_clone_settings(suffix)["NAME"])
        if keepdb and os.access(target, os.F_OK):
            return
        for path in (target, *(target + s for s in SIBLINGS)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self.connection.ensure_connection()
        copy = sqlite3.connect(target)
        try:
            self.connection.connection.backup(copy)
        finally:
            copy.close()

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        super()._destroy_test_db(test_database_name, verbosity)
        if test_database_name and not self.is_in_memory_db(test_database_name):
            remove_siblings(test_database_name)
