"""The ``sqlite+onewriter`` SQLAlchemy dialect: SQLite's own, over ``onewriter.dbapi``.

``create_engine("sqlite+onewriter:///app.db")`` works as ``sqlite:///app.db`` does, with
onewriter's guarantees across processes. The dialect is registered by an entry point
(``sqlalchemy.dialects``), so importing this module is not needed.

onewriter's options go through ``connect_args``::

    create_engine("sqlite+onewriter:///app.db", connect_args={"transaction_timeout": 2.0})

For a whole session in one write transaction (reads included, so read-modify-write is
exact), emit BEGIN yourself as SQLAlchemy's SQLite documentation recommends; see
docs/dbapi.md.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite


class OneWriterDialect(SQLiteDialect_pysqlite):
    """SQLite through onewriter: reads on this process's readers, writes on the writer."""

    driver = "onewriter"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        import onewriter.dbapi

        return onewriter.dbapi


dialect = OneWriterDialect

__all__ = ["OneWriterDialect", "dialect"]
