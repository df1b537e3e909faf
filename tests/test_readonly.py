"""Reads that can never write: every reader connection runs an authorizer that refuses
writes, settings, transactions, ATTACH/VACUUM and file functions, locally and for remote
peers (a real ``onewriter serve --listen``, a real redis-server), and the reader stays
read-only afterwards. ``Config.remote_reads`` switches remote reads off.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Children, count, create_post, user_version
from peers import TOKEN, RawTcp, serve_tcp
from redis_server import RedisServer, needs_redis
from redis_server import redis_server as redis_server  # the fixture, for pytest

import onewriter
from onewriter import Config
from onewriter.sqlite.connect import open_connection
from onewriter.sqlite.readonly import take_refusal

#: Statements a hostile reader sends. ``{dir}`` is a directory the writer's user can write.
ATTACKS = [
    "PRAGMA query_only = OFF",
    "PRAGMA query_only = 0; ",
    "INSERT INTO posts (title) VALUES ('x') RETURNING id",
    "WITH x AS (SELECT 1) INSERT INTO posts (title) SELECT 'x' FROM x",
    "UPDATE posts SET title = 'x'",
    "DELETE FROM posts",
    "REPLACE INTO posts (id, title) VALUES (1, 'x')",
    "VACUUM INTO '{dir}/copy.db'",
    "VACUUM",
    "ATTACH DATABASE '{dir}/attached.db' AS a",
    "DETACH DATABASE main",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "SAVEPOINT hold",
    "CREATE TABLE t (x)",
    "CREATE TEMP TABLE t (x)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON posts BEGIN SELECT 1; END",
    "CREATE INDEX i ON posts (title)",
    "CREATE VIRTUAL TABLE temp.vt USING fts5(a)",
    "DROP TABLE posts",
    "ALTER TABLE posts ADD COLUMN x",
    "REINDEX",  # rebuilds posts_title (the test schema's index)
    "ANALYZE",
    "PRAGMA user_version = 99",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA writable_schema = ON",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "PRAGMA optimize",
    "PRAGMA foreign_keys = OFF",
    "SELECT load_extension('{dir}/evil')",
    "SELECT fts3_tokenizer('simple')",
]

#: Reads the guard must leave alone.
ALLOWED = [
    ("SELECT count(*) FROM posts", None),
    ("PRAGMA table_info(posts)", 0),
    ("SELECT name FROM pragma_table_info('posts') ORDER BY cid", "id"),
    ("SELECT value FROM json_each('[7]')", 7),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3) SELECT x FROM c", 1),
    ("PRAGMA user_version", 2),
    ("PRAGMA quick_check", "ok"),
    ("PRAGMA main.index_list(posts)", None),
    ("PRAGMA query_only", 1),
    ("PRAGMA journal_mode", "wal"),
    ("SELECT name FROM sqlite_master WHERE name = 'posts'", "posts"),
    ("EXPLAIN QUERY PLAN SELECT * FROM posts", None),
]

SideEffects = Callable[[], None]


def no_side_effects(db_path: str, directory: Path) -> SideEffects:
    """A check that nothing was written, created or changed since it was made."""
    posts, version = count(db_path, "posts"), user_version(db_path)
    before = set(os.listdir(directory))

    def check() -> None:
        assert count(db_path, "posts") == posts
        assert user_version(db_path) == version
        assert set(os.listdir(directory)) == before
        for name in ("copy.db", "attached.db", "evil"):
            assert not (directory / name).exists(), name

    return check


def still_read_only(read: Callable[[str], list[Any]]) -> None:
    """The reader that refused an attack is as read-only as before."""
    assert read("PRAGMA query_only")[0][0] == 1
    with pytest.raises(onewriter.ReadOnly):
        read("INSERT INTO posts (title) VALUES ('after')")
    assert read("SELECT count(*) AS n FROM posts")[0]["n"] >= 1


def attack_all(read: Callable[[str], list[Any]], directory: Path, check: SideEffects) -> None:
    for template in ATTACKS:
        sql = template.format(dir=directory)
        with pytest.raises(onewriter.ReadOnly) as refused:
            read(sql)
        assert refused.value.code == "READ_ONLY"
        check()
        still_read_only(read)
        check()


def allowed_all(read: Callable[[str], list[Any]]) -> None:
    for sql, first in ALLOWED:
        rows = read(sql)
        if first is not None:
            assert rows[0][0] == first, sql


# -- this process's own readers ----------------------------------------------------------------


def test_local_reads_refuse_every_attack_and_stay_read_only(
    open_db: Callable[..., onewriter.Database], db_path: str, tmp_path: Path
) -> None:
    db = open_db(read_pool_size=1)  # one reader: each attack hits the one the next uses
    db.write(create_post, title="kept")
    directory = tmp_path / "drop"
    directory.mkdir()
    attack_all(db.read, directory, no_side_effects(db_path, directory))
    allowed_all(db.read)
    assert db._core.reads.replaced == 0  # refusals never break a reader


def test_encrypted_readers_refuse_every_attack_too(
    open_db: Callable[..., onewriter.Database], tmp_path: Path
) -> None:
    pytest.importorskip("sqlcipher3", reason="SQLCipher is not installed")
    db = open_db(key=bytes(range(32)), read_pool_size=1)
    db.write(create_post, title="kept")
    directory = tmp_path / "drop"
    directory.mkdir()

    def unchanged() -> None:  # the file is encrypted: look through the database itself
        assert db.read("SELECT count(*) FROM posts")[0][0] == 1
        assert db.read("PRAGMA user_version")[0][0] == 2
        assert os.listdir(directory) == []

    attack_all(db.read, directory, unchanged)


def test_the_refusal_says_what_was_refused(open_db: Callable[..., onewriter.Database]) -> None:
    db = open_db(read_pool_size=1)
    with pytest.raises(onewriter.ReadOnly, match="PRAGMA query_only OFF"):
        db.read("PRAGMA query_only = OFF")
    with pytest.raises(onewriter.ReadOnly, match="ATTACH"):
        db.read("VACUUM INTO '/nonexistent/copy.db'")
    with pytest.raises(onewriter.ReadOnly, match="load_extension"):
        db.read("SELECT load_extension('x')")


def test_file_functions_are_refused_wherever_they_exist(db_path: str, tmp_path: Path) -> None:
    """``readfile``/``writefile`` exist only where the shell or an extension defines
    them: defined here on a reader, they are still refused, by name."""
    onewriter.connect(db_path, role="standalone").close()  # creates the database
    conn = open_connection(db_path, Config(), "reader")
    target = tmp_path / "written"
    try:
        conn.create_function("writefile", 2, lambda path, data: Path(path).write_text(data))
        conn.create_function("readfile", 1, lambda path: Path(path).read_bytes())
        for sql, args in [
            ("SELECT writefile(?, 'x')", (str(target),)),
            ("SELECT upper(readfile(?))", (db_path,)),
        ]:
            with pytest.raises(sqlite3.DatabaseError) as refused:
                conn.execute(sql, args)
            assert take_refusal(refused.value) is not None
        assert not target.exists()
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        conn.close()


def test_dbapi_writes_that_look_like_reads_still_reach_the_writer(db_path: str) -> None:
    """The DB-API tries ``WITH``/``PRAGMA`` statements on a reader first; the guard's
    refusal sends them on to the writer, as ``query_only``'s used to."""
    import onewriter.dbapi as dbapi

    conn = dbapi.connect(db_path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("WITH v(x) AS (VALUES (1)) INSERT INTO t SELECT x FROM v")
        conn.execute("PRAGMA user_version = 7")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    finally:
        conn.close()


# -- TCP: a real `onewriter serve --listen` --------------------------------------------------


@pytest.fixture
def tcp_writer(children: Children, db_path: str, tmp_path: Path) -> str:
    return serve_tcp(children, db_path, tmp_path)[1]


def test_tcp_reads_refuse_every_attack_and_the_writer_keeps_serving(
    tcp_writer: str, db_path: str, tmp_path: Path
) -> None:
    directory = tmp_path / "drop"
    directory.mkdir()
    db = onewriter.connect(tcp_writer, token=TOKEN)
    try:
        db.write(create_post, title="kept")
        attack_all(db.read, directory, no_side_effects(db_path, directory))
        allowed_all(db.read)
        assert db.write(create_post, title="after the attacks")["id"] == 2
        assert db.stats()["remote"]["reads_refused"] >= len(ATTACKS)
    finally:
        db.close()


def test_tcp_results_are_bounded_by_max_frame(tcp_writer: str) -> None:
    db = onewriter.connect(tcp_writer, token=TOKEN)
    try:
        endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        with pytest.raises(onewriter.TooLarge, match="max_frame"):
            db.read(endless + "SELECT x, zeroblob(1000) FROM c")
        with pytest.raises(onewriter.TooLarge):
            db.read("SELECT zeroblob(?)", (9 * 1024 * 1024,))
        assert len(db.read(endless + "SELECT x FROM c LIMIT 1000")) == 1000
    finally:
        db.close()


def test_tcp_reads_switched_off_are_refused_with_their_code(
    children: Children, db_path: str, tmp_path: Path
) -> None:
    url = serve_tcp(children, db_path, tmp_path, "--remote-reads", "off")[1]
    db = onewriter.connect(url, token=TOKEN)
    try:
        assert db.write(create_post, title="writes still work")["id"] == 1
        with pytest.raises(onewriter.ReadsDisabled):
            db.read("SELECT 1")
        with pytest.raises(onewriter.ReadsDisabled):
            db.stats()
    finally:
        db.close()
    with RawTcp(url) as raw:
        raw.send({"id": 5, "t": "read", "sql": "SELECT 1", "params": []})
        assert raw.recv_id(5)["error"]["code"] == "READS_DISABLED"


def test_tcp_transaction_kinds_are_unknown_and_apply_nothing(tcp_writer: str, db_path: str) -> None:
    """The writer holds no transaction for a peer: ``tx_*`` are unknown kinds."""
    db = onewriter.connect(tcp_writer, token=TOKEN)
    try:
        db.write(create_post, title="kept")
    finally:
        db.close()
    posts = count(db_path, "posts")
    assert posts == 1
    with RawTcp(tcp_writer) as raw:
        raw.send({"id": 1, "t": "tx_begin", "deadline": 1000.0})
        raw.send({"id": 2, "t": "tx_exec", "tx": 1, "sql": "DELETE FROM posts", "params": []})
        raw.send({"id": 3, "t": "tx_commit", "tx": 1})
        for rid in (1, 2, 3):
            error = raw.recv_id(rid)["error"]
            assert error["code"] == "BAD_REQUEST"
            assert "unknown message type" in error["message"]
        raw.send({"id": 4, "t": "ping"})
        assert raw.recv_id(4)["ok"] is True
    assert count(db_path, "posts") == posts


# -- Redis: a real redis-server -----------------------------------------------------------------


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    return f"ro-{request.node.name[:40]}-{os.getpid()}"


@pytest.fixture
def redis_writer(
    redis_server: RedisServer, queue: str, open_db: Callable[..., onewriter.Database]
) -> Callable[..., onewriter.Database]:
    def start(**config: Any) -> onewriter.Database:
        return open_db(role="writer", redis_url=redis_server.url, redis_queue=queue, **config)

    return start


@pytest.fixture
def producer(redis_server: RedisServer, queue: str) -> Iterator[onewriter.Database]:
    db = onewriter.connect(redis_server.url, queue=queue)
    try:
        yield db
    finally:
        db.close()


@needs_redis
def test_redis_reads_are_off_unless_configured(
    redis_writer: Callable[..., onewriter.Database], producer: onewriter.Database
) -> None:
    redis_writer()
    assert producer.write(create_post, title="ops still work")["id"] == 1
    with pytest.raises(onewriter.ReadsDisabled):
        producer.read("SELECT title FROM posts")
    with pytest.raises(onewriter.ReadsDisabled):
        producer.stats()


@needs_redis
def test_redis_reads_refuse_every_attack_when_switched_on(
    redis_writer: Callable[..., onewriter.Database],
    producer: onewriter.Database,
    db_path: str,
    tmp_path: Path,
) -> None:
    redis_writer(remote_reads="all", read_pool_size=1)
    directory = tmp_path / "drop"
    directory.mkdir()
    producer.write(create_post, title="kept")
    attack_all(producer.read, directory, no_side_effects(db_path, directory))
    allowed_all(producer.read)
    assert producer.write(create_post, title="after the attacks")["id"] == 2
