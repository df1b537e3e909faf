"""The worker runner: claims in batches, runs handlers (sync or async), heartbeats long
jobs (with the progress handlers report), completes or fails them, stops a handler whose
job was cancelled or ran past its timeout, backs off when idle or when the queue is
unreachable, and on stop finishes what it holds within a grace period and releases the
rest.

It drives any :class:`Source`: a job store in process (any
:class:`~onewriter.jobs.AsyncJobStore`: SQLite or PostgreSQL), or a
:class:`~onewriter.jobs.RemoteQueue` over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...errors import OneWriterError
from ..errors import JobCancelled, LeaseLost
from ..model import DEFAULT_LEASE, Job
from .attempt import Attempt, JobStopped

log = logging.getLogger("onewriter.jobs.worker")

Handler = Callable[[Job], Any]

_MAX_BACKOFF = 5.0
#: The shortest time between two heartbeats of one job (progress reports hasten them).
_PROGRESS_GAP = 0.2


class PermanentError(Exception):
    """Raise from a handler to send the job to the dead letters without retrying."""


class Source(Protocol):
    """What the runner needs of a queue."""

    async def claim(
        self,
        queue: str,
        *,
        worker: str | None = None,
        capabilities: Iterable[str] = (),
        limit: int = 1,
        lease: float = DEFAULT_LEASE,
        wait: float = 0.0,
    ) -> list[Job]: ...

    async def heartbeat(
        self,
        job_id: int,
        token: str,
        lease: float = DEFAULT_LEASE,
        *,
        progress: float | None = None,
        message: str | None = None,
    ) -> float: ...

    async def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]: ...

    async def fail(self, job_id: int, token: str, error: str, *, retry: bool = True) -> Any: ...

    async def release(self, items: Iterable[tuple[int, str]]) -> list[bool]: ...


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    queue: str
    capabilities: tuple[str, ...] = ()
    concurrency: int = 8
    """Jobs run at once (threads for sync handlers)."""
    batch: int | None = None
    """Most jobs per claim (default: the free slots)."""
    lease: float = DEFAULT_LEASE
    wait: float = 2.0
    """Long-poll per claim; also bounds how long a stop waits for a claim in flight."""
    grace: float = 10.0
    """On stop, how long running jobs may take before they are released."""
    name: str | None = None


@dataclass
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    lease_lost: int = 0
    released: int = 0
    cancelled: int = 0
    """Jobs cancelled while they ran (their handlers were stopped)."""
    timed_out: int = 0
    """Attempts stopped past their job's timeout (counted in ``failed`` too)."""
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "completed": self.completed,
            "failed": self.failed,
            "lease_lost": self.lease_lost,
            "released": self.released,
            "cancelled": self.cancelled,
            "timed_out": self.timed_out,
            "errors": dict(self.errors),
        }


class _Completions:
    """Completions gathered while one ``complete_many`` is in flight, sent together."""

    def __init__(self, source: Source, stats: WorkerStats) -> None:
        self.source = source
        self.stats = stats
        self.pending: list[tuple[tuple[int, str, Any], asyncio.Future[bool]]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def complete(self, job: Job, result: Any) -> bool:
        assert job.token is not None
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(((job.id, job.token, result), future))
        self.wake.set()
        if self.task is None:
            self.task = asyncio.create_task(self._send_loop())
        return await future

    async def _send_loop(self) -> None:
        backoff = 0.05
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, []
            if not batch:
                continue
            try:
                held = await self.source.complete_many([item for item, _ in batch])
            except OneWriterError as exc:
                _count(self.stats, exc)
                log.warning("completing %d jobs failed (%s); retrying", len(batch), exc)
                self.pending = batch + self.pending
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                self.wake.set()
                continue
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            backoff = 0.05
            for (_, future), ok in zip(batch, held, strict=True):
                if not future.done():
                    future.set_result(ok)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def _count(stats: WorkerStats, exc: BaseException) -> None:
    code = getattr(exc, "code", type(exc).__name__)
    stats.errors[code] = stats.errors.get(code, 0) + 1


class Worker:
    """Runs ``handler`` on the jobs of one queue until :meth:`stop`.

    ::

        worker = Worker(AsyncJobQueue(db), send_email, WorkerOptions(queue="emails"))
        await worker.run()          # returns after worker.stop() and a graceful drain
    """

    def __init__(self, source: Source, handler: Handler, options: WorkerOptions) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.source = source
        self.handler = handler
        self.options = options
        self.stats = WorkerStats()
        self.abandoned = 0
        """Sync handlers still running in their threads after the grace period (their jobs
        were released; a process should exit without waiting for those threads)."""
        self._stopping: asyncio.Event | None = None
        self._running: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._completions = _Completions(source, self.stats)

    def stop(self) -> None:
        """Stop claiming; running jobs get ``grace`` seconds, then are released.
        Safe to call from a signal handler installed with ``loop.add_signal_handler``."""
        if self._stopping is not None:
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def run(self) -> WorkerStats:
        """Work until stopped; the figures of the run."""
        self._stopping = stopping = asyncio.Event()
        if not inspect.iscoroutinefunction(self.handler):
            self._executor = ThreadPoolExecutor(
                self.options.concurrency, thread_name_prefix="onewriter-job"
            )
        try:
            await self._claim_loop(stopping)
            await self._drain()
        finally:
            await self._completions.close()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
        return self.stats

    async def _claim_loop(self, stopping: asyncio.Event) -> None:
        options = self.options
        backoff = 0.05
        while not stopping.is_set():
            free = options.concurrency - len(self._running)
            if free <= 0:
                await self._wait_for_a_slot(stopping)
                continue
            try:
                jobs = await self.source.claim(
                    options.queue,
                    worker=options.name,
                    capabilities=options.capabilities,
                    limit=min(free, options.batch or free),
                    lease=options.lease,
                    wait=options.wait,
                )
            except OneWriterError as exc:
                _count(self.stats, exc)
                log.warning("claim failed (%s); retrying in %.2f s", exc, backoff)
                await _sleep_unless(stopping, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            backoff = 0.05
            self.stats.claimed += len(jobs)
            for job in jobs:
                self._running[job.id] = (job, asyncio.create_task(self._run_one(job)))
            if not jobs and options.wait <= 0:
                await _sleep_unless(stopping, 0.05)

    async def _wait_for_a_slot(self, stopping: asyncio.Event) -> None:
        tasks = {task for _, task in self._running.values()}
        stop_wait = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({*tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()

    async def _drain(self) -> None:
        if not self._running:
            return
        tasks = {task for _, task in self._running.values()}
        _, late = await asyncio.wait(tasks, timeout=self.options.grace)
        if not late:
            return
        held = [(job.id, job.token) for job, task in self._running.values() if task in late]
        if self._executor is not None:
            self.abandoned = len(held)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        items = [(job_id, token) for job_id, token in held if token is not None]
        try:
            released = await self.source.release(items)
        except OneWriterError as exc:
            _count(self.stats, exc)
            log.warning("releasing %d jobs failed (%s); their leases will expire", len(items), exc)
            return
        self.stats.released += sum(released)

    async def _run_one(self, job: Job) -> None:
        attempt = Attempt(job, asyncio.get_running_loop())
        handler = self._start_handler(job, attempt)
        heartbeat = asyncio.create_task(self._heartbeat(job, attempt))
        try:
            try:
                stopped = await self._watch(job, attempt, handler, heartbeat)
                if stopped is not None:
                    await self._stopped(job, stopped)
                    return
                result = handler.result()
            except asyncio.CancelledError:
                handler.cancel()
                attempt.stop_thread()
                raise
            except Exception as exc:
                await self._fail(job, exc)
                return
            finally:
                heartbeat.cancel()
            try:
                held = await self._completions.complete(job, result)
            except Exception as exc:
                _count(self.stats, exc)
                log.exception("completing job %d failed; its lease will expire", job.id)
                return
            if held:
                self.stats.completed += 1
            else:
                self.stats.lease_lost += 1
                log.warning(
                    "job %d finished after it was cancelled or lost; result dropped", job.id
                )
        finally:
            self._running.pop(job.id, None)

    def _start_handler(self, job: Job, attempt: Attempt) -> asyncio.Task[Any]:
        context = contextvars.copy_context()
        context.run(attempt.bind)
        return asyncio.create_task(self._call_handler(job, attempt), context=context)

    async def _call_handler(self, job: Job, attempt: Attempt) -> Any:
        if self._executor is None:
            return await self.handler(job)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, attempt.run_in_thread, self.handler)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _watch(
        self, job: Job, attempt: Attempt, handler: asyncio.Task[Any], heartbeat: asyncio.Task[str]
    ) -> str | None:
        """Wait for the handler to return, unless the job is cancelled (the heartbeat says
        so) or runs past its timeout: then stop the handler, wait for it to end, and say
        why (``"cancelled"``, ``"timeout"``)."""
        loop = asyncio.get_running_loop()
        deadline = None if job.timeout is None else loop.time() + job.timeout
        watched: set[asyncio.Future[Any]] = {handler, heartbeat}
        while not handler.done():
            left = None if deadline is None else max(deadline - loop.time(), 0)
            await asyncio.wait(watched, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if handler.done():
                break
            if heartbeat.done() and heartbeat.result() != "cancelled":
                watched = {handler}  # lease lost: the handler goes on, its result dropped
                continue
            reason = "cancelled" if heartbeat.done() else "timeout"
            if deadline is not None and reason == "timeout" and loop.time() < deadline:
                continue
            handler.cancel()
            attempt.stop_thread()
            with contextlib.suppress(asyncio.CancelledError, JobStopped, Exception):
                await handler
            return reason
        return None

    async def _stopped(self, job: Job, reason: str) -> None:
        if reason == "cancelled":
            self.stats.cancelled += 1
            log.info("job %d was cancelled; its handler was stopped", job.id)
            return
        self.stats.timed_out += 1
        await self._fail(
            job, TimeoutError(f"the handler ran past the job's timeout of {job.timeout:g} s")
        )

    async def _fail(self, job: Job, exc: Exception) -> None:
        assert job.token is not None
        retry = not isinstance(exc, PermanentError)
        error = f"{type(exc).__name__}: {exc}"
        try:
            state = await self.source.fail(job.id, job.token, error, retry=retry)
            if state == "cancelled":  # asked for meanwhile: it ends so, not retried
                self.stats.cancelled += 1
            else:
                self.stats.failed += 1
        except LeaseLost:
            self.stats.lease_lost += 1
        except JobCancelled:
            self.stats.cancelled += 1
        except OneWriterError as fail_error:
            _count(self.stats, fail_error)
            log.warning("recording the failure of job %d failed: %s", job.id, fail_error)

    async def _heartbeat(self, job: Job, attempt: Attempt) -> str:
        """Heartbeat every third of the lease, sooner (but at most every
        ``_PROGRESS_GAP``) when the handler reported progress. Returns ``"cancelled"``
        when the job was cancelled, ``"lost"`` when the lease is."""
        assert job.token is not None
        every = max(self.options.lease / 3, 0.01)
        gap = min(_PROGRESS_GAP, every)
        while True:
            await asyncio.sleep(gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(attempt.reported.wait(), every - gap)
            attempt.reported.clear()
            try:
                await self.source.heartbeat(
                    job.id,
                    job.token,
                    self.options.lease,
                    progress=attempt.progress,
                    message=attempt.message,
                )
            except JobCancelled:
                return "cancelled"
            except LeaseLost:
                log.warning("job %d: lease lost while running", job.id)
                return "lost"
            except OneWriterError as exc:
                _count(self.stats, exc)


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
