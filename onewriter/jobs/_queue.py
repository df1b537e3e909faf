"""The library face of the queue, for synchronous code: :class:`JobQueue` over a
:class:`~onewriter.Database`. Its asyncio twin is :class:`~onewriter.jobs.AsyncJobQueue`.

Writes are the ops of :mod:`onewriter.jobs._ops`, run by the one writer; reads (get,
stats, dead letters) run on this process's readers. Both twins share
:class:`~onewriter.jobs._calls.Calls`, which checks arguments and reads results, so they
differ only by ``await``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .._database import Database
from .._errors import UnknownOp
from . import _ops as ops
from . import _sql as sql
from ._calls import (
    PRUNE_STEP,
    WAIT_FIRST_POLL,
    WAIT_MAX_POLL,
    Call,
    Calls,
    claimable_params,
    per_minute,
    throughput_params,
    unknown_op_hint,
)
from ._errors import JobNotFound, LeaseLost
from ._model import (
    DEFAULT_BACKOFF,
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PAYLOAD_LIMIT,
    DEFAULT_RETENTION,
    Enqueued,
    Job,
    NewJob,
    State,
    check_limit,
    decode_batch,
    job_from_row,
)
from ._wake import FIRST_POLL, MAX_POLL, ThreadWaker


class JobQueue:
    """The queue, from synchronous code. Thread-safe (as the database is).

    ::

        ops = onewriter.Ops()
        ops.include(jobs_ops)
        db = onewriter.connect("app.db", ops=ops)
        queue = JobQueue(db)
        queue.enqueue("emails", {"to": "a@example.com"})
        for job in queue.claim("emails", limit=10):
            queue.complete(job.id, job.token)
    """

    def __init__(
        self,
        db: Database,
        *,
        payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
        retention: float = DEFAULT_RETENTION,
        worker: str | None = None,
        setup: bool = True,
    ) -> None:
        self.db = db
        self._calls = Calls(payload_limit=payload_limit, retention=retention, worker=worker)
        self._waker = ThreadWaker()
        if setup:
            self.setup()

    def _write(self, call: Call) -> Any:
        op, kwargs = call
        try:
            return self.db.write(op, **kwargs)
        except UnknownOp as exc:
            raise unknown_op_hint(exc) from exc

    def setup(self) -> None:
        """Create the queue's tables if missing (the constructor does it by default)."""
        self._write((ops.jobs_setup, {}))

    def enqueue(
        self,
        queue: str,
        payload: Any,
        *,
        priority: int = 0,
        delay: float | None = None,
        run_at: float | None = None,
        requires: Sequence[str] = (),
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        unique_key: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        backoff: float = DEFAULT_BACKOFF,
    ) -> int:
        """Add a job; its id (the existing job's id when ``unique_key`` matches one)."""
        spec = NewJob(
            payload=payload,
            priority=priority,
            delay=delay,
            run_at=run_at,
            requires=requires,
            max_attempts=max_attempts,
            unique_key=unique_key,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            backoff=backoff,
        )
        return self.enqueue_many(queue, [spec])[0].id

    def enqueue_many(self, queue: str, jobs: Iterable[NewJob | Any]) -> list[Enqueued]:
        """Add many jobs in one transaction; items are :class:`NewJob` or bare payloads."""
        call, layout = self._calls.enqueue_call(queue, jobs)
        result = decode_batch(self._write(call), layout)
        self._waker.notify(queue)
        return result

    def claim(
        self,
        queue: str,
        *,
        worker: str | None = None,
        capabilities: Iterable[str] = (),
        limit: int = 1,
        lease: float = DEFAULT_LEASE,
        wait: float = 0.0,
    ) -> list[Job]:
        """Lease up to ``limit`` ready jobs whose requirements ``capabilities`` meet, in
        order of priority (highest first), then ``run_at``, then id. With ``wait``, wait
        up to that many seconds for one when none is ready."""
        caps = list(capabilities)
        call = self._calls.claim_call(queue, worker, caps, limit, lease)
        deadline = time.monotonic() + wait
        pause = FIRST_POLL
        while True:
            jobs = self._calls.claimed(self._write(call))
            if jobs or time.monotonic() >= deadline:
                return jobs
            while (left := deadline - time.monotonic()) > 0:
                woken = self._waker.wait(queue, min(pause, left))
                pause = min(pause * 2, MAX_POLL)
                if woken or self.claimable(queue, caps):
                    break

    def heartbeat(self, job_id: int, token: str, lease: float = DEFAULT_LEASE) -> float:
        """Extend the lease to ``lease`` seconds from now; the new ``lease_until``."""
        until = self._write(self._calls.heartbeat_call(job_id, token, lease))
        return self._calls.heartbeat_result(job_id, until)

    def complete(self, job_id: int, token: str, result: Any = None) -> None:
        """Mark the job done with ``result`` (``LEASE_LOST`` if the token no longer holds)."""
        if not self.complete_many([(job_id, token, result)])[0]:
            raise LeaseLost(f"job {job_id}: the lease token no longer holds it")

    def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        """Complete ``(id, token, result)`` items in one transaction; which were held."""
        call, ids = self._calls.complete_call(items)
        return self._calls.completed(ids, self._write(call))

    def fail(self, job_id: int, token: str, error: str, *, retry: bool = True) -> State:
        """Record a failed attempt; ``"ready"`` (retried after a backoff) or ``"dead"``."""
        result = self._write(self._calls.fail_call(job_id, token, error, retry))
        return self._calls.fail_result(job_id, result)

    def release(self, items: Iterable[tuple[int, str]]) -> list[bool]:
        """Hand ``(id, token)`` jobs back at once, the attempt not counted (shutdown)."""
        held = [bool(ok) for ok in self._write(self._calls.release_call(items))]
        self._waker.notify()
        return held

    def get(self, job_id: int) -> Job:
        """The job as stored now (``NOT_FOUND`` if there is none)."""
        rows = self.db.read(sql.GET, (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id}")
        return job_from_row(rows[0])

    def wait(self, job_id: int, timeout: float) -> Job:
        """Block until the job is done or dead; ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        pause = WAIT_FIRST_POLL
        while True:
            job = self.get(job_id)
            left = deadline - time.monotonic()
            if job.finished:
                return job
            if left <= 0:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            time.sleep(min(pause, left))
            pause = min(pause * 2, WAIT_MAX_POLL)

    def claimable(self, queue: str, capabilities: Iterable[str] = ()) -> bool:
        """Whether a claim would get a job now (a read: cheap, for long-polling)."""
        params = claimable_params(queue, capabilities)
        return bool(self.db.read(sql.CLAIMABLE, params))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs, the most recent first, with their last error."""
        rows = self.db.read(sql.DEAD_LETTERS, {"queue": queue, "limit": check_limit(limit)})
        return [job_from_row(r) for r in rows]

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs of every queue and state."""
        return [job_from_row(r) for r in self.db.read(sql.RECENT, (check_limit(limit),))]

    def requeue_dead(self, ids: Sequence[int] | None = None, *, queue: str | None = None) -> int:
        """Send dead letters back to ready with fresh attempts; how many moved."""
        moved = int(self._write(self._calls.requeue_call(ids, queue)))
        self._waker.notify(queue)
        return moved

    def purge(self, queue: str | None = None, states: Iterable[str] = ("done", "dead")) -> int:
        """Delete jobs in ``states`` (of ``queue``, or of every queue); how many."""
        return int(self._write(self._calls.purge_call(queue, states)))

    def prune(self, retention: float | None = None) -> int:
        """Delete done jobs finished more than ``retention`` seconds ago, in steps."""
        keep = self._calls.retention if retention is None else retention
        total = 0
        while True:
            n = int(self._write((ops.jobs_prune, {"retention": keep, "limit": PRUNE_STEP})))
            total += n
            if n < PRUNE_STEP:
                return total

    def schedule(
        self, name: str, queue: str, payload: Any, *, every: float, **options: Any
    ) -> float:
        """Declare a periodic job (options as for :meth:`enqueue`); it fires once per
        period of ``every`` seconds (aligned to multiples of it, UTC), whatever the number
        of instances declaring it. Returns its next firing time."""
        call = self._calls.schedule_call(name, queue, payload, every, options)
        return float(self._write(call))

    def unschedule(self, name: str) -> bool:
        """Remove a periodic job; whether it existed."""
        return bool(self._write((ops.jobs_unschedule, {"name": name})))

    def maintain(self) -> dict[str, int]:
        """Return expired leases, fire due periodic jobs, prune a step of finished jobs.

        Claims do the first two on their own; call this from time to time (the HTTP
        service does, every second) so that pruning and schedules go on when idle."""
        call = (ops.jobs_maintain, {"retention": self._calls.retention, "limit": PRUNE_STEP})
        result: dict[str, int] = self._write(call)
        return result

    def throughput(self, minutes: int = 10) -> list[int]:
        """Jobs done in each of the last ``minutes`` minutes, oldest first."""
        params = throughput_params(minutes)
        return per_minute(self.db.read(sql.DONE_PER_MINUTE, params), minutes)

    def stats(self) -> dict[str, Any]:
        """Counts by queue and state, the oldest ready job's age, and throughput."""
        now = time.time()
        counts = self.db.read(sql.COUNTS)
        oldest = self.db.read(sql.OLDEST_READY, (now,))
        done = self.db.read(sql.DONE_SINCE, (now - 60.0,))
        return self._calls.stats_result(counts, oldest, done, now)
