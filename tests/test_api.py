"""The public API in one process and against a writer in another, with the error codes of
the write path produced for real."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    MIGRATIONS,
    Children,
    control,
    count,
    create_post,
    fail,
    insert_number,
    ops,
    orphan_child,
    overfill,
    slow,
    socket_path_for,
    wait_until,
    writer_pid,
)

import onewriter

OpenDb = Callable[..., onewriter.Database]


# -- the happy path -------------------------------------------------------------------------


def test_quick_start_session_in_one_process(open_db: OpenDb) -> None:
    db = open_db()
    assert db.is_writer is True

    post = db.write(create_post, title="hi")
    assert post == {"id": 1, "title": "hi", "content": None}
    assert db.write("create_post", title="by name", content="c")["id"] == 2

    updated = db.execute_write("UPDATE posts SET title = ? WHERE id = ?", ("x", post["id"]))
    assert updated.rowcount == 1
    inserted = db.execute_write("INSERT INTO posts (title) VALUES (?) RETURNING id", ["r"])
    assert inserted.rows == [[3]]
    assert inserted.lastrowid == 3
    many = db.execute_write("INSERT INTO posts (title) VALUES (?)", [("m1",), ("m2",)], many=True)
    assert many.rowcount == 2

    rows = db.read("SELECT * FROM posts ORDER BY id DESC")
    assert [row["title"] for row in rows] == ["m2", "m1", "r", "by name", "x"]
    assert rows[-1]["content"] is None
    named = db.read("SELECT title FROM posts WHERE id = :id", {"id": 2})
    assert named[0]["title"] == "by name"


def test_stats_report_the_writer_figures(open_db: OpenDb) -> None:
    db = open_db()
    for i in range(5):
        db.write(insert_number, worker=0, n=i)
    stats = db.stats()
    assert stats["pid"] == os.getpid()
    assert stats["ops"]["insert_number"] == 5
    assert stats["pending"] == 0
    assert stats["in_flight"] == 0
    assert stats["commits"] >= 5
    assert set(stats["batch_size"]) >= {"p50", "p99", "max"}
    assert set(stats["commit_ms"]) >= {"p50", "p99", "max"}
    assert stats["wal_bytes"] > 0
    assert stats["max_pending"] == 500


def test_connections_use_wal_and_readers_cannot_write(open_db: OpenDb) -> None:
    db = open_db(durability="full")
    db.write(create_post, title="x")
    assert db.read("PRAGMA journal_mode")[0][0] == "wal"
    assert db.read("PRAGMA synchronous")[0][0] == 2  # FULL
    assert db.read("PRAGMA foreign_keys")[0][0] == 1
    assert db.read("PRAGMA query_only")[0][0] == 1
    with pytest.raises(onewriter.ReadOnly, match="INSERT posts"):
        db.read("INSERT INTO posts (title) VALUES ('sneaky')")
    assert count(db.path, "posts") == 1


def test_standalone_writes_without_any_socket(open_db: OpenDb, db_path: str) -> None:
    db = open_db(role="standalone")
    assert db.write(create_post, title="alone")["id"] == 1
    assert db.is_writer is True
    assert not os.path.exists(socket_path_for(db_path))
    assert db.stats()["clients"] == 0


def test_context_manager_closes_and_hands_the_role_on(db_path: str) -> None:
    with onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS) as db:
        db.write(create_post, title="a")
        assert db.is_writer
    with onewriter.connect(db_path, ops=ops) as again:
        assert again.is_writer
        assert again.read("SELECT count(*) AS n FROM posts")[0]["n"] == 1


def test_config_object_with_overrides_and_bad_values(open_db: OpenDb) -> None:
    config = onewriter.Config(max_pending=7, role="standalone")
    db = open_db(config=config, max_batch=3)
    assert db.config.max_pending == 7
    assert db.config.max_batch == 3
    assert db.stats()["max_pending"] == 7
    with pytest.raises(ValueError, match="role"):
        onewriter.Config(role="leader")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pending"):
        onewriter.Config(max_pending=0)
    with pytest.raises(TypeError):
        config.replace(no_such_setting=1)


def test_an_op_runs_directly_on_a_connection_too(open_db: OpenDb) -> None:
    db = open_db()
    assert create_post.name == "create_post"
    assert ops.get("create_post") is create_post
    assert "fail" in ops
    with pytest.raises(ValueError, match="already registered"):
        ops.register(name="create_post")(lambda conn: None)
    db.write(create_post, title="via writer")
    assert db.read("SELECT count(*) AS n FROM posts")[0]["n"] == 1


def test_role_writer_fails_when_another_process_is_the_writer(
    db_path: str, children: Children
) -> None:
    children.writer(db_path)
    started = time.monotonic()
    with pytest.raises(onewriter.WriterUnavailable, match="writer lock") as info:
        onewriter.connect(db_path, ops=ops, role="writer", failover_timeout=0.3)
    assert info.value.code == "WRITER_UNAVAILABLE"
    assert time.monotonic() - started < 10


def test_a_database_never_closed_warns() -> None:
    db = onewriter.Database("never-used.db", ops=ops)
    with pytest.warns(ResourceWarning, match="never closed"):
        del db
        gc.collect()


# -- error codes ---------------------------------------------------------------------------


def async_gather(db_path: str, calls: list[tuple[Any, dict[str, Any]]], **config: Any) -> list[Any]:
    """Send ``calls`` at once from one asyncio client (one frame, so one batch); return
    each outcome, an exception or a result."""

    async def main() -> list[Any]:
        async with onewriter.connect_async(db_path, ops=ops, role="client", **config) as adb:
            before = (await adb.stats())["batches"]
            results = await asyncio.gather(
                *(adb.write(op, **kwargs) for op, kwargs in calls), return_exceptions=True
            )
            after = (await adb.stats())["batches"]
            return [after - before, *results]

    return asyncio.run(main())


def test_op_failed_fails_alone_and_the_rest_of_its_batch_commits(
    db_path: str, children: Children
) -> None:
    children.writer(db_path)
    batches, first, failed, last = async_gather(
        db_path,
        [
            (create_post, {"title": "first"}),
            (fail, {"message": "boom"}),
            (create_post, {"title": "last"}),
        ],
    )
    assert batches == 1  # all three ran in one transaction
    assert first["title"] == "first"
    assert last["title"] == "last"
    assert isinstance(failed, onewriter.OpFailed)
    assert failed.code == "OP_FAILED"
    assert failed.http_status == 500
    assert "ValueError: boom" in failed.message
    assert titles(db_path) == ["first", "last"]


@pytest.mark.parametrize(
    "statement",
    [
        "COMMIT",
        "BEGIN",
        "ROLLBACK",
        "END",
        "RELEASE _ow",
        "ROLLBACK TO _ow",
        "SAVEPOINT _ow",
        "commit()",
        "rollback()",
    ],
)
def test_an_op_that_controls_the_transaction_fails_alone(
    db_path: str, open_db: OpenDb, statement: str
) -> None:
    db = open_db()
    db.write(create_post, title="before")
    with pytest.raises(onewriter.OpFailed, match="must not BEGIN, COMMIT, ROLLBACK"):
        db.write(control, statement=statement)
    db.write(create_post, title="after")
    assert titles(db_path) == ["before", "after"]


def test_transaction_control_in_a_shared_batch_does_not_break_the_batch(
    db_path: str, children: Children
) -> None:
    children.writer(db_path)
    batches, *outcomes = async_gather(
        db_path,
        [
            (create_post, {"title": "one"}),
            (control, {"statement": "COMMIT"}),
            (control, {"statement": "BEGIN IMMEDIATE"}),
            (control, {"statement": "ROLLBACK"}),
            (create_post, {"title": "two"}),
        ],
    )
    assert batches == 1
    assert [type(o).__name__ for o in outcomes] == [
        "dict",
        "OpFailed",
        "OpFailed",
        "OpFailed",
        "dict",
    ]
    assert all("must not BEGIN, COMMIT" in o.message for o in outcomes[1:4])
    assert titles(db_path) == ["one", "two"]


def test_commit_failed_applies_nothing_of_the_batch(db_path: str, children: Children) -> None:
    children.writer(db_path)
    batches, good, orphan = async_gather(
        db_path, [(create_post, {"title": "lost with the batch"}), (orphan_child, {})]
    )
    assert batches == 1
    for outcome in (good, orphan):
        assert isinstance(outcome, onewriter.CommitFailed), outcome
        assert outcome.code == "COMMIT_FAILED"
        assert "FOREIGN KEY" in outcome.message
    assert titles(db_path) == []
    assert count(db_path, "children") == 0

    # The writer goes on after a failed COMMIT.
    with onewriter.connect(db_path, ops=ops, role="client") as db:
        assert db.write(create_post, title="next")["title"] == "next"
        assert db.stats()["commit_failures"] == 1
    assert titles(db_path) == ["next"]


def test_a_full_database_is_commit_failed_for_that_op_alone(
    db_path: str, children: Children
) -> None:
    children.writer(db_path)
    batches, before, full, after = async_gather(
        db_path,
        [(create_post, {"title": "before"}), (overfill, {}), (create_post, {"title": "after"})],
    )
    assert batches == 1
    assert isinstance(full, onewriter.CommitFailed), full
    assert "full" in full.message
    assert before["title"] == "before"
    assert after["title"] == "after"
    assert titles(db_path) == ["before", "after"]


def test_commit_failed_in_the_writer_process(open_db: OpenDb, db_path: str) -> None:
    db = open_db()
    with pytest.raises(onewriter.CommitFailed):
        db.write(orphan_child)
    assert db.write(create_post, title="fine")["id"] == 1


def test_unknown_op_from_a_client_and_in_the_writer_process(
    db_path: str, children: Children, open_db: OpenDb
) -> None:
    children.writer(db_path)
    client = open_db(role="client")
    with pytest.raises(onewriter.UnknownOp, match="no_such_op") as info:
        client.write("no_such_op", x=1)
    assert info.value.code == "UNKNOWN_OP"
    assert info.value.http_status == 400
    children.stop_all()

    local = open_db(os.path.join(os.path.dirname(db_path), "local.db"))
    assert local.is_writer
    with pytest.raises(onewriter.UnknownOp):
        local.write("no_such_op")


def test_sql_not_allowed_when_the_writer_disables_raw_sql(
    db_path: str, children: Children, open_db: OpenDb
) -> None:
    children.writer(db_path, allow_sql=False)
    db = open_db(role="client")
    with pytest.raises(onewriter.SqlNotAllowed) as info:
        db.execute_write("INSERT INTO posts (title) VALUES ('raw')")
    assert info.value.code == "SQL_NOT_ALLOWED"
    assert info.value.http_status == 403
    assert db.write(create_post, title="ops still work")["id"] == 1
    assert titles(db_path) == ["ops still work"]


def test_bad_request_for_malformed_arguments(
    db_path: str, children: Children, open_db: OpenDb
) -> None:
    children.writer(db_path)
    db = open_db(role="client")
    with pytest.raises(onewriter.BadRequest) as info:
        db.execute_write("INSERT INTO posts (title) VALUES (?)", 5)  # type: ignore[arg-type]
    assert info.value.code == "BAD_REQUEST"
    assert db.write(create_post, title="ok")["id"] == 1


def test_client_timeout_then_the_client_goes_on(
    db_path: str, children: Children, open_db: OpenDb
) -> None:
    children.writer(db_path)
    db = open_db(role="client", client_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(onewriter.ClientTimeout) as info:
        db.write(slow, seconds=1.0)
    waited = time.monotonic() - started
    assert info.value.code == "CLIENT_TIMEOUT"
    assert waited < 0.9, f"gave up after {waited:.2f} s, not near client_timeout"
    # The write was not cancelled: it commits when the writer gets to it.
    wait_until(lambda: "slow" in titles(db_path), what="the slow op committed")
    assert db.write(create_post, title="after")["title"] == "after"


def test_writer_unavailable_for_a_client_with_no_writer(db_path: str) -> None:
    started = time.monotonic()
    with pytest.raises(onewriter.WriterUnavailable) as info:
        onewriter.connect(db_path, ops=ops, role="client", failover_timeout=0.3)
    assert info.value.code == "WRITER_UNAVAILABLE"
    assert info.value.http_status == 503
    assert time.monotonic() - started < 10


def test_too_large_frame_is_refused_and_the_client_recovers(
    db_path: str, children: Children, open_db: OpenDb
) -> None:
    children.writer(db_path, max_frame=64 * 1024)
    db = open_db(role="client")
    with pytest.raises(onewriter.TooLarge) as info:
        db.write(create_post, title="x" * 100_000)
    assert info.value.code == "TOO_LARGE"
    assert info.value.http_status == 413
    assert db.write(create_post, title="small")["id"] == 1
    assert titles(db_path) == ["small"]


def test_closed_after_close(open_db: OpenDb) -> None:
    db = open_db()
    db.write(create_post, title="x")
    db.close()
    db.close()  # idempotent
    for use in (
        lambda: db.write(create_post, title="y"),
        lambda: db.read("SELECT 1"),
        lambda: db.execute_write("DELETE FROM posts"),
        db.stats,
    ):
        with pytest.raises(onewriter.Closed) as info:
            use()
        assert info.value.code == "CLOSED"


def test_closed_after_close_async(db_path: str) -> None:
    async def main() -> None:
        adb = await onewriter.connect_async(db_path, ops=ops, migrations=MIGRATIONS)
        await adb.write(create_post, title="x")
        await adb.close()
        await adb.close()
        with pytest.raises(onewriter.Closed):
            await adb.write(create_post, title="y")
        with pytest.raises(onewriter.Closed):
            await adb.read("SELECT 1")

    asyncio.run(main())


@pytest.mark.parametrize("role", ["auto", "client"])
def test_threads_share_one_database_object(
    db_path: str, children: Children, open_db: OpenDb, role: str
) -> None:
    if role == "client":
        children.writer(db_path)
    db = open_db(role=role)
    errors: list[BaseException] = []

    def write_many(worker: int) -> None:
        try:
            for n in range(200):
                db.write(insert_number, worker=worker, n=n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write_many, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    (row,) = db.read("SELECT count(DISTINCT worker) AS workers, count(*) AS n FROM numbers")
    assert (row["workers"], row["n"]) == (8, 1600)


def test_writer_pid_op_answers_from_the_writer(open_db: OpenDb) -> None:
    assert open_db().write(writer_pid) == os.getpid()


def titles(database: str) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        return [row[0] for row in conn.execute("SELECT title FROM posts ORDER BY id")]
    finally:
        conn.close()
