"""The job queue's library API against a real database and writer (standalone role)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import onewriter
from onewriter.jobs import JobNotFound, JobQueue, LeaseLost, NewJob, jobs_ops
from onewriter.jobs import _sql as sql


def _ops() -> onewriter.Ops:
    ops = onewriter.Ops()
    ops.include(jobs_ops)
    return ops


@pytest.fixture
def db(tmp_path: Path) -> Iterator[onewriter.Database]:
    database = onewriter.connect(str(tmp_path / "jobs.db"), ops=_ops(), role="standalone")
    yield database
    database.close()


@pytest.fixture
def queue(db: onewriter.Database) -> JobQueue:
    return JobQueue(db)


def until(condition: Callable[[], Any], timeout: float = 5.0, pause: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(pause)


def test_enqueue_claim_complete_with_result(queue: JobQueue) -> None:
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


def test_claim_order_priority_then_run_at_then_id(queue: JobQueue) -> None:
    low = queue.enqueue("q", "low", priority=-1)
    first = queue.enqueue("q", "first")
    second = queue.enqueue("q", "second")
    urgent = queue.enqueue("q", "urgent", priority=10)
    earlier = queue.enqueue("q", "earlier", run_at=time.time() - 100)
    jobs = queue.claim("q", limit=10)
    assert [j.id for j in jobs] == [urgent, earlier, first, second, low]


def test_batch_enqueue_keeps_order_and_options(queue: JobQueue) -> None:
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


def test_delay_and_run_at_hold_a_job_back(queue: JobQueue) -> None:
    held = queue.enqueue("q", "held", delay=30)
    queue.enqueue("q", "far", run_at=time.time() + 3600)
    soon = queue.enqueue("q", "soon", delay=0.2)
    stored = queue.get(held)
    assert abs(stored.run_at - (stored.created_at + 30)) < 1e-6  # the writer's clock
    [job] = until(lambda: queue.claim("q", limit=10))
    assert job.id == soon
    assert queue.claim("q", limit=10) == []
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue("q", "x", delay=1, run_at=time.time())


def test_capability_routing(queue: JobQueue) -> None:
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


def test_unique_key_is_idempotent_while_unfinished(queue: JobQueue) -> None:
    a = queue.enqueue("q", 1, unique_key="report")
    assert queue.enqueue("q", 2, unique_key="report") == a
    assert queue.enqueue("other", 3, unique_key="report") != a
    [job] = queue.claim("q")
    assert queue.enqueue("q", 4, unique_key="report") == a  # running is unfinished
    queue.complete(job.id, job.token)
    assert queue.enqueue("q", 5, unique_key="report") != a


def test_payload_limit(db: onewriter.Database) -> None:
    queue = JobQueue(db, payload_limit=1024)
    queue.enqueue("q", "x" * 1000)
    with pytest.raises(onewriter.TooLarge) as err:
        queue.enqueue("q", "x" * 1100)
    assert err.value.http_status == 413
    with pytest.raises(onewriter.TooLarge):
        queue.enqueue_many("q", ["ok", "é" * 600])
    assert queue.stats()["totals"]["ready"] == 1
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue("q", {1, 2})


def test_stale_token_refused_after_lease_expiry_and_reclaim(queue: JobQueue) -> None:
    queue.enqueue("q", "x", backoff=0)
    [first] = queue.claim("q", worker="slow", lease=0.05)
    [second] = until(lambda: queue.claim("q", worker="fast", lease=30))
    assert second.id == first.id and second.attempts == 2 and second.token != first.token
    for stale in (
        lambda: queue.complete(first.id, first.token),
        lambda: queue.heartbeat(first.id, first.token),
        lambda: queue.fail(first.id, first.token, "late"),
    ):
        with pytest.raises(LeaseLost) as err:
            stale()
        assert err.value.code == "LEASE_LOST" and err.value.http_status == 409
    assert queue.release([(first.id, first.token)]) == [False]
    queue.complete(second.id, second.token, "mine")
    assert queue.get(first.id).result == "mine"


def test_heartbeat_extends_the_lease(queue: JobQueue) -> None:
    queue.enqueue("q", "x")
    [job] = queue.claim("q", lease=1)
    until_before = job.lease_until
    assert until_before is not None
    extended = queue.heartbeat(job.id, job.token, lease=120)
    assert extended > until_before + 100
    assert queue.get(job.id).lease_until == extended


def test_backoff_grows_exponentially_with_jitter(queue: JobQueue) -> None:
    job_id = queue.enqueue("q", "x", backoff=10, max_attempts=5)
    for attempt in (1, 2, 3):
        # Make the job due again without waiting out its backoff.
        queue.db.execute_write("UPDATE onewriter_jobs SET run_at = 0 WHERE id = ?", (job_id,))
        [job] = queue.claim("q")
        assert job.attempts == attempt
        before = time.time()
        assert queue.fail(job.id, job.token, f"boom {attempt}") == "ready"
        after = time.time()
        stored = queue.get(job_id)
        base = 10 * 2 ** (attempt - 1)
        assert before + 0.75 * base <= stored.run_at <= after + 1.25 * base
        assert stored.error == f"boom {attempt}"


def test_dead_letters_after_max_attempts_and_requeue(queue: JobQueue) -> None:
    job_id = queue.enqueue("q", "x", max_attempts=2, backoff=0)
    [job] = queue.claim("q")
    assert queue.fail(job.id, job.token, "first") == "ready"
    [job] = queue.claim("q")
    assert queue.fail(job.id, job.token, "second") == "dead"
    [dead] = queue.dead_letters()
    assert (dead.id, dead.error, dead.attempts, dead.state) == (job_id, "second", 2, "dead")
    assert queue.dead_letters(queue="other") == []
    assert queue.requeue_dead([job_id]) == 1
    [again] = queue.claim("q")
    assert again.id == job_id and again.attempts == 1
    assert queue.fail(again.id, again.token, "fatal", retry=False) == "dead"
    assert queue.requeue_dead(queue="q") == 1


def test_a_job_that_always_loses_its_worker_reaches_the_dead_letters(queue: JobQueue) -> None:
    job_id = queue.enqueue("q", "crash", max_attempts=3, backoff=0)
    attempts = []
    for _ in range(3):
        [job] = until(lambda: queue.claim("q", lease=0.02))
        attempts.append(job.attempts)  # the worker "crashes": no complete, no fail
    assert attempts == [1, 2, 3]
    dead = until(lambda: queue.dead_letters() or queue.claim("q"))
    assert [j.id for j in dead] == [job_id] and dead[0].state == "dead"
    assert "lease expired" in (dead[0].error or "")


def test_release_does_not_count_the_attempt(queue: JobQueue) -> None:
    queue.enqueue("q", "x")
    [job] = queue.claim("q")
    assert queue.release([(job.id, job.token)]) == [True]
    [again] = queue.claim("q")
    assert again.attempts == 1


def test_per_key_concurrency_limit(queue: JobQueue) -> None:
    queue.enqueue_many(
        "q", [NewJob(payload=i, concurrency_key="tenant-1", concurrency_limit=2) for i in range(5)]
    )
    queue.enqueue("q", "free")
    first = queue.claim("q", limit=10)
    assert sorted(str(j.payload) for j in first) == ["0", "1", "free"]
    assert queue.claim("q", limit=10) == []
    held = next(j for j in first if j.payload == 0)
    queue.complete(held.id, held.token)
    assert [j.payload for j in queue.claim("q", limit=10)] == [2]
    with pytest.raises(onewriter.BadRequest):
        queue.enqueue("q", "x", concurrency_limit=2)


def test_periodic_job_fires_once_per_period_across_instances(db: onewriter.Database) -> None:
    queues = [JobQueue(db, worker=f"instance-{i}") for i in range(3)]
    for q in queues:
        q.schedule("tick", "cron", {"kind": "tick"}, every=0.25)
    stop = time.monotonic() + 1.1
    errors: list[BaseException] = []

    def instance(q: JobQueue) -> None:
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


def test_wait_returns_the_finished_job(queue: JobQueue) -> None:
    job_id = queue.enqueue("q", 21)

    def work() -> None:
        [job] = until(lambda: queue.claim("q"))
        queue.complete(job.id, job.token, job.payload * 2)

    worker = threading.Thread(target=work)
    worker.start()
    assert queue.wait(job_id, timeout=5).result == 42
    worker.join()
    other = queue.enqueue("q", 0)
    with pytest.raises(TimeoutError):
        queue.wait(other, timeout=0.05)
    with pytest.raises(JobNotFound):
        queue.get(10**9)


def test_prune_purge_and_stats(queue: JobQueue) -> None:
    ids = [r.id for r in queue.enqueue_many("q", range(4))]
    jobs = queue.claim("q", limit=3)
    queue.complete_many([(j.id, j.token, None) for j in jobs[:2]])
    queue.fail(jobs[2].id, jobs[2].token, "bad", retry=False)
    stats = queue.stats()
    assert stats["queues"]["q"] | {"oldest_ready_age": 0} == {
        "ready": 1,
        "running": 0,
        "done": 2,
        "dead": 1,
        "oldest_ready_age": 0,
        "done_last_minute": 2,
    }
    assert queue.prune(retention=3600) == 0
    assert queue.prune(retention=0) == 2
    assert queue.purge("q", states=["dead"]) == 1
    assert [j.id for j in queue.claim("q", limit=10)] == [ids[3]]
    assert queue.maintain() == {"reaped": 0, "fired": 0, "pruned": 0}


def test_claim_uses_the_ready_index_without_sorting(
    queue: JobQueue, db: onewriter.Database
) -> None:
    queue.enqueue_many("q", range(10))
    conn = sqlite3.connect(db.path)
    try:
        params = {"queue": "q", "caps": "[]", "now": time.time(), "limit": 5}
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql.CLAIMABLE, params)]
        params |= {"worker": "w", "lease": 1.0}
        plan += [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql.CLAIM, params)]
    finally:
        conn.close()
    assert any("USING INDEX onewriter_jobs_ready (queue=?)" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN j ") for step in plan), plan


def test_missing_ops_give_a_clear_hint(tmp_path: Path) -> None:
    db = onewriter.connect(str(tmp_path / "bare.db"), role="standalone")
    try:
        with pytest.raises(onewriter.UnknownOp, match=r"ops.include\(onewriter.jobs.jobs_ops\)"):
            JobQueue(db)
    finally:
        db.close()


def test_public_names_are_exported_and_sorted() -> None:
    import onewriter.jobs as jobs

    assert jobs.__all__ == sorted(jobs.__all__, key=lambda n: (not n.isupper(), n))
    for name in jobs.__all__:
        assert getattr(jobs, name) is not None
    with pytest.raises(AttributeError):
        jobs.NoSuchThing  # noqa: B018
