"""The queue's API for synchronous code, over any store.

:class:`JobStore` runs the flows of :mod:`onewriter.jobs.api.flows` (each call written
once, for this class and its asyncio twin :class:`~onewriter.jobs.AsyncJobStore`),
answering their waits with threads and the store's requests with ``_execute``: the SQLite
store (:class:`~onewriter.jobs.JobQueue`) and the PostgreSQL one
(:class:`~onewriter.jobs.PgJobQueue`) each implement that one method.
"""

from __future__ import annotations

import time
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
from ..wake import FIRST_POLL, MAX_POLL, ThreadWaker
from .flows import Control, Flows, Listen, Notify, Sleep, Wake

T = TypeVar("T")

#: ``rate_limit`` left as it is by ``configure``.
UNCHANGED: Any = object()


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return target.startswith(("postgresql://", "postgres://"))


class JobStore(ABC):
    """The queue, from synchronous code, over one store. Thread-safe."""

    #: How a long-polling claim with nothing to take backs off between checks.
    first_poll: ClassVar[float] = FIRST_POLL
    max_poll: ClassVar[float] = MAX_POLL

    def __init__(self, flows: Flows) -> None:
        self._flows = flows
        self._waker = ThreadWaker()

    @abstractmethod
    def _execute(self, request: Any) -> Any:
        """Answer one request of the store's steps (a write, a read)."""

    def _before_waiting(self) -> None:
        """Called when a claim is about to wait (a store may start listening then)."""
        return None

    def _run(self, flow: Steps[T]) -> T:
        answer: Any = None
        while True:
            try:
                request = flow.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if isinstance(request, Control):
                answer = self._control(request)
            else:
                answer = self._execute(request)

    def _control(self, request: Control) -> Any:
        if isinstance(request, Wake):
            return self._waker.wait(request.queue, request.timeout)
        if isinstance(request, Notify):
            self._waker.notify(request.queue)
        elif isinstance(request, Sleep):
            time.sleep(request.seconds)
        elif isinstance(request, Listen):
            self._before_waiting()
        return None

    @property
    def payload_limit(self) -> int | None:
        return self._flows.payload_limit

    def setup(self) -> None:
        """Create the queue's tables if missing (the constructor does it by default)."""
        self._run(self._flows.setup())

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
        timeout: float | None = None,
        depends_on: Sequence[int] = (),
        on_parent_failure: Literal["cancel", "run"] = "cancel",
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
            timeout=timeout,
            depends_on=depends_on,
            on_parent_failure=on_parent_failure,
        )
        return self.enqueue_many(queue, [spec])[0].id

    def enqueue_many(self, queue: str, jobs: Iterable[NewJob | Any]) -> list[Enqueued]:
        """Add many jobs in one transaction; items are :class:`NewJob` or bare payloads."""
        return self._run(self._flows.enqueue_many(queue, jobs))

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
        flow = self._flows.claim(
            queue, worker, capabilities, limit, lease, wait, self.first_poll, self.max_poll
        )
        return self._run(flow)

    def heartbeat(
        self,
        job_id: int,
        token: str,
        lease: float = DEFAULT_LEASE,
        *,
        progress: float | None = None,
        message: str | None = None,
    ) -> float:
        """Extend the lease to ``lease`` seconds from now (never past the job's timeout),
        recording ``progress`` (0 to 100) and a short ``message`` if given; the new
        ``lease_until``. ``CANCELLED`` if the job was cancelled: stop working on it."""
        return self._run(self._flows.heartbeat(job_id, token, lease, progress, message))

    def complete(self, job_id: int, token: str, result: Any = None) -> None:
        """Mark the job done with ``result`` (``LEASE_LOST`` if the token no longer holds,
        ``CANCELLED`` if the job was cancelled meanwhile: it ends cancelled)."""
        self._run(self._flows.complete(job_id, token, result))

    def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        """Complete ``(id, token, result)`` items in one transaction; which were held."""
        return self._run(self._flows.complete_many(items))

    def fail(self, job_id: int, token: str, error: str, *, retry: bool = True) -> State:
        """Record a failed attempt; ``"ready"`` (retried after a backoff) or ``"dead"``."""
        return self._run(self._flows.fail(job_id, token, error, retry))

    def release(self, items: Iterable[tuple[int, str]]) -> list[bool]:
        """Hand ``(id, token)`` jobs back at once, the attempt not counted (shutdown)."""
        return self._run(self._flows.release(items))

    def get(self, job_id: int) -> Job:
        """The job as stored now (``NOT_FOUND`` if there is none)."""
        return self._run(self._flows.get(job_id))

    def wait(self, job_id: int, timeout: float) -> Job:
        """Block until the job is done or dead; ``TimeoutError`` after ``timeout`` s."""
        return self._run(self._flows.wait(job_id, timeout))

    def claimable(self, queue: str, capabilities: Iterable[str] = ()) -> bool:
        """Whether a claim would get a job now (a read: cheap, for long-polling)."""
        return self._run(self._flows.claimable(queue, capabilities))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs, the most recent first, with their last error."""
        return self._run(self._flows.dead_letters(queue, limit))

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs of every queue and state."""
        return self._run(self._flows.recent(limit))

    def requeue_dead(self, ids: Sequence[int] | None = None, *, queue: str | None = None) -> int:
        """Send dead letters back to ready with fresh attempts; how many moved."""
        return self._run(self._flows.requeue_dead(ids, queue))

    def purge(self, queue: str | None = None, states: Iterable[str] = ("done", "dead")) -> int:
        """Delete jobs in ``states`` (of ``queue``, or of every queue); how many."""
        return self._run(self._flows.purge(queue, states))

    def prune(self, retention: float | None = None) -> int:
        """Delete done jobs finished more than ``retention`` seconds ago, in steps."""
        return self._run(self._flows.prune(retention))

    def schedule(
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
        """Declare a periodic job (options as for :meth:`enqueue`); it fires once per
        period of ``every`` seconds (aligned to multiples of it, UTC), or at each time the
        ``cron`` expression names (``"*/5 * * * *"``) in time zone ``tz``, whatever the
        number of instances declaring it. Returns its next firing time."""
        return self._run(self._flows.schedule(name, queue, payload, every, cron, tz, options))

    def unschedule(self, name: str) -> bool:
        """Remove a periodic job; whether it existed."""
        return self._run(self._flows.unschedule(name))

    def maintain(self) -> dict[str, int]:
        """Return expired leases, fire due periodic jobs, prune a step of finished jobs.

        Claims do the first two on their own; call this from time to time (the HTTP
        service does, every second) so that pruning and schedules go on when idle."""
        return self._run(self._flows.maintain())

    def throughput(self, minutes: int = 10) -> list[int]:
        """Jobs done in each of the last ``minutes`` minutes, oldest first."""
        return self._run(self._flows.throughput(minutes))

    def stats(self) -> dict[str, Any]:
        """Counts by queue and state, the oldest ready job's age, and throughput."""
        return self._run(self._flows.stats())

    def enqueue_batch(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob,
        *,
        callback_queue: str | None = None,
    ) -> Batch:
        """Add ``jobs`` and a ``callback`` job (to ``callback_queue``, default the same)
        that runs once all of them have finished, however they ended (its
        ``depends_on`` lists them: it can read their results), in one transaction."""
        return self._run(self._flows.enqueue(queue, jobs, callback, callback_queue))

    def cancel(self, job_id: int) -> str:
        """Cancel a job. ``"cancelled"``: it was waiting and will never run.
        ``"cancelling"``: it is running; its worker is told at its next heartbeat or
        completion (the runner stops the handler) and it ends ``cancelled``. A finished
        job stays as it was: its state (``"done"``, ``"dead"``, ``"cancelled"``)."""
        return self._run(self._flows.cancel(job_id))

    def retry(self, job_id: int) -> bool:
        """Run a dead or cancelled job again, with fresh attempts; whether it moved (not
        when it is in another state, or a live job holds its unique key)."""
        return self._run(self._flows.retry(job_id))

    def pause(self, queue: str) -> QueueSettings:
        """Stop handing out the queue's jobs (claims get none) until :meth:`resume`;
        running jobs go on. Stored, so it survives restarts of every process."""
        return self.configure(queue, paused=True)

    def resume(self, queue: str) -> QueueSettings:
        """Hand out the queue's jobs again."""
        return self.configure(queue, paused=False)

    def set_rate_limit(self, queue: str, limit: int | None, period: float = 1.0) -> QueueSettings:
        """At most ``limit`` jobs of the queue claimed in any ``period`` seconds, whatever
        the number of workers and service instances; ``None`` removes the limit."""
        rate = None if limit is None else (limit, period)
        return self.configure(queue, rate_limit=rate)

    def configure(
        self, queue: str, *, paused: bool | None = None, rate_limit: Any = UNCHANGED
    ) -> QueueSettings:
        """Change a queue's settings in one write: ``paused`` (``None``: unchanged),
        ``rate_limit`` as ``(limit, period)`` or ``{"limit", "period"}``, ``None`` to
        remove it; the settings after the change."""
        set_rate = rate_limit is not UNCHANGED
        flow = self._flows.configure(queue, paused, rate_limit if set_rate else None, set_rate)
        return self._run(flow)

    def queue_settings(self, queue: str) -> QueueSettings:
        """The queue's settings (a queue nobody configured: running, no limit)."""
        return self._run(self._flows.queue_settings(queue))
