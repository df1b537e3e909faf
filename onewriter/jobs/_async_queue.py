"""The library face of the queue, for asyncio code: :class:`AsyncJobQueue` over an
:class:`~onewriter.AsyncDatabase`, the twin of :class:`~onewriter.jobs.JobQueue`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .._database import AsyncDatabase
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
from ._wake import FIRST_POLL, MAX_POLL, AsyncWaker


class AsyncJobQueue:
    """The queue, from asyncio code: the twin of :class:`JobQueue`, every method a
    coroutine. The tables are created on first use (or by ``await queue.setup()``)."""

    def __init__(
        self,
        db: AsyncDatabase,
        *,
        payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
        retention: float = DEFAULT_RETENTION,
        worker: str | None = None,
    ) -> None:
        self.db = db
        self._calls = Calls(payload_limit=payload_limit, retention=retention, worker=worker)
        self._waker = AsyncWaker()
        self._ready = False
        self._setup_lock: asyncio.Lock | None = None

    @property
    def payload_limit(self) -> int | None:
        return self._calls.payload_limit

    async def _write(self, call: Call) -> Any:
        if not self._ready:
            await self.setup()
        return await self._write_now(call)

    async def _write_now(self, call: Call) -> Any:
        op, kwargs = call
        try:
            return await self.db.write(op, **kwargs)
        except UnknownOp as exc:
            raise unknown_op_hint(exc) from exc

    async def setup(self) -> None:
        """Create the queue's tables if missing (done once, on first use)."""
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if not self._ready:
                await self._write_now((ops.jobs_setup, {}))
                self._ready = True

    async def enqueue(
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
        """Add a job; its id (see :meth:`JobQueue.enqueue`)."""
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
        return (await self.enqueue_many(queue, [spec]))[0].id

    async def enqueue_many(self, queue: str, jobs: Iterable[NewJob | Any]) -> list[Enqueued]:
        """Add many jobs in one transaction."""
        call, layout = self._calls.enqueue_call(queue, jobs)
        result = decode_batch(await self._write(call), layout)
        self._waker.notify(queue)
        return result

    async def claim(
        self,
        queue: str,
        *,
        worker: str | None = None,
        capabilities: Iterable[str] = (),
        limit: int = 1,
        lease: float = DEFAULT_LEASE,
        wait: float = 0.0,
    ) -> list[Job]:
        """Lease up to ``limit`` jobs, waiting up to ``wait`` s for one (see
        :meth:`JobQueue.claim`)."""
        caps = list(capabilities)
        call = self._calls.claim_call(queue, worker, caps, limit, lease)
        deadline = time.monotonic() + wait
        pause = FIRST_POLL
        while True:
            jobs = self._calls.claimed(await self._write(call))
            if jobs or time.monotonic() >= deadline:
                return jobs
            while (left := deadline - time.monotonic()) > 0:
                woken = await self._waker.wait(queue, min(pause, left))
                pause = min(pause * 2, MAX_POLL)
                if woken or await self.claimable(queue, caps):
                    break

    async def heartbeat(self, job_id: int, token: str, lease: float = DEFAULT_LEASE) -> float:
        """Extend the lease; the new ``lease_until``."""
        until = await self._write(self._calls.heartbeat_call(job_id, token, lease))
        return self._calls.heartbeat_result(job_id, until)

    async def complete(self, job_id: int, token: str, result: Any = None) -> None:
        """Mark the job done (``LEASE_LOST`` if the token no longer holds)."""
        if not (await self.complete_many([(job_id, token, result)]))[0]:
            raise LeaseLost(f"job {job_id}: the lease token no longer holds it")

    async def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        """Complete many jobs in one transaction; which were held."""
        call, ids = self._calls.complete_call(items)
        return self._calls.completed(ids, await self._write(call))

    async def fail(self, job_id: int, token: str, error: str, *, retry: bool = True) -> State:
        """Record a failed attempt; ``"ready"`` or ``"dead"``."""
        result = await self._write(self._calls.fail_call(job_id, token, error, retry))
        return self._calls.fail_result(job_id, result)

    async def release(self, items: Iterable[tuple[int, str]]) -> list[bool]:
        """Hand jobs back at once, the attempt not counted."""
        held = [bool(ok) for ok in await self._write(self._calls.release_call(items))]
        self._waker.notify()
        return held

    async def get(self, job_id: int) -> Job:
        """The job as stored now (``NOT_FOUND`` if there is none)."""
        rows = await self.db.read(sql.GET, (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id}")
        return job_from_row(rows[0])

    async def wait(self, job_id: int, timeout: float) -> Job:
        """Wait until the job is done or dead; ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        pause = WAIT_FIRST_POLL
        while True:
            job = await self.get(job_id)
            left = deadline - time.monotonic()
            if job.finished:
                return job
            if left <= 0:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, WAIT_MAX_POLL)

    async def claimable(self, queue: str, capabilities: Iterable[str] = ()) -> bool:
        """Whether a claim would get a job now (a read)."""
        return bool(await self.db.read(sql.CLAIMABLE, claimable_params(queue, capabilities)))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs, the most recent first."""
        rows = await self.db.read(
            sql.DEAD_LETTERS, {"queue": queue, "limit": check_limit(limit)}
        )
        return [job_from_row(r) for r in rows]

    async def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs of every queue and state."""
        rows = await self.db.read(sql.RECENT, (check_limit(limit),))
        return [job_from_row(r) for r in rows]

    async def requeue_dead(
        self, ids: Sequence[int] | None = None, *, queue: str | None = None
    ) -> int:
        """Send dead letters back to ready; how many moved."""
        moved = int(await self._write(self._calls.requeue_call(ids, queue)))
        self._waker.notify(queue)
        return moved

    async def purge(
        self, queue: str | None = None, states: Iterable[str] = ("done", "dead")
    ) -> int:
        """Delete jobs in ``states``; how many."""
        return int(await self._write(self._calls.purge_call(queue, states)))

    async def prune(self, retention: float | None = None) -> int:
        """Delete done jobs past ``retention``, in steps."""
        keep = self._calls.retention if retention is None else retention
        total = 0
        while True:
            call = (ops.jobs_prune, {"retention": keep, "limit": PRUNE_STEP})
            n = int(await self._write(call))
            total += n
            if n < PRUNE_STEP:
                return total

    async def schedule(
        self, name: str, queue: str, payload: Any, *, every: float, **options: Any
    ) -> float:
        """Declare a periodic job (see :meth:`JobQueue.schedule`)."""
        call = self._calls.schedule_call(name, queue, payload, every, options)
        return float(await self._write(call))

    async def unschedule(self, name: str) -> bool:
        """Remove a periodic job; whether it existed."""
        return bool(await self._write((ops.jobs_unschedule, {"name": name})))

    async def maintain(self) -> dict[str, int]:
        """Expired leases, due periodic jobs, a step of pruning."""
        call = (ops.jobs_maintain, {"retention": self._calls.retention, "limit": PRUNE_STEP})
        result: dict[str, int] = await self._write(call)
        return result

    async def throughput(self, minutes: int = 10) -> list[int]:
        """Jobs done in each of the last ``minutes`` minutes, oldest first."""
        rows = await self.db.read(sql.DONE_PER_MINUTE, throughput_params(minutes))
        return per_minute(rows, minutes)

    async def stats(self) -> dict[str, Any]:
        """Counts by queue and state, the oldest ready job's age, and throughput."""
        now = time.time()
        counts = await self.db.read(sql.COUNTS)
        oldest = await self.db.read(sql.OLDEST_READY, (now,))
        done = await self.db.read(sql.DONE_SINCE, (now - 60.0,))
        return self._calls.stats_result(counts, oldest, done, now)
