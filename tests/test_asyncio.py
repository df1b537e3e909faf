"""The asyncio face: a loop that never stalls on SQLite, pipelined writes over one
connection, and the codes that need many requests in flight (QUEUE_FULL, TIMEOUT)."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import MIGRATIONS, Children, count, create_post, insert_number, ops, slow

import onewriter

COUNT_TO = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "SELECT count(*) AS n FROM c"
)


def calibrate_slow_read(db: onewriter.Database, seconds: float) -> int:
    """How far the recursive CTE must count to take about ``seconds`` on this machine."""
    n = 200_000
    while True:
        started = time.perf_counter()
        db.read(COUNT_TO, (n,))
        took = time.perf_counter() - started
        if took > 0.05 or n > 50_000_000:
            return max(1, int(n * seconds / took))
        n *= 4


def test_the_event_loop_keeps_ticking_while_slow_reads_run_in_parallel(db_path: str) -> None:
    with onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS, read_pool_size=4) as sync:
        n = calibrate_slow_read(sync, 0.3)

    async def main() -> tuple[float, list[float]]:
        async with onewriter.connect_async(db_path, ops=ops, read_pool_size=4) as adb:
            ticks: list[float] = []
            stop = asyncio.Event()

            async def heartbeat() -> None:
                while not stop.is_set():
                    ticks.append(time.perf_counter())
                    await asyncio.sleep(0.01)

            async def timed_read() -> float:
                started = time.perf_counter()
                rows = await adb.read(COUNT_TO, (n,))
                assert rows[0]["n"] == n
                return time.perf_counter() - started

            beat = asyncio.create_task(heartbeat())
            await asyncio.sleep(0.02)
            durations = await asyncio.gather(*(timed_read() for _ in range(4)))
            stop.set()
            await beat
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return max(gaps), durations

    max_gap, durations = asyncio.run(main())
    assert min(durations) > 0.2, f"reads were not slow enough to prove anything: {durations}"
    # A read run on the loop would stall it for a whole read. When other work on the
    # machine stretches the reads, the bound stretches with them (still far below one).
    bound = max(0.15, min(durations) / 4)
    assert max_gap < bound, f"the loop stalled {max_gap * 1000:.0f} ms; reads took {durations}"


def test_many_concurrent_writes_share_one_pipelined_connection(
    db_path: str, children: Children
) -> None:
    children.writer(db_path)

    async def main() -> tuple[list[int], dict[str, Any]]:
        async with onewriter.connect_async(db_path, ops=ops, role="client") as adb:
            ids = await asyncio.gather(
                *(adb.write(insert_number, worker=0, n=i) for i in range(500))
            )
            return ids, await adb.stats()

    ids, stats = asyncio.run(main())
    assert sorted(ids) == list(range(1, 501))
    assert count(db_path) == 500
    assert stats["clients"] == 1
    assert stats["batch_size"]["max"] > 1, "no group commit happened"
    assert stats["batches"] < 500


def test_async_writes_with_the_writer_in_this_process(db_path: str) -> None:
    async def main() -> tuple[bool, int, int]:
        async with onewriter.connect_async(db_path, ops=ops, migrations=MIGRATIONS) as adb:
            await asyncio.gather(*(adb.write(create_post, title=f"p{i}") for i in range(200)))
            n = (await adb.read("SELECT count(*) AS n FROM posts"))[0]["n"]
            raw = await adb.execute_write("DELETE FROM posts WHERE title = ?", ("p0",))
            return adb.is_writer, n, raw.rowcount

    is_writer, n, deleted = asyncio.run(main())
    assert is_writer is True
    assert n == 200
    assert deleted == 1


def test_writes_from_the_writers_own_process_while_it_drains_go_to_the_next_writer(
    db_path: str, tmp_path: Path
) -> None:
    """Asyncio writes reach the writer of their own process while it drains: it answers
    SHUTTING_DOWN, the in-process link counts as lost, and the writes are sent again to
    the writer elected next (here, in this process again), each applied once."""
    marker = tmp_path / "slow-started"

    async def main() -> tuple[Any, int, int, bool]:
        async with onewriter.connect_async(
            db_path,
            ops=ops,
            migrations=MIGRATIONS,
            role="writer",
            writer_loop="asyncio",  # callbacks from other threads run in order
            client_timeout=20,
        ) as adb:
            await adb.start()
            service = adb._core.local_writer
            assert service is not None
            slow_write = asyncio.ensure_future(adb.write(slow, seconds=0.8, marker=str(marker)))
            while not marker.exists():
                await asyncio.sleep(0.01)
            service.request_drain()  # queued on the writer's loop before the writes below
            posts = await asyncio.gather(
                *(adb.write(create_post, title=f"during drain {i}") for i in range(20))
            )
            await slow_write
            refused = service.engine_errors["SHUTTING_DOWN"]
            moved = adb._core.local_writer is not service
            n = (await adb.read("SELECT count(*) AS n FROM posts"))[0]["n"]
            return posts, n, refused, moved

    posts, n, refused, moved = asyncio.run(main())
    assert refused > 0  # the draining writer did turn them away
    assert moved  # and a new writer took them
    assert sorted(p["title"] for p in posts) == sorted(f"during drain {i}" for i in range(20))
    assert n == 21  # the slow op's row and each write once


def test_queue_full_is_answered_at_once(db_path: str, children: Children) -> None:
    children.writer(db_path, max_pending=4)

    async def main() -> list[Any]:
        async with onewriter.connect_async(db_path, ops=ops, role="client") as adb:
            outcomes: list[Any] = await asyncio.gather(
                *(adb.write(create_post, title=f"q{i}") for i in range(40)),
                return_exceptions=True,
            )
            return outcomes

    outcomes = asyncio.run(main())
    full = [o for o in outcomes if isinstance(o, onewriter.QueueFull)]
    done = [o for o in outcomes if isinstance(o, dict)]
    assert len(full) + len(done) == 40, outcomes
    assert full, "max_pending=4 never refused anything"
    assert done, "nothing was accepted"
    assert full[0].code == "QUEUE_FULL"
    assert full[0].http_status == 503
    assert count(db_path, "posts") == len(done)


def test_a_request_whose_deadline_passed_in_the_queue_is_not_run(
    db_path: str, children: Children
) -> None:
    children.writer(db_path, max_batch=1)  # the slow op runs alone; the next one waits

    async def main() -> list[Any]:
        async with onewriter.connect_async(
            db_path, ops=ops, role="client", request_timeout=0.3
        ) as adb:
            outcomes: list[Any] = await asyncio.gather(
                adb.write(slow, seconds=0.8),
                adb.write(create_post, title="too late"),
                return_exceptions=True,
            )
            return outcomes

    slow_pid, late = asyncio.run(main())
    assert isinstance(slow_pid, int), slow_pid
    assert isinstance(late, onewriter.DeadlineExceeded), late
    assert late.code == "TIMEOUT"
    assert late.http_status == 504
    with onewriter.connect(db_path, ops=ops, role="client") as db:
        titles = [r["title"] for r in db.read("SELECT title FROM posts")]
        assert titles == ["slow"]
        assert db.stats()["errors"].get("TIMEOUT") == 1


def test_async_client_timeout(db_path: str, children: Children) -> None:
    children.writer(db_path)

    async def main() -> float:
        async with onewriter.connect_async(
            db_path, ops=ops, role="client", client_timeout=0.2
        ) as adb:
            started = time.monotonic()
            with pytest.raises(onewriter.ClientTimeout) as info:
                await adb.write(slow, seconds=1.0)
            assert info.value.code == "CLIENT_TIMEOUT"
            return time.monotonic() - started

    assert asyncio.run(main()) < 0.9


def test_async_client_with_no_writer_is_told_so(db_path: str) -> None:
    async def main() -> None:
        adb = onewriter.connect_async(db_path, ops=ops, role="client", failover_timeout=0.3)
        try:
            with pytest.raises(onewriter.WriterUnavailable):
                await adb.write(create_post, title="nobody listens")
        finally:
            await adb.close()

    asyncio.run(main())


# -- uvloop: an application's loop, and the writer's own -----------------------------------------


def test_an_application_on_uvloop_writes_through_a_writer_in_another_process(
    db_path: str, children: Children
) -> None:
    """uvloop's transports are not asyncio's classes; the channel must not care."""
    uvloop = pytest.importorskip("uvloop")
    children.writer(db_path)

    async def main() -> tuple[list[Any], Any]:
        async with onewriter.connect_async(db_path, ops=ops, role="client") as adb:
            posts = await asyncio.gather(
                *(adb.write(create_post, title=f"uv{i}") for i in range(50))
            )
            result = await adb.execute_write("INSERT INTO numbers(worker, n) VALUES (?, ?)", (7, 1))
            return posts, result

    posts, result = uvloop.run(main())
    assert sorted(p["title"] for p in posts) == sorted(f"uv{i}" for i in range(50))
    assert result.rowcount == 1
    assert count(db_path, "posts") == 50


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_writer_runs_on_the_loop_it_is_given(db_path: str, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def main() -> dict[str, Any]:
        async with onewriter.connect_async(
            db_path,
            ops=ops,
            migrations=MIGRATIONS,
            role="writer",
            writes="funnel",
            writer_loop=loop,
        ) as adb:
            assert (await adb.write(create_post, title="on " + loop))["title"] == "on " + loop
            return await adb.stats()

    assert asyncio.run(main())["writer_loop"] == loop


def test_an_unknown_writer_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="writer_loop"):
        onewriter.Config(writer_loop="trio")  # type: ignore[arg-type]
