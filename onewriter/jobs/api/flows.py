"""Each call of the queue's API, written once for the sync and asyncio queues.

A flow checks its arguments, runs the store's steps (:class:`~onewriter.jobs.store.Store`)
and yields the few things that differ between the two worlds as :class:`Control`
requests (wait for a wake-up, sleep, notify waiting claims, start listening). The sync
queue answers them with threads, the asyncio queue with the event loop.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest
from ..cron import next_time
from ..errors import JobCancelled, JobNotFound, LeaseLost
from ..model import (
    STATES,
    Batch,
    Enqueued,
    Job,
    NewJob,
    QueueSettings,
    State,
    check_lease,
    check_limit,
    check_progress,
    check_queue_name,
    check_rate_limit,
    decode_batch,
    dumps,
    encode_batch,
    encode_new_job,
    encode_requires,
    encode_value,
    settings_from_row,
)
from ..store import Steps, Store

#: How many finished jobs one prune transaction deletes (keeps the writer responsive).
PRUNE_STEP = 5000
WAIT_FIRST_POLL = 0.002
WAIT_MAX_POLL = 0.1


class Control:
    """A request a flow makes of the queue running it, not of the store."""


@dataclass(frozen=True, slots=True)
class Wake(Control):
    """Wait up to ``timeout`` s for an enqueue to ``queue``; answered whether one came."""

    queue: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep(Control):
    seconds: float


@dataclass(frozen=True, slots=True)
class Notify(Control):
    """Wake the claims waiting on ``queue`` (``None``: on every queue)."""

    queue: str | None


@dataclass(frozen=True, slots=True)
class Listen(Control):
    """A claim is about to wait: a store may start listening for notifications."""


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def parents_params(jobs: Sequence[NewJob | Any]) -> dict[str, Any] | None:
    """The ``existing`` read's parameters for the parents ``jobs`` name, if any."""
    ids = {p for job in jobs if isinstance(job, NewJob) for p in job.depends_on}
    if not ids:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise BadRequest("depends_on must be a list of job ids")
    return {"ids": dumps(sorted(ids))}


def check_parents(params: dict[str, Any], existing: set[int]) -> None:
    """``NOT_FOUND`` for a parent that does not exist (before anything is written)."""
    missing = sorted(set(json.loads(params["ids"])) - existing)
    if missing:
        raise JobNotFound(f"depends_on names no job {', '.join(map(str, missing))}")


def _job_id(job_id: Any) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise BadRequest("a job id must be an integer")
    return job_id


def _lost(job_id: int) -> LeaseLost:
    return LeaseLost(f"job {job_id}: the lease token no longer holds it")


class Flows:
    """The API's calls over one store, with a queue object's settings."""

    def __init__(
        self, store: Store, *, payload_limit: int | None, retention: float, worker: str | None
    ) -> None:
        self.store = store
        self.payload_limit = payload_limit
        self.retention = retention
        self.worker = worker or default_worker_name()

    def setup(self) -> Steps[int]:
        return (yield from self.store.setup())

    def enqueue(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob | None = None,
        callback_queue: str | None = None,
    ) -> Steps[Batch]:
        jobs = list(jobs)
        if (params := parents_params(jobs)) is not None:
            check_parents(params, (yield from self.store.existing(params["ids"])))
        groups, keyed, layout = encode_batch(jobs, self.payload_limit)
        name = check_queue_name(queue)
        last = None
        if callback is not None:
            if callback.depends_on:
                raise BadRequest("a batch's callback depends on the batch's jobs only")
            if not layout:
                raise BadRequest("a batch needs at least one job")
            encoded = encode_new_job(callback, self.payload_limit)
            target = check_queue_name(queue if callback_queue is None else callback_queue)
            last = {**encoded, "queue": target, "on_parent_failure": "run"}
        inserted = yield from self.store.enqueue(name, groups, keyed, last)
        yield Notify(queue)
        return Batch(decode_batch(inserted, layout), inserted.callback or 0)

    def enqueue_many(self, queue: str, jobs: Iterable[NewJob | Any]) -> Steps[list[Enqueued]]:
        return (yield from self.enqueue(queue, jobs)).jobs

    def claim(
        self,
        queue: str,
        worker: str | None,
        capabilities: Iterable[str],
        limit: int,
        lease: float,
        wait: float,
        first_poll: float,
        max_poll: float,
    ) -> Steps[list[Job]]:
        name = check_queue_name(queue)
        caps = encode_requires(list(capabilities), "capabilities") or "[]"
        args = (name, worker or self.worker, caps, check_limit(limit), check_lease(lease))
        deadline = time.monotonic() + wait
        pause = first_poll
        while True:
            jobs = yield from self.store.claim(*args)
            if jobs or time.monotonic() >= deadline:
                return jobs
            yield Listen()
            while (left := deadline - time.monotonic()) > 0:
                woken = yield Wake(queue, min(pause, left))
                pause = min(pause * 2, max_poll)
                if woken or (yield from self.store.claimable(name, caps)):
                    break

    def heartbeat(
        self, job_id: int, token: str, lease: float, progress: Any, message: Any
    ) -> Steps[float]:
        lease = check_lease(lease)
        progress, message = check_progress(progress, message)
        until = yield from self.store.heartbeat(job_id, token, lease, progress, message)
        if until is None:
            raise _lost(job_id)
        if isinstance(until, str):
            raise JobCancelled(f"job {job_id} was cancelled: stop working on it")
        return until

    def _complete(self, items: Iterable[tuple[int, str, Any]]) -> Steps[list[Any]]:
        chosen = list(items)
        encoded = [
            [job_id, token, None if result is None else encode_value(result, "result", None)]
            for job_id, token, result in chosen
        ]
        held = yield from self.store.complete(dumps(encoded))
        return [chosen, held]

    def complete(self, job_id: int, token: str, result: Any) -> Steps[None]:
        _, held = yield from self._complete([(job_id, token, result)])
        if not held:
            raise _lost(job_id)
        if held[0].state == "cancelled":
            raise JobCancelled(f"job {job_id} was cancelled before it completed; result dropped")

    def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> Steps[list[bool]]:
        """For each ``(id, token)`` pair, whether that token held its job and it is done
        (not cancelled meanwhile)."""
        chosen, held = yield from self._complete(items)
        done = {(h.id, h.token) for h in held if h.state == "done"}
        return [(job_id, token) in done for job_id, token, _ in chosen]

    def fail(self, job_id: int, token: str, error: str, retry: bool) -> Steps[State]:
        if not isinstance(error, str):
            raise BadRequest("error must be a string")
        state = yield from self.store.fail(job_id, token, error[:4000], retry)
        if state is None:
            raise _lost(job_id)
        return state

    def release(self, items: Iterable[tuple[int, str]]) -> Steps[list[bool]]:
        held = yield from self.store.release([[job_id, token] for job_id, token in items])
        yield Notify(None)
        return held

    def get(self, job_id: int) -> Steps[Job]:
        job = yield from self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        return job

    def wait(self, job_id: int, timeout: float) -> Steps[Job]:
        deadline = time.monotonic() + timeout
        pause = WAIT_FIRST_POLL
        while True:
            job = yield from self.get(job_id)
            left = deadline - time.monotonic()
            if job.finished:
                return job
            if left <= 0:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            yield Sleep(min(pause, left))
            pause = min(pause * 2, WAIT_MAX_POLL)

    def claimable(self, queue: str, capabilities: Iterable[str]) -> Steps[bool]:
        caps = encode_requires(capabilities, "capabilities") or "[]"
        return (yield from self.store.claimable(check_queue_name(queue), caps))

    def dead_letters(self, queue: str | None, limit: int) -> Steps[list[Job]]:
        return (yield from self.store.dead_letters(queue, check_limit(limit)))

    def recent(self, limit: int) -> Steps[list[Job]]:
        return (yield from self.store.recent(check_limit(limit)))

    def requeue_dead(self, ids: Sequence[int] | None, queue: str | None) -> Steps[int]:
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest("ids must be a list of integers")
        moved = yield from self.store.requeue_dead(None if ids is None else dumps(list(ids)), queue)
        yield Notify(queue)
        return moved

    def purge(self, queue: str | None, states: Iterable[str]) -> Steps[int]:
        chosen = list(states)
        if not chosen or any(s not in STATES for s in chosen):
            raise BadRequest(f"states must be a non-empty list of {', '.join(STATES)}")
        return (yield from self.store.purge(queue, dumps(chosen)))

    def prune(self, retention: float | None) -> Steps[int]:
        keep = self.retention if retention is None else retention
        total = 0
        while True:
            n = yield from self.store.prune(keep, PRUNE_STEP)
            total += n
            if n < PRUNE_STEP:
                return total

    def schedule(
        self,
        name: str,
        queue: str,
        payload: Any,
        every: float | None,
        cron: str | None,
        tz: str,
        options: Mapping[str, Any],
    ) -> Steps[float]:
        if not isinstance(name, str) or not name:
            raise BadRequest("a schedule needs a non-empty name")
        if (every is None) == (cron is None):
            raise BadRequest("give a schedule every= (seconds) or cron= (an expression)")
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int | float) or every <= 0
        ):
            raise BadRequest("every must be a positive number of seconds")
        if cron is not None:
            next_time(cron, tz, time.time())  # refuses what is not valid, before writing
        if options.get("depends_on"):
            raise BadRequest("a periodic job cannot depend on other jobs")
        job = encode_new_job(NewJob(payload=payload, **options), self.payload_limit)
        text = job.pop("payload")
        return (
            yield from self.store.schedule(
                name,
                check_queue_name(queue),
                text,
                None if every is None else float(every),
                dumps(job),
                None if cron is None else " ".join(cron.split()),
                None if cron is None else tz,
            )
        )

    def unschedule(self, name: str) -> Steps[bool]:
        return (yield from self.store.unschedule(name))

    def maintain(self) -> Steps[dict[str, int]]:
        done = yield from self.store.maintain(self.retention, PRUNE_STEP)
        return done._asdict()

    def throughput(self, minutes: int) -> Steps[list[int]]:
        check_limit(minutes, maximum=24 * 60)
        rows = yield from self.store.done_per_minute(time.time() - 60.0 * minutes)
        counts = [0] * minutes
        for minute, n in rows:
            if 0 <= minute < minutes:
                counts[minute] = n
        return counts

    def stats(self) -> Steps[dict[str, Any]]:
        now = time.time()
        rows = yield from self.store.stats(now)
        queues: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            if name not in queues:
                queues[name] = {s: 0 for s in STATES}
                queues[name].update(
                    oldest_ready_age=0.0, done_last_minute=0, paused=False, rate_limit=None
                )
            return queues[name]

        for queue, *row in rows.settings:
            configured = settings_from_row(queue, row)
            if configured.paused or configured.rate_limit is not None:
                entry(queue).update(configured.to_dict())
                del queues[queue]["queue"]
        for queue, state, n in rows.counts:
            entry(queue)[state] = n
        for queue, run_at in rows.oldest:
            entry(queue)["oldest_ready_age"] = round(max(0.0, now - run_at), 3)
        for queue, n in rows.done:
            entry(queue)["done_last_minute"] = n
        totals = {s: sum(q[s] for q in queues.values()) for s in STATES}
        done_minute = sum(q["done_last_minute"] for q in queues.values())
        return {
            "queues": dict(sorted(queues.items())),
            "totals": totals,
            "throughput_per_s": round(done_minute / 60.0, 3),
            "time": now,
        }

    def cancel(self, job_id: int) -> Steps[str]:
        state = yield from self.store.cancel(_job_id(job_id))
        if state is None:
            raise JobNotFound(f"no job {job_id}")
        return state

    def retry(self, job_id: int) -> Steps[bool]:
        queue = yield from self.store.retry(_job_id(job_id))
        if queue is not None:
            yield Notify(queue)
        return queue is not None

    def configure(
        self, queue: str, paused: bool | None, rate_limit: Any, set_rate: bool
    ) -> Steps[QueueSettings]:
        if paused is not None and not isinstance(paused, bool):
            raise BadRequest("paused must be true or false")
        rate = None
        if set_rate and rate_limit is not None:
            if isinstance(rate_limit, Mapping):
                unknown = set(rate_limit) - {"limit", "period"}
                if unknown or "limit" not in rate_limit:
                    raise BadRequest("rate_limit is {limit, period} (period in seconds)")
                rate = check_rate_limit(rate_limit["limit"], rate_limit.get("period", 1.0))
            elif isinstance(rate_limit, tuple | list) and len(rate_limit) == 2:
                rate = check_rate_limit(*rate_limit)
            else:
                raise BadRequest("rate_limit is (limit, period), {limit, period} or None")
        name = check_queue_name(queue)
        settings = yield from self.store.configure(name, paused, rate, set_rate)
        if paused is False:
            yield Notify(queue)
        return settings

    def queue_settings(self, queue: str) -> Steps[QueueSettings]:
        return (yield from self.store.queue_settings(check_queue_name(queue)))
