"""SQLAlchemy 2.x Core and ORM through ``sqlite+onewriter``, in one process and in
several at once, and an Alembic migration run through it."""

from __future__ import annotations

import json
import sqlite3 as stdlib_sqlite3
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from alembic.config import Config
from helpers import PYTHON, Children
from sqlalchemy import ForeignKey, String, create_engine, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import onewriter

WORKERS = 3
ITERATIONS = 25


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    balance: Mapped[int] = mapped_column(default=0)
    events: Mapped[list[Event]] = relationship(back_populates="account")


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    worker: Mapped[int]
    i: Mapped[int]
    account: Mapped[Account] = relationship(back_populates="events")


def url(db_path: str) -> str:
    return f"sqlite+onewriter:///{db_path}"


def serializable(engine: Engine) -> Engine:
    """SQLAlchemy's recipe for SQLite: BEGIN at the start of every transaction, so that
    a session's reads run in its write transaction too."""

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def test_core_and_orm_in_one_process(db_path: str) -> None:
    engine = create_engine(url(db_path))
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            alice = Account(name="alice")
            alice.events = [Event(worker=0, i=i) for i in range(5)]
            session.add_all([alice, Account(name="bob")])
            session.commit()  # a multi-row INSERT ... RETURNING gives every id back
            assert sorted(e.id for e in alice.events) == [1, 2, 3, 4, 5]
        with Session(engine) as session:
            bob = session.scalars(select(Account).where(Account.name == "bob")).one()
            bob.balance = 7
            session.flush()
            # Inside the session's transaction it reads its own flushed write.
            assert session.scalar(select(Account.balance).where(Account.name == "bob")) == 7
            session.rollback()
            assert session.scalar(select(Account.balance).where(Account.name == "bob")) == 0
        with engine.begin() as connection:
            connection.execute(update(Account).values(balance=Account.balance + 1))
            count = connection.scalar(select(func.count()).select_from(Event))
            assert count == 5
        with Session(engine) as session, pytest.raises(sqlalchemy.exc.IntegrityError):
            session.add(Account(name="alice"))
            session.commit()
        names = engine.dialect.get_table_names(engine.connect())
        assert {"accounts", "events"} <= set(names)
    finally:
        engine.dispose()
    plain = stdlib_sqlite3.connect(db_path, timeout=10)
    try:
        assert plain.execute("SELECT name, balance FROM accounts ORDER BY id").fetchall() == [
            ("alice", 1),
            ("bob", 1),
        ]
    finally:
        plain.close()


def main_sessions(database: str, worker: str, iterations: str) -> None:
    """Child: ORM sessions inserting, and read-modify-write updates, against the others."""
    print("READY", flush=True)
    sys.stdin.readline()
    errors: Counter[str] = Counter()
    inserts = create_engine(url(database))
    updates = serializable(create_engine(url(database)))
    for i in range(int(iterations)):
        try:
            with Session(inserts) as session:
                session.add(Event(account_id=1, worker=int(worker), i=i))
                session.commit()
            with Session(updates) as session:
                account = session.get(Account, 1)
                assert account is not None
                account.balance += 1  # read, then write what was read
                session.commit()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            errors[type(exc).__name__ + ": " + str(exc.orig or exc)[:200]] += 1
    inserts.dispose()
    updates.dispose()
    print("DONE " + json.dumps(dict(errors)), flush=True)


def test_sessions_in_several_processes(db_path: str, children: Children) -> None:
    engine = create_engine(url(db_path))
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Account(name="shared"))
        session.commit()
    code = "import sys, test_sqlalchemy as t; t.main_sessions(*sys.argv[1:])"
    workers = [
        children.start([PYTHON, "-c", code, db_path, str(w), str(ITERATIONS)])
        for w in range(WORKERS)
    ]
    try:
        for child in workers:
            child.wait_line("READY", timeout=60)
        for child in workers:
            child.send("GO")
        reports = [child.wait_json("DONE ", timeout=90) for child in workers]
        assert reports == [{}] * WORKERS, reports
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Event)) == WORKERS * ITERATIONS
            assert session.get(Account, 1).balance == WORKERS * ITERATIONS  # type: ignore[union-attr]
            pairs = session.execute(select(Event.worker, Event.i).distinct()).all()
            assert len(pairs) == WORKERS * ITERATIONS
    finally:
        engine.dispose()


# -- Alembic -----------------------------------------------------------------------------------

ENV_PY = """
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

REVISIONS = {
    "0001_notes.py": """
revision = "0001"
down_revision = None

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("legacy", sa.Integer),
    )
    op.bulk_insert(
        sa.table("notes", sa.column("body"), sa.column("legacy")),
        [{"body": "first", "legacy": 1}, {"body": "second", "legacy": 2}],
    )


def downgrade():
    op.drop_table("notes")
""",
    "0002_reshape.py": """
revision = "0002"
down_revision = "0001"

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.add_column("notes", sa.Column("title", sa.String(80), server_default="untitled"))
    op.create_index("ix_notes_title", "notes", ["title"])
    with op.batch_alter_table("notes") as batch:  # SQLite's move-and-copy
        batch.drop_column("legacy")
    op.execute("UPDATE notes SET title = upper(body)")


def downgrade():
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("legacy", sa.Integer))
    op.drop_index("ix_notes_title", "notes")
    op.drop_column("notes", "title")
""",
}


def test_alembic_migrations_run_through_the_dialect(db_path: str, tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(textwrap.dedent(ENV_PY))
    (scripts / "script.py.mako").write_text("")
    for name, body in REVISIONS.items():
        (scripts / "versions" / name).write_text(textwrap.dedent(body))
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("sqlalchemy.url", url(db_path))

    command.upgrade(config, "head")
    plain = stdlib_sqlite3.connect(db_path, timeout=10)
    try:
        assert plain.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        columns = [row[1] for row in plain.execute("PRAGMA table_info(notes)")]
        assert columns == ["id", "body", "title"]
        rows = plain.execute("SELECT body, title FROM notes ORDER BY id").fetchall()
        assert rows == [("first", "FIRST"), ("second", "SECOND")]
        indexes = [row[1] for row in plain.execute("PRAGMA index_list(notes)")]
        assert "ix_notes_title" in indexes
    finally:
        plain.close()

    command.downgrade(config, "0001")
    plain = stdlib_sqlite3.connect(db_path, timeout=10)
    try:
        columns = [row[1] for row in plain.execute("PRAGMA table_info(notes)")]
        assert columns == ["id", "body", "legacy"]
        assert plain.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
    finally:
        plain.close()


def test_reflection_temp_tables_and_attached_schemas(db_path: str, tmp_path: Path) -> None:
    """Reflection right after DDL, TEMP tables and ATTACHed schemas, as with sqlite:///;
    onewriter's own table stays out of the listings."""
    writer = onewriter.connect(db_path, role="standalone", writes="funnel")
    try:
        writer.execute_write("SELECT 1")  # a funnelled write: it makes _onewriter_applied
    finally:
        writer.close()
    other = tmp_path / "other.db"
    engine = create_engine(url(db_path))

    @event.listens_for(engine, "connect")
    def _attach(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"ATTACH DATABASE '{other}' AS other")

    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE s (a INTEGER UNIQUE, b TEXT)")
            connection.exec_driver_sql("CREATE INDEX s_b ON s (b)")
            connection.exec_driver_sql("CREATE TABLE other.kept (k INTEGER PRIMARY KEY)")
            inspector = sqlalchemy.inspect(connection)
            assert [i["name"] for i in inspector.get_indexes("s")] == ["s_b"]
            assert inspector.get_unique_constraints("s")[0]["column_names"] == ["a"]
            assert inspector.get_table_names(schema="other") == ["kept"]
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TEMP TABLE scratch (n INTEGER)")
            connection.exec_driver_sql("INSERT INTO scratch VALUES (1)")
            connection.commit()
            assert connection.exec_driver_sql("SELECT n FROM scratch").scalar() == 1
            assert sqlalchemy.inspect(connection).get_temp_table_names() == ["scratch"]
        inspector = sqlalchemy.inspect(engine)
        assert inspector.get_table_names() == ["s"]
        assert "_onewriter_applied" in inspector.get_table_names(sqlite_include_internal=True)
        metadata = sqlalchemy.MetaData()
        metadata.reflect(engine)
        assert sorted(metadata.tables) == ["s"]
    finally:
        engine.dispose()
