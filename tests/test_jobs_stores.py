"""The job queue's contract, run against every store: SQLite through the one writer
(standalone role) and PostgreSQL (a throwaway server, a fresh schema per test). Then what
only the PostgreSQL store has to show: its claim plan, LISTEN/NOTIFY, its errors."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import PostgresServer, free_port, needs_postgres
from pg_server import postgres as postgres  # the fixture, for pytest

import onewriter
from onewriter.jobs import (
    AsyncJobQueue,
    AsyncJobStore,
    Job,
    JobCancelled,
    JobNotFound,
    JobQueue,
    JobStore,
    LeaseLost,
    NewJob,
    PermanentError,
    Worker,
    WorkerOptions,
    enqueue_in,
    enqueue_in_async,
    jobs_ops,
    report_progress,
)
from onewriter.jobs.model import TIMEOUT_SLACK

STORES = ["sqlite", "postgresql"]


def _ops() -> onewriter.Ops:
    ops = onewriter.Ops()
    ops.include(jobs_ops)
    ops.include(app_ops)
    return ops


app_ops = onewriter.Ops()


@app_ops.register
def place_order(conn: sqlite3.Connection, item: str, fail: bool) -> int:
    """An application's op: its row and its job commit together, or neither does."""
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT)")
    order = conn.execute("INSERT INTO orders (item) VALUES (?) RETURNING id", (item,)).fetchone()
    job_id = enqueue_in(conn, "orders", {"order": order[0]}, max_attempts=5)
    if fail:
        raise ValueError("payment refused")
    return job_id


@app_ops.register
def ship_after(conn: sqlite3.Connection, parent: int) -> int:
    return enqueue_in(conn, "orders", "ship", depends_on=[parent])


class Store:
    """One store for one test: queue objects on it (closed at teardown), the async twins,
    and raw SQL (``?`` placeholders) for what a test sets up behind the queue's back."""

    def __init__(self, kind: str, tmp_path: Path, postgres: PostgresServer | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.url = postgres.fresh_url() if postgres is not None else ""
        self.db = (
            onewriter.connect(str(tmp_path / "jobs.db"), ops=_ops(), role="standalone")
            if kind == "sqlite"
            else None
        )
        self._opened: list[Any] = []

    def make(self, **options: Any) -> JobStore:
        """A queue object on this store (another instance, for PostgreSQL)."""
        if self.db is not None:
            return JobQueue(self.db, **options)
        from onewriter.jobs import PgJobQueue

        queue = PgJobQueue(self.url, pool_size=4, **options)
        self._opened.append(queue)
        return queue

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        if self.db is not None:
            self.db.execute_write(sql, params)
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)

    @contextlib.asynccontextmanager
    async def open_async(self) -> AsyncIterator[Callable[..., AsyncJobStore]]:
        """``make(**options)``: asyncio queue objects on one store (for SQLite, a database
        of its own: the sync one holds this process's writer)."""
        if self.kind == "sqlite":
            path = str(self.tmp_path / "async.db")
            async with onewriter.connect_async(path, ops=_ops(), role="standalone") as adb:
                yield lambda **options: AsyncJobQueue(adb, **options)
            return
        from onewriter.jobs import AsyncPgJobQueue

        opened: list[AsyncPgJobQueue] = []

        def make(**options: Any) -> AsyncJobStore:
            queue = AsyncPgJobQueue(self.url, pool_size=4, **options)
            opened.append(queue)
            return queue

        try:
            yield make
        finally:
            for queue in opened:
                await queue.close()

    def close(self) -> None:
        for queue in self._opened:
            queue.close()
        if self.db is not None:
            self.db.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    opened = Store(request.param, tmp_path, server)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def queue(store: Store) -> JobStore:
    return store.make()


def until(condition: Callable[[], Any], timeout: float = 5.0, pause: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(pause)


# -- the contract ------------------------------------------------------------------------


def test_enqueue_claim_complete_with_result(queue: JobStore) -> None:
    job_id = queue.enqueue("mail", {"to": "a@example.com"})
    [job] = queue.claim("mail", worker="w1", lease=10)
    assert (job.id, job.payload, job.attempts) == (job_id, {"to": "a@example.com"}, 1)
    assert job.state == "running"
    assert job.token and job.worker == "w1" and job.lease_until is not None
    queue.complete(job.id, job.token, result={"sent": True})
    done = queue.get(job_id)
    assert done.state == "done" and done.result == {"sent": True} and done.token is None
    assert queue.claim("mail") == []
    with pytest.raises(LeaseLost):
        queue.complete(job.id, job.token)


def test_claim_order_priority_then_run_at_then_id(queue: JobStore) -> None:
    low = queue.enqueue("q", "low", priority=-1)
    first = queue.enqueue("q", "first")
    second = queue.enqueue("q", "second")
    urgent = queue.enqueue("q", "urgent", priority=10)
    earlier = queue.enqueue("q", "earlier", run_at=time.time() - 100)
    jobs = queue.claim("q", limit=10)
    assert [j.id for j in jobs] == [urgent, earlier, first, second, low]


def test_batch_enqueue_keeps_order_and_options(queue: JobStore) -> None:
    items = [
        "a",
        NewJob(payload="b", priority=3),
        NewJob(payload="c", unique_key="k"),
        "d",
        NewJob(payload="e", priority=3),
        NewJob(payload="f", unique_key="k"),
    ]
    result = queue.enqueue_many("q", items)
    assert [r.created for r in result] == [True, True, True, True, True, False]
    assert result[5].id == result[2].id
    assert [queue.get(r.id).payload for r in result[:5]] == ["a", "b", "c", "d", "e"]
    assert queue.get(result[1].id).priority == 3
    assert queue.enqueue_many("q", []) == []


def test_delay_and_run_at_hold_a_job_back(queue: JobStore) -> None:
    held = queue.enqueue("q", "held", delay=30)
    queue.enqueue("q", "far", run_at=time.time() + 3600)
    soon = queue.enqueue("q", "soon", delay=0.2)
    stored = queue.get(held)
    assert abs(stored.run_at - (stored.created_at + 30)) < 1e-6  # the store's one clock
    [job] = until(lambda: queue.claim("q", limit=10))
    assert job.id == soon
    assert queue.claim("q", limit=10) == []
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue("q", "x", delay=1, run_at=time.time())


def test_capability_routing(queue: JobStore) -> None:
    video = queue.enqueue("media", "video", requires=["ffmpeg"])
    both = queue.enqueue("media", "both", requires=["ffmpeg", "gpu"])
    plain = queue.enqueue("media", "plain")
    got = queue.claim("media", capabilities=["imagemagick"], limit=10)
    assert [j.id for j in got] == [plain]
    assert queue.claimable("media", ["imagemagick"]) is False
    assert queue.claimable("media", ["ffmpeg"]) is True
    got = queue.claim("media", capabilities=["ffmpeg"], limit=10)
    assert [j.id for j in got] == [video]
    got = queue.claim("media", capabilities=["gpu", "ffmpeg", "x"], limit=10)
    assert [j.id for j in got] == [both] and got[0].requires == ("ffmpeg", "gpu")


def test_unique_key_is_idempotent_while_unfinished(queue: JobStore) -> None:
    a = queue.enqueue("q", 1, unique_key="report")
    assert queue.enqueue("q", 2, unique_key="report") == a
    assert queue.enqueue("other", 3, unique_key="report") != a
    [job] = queue.claim("q")
    assert queue.enqueue("q", 4, unique_key="report") == a  # running is unfinished
    queue.complete(job.id, job.token)
    assert queue.enqueue("q", 5, unique_key="report") != a


def test_payload_limit(store: Store) -> None:
    queue = store.make(payload_limit=1024)
    queue.enqueue("q", "x" * 1000)
    with pytest.raises(onewriter.TooLarge) as err:
        queue.enqueue("q", "x" * 1100)
    assert err.value.http_status == 413
    with pytest.raises(onewriter.TooLarge):
        queue.enqueue_many("q", ["ok", "é" * 600])
    assert queue.stats()["totals"]["ready"] == 1
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue("q", {1, 2})


def test_stale_token_refused_after_lease_expiry_and_reclaim(queue: JobStore) -> None:
    queue.enqueue("q", "x", backoff=0)
    [first] = queue.claim("q", worker="slow", lease=0.05)
    [second] = until(lambda: queue.claim("q", worker="fast", lease=30))
    assert second.id == first.id and second.attempts == 2 and second.token != first.token
    assert first.token is not None
    stale_token = first.token
    for stale in (
        lambda: queue.complete(first.id, stale_token),
        lambda: queue.heartbeat(first.id, stale_token),
        lambda: queue.fail(first.id, stale_token, "late"),
    ):
        with pytest.raises(LeaseLost) as err:
            stale()
        assert err.value.code == "LEASE_LOST" and err.value.http_status == 409
    assert queue.release([(first.id, stale_token)]) == [False]
    assert second.token is not None
    queue.complete(second.id, second.token, "mine")
    assert queue.get(first.id).result == "mine"


def test_complete_many_answers_each_id_and_token_pair(queue: JobStore) -> None:
    queue.enqueue_many("q", ["a", "b"])
    first, second = queue.claim("q", limit=2)
    assert first.token is not None and second.token is not None
    held = queue.complete_many(
        [
            (first.id, "garbage", "forged"),
            (first.id, first.token, "real"),
            (second.id, first.token, "crossed"),
            (second.id, second.token + "x", "near miss"),
        ]
    )
    assert held == [False, True, False, False]
    assert queue.get(first.id).state == "done" and queue.get(first.id).result == "real"
    assert queue.get(second.id).state == "running"  # no pair held it
    assert queue.complete_many([(first.id, first.token, "again")]) == [False]
    assert queue.complete_many([(second.id, second.token, 2)]) == [True]
    assert queue.get(second.id).result == 2


def test_heartbeat_extends_the_lease(queue: JobStore) -> None:
    queue.enqueue("q", "x")
    [job] = queue.claim("q", lease=1)
    assert job.token is not None and job.lease_until is not None
    extended = queue.heartbeat(job.id, job.token, lease=120)
    assert extended > job.lease_until + 100
    assert queue.get(job.id).lease_until == extended


def test_backoff_grows_exponentially_with_jitter(store: Store, queue: JobStore) -> None:
    job_id = queue.enqueue("q", "x", backoff=10, max_attempts=5)
    for attempt in (1, 2, 3):
        # Make the job due again without waiting out its backoff.
        store.execute("UPDATE onewriter_jobs SET run_at = 0 WHERE id = ?", (job_id,))
        [job] = queue.claim("q")
        assert job.attempts == attempt and job.token is not None
        before = time.time()
        assert queue.fail(job.id, job.token, f"boom {attempt}") == "ready"
        after = time.time()
        stored = queue.get(job_id)
        base = 10 * 2 ** (attempt - 1)
        assert before + 0.75 * base - 0.5 <= stored.run_at <= after + 1.25 * base
        assert stored.error == f"boom {attempt}"


def test_dead_letters_after_max_attempts_and_requeue(queue: JobStore) -> None:
    job_id = queue.enqueue("q", "x", max_attempts=2, backoff=0)
    [job] = queue.claim("q")
    assert job.token is not None
    assert queue.fail(job.id, job.token, "first") == "ready"
    [job] = queue.claim("q")
    assert job.token is not None
    assert queue.fail(job.id, job.token, "second") == "dead"
    [dead] = queue.dead_letters()
    assert (dead.id, dead.error, dead.attempts, dead.state) == (job_id, "second", 2, "dead")
    assert queue.dead_letters(queue="other") == []
    assert queue.requeue_dead([job_id]) == 1
    [again] = queue.claim("q")
    assert again.id == job_id and again.attempts == 1 and again.token is not None
    assert queue.fail(again.id, again.token, "fatal", retry=False) == "dead"
    assert queue.requeue_dead(queue="q") == 1


def test_requeue_leaves_dead_a_job_whose_unique_key_is_taken(queue: JobStore) -> None:
    first = queue.enqueue("q", 1, unique_key="k", max_attempts=1)
    [job] = queue.claim("q")
    assert job.token is not None and queue.fail(job.id, job.token, "x") == "dead"
    second = queue.enqueue("q", 2, unique_key="k", max_attempts=1)
    assert second != first
    assert queue.requeue_dead([first]) == 0 and queue.get(first).state == "dead"
    [job] = queue.claim("q")
    assert job.token is not None and queue.fail(job.id, job.token, "y") == "dead"
    assert queue.requeue_dead(queue="q") == 1  # two dead share the key: one moves
    states = sorted(queue.get(i).state for i in (first, second))
    assert states == ["dead", "ready"]


def test_a_job_that_always_loses_its_worker_reaches_the_dead_letters(queue: JobStore) -> None:
    job_id = queue.enqueue("q", "crash", max_attempts=3, backoff=0)
    attempts = []
    for _ in range(3):
        [job] = until(lambda: queue.claim("q", lease=0.02))
        attempts.append(job.attempts)  # the worker "crashes": no complete, no fail
    assert attempts == [1, 2, 3]
    dead = until(lambda: queue.dead_letters() or queue.claim("q"))
    assert [j.id for j in dead] == [job_id] and dead[0].state == "dead"
    assert "lease expired" in (dead[0].error or "")


def test_release_does_not_count_the_attempt(queue: JobStore) -> None:
    queue.enqueue("q", "x")
    [job] = queue.claim("q")
    assert job.token is not None
    assert queue.release([(job.id, job.token)]) == [True]
    [again] = queue.claim("q")
    assert again.attempts == 1


def test_per_key_concurrency_limit(queue: JobStore) -> None:
    queue.enqueue_many(
        "q", [NewJob(payload=i, concurrency_key="tenant-1", concurrency_limit=2) for i in range(5)]
    )
    queue.enqueue("q", "free")
    first = queue.claim("q", limit=10)
    assert sorted(str(j.payload) for j in first) == ["0", "1", "free"]
    assert queue.claim("q", limit=10) == []
    held = next(j for j in first if j.payload == 0)
    assert held.token is not None
    queue.complete(held.id, held.token)
    assert [j.payload for j in queue.claim("q", limit=10)] == [2]
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue("q", "x", concurrency_limit=2)


def test_concurrent_claimers_share_jobs_out_once_within_concurrency_limits(store: Store) -> None:
    queues = [store.make(worker=f"claimer-{i}") for i in range(4)]
    plain = [r.id for r in queues[0].enqueue_many("race", range(120))]
    limited = [NewJob(payload=i, concurrency_key="tenant", concurrency_limit=2) for i in range(16)]
    keyed = queues[0].enqueue_many("race", limited)
    expected = set(plain) | {r.id for r in keyed}
    completed: Counter[int] = Counter()
    lock = threading.Lock()
    keyed_held = 0
    errors: list[BaseException] = []
    deadline = time.monotonic() + 30

    def claimer(q: JobStore) -> None:
        nonlocal keyed_held
        try:
            while time.monotonic() < deadline and sum(completed.values()) < len(expected):
                jobs = q.claim("race", limit=5)
                mine = sum(1 for j in jobs if j.concurrency_key)
                with lock:
                    keyed_held += mine
                    assert keyed_held <= 2, "more jobs of one key running than its limit"
                time.sleep(0.002)  # the "work", during which others claim
                with lock:
                    keyed_held -= mine  # before the store counts them done: never over
                held = q.complete_many([(j.id, j.token or "", None) for j in jobs])
                assert all(held)
                with lock:
                    completed.update(j.id for j in jobs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert set(completed) == expected and set(completed.values()) == {1}
    assert queues[1].stats()["queues"]["race"]["done"] == len(expected)


def test_periodic_job_fires_once_per_period_across_instances(store: Store) -> None:
    queues = [store.make(worker=f"instance-{i}") for i in range(3)]
    for q in queues:
        q.schedule("tick", "cron", {"kind": "tick"}, every=0.25)
    stop = time.monotonic() + 1.1
    errors: list[BaseException] = []

    def instance(q: JobStore) -> None:
        try:
            while time.monotonic() < stop:
                q.claim("nothing-here")  # claims fire due schedules, on any instance
                time.sleep(0.005)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=instance, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fired = queues[0].claim("cron", limit=100)
    periods = [int(j.created_at // 0.25) for j in fired]
    assert 2 <= len(periods) <= 5
    assert len(set(periods)) == len(periods), "a period fired twice"
    assert all(j.payload == {"kind": "tick"} for j in fired)
    assert queues[1].unschedule("tick") is True and queues[1].unschedule("tick") is False


def test_cron_schedule_fires_once_per_time_across_instances(store: Store) -> None:
    queues = [store.make(worker=f"instance-{i}") for i in range(3)]
    nexts = {
        q.schedule("report", "cron", "r", cron="*/5  * * * *", tz="Europe/Paris", timeout=9)
        for q in queues
    }
    [next_at] = nexts
    assert next_at % 300 == 0 and time.time() < next_at <= time.time() + 300
    store.execute("UPDATE onewriter_job_schedules SET next_at = next_at - 600")
    barrier = threading.Barrier(len(queues))

    def instance(q: JobStore) -> None:
        barrier.wait()
        for _ in range(10):
            q.maintain()
            q.claim("nothing-here")

    threads = [threading.Thread(target=instance, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    fired = queues[0].claim("cron", limit=100)
    assert [(j.payload, j.timeout) for j in fired] == [("r", 9)]  # one time: one job
    assert queues[1].schedule("report", "cron", "r", cron="*/5 * * * *", tz="Europe/Paris") == (
        next_at
    )
    moved = queues[1].schedule("report", "cron", "r", cron="0 9 * * mon", tz="Europe/Paris")
    assert moved != next_at and moved % 3600 == 0
    for bad in ({"cron": "61 * * * *"}, {"cron": "* * *"}, {"cron": "0 0 30 2 *"},
                {"cron": "* * * * *", "tz": "Mars/Olympus"}, {"cron": "* * * * *", "every": 5},
                {}):  # fmt: skip
        with pytest.raises(onewriter.BadRequest):
            queues[0].schedule("bad", "cron", "x", **bad)


def test_wait_returns_the_finished_job(queue: JobStore) -> None:
    job_id = queue.enqueue("q", 21)

    def work() -> None:
        [job] = until(lambda: queue.claim("q"))
        queue.complete(job.id, job.token or "", job.payload * 2)

    worker = threading.Thread(target=work)
    worker.start()
    assert queue.wait(job_id, timeout=5).result == 42
    worker.join()
    other = queue.enqueue("q", 0)
    with pytest.raises(TimeoutError):
        queue.wait(other, timeout=0.05)
    with pytest.raises(JobNotFound):
        queue.get(10**9)


def test_prune_purge_and_stats(queue: JobStore) -> None:
    ids = [r.id for r in queue.enqueue_many("q", range(4))]
    jobs = queue.claim("q", limit=3)
    queue.complete_many([(j.id, j.token or "", None) for j in jobs[:2]])
    queue.fail(jobs[2].id, jobs[2].token or "", "bad", retry=False)
    stats = queue.stats()
    assert stats["queues"]["q"] | {"oldest_ready_age": 0} == {
        "waiting": 0,
        "ready": 1,
        "running": 0,
        "done": 2,
        "dead": 1,
        "cancelled": 0,
        "oldest_ready_age": 0,
        "done_last_minute": 2,
        "paused": False,
        "rate_limit": None,
    }
    assert queue.throughput(5)[-1] == 2
    assert [j.id for j in queue.recent(2)] == [ids[3], ids[2]]
    assert queue.prune(retention=3600) == 0
    assert queue.prune(retention=0) == 2
    assert queue.purge("q", states=["dead"]) == 1
    assert [j.id for j in queue.claim("q", limit=10)] == [ids[3]]
    assert queue.maintain() == {"reaped": 0, "fired": 0, "resolved": 0, "pruned": 0}


# -- cancel, pause, progress, timeouts, rate limits ------------------------------------------


def test_cancel_a_ready_or_delayed_job_and_it_never_runs(queue: JobStore) -> None:
    ready = queue.enqueue("c", "now")
    later = queue.enqueue("c", "later", delay=0.2)
    kept = queue.enqueue("c", "kept")
    assert [queue.cancel(ready), queue.cancel(later)] == ["cancelled", "cancelled"]
    assert queue.cancel(ready) == "cancelled"
    time.sleep(0.3)
    assert [j.id for j in queue.claim("c", limit=10)] == [kept]
    job = queue.get(later)
    assert job.state == "cancelled" and job.finished and job.attempts == 0
    assert job.finished_at is not None
    assert queue.stats()["queues"]["c"]["cancelled"] == 2
    with pytest.raises(JobNotFound):
        queue.cancel(10**9)


def test_cancel_a_running_job_tells_its_worker_at_the_next_heartbeat(queue: JobStore) -> None:
    job_id = queue.enqueue("c", "long")
    [job] = queue.claim("c")
    assert queue.cancel(job_id) == "cancelling"
    seen = queue.get(job_id)
    assert (seen.state, seen.cancel_requested) == ("running", True)
    with pytest.raises(JobCancelled):
        queue.heartbeat(job_id, job.token or "")
    assert queue.get(job_id).state == "cancelled"
    with pytest.raises(LeaseLost):
        queue.complete(job_id, job.token or "", "too late")
    assert queue.get(job_id).result is None


def test_cancel_before_or_after_complete_fail_release_and_lease_expiry(queue: JobStore) -> None:
    first = queue.enqueue("c", 1)
    [job] = queue.claim("c")
    assert queue.cancel(first) == "cancelling"
    with pytest.raises(JobCancelled):
        queue.complete(first, job.token or "", "result")
    assert (queue.get(first).state, queue.get(first).result) == ("cancelled", None)

    pair = [r.id for r in queue.enqueue_many("c", ["p", "q"])]
    claimed = queue.claim("c", limit=2)
    queue.cancel(pair[0])
    held = queue.complete_many([(j.id, j.token or "", "r") for j in claimed])
    assert held == [j.id != pair[0] for j in claimed]  # in one batch: cancelled, done
    assert [queue.get(i).state for i in pair] == ["cancelled", "done"]

    done = queue.enqueue("c", 2)
    [job] = queue.claim("c")
    queue.complete(done, job.token or "", "kept")
    assert queue.cancel(done) == "done"
    assert (queue.get(done).state, queue.get(done).result) == ("done", "kept")

    failing = queue.enqueue("c", 3, max_attempts=5)
    [job] = queue.claim("c")
    queue.cancel(failing)
    assert queue.fail(failing, job.token or "", "boom") == "cancelled"

    released = queue.enqueue("c", 4)
    [job] = queue.claim("c")
    queue.cancel(released)
    assert queue.release([(released, job.token or "")]) == [True]
    assert queue.get(released).state == "cancelled"

    expiring = queue.enqueue("c", 5, max_attempts=5)
    [job] = queue.claim("c", lease=0.05)
    queue.cancel(expiring)
    time.sleep(0.1)
    queue.maintain()
    assert queue.get(expiring).state == "cancelled"
    assert queue.claim("c") == []


def test_retry_runs_a_cancelled_or_dead_job_again(queue: JobStore) -> None:
    cancelled = queue.enqueue("again", "c", unique_key="k")
    queue.cancel(cancelled)
    dead = queue.enqueue("again", "d", max_attempts=1)
    [job] = queue.claim("again")
    queue.fail(dead, job.token or "", "boom")
    holder = queue.enqueue("again", "live", unique_key="k")
    assert not queue.retry(cancelled)  # its unique key is taken by a live job
    assert queue.retry(dead) and not queue.retry(dead)
    claimed = queue.claim("again", limit=5)
    assert {j.id for j in claimed} == {dead, holder}
    for job in claimed:
        queue.complete(job.id, job.token or "")
    assert queue.retry(cancelled)
    job = queue.get(cancelled)
    assert (job.state, job.attempts, job.cancel_requested) == ("ready", 0, False)


def test_a_job_waits_until_all_its_parents_are_done(store: Store) -> None:
    queue, other = store.make(), store.make()
    a, b = (r.id for r in queue.enqueue_many("dep", ["a", "b"]))
    child = queue.enqueue("dep", "child", depends_on=[b, a], priority=10)
    seen = queue.get(child)
    assert (seen.state, seen.depends_on, seen.on_parent_failure) == ("waiting", (a, b), "cancel")
    first = queue.claim("dep", limit=10)
    assert {j.id for j in first} == {a, b}
    queue.complete(a, next(j for j in first if j.id == a).token or "")
    assert other.claim("dep") == [] and queue.get(child).state == "waiting"
    queue.complete(b, next(j for j in first if j.id == b).token or "", "b's result")
    [job] = other.claim("dep")
    assert job.id == child and job.depends_on == (a, b)
    assert queue.stats()["queues"]["dep"]["waiting"] == 0
    done_parent = queue.enqueue("dep", "ready at once", depends_on=[a])
    assert queue.get(done_parent).state == "ready"
    with pytest.raises(JobNotFound, match="999999"):
        queue.enqueue("dep", "orphan", depends_on=[a, 999999])


def test_a_dead_parent_cancels_its_children_down_the_tree_or_lets_them_run(
    queue: JobStore,
) -> None:
    parent = queue.enqueue("dep", "parent", max_attempts=1)
    cancelled = queue.enqueue("dep", "child", depends_on=[parent])
    runs = queue.enqueue("dep", "runs anyway", depends_on=[parent], on_parent_failure="run")
    grandchild = queue.enqueue("dep", "grandchild", depends_on=[cancelled])
    [job] = queue.claim("dep", lease=0.05)  # its worker dies: the lease runs out
    assert job.id == parent
    time.sleep(0.1)
    [job] = queue.claim("dep")
    assert job.id == runs and queue.get(parent).state == "dead"
    queue.maintain()
    for job_id, error in ((cancelled, f"parent job {parent} ended dead"),
                          (grandchild, f"parent job {cancelled} ended cancelled")):  # fmt: skip
        seen = queue.get(job_id)
        assert (seen.state, seen.error) == ("cancelled", error)
    late = queue.enqueue("dep", "late", depends_on=[parent])
    assert queue.get(late).state == "cancelled"
    waiting = queue.enqueue("dep", "cancel me", depends_on=[runs])
    assert queue.cancel(waiting) == "cancelled"


def test_children_released_once_while_instances_finish_parents_together(store: Store) -> None:
    """Three threads, each with its own queue object (its own connections), claim and
    complete parents at once; every child of many parents becomes ready exactly once."""
    queue = store.make()
    parents = [r.id for r in queue.enqueue_many("tree", range(30))]
    children = [
        queue.enqueue("leaves", f"child {i}", depends_on=parents[i % 10 :: 10]) for i in range(10)
    ]
    batch = queue.enqueue_batch("tree", range(12), NewJob(payload="all"), callback_queue="leaves")

    def finish_parents(instance: JobStore) -> None:
        while jobs := instance.claim("tree", limit=2):
            instance.complete_many([(j.id, j.token or "", None) for j in jobs])

    threads = [threading.Thread(target=finish_parents, args=(store.make(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = [j.id for j in queue.claim("leaves", limit=100)]
    assert sorted(claimed) == sorted([*children, batch.callback])
    assert queue.stats()["queues"]["leaves"]["waiting"] == 0


def test_a_batch_callback_runs_once_every_job_has_finished(queue: JobStore) -> None:
    batch = queue.enqueue_batch(
        "pages",
        ["p1", "p2", NewJob(payload="p3", max_attempts=1)],
        NewJob(payload="assemble", priority=5),
        callback_queue="books",
    )
    ids = [r.id for r in batch.jobs]
    assert queue.get(batch.callback).state == "waiting"
    jobs = queue.claim("pages", limit=10)
    for job in jobs:
        if job.payload == "p3":
            queue.fail(job.id, job.token or "", "torn")
        else:
            queue.complete(job.id, job.token or "", job.payload.upper())
    [callback] = queue.claim("books")
    assert callback.id == batch.callback and sorted(callback.depends_on) == sorted(ids)
    parents = [queue.get(i) for i in callback.depends_on]
    assert sorted((p.state, p.result) for p in parents) == [
        ("dead", None),
        ("done", "P1"),
        ("done", "P2"),
    ]
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue_batch("pages", [], NewJob(payload="nothing to wait for"))


def test_cancel_racing_complete_ends_one_way_only(store: Store) -> None:
    """Two threads on two queue objects: one completes every job, one cancels every job.
    Each job ends done (its cancel said so, its completion held) or cancelled (its
    completion was refused): never both, never neither."""
    worker, operator = store.make(), store.make()
    ids = [r.id for r in worker.enqueue_many("race", range(60))]
    claimed = worker.claim("race", limit=60)
    cancels: dict[int, str] = {}
    completions: dict[int, bool] = {}

    def complete_all() -> None:
        for job in claimed:
            completions[job.id] = worker.complete_many([(job.id, job.token or "", "r")])[0]

    def cancel_all() -> None:
        for job_id in reversed(ids):
            cancels[job_id] = operator.cancel(job_id)

    threads = [threading.Thread(target=complete_all), threading.Thread(target=cancel_all)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    outcomes = Counter()
    for job_id in ids:
        state = worker.get(job_id).state
        outcomes[state] += 1
        if state == "done":
            assert completions[job_id] and cancels[job_id] == "done"
        else:
            assert state == "cancelled" and not completions[job_id]
            assert cancels[job_id] == "cancelling"
    assert sum(outcomes.values()) == 60


def test_paused_queue_hands_out_nothing_until_resumed(store: Store) -> None:
    queue, other = store.make(), store.make()
    job_id = queue.enqueue("p", "held")
    queue.enqueue("elsewhere", "free")
    settings = queue.pause("p")
    assert settings.paused and settings.rate_limit is None
    assert other.claim("p", limit=5) == [] and not other.claimable("p")
    assert len(other.claim("elsewhere")) == 1
    assert other.queue_settings("p").paused
    assert not other.queue_settings("never-configured").paused
    stats = other.stats()["queues"]
    assert stats["p"]["paused"] and not stats["elsewhere"]["paused"]
    assert not queue.resume("p").paused
    assert [j.id for j in other.claim("p")] == [job_id]


def test_a_paused_queue_wakes_a_waiting_claim_when_resumed(queue: JobStore) -> None:
    job_id = queue.enqueue("p", "held")
    queue.pause("p")
    threading.Timer(0.3, queue.resume, args=("p",)).start()
    started = time.monotonic()
    jobs = queue.claim("p", wait=10)
    assert [j.id for j in jobs] == [job_id]
    assert 0.2 < time.monotonic() - started < 8


def test_progress_and_message_go_with_the_heartbeat(queue: JobStore) -> None:
    job_id = queue.enqueue("g", "big")
    [job] = queue.claim("g")
    queue.heartbeat(job_id, job.token or "", progress=40, message="frames 40/100")
    queue.heartbeat(job_id, job.token or "", progress=55.5)
    seen = queue.get(job_id)
    assert (seen.progress, seen.message) == (55.5, "frames 40/100")
    for bad in ({"progress": 101}, {"progress": -1}, {"message": "x" * 600}):
        with pytest.raises(onewriter.BadRequest):
            queue.heartbeat(job_id, job.token or "", **bad)
    queue.complete(job_id, job.token or "")
    again = queue.enqueue("g", "again")
    [job] = queue.claim("g")
    assert job.id == again and job.progress is None


def test_timeout_bounds_the_lease_and_says_so_when_it_ends(queue: JobStore) -> None:
    job_id = queue.enqueue("t", "slow", timeout=0.1, max_attempts=2, backoff=0)
    [job] = queue.claim("t", lease=60)
    assert job.timeout == 0.1
    assert job.lease_until is not None and job.started_at is not None
    assert job.lease_until <= job.started_at + 0.1 + TIMEOUT_SLACK + 0.01
    until = queue.heartbeat(job_id, job.token or "", lease=60)
    assert until <= job.started_at + 0.1 + TIMEOUT_SLACK + 0.01
    time.sleep(until - time.time() + 0.05)
    queue.maintain()
    seen = queue.get(job_id)
    assert seen.state == "ready" and seen.error is not None
    assert seen.error.startswith("timed out: ran past its timeout of 0.1")


def test_rate_limit_caps_claims_in_any_period(store: Store) -> None:
    queue, other = store.make(), store.make()
    queue.enqueue_many("r", range(20))
    settings = queue.set_rate_limit("r", 3, 0.5)
    assert settings.rate_limit is not None and settings.rate_limit.to_dict() == {
        "limit": 3,
        "period": 0.5,
    }
    assert len(queue.claim("r", limit=10)) == 3
    assert other.claim("r", limit=10) == []
    time.sleep(0.55)
    assert len(other.claim("r", limit=2)) == 2
    assert len(queue.claim("r", limit=10)) == 1
    assert other.queue_settings("r").rate_limit == settings.rate_limit
    assert other.stats()["queues"]["r"]["rate_limit"] == {"limit": 3, "period": 0.5}
    assert queue.set_rate_limit("r", None).rate_limit is None
    assert len(other.claim("r", limit=20)) == 14
    for bad in ((0, 1.0), (3, 0), (3, -1)):
        with pytest.raises(onewriter.BadRequest):
            queue.set_rate_limit("r", *bad)
    for shape in ("fast", (3,), {"limit": 3, "every": 1}):
        with pytest.raises(onewriter.BadRequest, match="rate_limit"):
            queue.configure("r", rate_limit=shape)


V1_SQLITE_SCHEMA = (Path(__file__).parent / "data" / "jobs_schema_v1.sql").read_text()


def test_a_version_1_database_is_migrated_with_its_jobs(store: Store) -> None:
    if store.kind == "sqlite":
        script = V1_SQLITE_SCHEMA
    else:
        from onewriter.jobs.postgres import sql as _pg_sql

        script = _pg_sql.SCHEMA
    for statement in script.split(";"):
        if statement.strip():
            store.execute(statement)
    old = (
        "INSERT INTO onewriter_jobs (id, queue, state, priority, run_at, payload, "
        "max_attempts, backoff, created_at) VALUES (?, 'old', ?, 0, 0, '\"p\"', 3, 1, 0)"
    )
    store.execute(old, (7, "ready"))
    store.execute(old, (41, "done"))
    store.execute("DELETE FROM onewriter_jobs WHERE id = 41")
    if store.kind == "sqlite":
        options = (
            '{"priority":0,"delay":0.0,"run_at":null,"requires":null,"max_attempts":3,'
            '"backoff":1.0,"unique_key":null,"concurrency_key":null,"concurrency_limit":null}'
        )
        store.execute(
            "INSERT INTO onewriter_job_schedules (name, queue, payload, every, options, next_at)"
            " VALUES ('tick', 'ticks', '\"t\"', 60, ?, 0)",
            (options,),
        )
    else:
        store.execute(
            "INSERT INTO onewriter_job_schedules (name, queue, payload, every, priority, "
            "delay, max_attempts, backoff, next_at) "
            "VALUES ('tick', 'ticks', '\"t\"', 60, 0, 0, 3, 1, 0)"
        )
    queue = store.make()
    store.make()  # a second setup finds the current version
    assert queue.get(7).state == "ready" and queue.get(7).timeout is None
    [job] = queue.claim("old")
    assert queue.cancel(7) == "cancelling"
    with pytest.raises(JobCancelled):
        queue.heartbeat(7, job.token or "", progress=10)
    new = queue.enqueue("old", "new", timeout=5)
    if store.kind == "sqlite":
        assert new > 41  # ids of deleted jobs are not handed out again
    assert queue.get(new).timeout == 5
    queue.pause("old")
    assert queue.claim("old") == []
    [tick] = queue.claim("ticks")  # the old schedule fired, and moved on
    assert tick.payload == "t" and queue.claim("ticks") == []


# -- the asyncio twins and the worker runner, on every store ----------------------------------


def picky(job: Job) -> str:
    if job.payload == "transient":
        raise RuntimeError("try again")
    if job.payload == "fatal":
        raise PermanentError("never works")
    return f"ok {job.payload}"


def test_async_claim_long_polls_until_another_instance_enqueues(store: Store) -> None:
    async def main() -> tuple[list[Job], int, float]:
        async with store.open_async() as make:
            waiting, producer = make(), make()
            await waiting.setup()
            started = time.monotonic()
            claim = asyncio.create_task(waiting.claim("poll", wait=20))
            await asyncio.sleep(0.2)  # let it wait; correctness does not depend on it
            job_id = await producer.enqueue("poll", "wake up")
            jobs = await asyncio.wait_for(claim, 30)
            return jobs, job_id, time.monotonic() - started

    jobs, job_id, elapsed = asyncio.run(main())
    assert [j.id for j in jobs] == [job_id]
    assert elapsed < 15


def test_worker_runner_over_the_store(store: Store) -> None:
    async def main() -> tuple[list[Job], Worker]:
        async with store.open_async() as make:
            queue = make()
            ids = [r.id for r in await queue.enqueue_many("work", ["a", "b", "c"])]
            ids.append(await queue.enqueue("work", "transient", max_attempts=2, backoff=0))
            ids.append(await queue.enqueue("work", "fatal", max_attempts=5))
            worker = Worker(queue, picky, WorkerOptions(queue="work", concurrency=3, wait=0.2))
            running = asyncio.create_task(worker.run())
            try:
                return [await queue.wait(i, timeout=20) for i in ids], worker
            finally:
                worker.stop()
                await asyncio.wait_for(running, 30)

    jobs, worker = asyncio.run(main())
    assert [(j.state, j.result) for j in jobs[:3]] == [("done", f"ok {p}") for p in "abc"]
    transient, fatal = jobs[3:]
    assert (transient.state, transient.attempts) == ("dead", 2)
    assert transient.error == "RuntimeError: try again"
    assert (fatal.state, fatal.attempts) == ("dead", 1)
    assert worker.stats.completed == 3 and worker.stats.failed == 3


def test_enqueue_in_the_callers_transaction_commits_or_rolls_back_with_it(store: Store) -> None:
    queue = store.make()
    if store.db is not None:
        committed = store.db.write(place_order, item="book", fail=False)
        with pytest.raises(onewriter.OpFailed, match="payment refused"):
            store.db.write(place_order, item="lamp", fail=True)
        orders = store.db.read("SELECT item FROM orders")
        # raised inside the op: as it is when the op runs here, as OP_FAILED on the writer
        with pytest.raises((onewriter.OpFailed, JobNotFound), match="names no job 424242"):
            store.db.write(ship_after, parent=424242)
        with pytest.raises(onewriter.BadRequest, match="running op"):
            enqueue_in(sqlite3.connect(":memory:"), "orders", 1)
    else:
        import psycopg

        with psycopg.connect(store.url) as conn:
            conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text)")
            conn.commit()
            for item, fail in (("book", False), ("lamp", True)):
                try:
                    with conn.transaction():
                        row = conn.execute(
                            "INSERT INTO orders (item) VALUES (%s) RETURNING id", (item,)
                        ).fetchone()
                        assert row is not None
                        job_id = enqueue_in(conn, "orders", {"order": row[0]}, max_attempts=5)
                        if fail:
                            raise ValueError("payment refused")
                        committed = job_id
                except ValueError:
                    pass
            orders = conn.execute("SELECT item FROM orders").fetchall()
        with (
            psycopg.connect(store.url, autocommit=True) as conn,
            pytest.raises(onewriter.BadRequest, match="inside a transaction"),
        ):
            enqueue_in(conn, "orders", 1)
        with psycopg.connect(store.url) as conn, pytest.raises(JobNotFound, match="424242"):
            enqueue_in(conn, "orders", "ship", depends_on=[424242])

        async def in_async() -> int:
            conn = await psycopg.AsyncConnection.connect(store.url)
            async with conn, conn.transaction():
                return await enqueue_in_async(conn, "orders", {"order": 0})

        assert asyncio.run(in_async()) > committed
    assert [tuple(r) for r in orders] == [("book",)]
    claimed = queue.claim("orders", limit=10)
    first = claimed[0]
    assert (first.id, first.payload["order"], first.max_attempts) == (committed, 1, 5)
    assert len(claimed) == (1 if store.db is not None else 2)


def _stoppable(job: Job) -> str:
    """A sync handler that reports progress and runs until stopped (or 30 s)."""
    report_progress(10, f"started {job.payload}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "ran to the end"


async def _stoppable_async(job: Job) -> str:
    report_progress(10, f"started {job.payload}")
    await asyncio.sleep(30)
    return "ran to the end"


@pytest.mark.parametrize("handler", [_stoppable, _stoppable_async], ids=["sync", "async"])
def test_worker_stops_a_handler_when_its_job_is_cancelled_or_times_out(
    store: Store, handler: Callable[[Job], Any]
) -> None:
    async def main() -> tuple[Job, Job, Job, Worker, float]:
        async with store.open_async() as make:
            queue = make()
            cancelled = await queue.enqueue("stop", "cancel me")
            timed_out = await queue.enqueue("stop", "too slow", timeout=0.5, max_attempts=1)
            options = WorkerOptions(queue="stop", concurrency=2, wait=0.2, lease=1.5)
            worker = Worker(queue, handler, options)
            running = asyncio.create_task(worker.run())
            try:
                for _ in range(200):
                    progress = await queue.get(cancelled)
                    if progress.progress is not None:
                        break
                    await asyncio.sleep(0.05)
                started = time.monotonic()
                assert await queue.cancel(cancelled) == "cancelling"
                stopped = await queue.wait(cancelled, timeout=20)
                took = time.monotonic() - started
                dead = await queue.wait(timed_out, timeout=20)
                after = await queue.enqueue("stop", "after")
                await asyncio.sleep(0.3)
                await queue.cancel(after)
                return progress, stopped, dead, worker, took
            finally:
                worker.stop()
                await asyncio.wait_for(running, 30)

    progress, cancelled, timed_out, worker, took = asyncio.run(main())
    assert (progress.progress, progress.message) == (10, "started cancel me")
    assert cancelled.state == "cancelled" and cancelled.result is None
    assert took < 5  # told at the next heartbeat (every lease/3 = 0.5 s), not after 30 s
    assert timed_out.state == "dead"
    assert timed_out.error == "TimeoutError: the handler ran past the job's timeout of 0.5 s"
    assert worker.stats.cancelled == 2 and worker.stats.timed_out == 1
    assert worker.stats.completed == 0


# -- PostgreSQL only ------------------------------------------------------------------------


@needs_postgres
def test_pg_claim_walks_the_ready_index_without_sorting(postgres: PostgresServer) -> None:
    import psycopg

    from onewriter.jobs import PgJobQueue
    from onewriter.jobs.postgres import sql as pg_sql

    url = postgres.fresh_url()
    with PgJobQueue(url, pool_size=2) as queue:
        queue.enqueue_many("q", range(3000))
        queue.enqueue_many("other", range(3000))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE onewriter_jobs")
        params = {"queue": "q", "caps": "[]", "limit": 5, "worker": "w", "lease": 1.0, "slack": 2.0}
        plans = [
            "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, params))
            for statement in (pg_sql.CLAIMABLE, pg_sql.CLAIM)
        ]
    for plan in plans:
        assert "onewriter_jobs_ready" in plan, plan
        assert "Sort" not in plan and "Seq Scan on onewriter_jobs j" not in plan, plan
    assert "LockRows" in plans[1], plans[1]


@needs_postgres
def test_pg_notify_wakes_a_waiting_claim_with_polling_off(postgres: PostgresServer) -> None:
    import psycopg

    from onewriter.jobs import AsyncPgJobQueue

    url = postgres.fresh_url()

    def listeners() -> int:
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN onewriter_jobs'"
            return int(conn.execute(query).fetchone()[0])  # type: ignore[index]

    async def main() -> tuple[list[Job], int]:
        async with AsyncPgJobQueue(url) as waiting, AsyncPgJobQueue(url) as producer:
            # Longer than the test waits: only a notification can wake this claim.
            waiting.first_poll = waiting.max_poll = 60.0
            before = listeners()
            claim = asyncio.create_task(waiting.claim("notified", wait=50))
            deadline = time.monotonic() + 10
            while listeners() <= before:  # the claim found nothing and listens
                assert time.monotonic() < deadline, "the waiting claim never listened"
                await asyncio.sleep(0.02)
            job_id = await producer.enqueue("notified", "ping")
            return await asyncio.wait_for(claim, 20), job_id

    jobs, job_id = asyncio.run(main())
    assert [j.id for j in jobs] == [job_id]


@needs_postgres
def test_pg_unreachable_server_and_closed_queue_are_clear_errors(
    postgres: PostgresServer,
) -> None:
    from onewriter.jobs import PgJobQueue

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    with pytest.raises(onewriter.WriterUnavailable, match="PostgreSQL is unavailable"):
        PgJobQueue(nowhere, connect_timeout=1)
    queue = PgJobQueue(postgres.fresh_url(), pool_size=1)
    queue.close()
    queue.close()
    with pytest.raises(onewriter.Closed):
        queue.enqueue("q", 1)
