"""Direct writes under the write turn, with real processes: SIGKILL and SIGSTOP of a
holder, timeouts, failing ops, fairness, mixed writers, checkpoints, failover."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MIGRATIONS,
    Children,
    child_env,
    control,
    count,
    create_post,
    fail,
    increment,
    insert_number,
    ops,
    user_version,
    wait_until,
    writer_pid,
)

import onewriter
from onewriter.sqlite.connect import open_connection
from onewriter.sqlite.upkeep import Checkpointer
from onewriter.turn import turn_for

local_ops = onewriter.Ops()
local_ops.include(ops)


@local_ops.register
def unsendable(conn: sqlite3.Connection) -> Any:
    conn.execute("INSERT INTO posts (title) VALUES ('must be rolled back')")
    return {1, 2}


@local_ops.register
def huge(conn: sqlite3.Connection) -> str:
    conn.execute("INSERT INTO posts (title) VALUES ('must be rolled back')")
    return "x" * 9_000_000  # over max_frame (8 MiB)


@local_ops.register
def spin(conn: sqlite3.Connection) -> int:
    """A statement that runs for minutes unless interrupted."""
    conn.execute("INSERT INTO posts (title) VALUES ('must be rolled back')")
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    return int(conn.execute(sql).fetchone()[0])


#: A process that starts a direct write and stops inside it (marker touched, row written,
#: turn held) until it is killed or stopped.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import onewriter
    from helpers import MIGRATIONS

    ops = onewriter.Ops()

    @ops.register
    def hold(conn, marker):
        conn.execute("INSERT INTO posts (title) VALUES ('doomed')")
        Path(marker).touch()
        time.sleep(120)

    db = onewriter.Database(
        sys.argv[1], ops, onewriter.Config(writes="direct", migrations=MIGRATIONS,
                                           transaction_timeout=300)
    )
    db.write(hold, marker=sys.argv[2])
    """
)

#: A process that writes as fast as it can for a while, by one of three ways, and
#: prints how many of its writes were acknowledged and how many failed.
WORKER = textwrap.dedent(
    """
    import json, sqlite3, sys, time
    import onewriter
    from helpers import MIGRATIONS, ops

    path, way, start, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    acked, errors = 0, {}
    if way == "plain":
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        def write():
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("SELECT count(*) FROM numbers WHERE worker = -1").fetchone()[0]
            conn.execute("INSERT INTO numbers (worker, n) VALUES (-1, ?)", (n + 1,))
            conn.execute("COMMIT")
    else:
        db = onewriter.connect(path, ops=ops, migrations=MIGRATIONS, writes=way)
        def write():
            db.write("increment")
    while time.time() < start:
        time.sleep(0.001)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            write()
            acked += 1
        except (onewriter.OneWriterError, sqlite3.Error) as exc:
            key = getattr(exc, "code", type(exc).__name__)
            errors[key] = errors.get(key, 0) + 1
    print(json.dumps({"acked": acked, "errors": errors}), flush=True)
    """
)


def _database(path: str, **config: Any) -> onewriter.Database:
    config.setdefault("migrations", MIGRATIONS)
    config.setdefault("writes", "direct")
    return onewriter.Database(path, local_ops, onewriter.Config(**config))


@pytest.fixture
def direct(db_path: str) -> Any:
    opened: list[onewriter.Database] = []

    def open_(**config: Any) -> onewriter.Database:
        db = _database(db_path, **config)
        opened.append(db)
        return db

    yield open_
    for db in reversed(opened):
        db.close()


def _start_holder(db_path: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    marker = tmp_path / "holding"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, db_path, str(marker)], env=child_env())
    wait_until(marker.exists, 30, "the holder to start its transaction")
    return proc


def _run_workers(db_path: str, ways: list[str], seconds: float) -> list[dict[str, Any]]:
    import json

    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_path, way, str(start), str(seconds)],
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        for way in ways
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0
        results.append(json.loads(out))
    return results


def _balance(db_path: str) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(
            conn.execute("SELECT coalesce(max(n), 0) FROM numbers WHERE worker = -1").fetchone()[0]
        )


# -- in one process ---------------------------------------------------------------------------


def test_a_direct_write_runs_here_needs_no_writer_and_is_read_at_once(direct: Any) -> None:
    db = direct()  # never started: no writer is elected
    post = db.write(create_post, title="direct")
    assert post == {"id": 1, "title": "direct", "content": None}
    assert db.write(writer_pid) == os.getpid()
    assert db.is_writer is False
    assert db.read("SELECT title FROM posts")[0]["title"] == "direct"
    result = db.execute_write("INSERT INTO posts (title) VALUES (?) RETURNING id", ("sql",))
    assert (result.rowcount, result.lastrowid, result.rows) == (1, 2, [[2]])
    many = db.execute_write("INSERT INTO numbers (worker, n) VALUES (?, ?)", [(1, 1)], many=True)
    assert many.rowcount == 1


def test_migrations_are_applied_before_the_first_direct_write(db_path: str, direct: Any) -> None:
    db = direct()
    db.write(insert_number, worker=0, n=0)
    assert user_version(db_path) == len(MIGRATIONS)
    assert count(db_path, "migration_log") == 1
    direct().write(insert_number, worker=0, n=1)  # a second one finds them applied
    assert count(db_path, "migration_log") == 1


def test_a_failing_op_fails_alone_and_is_rolled_back(db_path: str, direct: Any) -> None:
    db = direct()
    db.write(create_post, title="kept")
    failures: list[tuple[Any, dict[str, Any]]] = [
        (fail, {"message": "boom"}),
        (control, {"statement": "COMMIT"}),
        (control, {"statement": "commit()"}),
        (unsendable, {}),
        (huge, {}),
    ]
    for op, kwargs in failures:
        with pytest.raises(onewriter.OpFailed):
            db.write(op, **kwargs)
    with pytest.raises(onewriter.UnknownOp):
        db.write("no_such_op")
    db.write(create_post, title="after")
    titles = [r["title"] for r in db.read("SELECT title FROM posts ORDER BY id")]
    assert titles == ["kept", "after"]


def test_direct_sql_is_confined_to_this_database(direct: Any, tmp_path: Path) -> None:
    db = direct()
    other = tmp_path / "elsewhere.db"
    with pytest.raises(onewriter.SqlNotAllowed):
        db.execute_write("ATTACH DATABASE ? AS other", (str(other),))
    with pytest.raises(onewriter.SqlNotAllowed):
        db.execute_write("PRAGMA synchronous = OFF")
    assert not other.exists()
    assert db.execute_write("INSERT INTO posts (title) VALUES ('still fine')").rowcount == 1


def test_a_failing_raw_statement_applies_nothing_even_where_the_schema_asks_for_fail(
    direct: Any,
) -> None:
    """ON CONFLICT FAIL keeps a failing statement's earlier rows: such a statement must
    still run in a transaction of its own that the failure rolls back whole."""
    db = direct()
    db.execute_write("CREATE TABLE f (v INTEGER UNIQUE ON CONFLICT FAIL)")
    db.execute_write("INSERT INTO f (v) VALUES (1)")
    for _ in range(3):  # compiled at the first, cached after
        with pytest.raises(onewriter.OpFailed):
            db.execute_write("INSERT INTO f (v) VALUES (5), (1)")
    assert [r["v"] for r in db.read("SELECT v FROM f")] == [1]


def test_a_schema_changed_by_another_connection_is_seen_before_a_raw_write_runs(
    db_path: str, direct: Any
) -> None:
    """A cached plain INSERT runs as SQLite's autocommit statement; once a trigger that
    RAISEs FAIL appears (from a plain sqlite3 connection), it is compiled again, which
    sends it back to a transaction that a failure rolls back whole."""
    db = direct()
    db.execute_write("CREATE TABLE g (v INTEGER)")
    insert = "INSERT INTO g (v) VALUES (?), (?)"
    for first in (10, 20, 30):
        assert db.execute_write(insert, (first, first + 1)).rowcount == 2
    outside = sqlite3.connect(db_path, isolation_level=None)
    outside.execute(
        "CREATE TRIGGER g_no_99 BEFORE INSERT ON g WHEN NEW.v = 99"
        " BEGIN SELECT RAISE(FAIL, 'no 99'); END"
    )
    outside.close()
    for _ in range(3):
        with pytest.raises(onewriter.OpFailed, match="no 99"):
            db.execute_write(insert, (40, 99))
    assert [r["v"] for r in db.read("SELECT v FROM g WHERE v >= 40")] == []
    assert db.execute_write(insert, (50, 51)).rowcount == 2


def test_sql_is_refused_without_allow_sql(direct: Any) -> None:
    db = direct(allow_sql=False)
    with pytest.raises(onewriter.SqlNotAllowed):
        db.execute_write("INSERT INTO posts (title) VALUES ('x')")
    assert db.write(create_post, title="ops still run")["id"] == 1


def test_a_holder_past_transaction_timeout_is_interrupted_and_rolled_back(
    db_path: str, direct: Any
) -> None:
    db = direct(transaction_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(onewriter.DeadlineExceeded) as err:
        db.write(spin)
    assert err.value.code == "TIMEOUT"
    assert "transaction_timeout" in err.value.message
    assert time.monotonic() - started < 20  # interrupted, not run to its end
    with pytest.raises(onewriter.DeadlineExceeded):
        db.write("slow", seconds=0.6)  # sleeps past the limit: rolled back all the same
    assert count(db_path, "posts") == 0
    assert db.write(create_post, title="next")["id"] == 1  # the connection works on


def test_threads_each_write_on_their_own_connection(db_path: str, direct: Any) -> None:
    db = direct()
    db.write(insert_number, worker=0, n=0)

    all_open = threading.Barrier(4)

    def work() -> None:
        db.write(increment)
        all_open.wait(30)  # every thread has its connection before any of them ends
        for _ in range(199):
            db.write(increment)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _balance(db_path) == 800
    assert db.stats()["direct"]["connections"] == 5


def test_asyncio_direct_writes_run_on_threads(db_path: str) -> None:
    async def main() -> tuple[list[int], int]:
        async with onewriter.connect_async(
            db_path, ops=local_ops, migrations=MIGRATIONS, writes="direct"
        ) as adb:
            pids = await asyncio.gather(*(adb.write(writer_pid) for _ in range(20)))
            await asyncio.gather(*(adb.write(increment) for _ in range(50)))
            raw = await adb.execute_write("DELETE FROM posts")
            return list(pids), raw.rowcount

    pids, deleted = asyncio.run(main())
    assert set(pids) == {os.getpid()} and deleted == 0
    assert _balance(db_path) == 50


def test_role_client_and_full_durability_funnel_by_default(
    db_path: str, children: Children
) -> None:
    writer = children.writer(db_path)
    client = onewriter.connect(db_path, ops=ops, role="client")
    full = onewriter.connect(db_path, ops=ops, durability="full")
    try:
        assert client.write(writer_pid) == writer.writer_pid
        assert full.write(writer_pid) == writer.writer_pid
    finally:
        client.close()
        full.close()
    with pytest.raises(ValueError, match="client"):
        onewriter.Config(role="client", writes="direct")


# -- with other processes ---------------------------------------------------------------------


def test_a_killed_holder_frees_the_turn_and_nothing_of_it_is_applied(
    db_path: str, tmp_path: Path, direct: Any
) -> None:
    holder = _start_holder(db_path, tmp_path)
    db = direct(request_timeout=30)
    got: list[float] = []

    def wait_and_write() -> None:
        started = time.monotonic()
        db.write(create_post, title="after the kill")
        got.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait_and_write)
    waiter.start()
    time.sleep(0.3)
    assert not got  # it waits for the turn
    holder.kill()
    holder.wait(10)
    waiter.join(30)
    assert got and got[0] < 20
    titles = [r["title"] for r in db.read("SELECT title FROM posts")]
    assert titles == ["after the kill"]  # 'doomed' died with its process


def test_a_stopped_holder_makes_direct_writers_time_out_cleanly(
    db_path: str, tmp_path: Path, direct: Any
) -> None:
    holder = _start_holder(db_path, tmp_path)
    try:
        os.kill(holder.pid, signal.SIGSTOP)
        db = direct(request_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(onewriter.DeadlineExceeded) as err:
            db.write(create_post, title="never")
        assert err.value.code == "TIMEOUT"
        assert 0.25 <= time.monotonic() - started < 10
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait(10)
    assert direct().write(create_post, title="after")["title"] == "after"
    assert count(db_path, "posts") == 1


def test_a_tool_outside_onewriter_is_waited_for_with_busy_timeout(
    db_path: str, direct: Any
) -> None:
    db = direct()
    db.write(insert_number, worker=0, n=0)  # migrated
    tool = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            "c.execute('BEGIN IMMEDIATE'); c.execute('INSERT INTO posts (title) VALUES (1)');"
            "print('LOCKED', flush=True); time.sleep(0.5); c.execute('COMMIT')",
            db_path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert tool.stdout is not None and tool.stdout.readline().strip() == "LOCKED"
    db.write(create_post, title="waited")  # busy_timeout (5 s) covers the tool's 0.5 s
    tool.communicate(timeout=10)
    assert tool.returncode == 0
    assert count(db_path, "posts") == 2


def test_checkpoints_wait_for_the_turn(db_path: str, tmp_path: Path, direct: Any) -> None:
    db = direct()
    for n in range(50):
        db.write(insert_number, worker=0, n=n)
    conn = open_connection(db_path, db.config, "writer")
    try:
        checkpointer = Checkpointer(db_path, conn, db.config, turn_for(db.path))
        holder = _start_holder(db_path, tmp_path)
        try:
            checkpointer.run()  # the turn is taken: skipped, not run beside a commit
            assert checkpointer.checkpoints == 0
        finally:
            holder.kill()
            holder.wait(10)
        checkpointer.run()
        assert checkpointer.checkpoints == 1
    finally:
        conn.close()


def test_eight_processes_each_get_a_fair_share_of_real_transactions(
    db_path: str, direct: Any
) -> None:
    direct().write(insert_number, worker=0, n=0)  # migrated before the race
    results = _run_workers(db_path, ["direct"] * 8, 10.0)
    acked = [r["acked"] for r in results]
    assert all(r["errors"] == {} for r in results), results
    fair = sum(acked) / len(acked)
    assert min(acked) >= fair / 3, acked
    assert _balance(db_path) == sum(acked)  # no lost update


def test_direct_funnel_and_plain_sqlite3_processes_mix_on_one_file(
    db_path: str, direct: Any
) -> None:
    direct().write(insert_number, worker=0, n=0)
    results = _run_workers(db_path, ["direct", "direct", "funnel", "funnel", "plain"], 3.0)
    assert all(r["errors"] == {} for r in results), results
    assert all(r["acked"] > 0 for r in results), results
    assert _balance(db_path) == sum(r["acked"] for r in results)


def test_the_funnel_fails_over_while_direct_writers_run(db_path: str, children: Children) -> None:
    import json

    writer = children.writer(db_path)
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_path, way, str(start), "4"],
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        for way in ("direct", "direct", "funnel", "funnel")
    ]
    time.sleep(start - time.time() + 1.5)
    writer.kill9()  # mid-run: the funnel clients elect a new writer and re-send
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        results.append(json.loads(out))
    assert all(r["errors"] == {} for r in results), results
    assert all(r["acked"] > 0 for r in results), results
    assert _balance(db_path) == sum(r["acked"] for r in results)  # exactly once


def test_a_finished_thread_s_connection_is_closed_by_the_next_one(direct: Any) -> None:
    db = direct()
    for _ in range(5):
        worker = threading.Thread(target=db.write, args=(create_post,), kwargs={"title": "t"})
        worker.start()
        worker.join()
    db.write(create_post, title="main")
    assert db.stats()["direct"]["connections"] <= 2  # this thread's, and at most the last one
    assert db.stats()["direct"]["commits"] == 6
