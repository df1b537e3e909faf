"""The per-process reader pool: deadlines, replacement of a broken reader, bounded size,
and readers that never keep the writer from checkpointing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from helpers import MIGRATIONS, create_post, insert_number, ops

import onewriter

OpenDb = Callable[..., onewriter.Database]
COUNT_FOREVER = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
)


def test_a_slow_read_is_interrupted_at_its_deadline(open_db: OpenDb) -> None:
    db = open_db()
    started = time.monotonic()
    with pytest.raises(onewriter.ReadTimeout) as info:
        db.read(COUNT_FOREVER, timeout=0.1)
    took = time.monotonic() - started
    assert info.value.code == "READ_TIMEOUT"
    assert info.value.http_status == 504
    assert took < 5, f"the read ran {took:.1f} s past a 0.1 s deadline"
    assert db.read("SELECT 42 AS answer")[0]["answer"] == 42
    assert db._core.reads.replaced == 0  # an interrupted reader is not broken


def test_the_configured_read_timeout_applies_by_default(open_db: OpenDb) -> None:
    db = open_db(read_timeout=0.1)
    with pytest.raises(onewriter.ReadTimeout):
        db.read(COUNT_FOREVER)


def test_an_async_read_is_interrupted_too(db_path: str) -> None:
    async def main() -> None:
        async with onewriter.connect_async(db_path, ops=ops, migrations=MIGRATIONS) as adb:
            with pytest.raises(onewriter.ReadTimeout):
                await adb.read(COUNT_FOREVER, timeout=0.1)
            assert (await adb.read("SELECT 1 AS one"))[0]["one"] == 1

    asyncio.run(main())


def test_a_broken_reader_is_replaced(open_db: OpenDb) -> None:
    db = open_db(read_pool_size=1)
    db.write(create_post, title="still readable")
    assert len(db.read("SELECT * FROM posts")) == 1
    pool = db._core.reads
    (reader,) = list(pool._idle.queue)
    reader.conn.close()  # the reader's connection dies under it

    rows = db.read("SELECT title FROM posts")
    assert [row["title"] for row in rows] == ["still readable"]
    assert pool.replaced == 1
    (replacement,) = list(pool._idle.queue)
    assert replacement is not reader


def test_many_threads_share_a_bounded_pool(open_db: OpenDb) -> None:
    db = open_db(read_pool_size=3)
    for i in range(10):
        db.write(insert_number, worker=0, n=i)
    errors: list[BaseException] = []
    sums: list[int] = []

    def reader() -> None:
        try:
            for _ in range(30):
                sums.append(db.read("SELECT sum(n) AS s FROM numbers")[0]["s"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sums == [45] * 240
    assert db._core.reads._opened <= 3


@pytest.mark.parametrize("writes", ["funnel", "direct"])
def test_constant_readers_do_not_let_the_wal_grow_without_bound(
    open_db: OpenDb, writes: str
) -> None:
    db = open_db(wal_size_limit=1024 * 1024, writes=writes)
    stop = threading.Event()
    reads = 0

    def read_constantly() -> None:
        nonlocal reads
        while not stop.is_set():
            db.read("SELECT count(*) FROM numbers")
            reads += 1

    readers = [threading.Thread(target=read_constantly) for _ in range(2)]
    for thread in readers:
        thread.start()
    wal_sizes = []
    try:
        for i in range(3000):
            db.write(insert_number, worker=1, n=i)
            if i % 250 == 0:
                wal_sizes.append(db.stats()["wal_bytes"])
    finally:
        stop.set()
        for thread in readers:
            thread.join(10)
    stats = db.stats()
    wal_sizes.append(stats["wal_bytes"])
    assert reads > 0
    assert (stats["direct"] if writes == "direct" else stats)["checkpoints"] > 0
    # 3,000 commits under constant readers leave a WAL of 12 MB+ when nothing truncates it.
    assert max(wal_sizes) < 6 * 1024 * 1024, wal_sizes
