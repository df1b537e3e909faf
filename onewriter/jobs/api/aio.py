"""The queue's API for asyncio code, over any store: the twin of
:class:`~onewriter.jobs.JobStore`, every method a coroutine, running the same flows
(:mod:`onewriter.jobs.api.flows`). The HTTP service and the worker runner take any
:class:`AsyncJobStore`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from ..model import (
    DEFAULT_BACKOFF,
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS,
    Batch,
    Enqueued,
    Job,
    NewJob,
    QueueSettings,
    State,
)
from ..store import Steps
from ..wake import FIRST_POLL, MAX_POLL, AsyncWaker
from .flows import Control, Flows, Listen, Notify, Sleep, Wake
from .sync import UNCHANGED

T = TypeVar("T")


class AsyncJobStore(ABC):
    """The queue, from asyncio code, over one store: the twin of :class:`JobStore`, every
    method a coroutine. Tables are created on first use (or by ``await queue.setup()``)."""

    first_poll: ClassVar[float] = FIRST_POLL
    max_poll: ClassVar[float] = MAX_POLL

    def __init__(self, flows: Flows) -> None:
        self._flows = flows
        self._waker = AsyncWaker()
        self._ready = False
        self._setup_lock: asyncio.Lock | None = None

    @abstractmethod
    async def _execute(self, request: Any) -> Any:
        """Answer one request of the store's steps (a write, a read)."""

    async def _open(self) -> None:
        """Get ready to run writes (before the tables are set up)."""
        return None

    def _before_waiting(self) -> None:
        """Called when a claim is about to wait (a store may start listening then)."""
        return None

    @abstractmethod
    async def health(self) -> dict[str, Any]:
        """Check that the store answers; what the HTTP service's ``/healthz`` adds."""

    @abstractmethod
    async def writer_stats(self) -> dict[str, Any] | None:
        """The one writer's figures (``commits``, ``requests``, ``pending``) for
        ``/metrics``, or ``None`` for a store without one."""

    @property
    def payload_limit(self) -> int | None:
        return self._flows.payload_limit

    async def _run(self, flow: Steps[T], *, setup: bool = True) -> T:
        if setup and not self._ready:
            await self.setup()
        answer: Any = None
        while True:
            try:
                request = flow.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if isinstance(request, Control):
                answer = await self._control(request)
            else:
                answer = await self._execute(request)

    async def _control(self, request: Control) -> Any:
        if isinstance(request, Wake):
            return await self._waker.wait(request.queue, request.timeout)
        if isinstance(request, Notify):
            self._waker.notify(request.queue)
        elif isinstance(request, Sleep):
            await asyncio.sleep(request.seconds)
        elif isinstance(request, Listen):
            self._before_waiting()
        return None

    async def setup(self) -> None:
        """Create the queue's tables if missing (done once, on first use)."""
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if not self._ready:
                await self._open()
                await self._run(self._flows.setup(), setup=False)
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
        return await self._run(self._flows.enqueue_many(queue, jobs))

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
        flow = self._flows.claim(
            queue, worker, capabilities, limit, lease, wait, self.first_poll, self.max_poll
        )
        return await self._run(flow)

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
        return await self._run(self._flows.heartbeat(job_id, token, lease, progress, message))

    async def complete(self, job_id: int, token: str, result: Any = None) -> None:
        """Mark the job done (``LEASE_LOST`` if the token no longer holds, ``CANCELLED``
        if it was cancelled meanwhile)."""
        await self._run(self._flows.complete(job_id, token, result))

    async def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        """Complete many jobs in one transaction; which were held."""
        return await self._run(self._flows.complete_many(items))

    async def fail(self, job_id: int, token: str, error: str, *, retry: bool = True) -> State:
        """Record a failed attempt; ``"ready"`` or ``"dead"``."""
        return await self._run(self._flows.fail(job_id, token, error, retry))

    async def release(self, items: Iterable[tuple[int, str]]) -> list[bool]:
        """Hand jobs back at once, the attempt not counted."""
        return await self._run(self._flows.release(items))

    async def get(self, job_id: int) -> Job:
        """The job as stored now (``NOT_FOUND`` if there is none)."""
        return await self._run(self._flows.get(job_id))

    async def wait(self, job_id: int, timeout: float) -> Job:
        """Wait until the job is done or dead; ``TimeoutError`` after ``timeout`` s."""
        return await self._run(self._flows.wait(job_id, timeout))

    async def claimable(self, queue: str, capabilities: Iterable[str] = ()) -> bool:
        """Whether a claim would get a job now (a read)."""
        return await self._run(self._flows.claimable(queue, capabilities))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs, the most recent first."""
        return await self._run(self._flows.dead_letters(queue, limit))

    async def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs of every queue and state."""
        return await self._run(self._flows.recent(limit))

    async def requeue_dead(
        self, ids: Sequence[int] | None = None, *, queue: str | None = None
    ) -> int:
        """Send dead letters back to ready; how many moved."""
        return await self._run(self._flows.requeue_dead(ids, queue))

    async def purge(
        self, queue: str | None = None, states: Iterable[str] = ("done", "dead")
    ) -> int:
        """Delete jobs in ``states``; how many."""
        return await self._run(self._flows.purge(queue, states))

    async def prune(self, retention: float | None = None) -> int:
        """Delete done jobs past ``retention``, in steps."""
        return await self._run(self._flows.prune(retention))

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
        flow = self._flows.schedule(name, queue, payload, every, cron, tz, options)
        return await self._run(flow)

    async def unschedule(self, name: str) -> bool:
        """Remove a periodic job; whether it existed."""
        return await self._run(self._flows.unschedule(name))

    async def maintain(self) -> dict[str, int]:
        """Expired leases, due periodic jobs, a step of pruning."""
        return await self._run(self._flows.maintain())

    async def throughput(self, minutes: int = 10) -> list[int]:
        """Jobs done in each of the last ``minutes`` minutes, oldest first."""
        return await self._run(self._flows.throughput(minutes))

    async def stats(self) -> dict[str, Any]:
        """Counts by queue and state, the oldest ready job's age, and throughput."""
        return await self._run(self._flows.stats())

    async def enqueue_batch(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob,
        *,
        callback_queue: str | None = None,
    ) -> Batch:
        """Add ``jobs`` and a callback run once all have finished (see
        :meth:`JobStore.enqueue_batch`)."""
        return await self._run(self._flows.enqueue(queue, jobs, callback, callback_queue))

    async def cancel(self, job_id: int) -> str:
        """Cancel a job (see :meth:`JobStore.cancel`)."""
        return await self._run(self._flows.cancel(job_id))

    async def retry(self, job_id: int) -> bool:
        """Run a dead or cancelled job again (see :meth:`JobStore.retry`)."""
        return await self._run(self._flows.retry(job_id))

    async def pause(self, queue: str) -> QueueSettings:
        """Stop handing out the queue's jobs until :meth:`resume`."""
        return await self.configure(queue, paused=True)

    async def resume(self, queue: str) -> QueueSettings:
        """Hand out the queue's jobs again."""
        return await self.configure(queue, paused=False)

    async def set_rate_limit(
        self, queue: str, limit: int | None, period: float = 1.0
    ) -> QueueSettings:
        """At most ``limit`` claims in any ``period`` seconds; ``None`` removes it."""
        rate = None if limit is None else (limit, period)
        return await self.configure(queue, rate_limit=rate)

    async def configure(
        self, queue: str, *, paused: bool | None = None, rate_limit: Any = UNCHANGED
    ) -> QueueSettings:
        """Change a queue's settings in one write (see :meth:`JobStore.configure`)."""
        set_rate = rate_limit is not UNCHANGED
        flow = self._flows.configure(queue, paused, rate_limit if set_rate else None, set_rate)
        return await self._run(flow)

    async def queue_settings(self, queue: str) -> QueueSettings:
        """The queue's settings."""
        return await self._run(self._flows.queue_settings(queue))
