"""The Redis transport against a real redis-server: producers in other processes, a writer
killed between taking a batch and committing it, re-drive with exactly-once ids.

This file is also the producers' program: ``python test_redis.py produce URL QUEUE W N``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MIGRATIONS,
    ONEWRITER_CLI,
    PYTHON,
    Child,
    Children,
    count,
    create_post,
    insert_number,
    ops,
)
from redis_server import RedisServer, needs_redis
from redis_server import redis_server as redis_server  # the fixture, for pytest

import onewriter
from onewriter.wire import frames as proto

pytestmark = needs_redis

PRODUCERS = 4
ROWS = 400


def serve(children: Children, db_path: str, url: str, queue: str, *extra: str) -> Child:
    """``onewriter serve`` with the Redis consumer, waited on until READY."""
    child = children.start(
        [
            ONEWRITER_CLI,
            "serve",
            db_path,
            "--ops",
            "helpers:ops",
            "--migrations",
            "helpers:MIGRATIONS",
            "--redis",
            url,
            "--redis-queue",
            queue,
            *extra,
        ]
    )
    line = child.wait_line("READY ")
    assert f"queue={queue}" in line, line
    return child


def redis_client(server: RedisServer) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue name of this test's own."""
    return f"q-{request.node.name[:40]}-{os.getpid()}"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_client(redis_server)
    try:
        yield client
    finally:
        client.close()


class RawProducer:
    """Pushes hand-made requests, to control exactly what sits in the lists."""

    def __init__(self, client: Any, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.id = os.urandom(16)
        self.reply_key = f"{queue}:reply:{self.id.hex()}"

    def request(self, seq: int, op: str, **kwargs: Any) -> bytes:
        return proto.pack({"id": seq, "seq": seq, "op": op, "kwargs": kwargs, "client": self.id})

    def replies(self, n: int, timeout: float = 20.0) -> dict[int, Any]:
        """The next ``n`` replies, by id."""
        found: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(found) < n:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(found)} of {n} replies arrived"
            got = self.client.blpop([self.reply_key], timeout=min(remaining, 1.0))
            if got is not None:
                for reply in proto.messages(proto.unpack(got[1])):  # a reply or a list
                    found[reply["id"]] = reply
        return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- in one process ----------------------------------------------------------------------------


def test_writes_reads_and_stats_go_through_redis_and_raw_sql_is_refused(
    redis_server: RedisServer, queue: str, open_db: Callable[..., onewriter.Database]
) -> None:
    writer = open_db(
        role="writer", redis_url=redis_server.url, redis_queue=queue, remote_reads="all"
    )
    db = onewriter.connect(redis_server.url, queue=queue)
    try:
        assert db.is_writer is False
        post = db.write(create_post, title="through redis")
        rows = db.read("SELECT id, title FROM posts WHERE id = ?", (post["id"],))
        assert [(r["id"], r["title"]) for r in rows] == [(post["id"], "through redis")]
        assert isinstance(rows[0], sqlite3.Row)
        with pytest.raises(onewriter.SqlNotAllowed):
            db.execute_write("DELETE FROM posts")
        with pytest.raises(onewriter.UnknownOp):
            db.write("no_such_op")
        stats = db.stats()
        assert stats["remote"]["redis"]["queue"] == queue
        assert stats["ops"]["create_post"] == 1
    finally:
        db.close()
    assert count(writer.path, "posts") == 1


def test_pipelined_asyncio_producer_and_fire_and_forget(
    redis_server: RedisServer,
    queue: str,
    open_db: Callable[..., onewriter.Database],
    raw: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = open_db(
        role="writer", redis_url=redis_server.url, redis_queue=queue, remote_reads="all"
    )

    async def produce() -> list[int]:
        async with onewriter.connect_async(redis_server.url, queue=queue) as adb:
            ids = await asyncio.gather(
                *(adb.write(insert_number, worker=1, n=n) for n in range(300))
            )
            rows = await adb.read("SELECT count(*) AS n FROM numbers WHERE worker = 1")
            assert rows[0]["n"] == 300
            return list(ids)

    ids = asyncio.run(produce())
    assert len(set(ids)) == 300

    bulk = onewriter.connect(redis_server.url, queue=queue, fire_and_forget=True)
    try:
        assert [bulk.write(insert_number, worker=2, n=n) for n in range(200)] == [None] * 200
        with caplog.at_level("WARNING", logger="onewriter.redis"):
            assert bulk.write("fail", message="nobody waits for this") is None
            wait_until(lambda: "nobody waits for this" in caplog.text, 10, "the failure logged")
    finally:
        bulk.close()
    wait_until(lambda: count(writer.path) == 500, 20, "the fire-and-forget writes")
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "an empty processing list")
    assert raw.llen(queue) == 0
    assert not raw.keys(f"{queue}:reply:*")  # nothing is pushed for fire-and-forget


def test_connections_redis_drops_are_made_again_and_no_acknowledged_write_is_lost(
    redis_server: RedisServer, queue: str, db_path: str, children: Children, raw: Any
) -> None:
    """Redis drops every client connection (the writer's consumer, the producer's push
    and read connections) in the middle of pipelined writes: both sides connect again,
    later writes go through, and every acknowledged write is stored exactly once."""
    writer = serve(children, db_path, redis_server.url, queue)
    acked: list[int] = []
    errors: dict[str, int] = {}

    async def produce() -> None:
        async with onewriter.connect_async(redis_server.url, queue=queue, client_timeout=15) as adb:

            async def one(n: int) -> None:
                try:
                    await adb.write(insert_number, worker=5, n=n)
                    acked.append(n)
                except onewriter.OneWriterError as exc:
                    errors[exc.code] = errors.get(exc.code, 0) + 1

            for start in range(0, 600, 20):
                if start == 200:
                    killed = await asyncio.to_thread(
                        raw.client_kill_filter, _type="normal", skipme=True
                    )
                    assert killed >= 3  # the consumer, and the producer's two
                await asyncio.gather(*(one(n) for n in range(start, start + 20)))

    asyncio.run(produce())
    assert set(range(560, 600)) <= set(acked), errors  # going again after the drop
    assert set(errors) <= {"WRITER_UNAVAILABLE", "CLIENT_TIMEOUT"}, errors
    conn = sqlite3.connect(db_path)
    try:
        stored = [n for (n,) in conn.execute("SELECT n FROM numbers WHERE worker = 5")]
    finally:
        conn.close()
    assert len(stored) == len(set(stored))  # none twice
    assert set(acked) <= set(stored)
    writer.stop()
    assert writer.proc.returncode == 0, writer.describe()


def test_requests_wait_in_redis_until_a_writer_comes(
    redis_server: RedisServer, queue: str, open_db: Callable[..., onewriter.Database], raw: Any
) -> None:
    producer = RawProducer(raw, queue)
    raw.rpush(queue, *(producer.request(seq, "insert_number", worker=3, n=seq) for seq in (1, 2)))
    raw.rpush(queue, b"not msgpack \xc1", proto.pack({"id": 1, "op": "insert_number"}))
    raw.rpush(queue, producer.request(3, "insert_number", worker=3, n=3))
    writer = open_db(role="writer", redis_url=redis_server.url, redis_queue=queue)
    replies = producer.replies(3)
    assert all(replies[seq]["ok"] for seq in (1, 2, 3))
    assert count(writer.path) == 3
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "an empty processing list")
    # counted just after the MULTI that answered the batch
    wait_until(lambda: writer.stats()["remote"]["redis"]["dropped"] == 2, 10, "the drop count")


# -- many processes, and a writer killed mid-batch --------------------------------------------


def test_a_writer_killed_between_pop_and_commit_loses_nothing_and_applies_each_once(
    redis_server: RedisServer,
    queue: str,
    db_path: str,
    children: Children,
    raw: Any,
    tmp_path: Path,
) -> None:
    first = serve(children, db_path, redis_server.url, queue)
    producers = [
        children.start([PYTHON, __file__, "produce", redis_server.url, queue, str(w), str(ROWS)])
        for w in range(PRODUCERS)
    ]
    for producer in producers:
        producer.wait_line("READY")
        producer.send("GO")
    wait_until(lambda: count(db_path) >= 100, 30, "the producers to get going")

    # One atomic push: a slow op, then writes of our own, all taken in one batch.
    marker = tmp_path / "slow-started"
    mine = RawProducer(raw, queue)
    raw.rpush(
        queue,
        mine.request(1, "slow", seconds=1.5, marker=str(marker)),
        *(mine.request(seq, "insert_number", worker=99, n=seq) for seq in range(2, 22)),
    )
    wait_until(marker.exists, 20, "the slow op to start")
    first.kill9()  # inside the batch's transaction: taken from the list, not committed

    taken = [  # an element is a request, or a producer's list of them
        m for e in raw.lrange(f"{queue}:processing", 0, -1) for m in proto.messages(proto.unpack(e))
    ]
    assert {m["seq"] for m in taken if m["client"] == mine.id} == set(range(1, 22))

    second = serve(children, db_path, redis_server.url, queue)
    replies = mine.replies(21)
    assert all(reply.get("ok") for reply in replies.values()), replies
    reports = [producer.wait_json("DONE ", timeout=60) for producer in producers]

    assert all(report == {"acked": ROWS, "errors": {}} for report in reports), reports
    conn = sqlite3.connect(db_path)
    try:
        per_worker = dict(conn.execute("SELECT worker, count(*) FROM numbers GROUP BY worker"))
        twice = conn.execute(
            "SELECT worker, n FROM numbers GROUP BY worker, n HAVING count(*) > 1"
        ).fetchall()
        slow_runs = conn.execute("SELECT count(*) FROM posts WHERE title = 'slow'").fetchone()[0]
    finally:
        conn.close()
    assert per_worker == {**{w: ROWS for w in range(PRODUCERS)}, 99: 20}
    assert twice == []
    assert slow_runs == 1
    assert raw.llen(f"{queue}:processing") == 0
    assert raw.llen(queue) == 0
    second.stop()
    assert second.proc.returncode == 0, second.describe()


def test_a_writer_killed_holding_a_running_and_a_taken_batch_applies_each_once(
    redis_server: RedisServer,
    queue: str,
    db_path: str,
    children: Children,
    raw: Any,
    tmp_path: Path,
) -> None:
    """The writer takes its next batch while it runs one. Killed inside the running
    batch's transaction, it leaves both in the processing list, in order: the next writer
    runs each request once and answers all of them."""
    first = serve(children, db_path, redis_server.url, queue, "--max-batch", "1")
    mine = RawProducer(raw, queue)
    marker = tmp_path / "slow-started"
    raw.rpush(
        queue,
        mine.request(1, "slow", seconds=2.0, marker=str(marker)),
        *(mine.request(seq, "insert_number", worker=7, n=seq) for seq in range(2, 6)),
    )
    wait_until(marker.exists, 20, "the slow op to start")
    # one element runs, the next is taken meanwhile (batches of one element here)
    wait_until(lambda: raw.llen(f"{queue}:processing") == 2, 10, "the next batch to be taken")
    first.kill9()
    processing = [proto.unpack(e)["seq"] for e in raw.lrange(f"{queue}:processing", 0, -1)]
    assert processing == [1, 2]

    serve(children, db_path, redis_server.url, queue)
    replies = mine.replies(5)
    assert all(reply.get("ok") for reply in replies.values()), replies
    assert count(db_path, "posts") == 1  # the slow op's row
    assert sorted(n for (n,) in _numbers(db_path, worker=7)) == [2, 3, 4, 5]
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "an empty processing list")


def test_a_writer_stopped_under_pipelined_load_answers_what_it_took(
    redis_server: RedisServer, queue: str, db_path: str, children: Children, raw: Any
) -> None:
    """SIGTERM while an asyncio producer keeps 32 writes in flight: the writer answers
    what it ran before it exits (cleanly); what it had not run waits in Redis for the
    next writer. Every write is acknowledged once and stored once."""
    first = serve(children, db_path, redis_server.url, queue)
    acked: list[int] = []
    errors: dict[str, int] = {}

    async def produce() -> None:
        async with onewriter.connect_async(redis_server.url, queue=queue, client_timeout=60) as adb:
            numbers = iter(range(1200))

            async def lane() -> None:
                for n in numbers:
                    try:
                        await adb.write(insert_number, worker=6, n=n)
                        acked.append(n)
                    except onewriter.OneWriterError as exc:
                        errors[exc.code] = errors.get(exc.code, 0) + 1

            await asyncio.gather(*(lane() for _ in range(32)))

    producer = threading.Thread(target=asyncio.run, args=(produce(),))
    producer.start()
    second = None
    try:
        wait_until(lambda: len(acked) >= 300, 30, "the producer to get going")
        started = time.monotonic()
        first.stop()
        stopped_in = time.monotonic() - started
        at_stop = len(acked)
        second = serve(children, db_path, redis_server.url, queue)
    finally:
        if second is None:  # the producer's writes still find a writer, and it ends
            second = serve(children, db_path, redis_server.url, queue)
        producer.join(90)
    assert not producer.is_alive()
    assert first.proc.returncode == 0, first.describe()
    assert stopped_in < 8  # its drain did not wait out a timeout
    assert at_stop < 1200  # stopped in the middle
    assert errors == {}
    assert sorted(acked) == list(range(1200))
    assert sorted(n for (n,) in _numbers(db_path, worker=6)) == list(range(1200))
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "an empty processing list")
    second.stop()
    assert second.proc.returncode == 0, second.describe()


def test_batches_the_writer_cannot_take_whole_are_driven_again_in_order(
    redis_server: RedisServer, queue: str, db_path: str, children: Children, raw: Any
) -> None:
    """Elements of three requests each against a queue of four: every batch is partly
    refused (QUEUE_FULL), while the next batch has already been taken. The refused and
    the taken are driven again from the processing list until each request has run
    once and been answered, in the order the producer sent them."""
    serve(children, db_path, redis_server.url, queue, "--max-pending", "4")
    mine = RawProducer(raw, queue)
    elements = [
        proto.pack(
            [
                proto.unpack(mine.request(seq, "insert_number", worker=8, n=seq))
                for seq in range(first, first + 3)
            ]
        )
        for first in range(1, 31, 3)
    ]
    raw.rpush(queue, *elements)
    replies = mine.replies(30, timeout=60)
    assert all(reply.get("ok") for reply in replies.values()), replies
    # rowids follow the commits: nothing ran before a request sent earlier
    assert [n for (n,) in _numbers(db_path, worker=8)] == list(range(1, 31))
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "an empty processing list")
    with onewriter.connect(db_path, role="client") as local:
        stats = local.stats()
    assert stats["errors"].get("QUEUE_FULL", 0) > 0  # the writer did refuse some
    assert stats["remote"]["redis"]["redriven"] > 0


def _numbers(db_path: str, worker: int) -> list[tuple[int]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            "SELECT n FROM numbers WHERE worker = ? ORDER BY rowid", (worker,)
        ).fetchall()
    finally:
        conn.close()


def test_a_request_committed_but_not_removed_is_not_applied_twice(
    redis_server: RedisServer, queue: str, db_path: str, children: Children, raw: Any
) -> None:
    """The writer died after COMMIT, before its MULTI removed the request: the next
    writer finds it in the processing list, sees it committed, and only answers."""
    first = serve(children, db_path, redis_server.url, queue)
    producer = RawProducer(raw, queue)
    request = producer.request(1, "create_post", title="once")
    raw.rpush(queue, request)
    original = producer.replies(1)[1]
    first.stop()

    raw.rpush(f"{queue}:processing", request)  # as if the removal never happened
    serve(children, db_path, redis_server.url, queue)
    again = producer.replies(1)[1]

    assert again == original
    assert count(db_path, "posts") == 1
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "an empty processing list")


# -- the producers' program --------------------------------------------------------------------


def produce(url: str, queue: str, worker: str, rows: str) -> None:
    """Connect, say READY, wait for GO, write ``rows`` rows one at a time, report."""
    db = onewriter.connect(url, queue=queue, ops=ops, migrations=MIGRATIONS, client_timeout=60)
    print("READY", flush=True)
    sys.stdin.readline()
    acked = 0
    errors: dict[str, int] = {}
    for n in range(int(rows)):
        try:
            db.write(insert_number, worker=int(worker), n=n)
            acked += 1
        except onewriter.OneWriterError as exc:
            errors[exc.code] = errors.get(exc.code, 0) + 1
    db.close()
    print("DONE " + json.dumps({"acked": acked, "errors": errors}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(*sys.argv[2:])


def test_an_element_may_hold_a_list_of_requests_each_answered_and_applied_once(
    redis_server: RedisServer, queue: str, open_db: Callable[..., onewriter.Database], raw: Any
) -> None:
    """A producer's flush is one element: every request in it gets its own outcome, and
    a write in it is applied once even when the element is driven again."""
    writer = open_db(role="writer", redis_url=redis_server.url, redis_queue=queue)
    mine = RawProducer(raw, queue)
    bodies = [
        mine.request(1, "insert_number", worker=5, n=1),
        mine.request(2, "no_such_op"),
        proto.pack({"id": 3, "t": "ping", "client": mine.id}),
        proto.pack({"id": 4, "seq": 4, "op": "insert_number", "client": mine.id, "args": 7}),
    ]
    raw.rpush(queue, proto.array_header(len(bodies)) + b"".join(bodies))
    replies = mine.replies(4)
    assert replies[1]["ok"] is True
    assert replies[2]["error"]["code"] == "UNKNOWN_OP"
    assert replies[3] == {"id": 3, "ok": True, "result": None}
    assert replies[4]["error"]["code"] == "BAD_REQUEST"
    wait_until(lambda: raw.llen(f"{queue}:processing") == 0, 10, "the element to be settled")
    # Driven again (as after a crash): the write it holds is answered from its record.
    again = proto.pack(
        {
            "id": 1,
            "seq": 1,
            "op": "insert_number",
            "client": mine.id,
            "kwargs": {"worker": 5, "n": 1},
            "retry": True,
        }
    )
    raw.rpush(queue, proto.array_header(1) + again)
    assert mine.replies(1)[1]["ok"] is True
    assert count(writer.path) == 1
