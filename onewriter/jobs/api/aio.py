"""The queue's API for asyncio code, once, over any job store: the twin of
:class:`~onewriter.jobs.JobStore` (see :mod:`onewriter.jobs._store`), every method a
coroutine. The HTTP service and the worker runner take any :class:`AsyncJobStore`.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal

from ..errors import JobNotFound
from ..model import (
    DEFAULT_BACKOFF,
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS,
    Enqueued,
    Job,
    NewJob,
    State,
    check_limit,
    decode_batch,
    job_from_row,
)
from ..sqlite import ops as ops
from ..wake import FIRST_POLL, MAX_POLL, AsyncWaker
from .calls import (
    PRUNE_STEP,
    WAIT_FIRST_POLL,
    WAIT_MAX_POLL,
    Call,
    Calls,
    check_parents,
    claimable_params,
    parents_params,
    per_minute,
    throughput_params,
)
from .controls import AsyncControls
from .sync import Reads


class AsyncJobStore(AsyncControls, ABC):
    """The queue, from asyncio code, over one store: the twin of :class:`JobStore`, every
    method a coroutine. Tables are created on first use (or by ``await queue.setup()``)."""

    first_poll: ClassVar[float] = FIRST_POLL
    max_poll: ClassVar[float] = MAX_POLL

    def __init__(self, calls: Calls, reads: Reads) -> None:
        self._calls = calls
        self._reads = reads
        self._waker = AsyncWaker()
        self._ready = False
        self._setup_lock: asyncio.Lock | None = None

    @abstractmethod
    async def _write_now(self, call: Call) -> Any:
        """Run one write of the queue in one transaction; its result."""

    @abstractmethod
    async def _read(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one read; its rows."""

    async def _open(self) -> None:
        """Get ready to run writes (before the tables are set up)."""

    def _before_waiting(self) -> None:
        """Called when a claim is about to wait (a store may start listening then)."""

    @abstractmethod
    async def health(self) -> dict[str, Any]:
        """Check that the store answers; what the HTTP service's ``/healthz`` adds."""

    @abstractmethod
    async def writer_stats(self) -> dict[str, Any] | None:
        """The one writer's figures (``commits``, ``requests``, ``pending``) for
        ``/metrics``, or ``None`` for a store without one."""

    @property
    def payload_limit(self) -> int | None:
        return self._calls.payload_limit

    async def _write(self, call: Call) -> Any:
        if not self._ready:
            await self.setup()
        return await self._write_now(call)

    async def setup(self) -> None:
        """Create the queue's tables if missing (done once, on first use)."""
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if not self._ready:
                await self._open()
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
        timeout: float | None = None,
        depends_on: Sequence[int] = (),
        on_parent_failure: Literal["cancel", "run"] = "cancel",
    ) -> int:
        """Add a job; its id (see :meth:`JobStore.enqueue`)."""
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
            timeout=timeout,
            depends_on=depends_on,
            on_parent_failure=on_parent_failure,
        )
        return (await self.enqueue_many(queue, [spec]))[0].id

    async def enqueue_many(self, queue: str, jobs: Iterable[NewJob | Any]) -> list[Enqueued]:
        """Add many jobs in one transaction."""
        jobs = list(jobs)
        if (params := parents_params(jobs)) is not None:
            check_parents(params, await self._read(self._reads.existing, params))
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
        :meth:`JobStore.claim`)."""
        caps = list(capabilities)
        call = self._calls.claim_call(queue, worker, caps, limit, lease)
        deadline = time.monotonic() + wait
        pause = self.first_poll
        while True:
            jobs = self._calls.claimed(await self._write(call))
            if jobs or time.monotonic() >= deadline:
                return jobs
            self._before_waiting()
            while (left := deadline - time.monotonic()) > 0:
                woken = await self._waker.wait(queue, min(pause, left))
                pause = min(pause * 2, self.max_poll)
                if woken or await self.claimable(queue, caps):
                    break

    async def heartbeat(
        self,
        job_id: int,
        token: str,
        lease: float = DEFAULT_LEASE,
        *,
        progress: float | None = None,
        message: str | None = None,
    ) -> float:
        """Extend the lease, recording progress; the new ``lease_until`` (see
        :meth:`JobStore.heartbeat`)."""
        call = self._calls.heartbeat_call(job_id, token, lease, progress, message)
        return self._calls.heartbeat_result(job_id, await self._write(call))

    async def complete(self, job_id: int, token: str, result: Any = None) -> None:
        """Mark the job done (``LEASE_LOST`` if the token no longer holds, ``CANCELLED``
        if it was cancelled meanwhile)."""
        call, _ = self._calls.complete_call([(job_id, token, result)])
        self._calls.complete_one_result(job_id, await self._write(call))

    async def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        """Complete many jobs in one transaction; which were held."""
        call, pairs = self._calls.complete_call(items)
        return self._calls.completed(pairs, await self._write(call))

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
        rows = await self._read(self._reads.get, {"id": job_id})
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
        params = claimable_params(queue, capabilities)
        return bool(await self._read(self._reads.claimable, params))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs, the most recent first."""
        params = {"queue": queue, "limit": check_limit(limit)}
        return [job_from_row(r) for r in await self._read(self._reads.dead_letters, params)]

    async def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs of every queue and state."""
        rows = await self._read(self._reads.recent, {"limit": check_limit(limit)})
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
        self,
        name: str,
        queue: str,
        payload: Any,
        *,
        every: float | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        **options: Any,
    ) -> float:
        """Declare a periodic job (see :meth:`JobStore.schedule`)."""
        call = self._calls.schedule_call(name, queue, payload, every, cron, tz, options)
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
        rows = await self._read(self._reads.done_per_minute, throughput_params(minutes))
        return per_minute(rows, minutes)

    async def stats(self) -> dict[str, Any]:
        """Counts by queue and state, the oldest ready job's age, and throughput."""
        now = time.time()
        counts = await self._read(self._reads.counts)
        oldest = await self._read(self._reads.oldest_ready, {"now": now})
        done = await self._read(self._reads.done_since, {"since": now - 60.0})
        settings = await self._read(self._reads.queues)
        return self._calls.stats_result(counts, oldest, done, settings, now)
