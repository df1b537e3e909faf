"""The queue's API, once, over any job store.

A store is where jobs live: SQLite written through the one writer
(:class:`~onewriter.jobs.JobQueue`, :class:`~onewriter.jobs.AsyncJobQueue`) or PostgreSQL
(:class:`~onewriter.jobs.PgJobQueue`, :class:`~onewriter.jobs.AsyncPgJobQueue`). A store
implements two primitives: ``_write`` runs one of the queue's writes (an op of
:data:`~onewriter.jobs.jobs_ops`, or its PostgreSQL twin) in one transaction, and
``_read`` runs one of its :class:`Reads`. Everything else is here (the synchronous
twin) and in :mod:`onewriter.jobs._async_store` (the asyncio twin): argument checks
(through the shared ``Calls``), long-polling claims, waiting for results and reading
rows; what goes beyond enqueue and claim is in :mod:`onewriter.jobs._controls`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from types import ModuleType
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
from ..wake import FIRST_POLL, MAX_POLL, ThreadWaker
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
from .controls import Controls


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return target.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reads:
    """A store's read statements, all with named parameters: ``get`` (``id``),
    ``claimable`` (``queue``, ``caps``, ``now``, ``limit``), ``dead_letters`` (``queue``,
    ``limit``), ``recent`` (``limit``), ``counts``, ``oldest_ready`` (``now``),
    ``done_since`` and ``done_per_minute`` (``since``), ``queue`` (``queue``: its
    settings), ``queues`` (every configured queue's) and ``existing`` (``ids``, a JSON
    array: those that exist). Job rows come in the column order
    of :func:`~onewriter.jobs._model.job_from_row`."""

    get: str
    claimable: str
    dead_letters: str
    recent: str
    counts: str
    oldest_ready: str
    done_since: str
    done_per_minute: str
    queue: str
    queues: str
    existing: str

    @classmethod
    def of(cls, statements: ModuleType) -> Reads:
        """The read statements a store's SQL module names in upper case."""
        return cls(**{f.name: getattr(statements, f.name.upper()) for f in fields(cls)})


class JobStore(Controls, ABC):
    """The queue, from synchronous code, over one store. Thread-safe."""

    #: How a long-polling claim with nothing to take backs off between checks.
    first_poll: ClassVar[float] = FIRST_POLL
    max_poll: ClassVar[float] = MAX_POLL

    def __init__(self, calls: Calls, reads: Reads) -> None:
        self._calls = calls
        self._reads = reads
        self._waker = ThreadWaker()

    @abstractmethod
    def _write(self, call: Call) -> Any:
        """Run one write of the queue in one transaction; its result."""

    @abstractmethod
    def _read(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one read; its rows."""

    def _before_waiting(self) -> None:
        """Called when a claim is about to wait (a store may start listening then)."""

    @property
    def payload_limit(self) -> int | None:
        return self._calls.payload_limit

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
        jobs = list(jobs)
        if (params := parents_params(jobs)) is not None:
            check_parents(params, self._read(self._reads.existing, params))
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
        pause = self.first_poll
        while True:
            jobs = self._calls.claimed(self._write(call))
            if jobs or time.monotonic() >= deadline:
                return jobs
            self._before_waiting()
            while (left := deadline - time.monotonic()) > 0:
                woken = self._waker.wait(queue, min(pause, left))
                pause = min(pause * 2, self.max_poll)
                if woken or self.claimable(queue, caps):
                    break

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
        call = self._calls.heartbeat_call(job_id, token, lease, progress, message)
        return self._calls.heartbeat_result(job_id, self._write(call))

    def complete(self, job_id: int, token: str, result: Any = None) -> None:
        """Mark the job done with ``result`` (``LEASE_LOST`` if the token no longer holds,
        ``CANCELLED`` if the job was cancelled meanwhile: it ends cancelled)."""
        call, _ = self._calls.complete_call([(job_id, token, result)])
        self._calls.complete_one_result(job_id, self._write(call))

    def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        """Complete ``(id, token, result)`` items in one transaction; which were held."""
        call, pairs = self._calls.complete_call(items)
        return self._calls.completed(pairs, self._write(call))

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
        rows = self._read(self._reads.get, {"id": job_id})
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
        return bool(self._read(self._reads.claimable, claimable_params(queue, capabilities)))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs, the most recent first, with their last error."""
        params = {"queue": queue, "limit": check_limit(limit)}
        return [job_from_row(r) for r in self._read(self._reads.dead_letters, params)]

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs of every queue and state."""
        rows = self._read(self._reads.recent, {"limit": check_limit(limit)})
        return [job_from_row(r) for r in rows]

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
        call = self._calls.schedule_call(name, queue, payload, every, cron, tz, options)
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
        return per_minute(self._read(self._reads.done_per_minute, params), minutes)

    def stats(self) -> dict[str, Any]:
        """Counts by queue and state, the oldest ready job's age, and throughput."""
        now = time.time()
        counts = self._read(self._reads.counts)
        oldest = self._read(self._reads.oldest_ready, {"now": now})
        done = self._read(self._reads.done_since, {"since": now - 60.0})
        return self._calls.stats_result(counts, oldest, done, self._read(self._reads.queues), now)
