"""The ``sqlite+onewriter`` SQLAlchemy dialect: SQLite's own, over ``onewriter.dbapi``.

``create_engine("sqlite+onewriter:///app.db")`` works as ``sqlite:///app.db`` does (the
connections are the standard module's), with write transactions taking the database's
write turn so that no process meets ``database is locked``. The dialect is registered
by an entry point (``sqlalchemy.dialects``), so importing this module is not needed.

onewriter's options go through ``connect_args``::

    create_engine("sqlite+onewriter:///app.db", connect_args={"transaction_timeout": 2.0})

Reflection leaves out onewriter's own tables (``_onewriter_*``), as the stock dialect
leaves out SQLite's ``sqlite_*`` ones.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

#: Tables onewriter keeps in the database for itself (exactly-once records).
OWN_TABLE_PREFIX = "_onewriter_"


class OneWriterDialect(SQLiteDialect_pysqlite):
    """SQLite through onewriter.dbapi: native connections, writes under the write turn."""

    driver = "onewriter"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        import onewriter.dbapi

        return onewriter.dbapi

    @classmethod
    def load_provisioning(cls) -> None:
        """SQLAlchemy's test suite sets this dialect up as SQLite's (attached schemas)."""
        import sqlalchemy.dialects.sqlite.provision  # noqa: F401

    def get_table_names(
        self,
        connection: Any,
        schema: str | None = None,
        sqlite_include_internal: bool = False,
        **kw: Any,
    ) -> list[str]:
        names: list[str] = super().get_table_names(  # type: ignore[no-untyped-call]
            connection, schema, sqlite_include_internal=sqlite_include_internal, **kw
        )
        if sqlite_include_internal:
            return names
        return [name for name in names if not name.startswith(OWN_TABLE_PREFIX)]


dialect = OneWriterDialect

__all__ = ["OneWriterDialect", "dialect"]
