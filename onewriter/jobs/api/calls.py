"""What the sync and asyncio queue twins share: argument checks that build op calls,
and the reading of results and rows."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...errors import BadRequest, UnknownOp
from ...ops import Op
from ..cron import next_time
from ..errors import JobCancelled, JobNotFound, LeaseLost
from ..model import (
    STATES,
    Job,
    Layout,
    NewJob,
    QueueSettings,
    State,
    check_lease,
    check_limit,
    check_progress,
    check_queue_name,
    check_rate_limit,
    dumps,
    encode_batch,
    encode_new_job,
    encode_requires,
    encode_value,
    job_from_row,
    settings_from_row,
)
from ..sqlite import ops as ops

Call = tuple[Op[..., Any], dict[str, Any]]

#: How many finished jobs one prune transaction deletes (keeps the writer responsive).
PRUNE_STEP = 5000
WAIT_FIRST_POLL = 0.002
WAIT_MAX_POLL = 0.1


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def unknown_op_hint(exc: UnknownOp) -> UnknownOp:
    return UnknownOp(
        f"{exc.message}; the writer serving this database must include the queue's ops: "
        "ops.include(onewriter.jobs.jobs_ops)"
    )


class Calls:
    """Argument checks and result reading shared by the sync and asyncio twins."""

    def __init__(self, *, payload_limit: int | None, retention: float, worker: str | None) -> None:
        self.payload_limit = payload_limit
        self.retention = retention
        self.worker = worker or default_worker_name()

    def enqueue_call(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob | None = None,
        callback_queue: str | None = None,
    ) -> tuple[Call, Layout]:
        groups, keyed, layout = encode_batch(jobs, self.payload_limit)
        kwargs: dict[str, Any] = {
            "queue": check_queue_name(queue),
            "groups": groups,
            "keyed": keyed,
        }
        if callback is not None:
            if callback.depends_on:
                raise BadRequest("a batch's callback depends on the batch's jobs only")
            if not layout:
                raise BadRequest("a batch needs at least one job")
            encoded = encode_new_job(callback, self.payload_limit)
            target = check_queue_name(queue if callback_queue is None else callback_queue)
            kwargs["callback"] = {**encoded, "queue": target, "on_parent_failure": "run"}
        return (ops.jobs_enqueue, kwargs), layout

    def claim_call(
        self,
        queue: str,
        worker: str | None,
        capabilities: Iterable[str],
        limit: int,
        lease: float,
    ) -> Call:
        return ops.jobs_claim, {
            "queue": check_queue_name(queue),
            "worker": worker or self.worker,
            "caps": encode_requires(capabilities, "capabilities") or "[]",
            "limit": check_limit(limit),
            "lease": check_lease(lease),
        }

    @staticmethod
    def claimed(rows: list[Any]) -> list[Job]:
        return [job_from_row(row) for row in rows]

    @staticmethod
    def heartbeat_call(
        job_id: int, token: str, lease: float, progress: Any = None, message: Any = None
    ) -> Call:
        kwargs = {"id": job_id, "token": token, "lease": check_lease(lease)}
        progress, message = check_progress(progress, message)
        if progress is not None or message is not None:
            kwargs.update(progress=progress, message=message)
        return ops.jobs_heartbeat, kwargs

    @staticmethod
    def heartbeat_result(job_id: int, until: float | str | None) -> float:
        if until is None:
            raise LeaseLost(f"job {job_id}: the lease token no longer holds it")
        if isinstance(until, str):
            raise JobCancelled(f"job {job_id} was cancelled: stop working on it")
        return until

    @staticmethod
    def complete_call(
        items: Iterable[tuple[int, str, Any]],
    ) -> tuple[Call, list[tuple[int, str]]]:
        chosen = list(items)
        encoded = [
            [job_id, token, None if result is None else encode_value(result, "result", None)]
            for job_id, token, result in chosen
        ]
        pairs = [(job_id, token) for job_id, token, _ in chosen]
        return (ops.jobs_complete, {"items": dumps(encoded)}), pairs

    @staticmethod
    def completed(pairs: list[tuple[int, str]], held: list[list[Any]]) -> list[bool]:
        """For each ``(id, token)`` pair, whether that token held its job and it is done
        (``held`` rows are ``[id, token, state]``: not cancelled meanwhile)."""
        done = {(job_id, token) for job_id, token, state in held if state == "done"}
        return [pair in done for pair in pairs]

    @staticmethod
    def complete_one_result(job_id: int, held: list[list[Any]]) -> None:
        if not held:
            raise LeaseLost(f"job {job_id}: the lease token no longer holds it")
        if held[0][2] == "cancelled":
            raise JobCancelled(f"job {job_id} was cancelled before it completed; result dropped")

    @staticmethod
    def cancel_call(job_id: int) -> Call:
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise BadRequest("a job id must be an integer")
        return ops.jobs_cancel, {"id": job_id}

    @staticmethod
    def retry_call(job_id: int) -> Call:
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise BadRequest("a job id must be an integer")
        return ops.jobs_retry, {"id": job_id}

    @staticmethod
    def cancel_result(job_id: int, state: str | None) -> str:
        if state is None:
            raise JobNotFound(f"no job {job_id}")
        return state

    @staticmethod
    def configure_call(queue: str, paused: bool | None, rate_limit: Any, set_rate: bool) -> Call:
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
        return ops.jobs_configure, {
            "queue": check_queue_name(queue),
            "paused": paused,
            "rate_limit": rate,
            "set_rate_limit": set_rate,
        }

    @staticmethod
    def settings_result(queue: str, row: Sequence[Any] | None) -> QueueSettings:
        return settings_from_row(queue, row)

    @staticmethod
    def fail_call(job_id: int, token: str, error: str, retry: bool) -> Call:
        if not isinstance(error, str):
            raise BadRequest("error must be a string")
        return ops.jobs_fail, {"id": job_id, "token": token, "error": error[:4000], "retry": retry}

    @staticmethod
    def fail_result(job_id: int, result: list[Any] | None) -> State:
        if result is None:
            raise LeaseLost(f"job {job_id}: the lease token no longer holds it")
        state: State = result[0]
        return state

    @staticmethod
    def release_call(items: Iterable[tuple[int, str]]) -> Call:
        return ops.jobs_release, {"items": [[job_id, token] for job_id, token in items]}

    @staticmethod
    def requeue_call(ids: Sequence[int] | None, queue: str | None) -> Call:
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest("ids must be a list of integers")
        return ops.jobs_requeue_dead, {
            "ids": None if ids is None else dumps(list(ids)),
            "queue": queue,
        }

    @staticmethod
    def purge_call(queue: str | None, states: Iterable[str]) -> Call:
        chosen = list(states)
        if not chosen or any(s not in STATES for s in chosen):
            raise BadRequest(f"states must be a non-empty list of {', '.join(STATES)}")
        return ops.jobs_purge, {"queue": queue, "states": dumps(chosen)}

    def schedule_call(
        self,
        name: str,
        queue: str,
        payload: Any,
        every: float | None,
        cron: str | None,
        tz: str,
        options: Mapping[str, Any],
    ) -> Call:
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
        return ops.jobs_schedule, {
            "name": name,
            "queue": check_queue_name(queue),
            "payload": text,
            "every": None if every is None else float(every),
            "options": dumps(job),
            **({} if cron is None else {"cron": " ".join(cron.split()), "tz": tz}),
        }

    @staticmethod
    def stats_result(
        counts: list[Any], oldest: list[Any], done: list[Any], settings: list[Any], now: float
    ) -> dict[str, Any]:
        queues: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            if name not in queues:
                queues[name] = {s: 0 for s in STATES}
                queues[name].update(
                    oldest_ready_age=0.0, done_last_minute=0, paused=False, rate_limit=None
                )
            return queues[name]

        for queue, *row in settings:
            configured = settings_from_row(queue, row)
            if configured.paused or configured.rate_limit is not None:
                entry(queue).update(configured.to_dict())
                del queues[queue]["queue"]

        for queue, state, n in counts:
            entry(queue)[state] = n
        for queue, run_at in oldest:
            entry(queue)["oldest_ready_age"] = round(max(0.0, now - run_at), 3)
        for queue, n in done:
            entry(queue)["done_last_minute"] = n
        totals = {s: sum(q[s] for q in queues.values()) for s in STATES}
        done_minute = sum(q["done_last_minute"] for q in queues.values())
        return {
            "queues": dict(sorted(queues.items())),
            "totals": totals,
            "throughput_per_s": round(done_minute / 60.0, 3),
            "time": now,
        }


def parents_params(jobs: Sequence[NewJob | Any]) -> dict[str, Any] | None:
    """The ``existing`` read's parameters for the parents ``jobs`` name, if any."""
    ids = {p for job in jobs if isinstance(job, NewJob) for p in job.depends_on}
    if not ids:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise BadRequest("depends_on must be a list of job ids")
    return {"ids": dumps(sorted(ids))}


def check_parents(params: dict[str, Any], rows: list[Any]) -> None:
    """``NOT_FOUND`` for a parent that does not exist (before anything is written)."""
    missing = sorted(set(json.loads(params["ids"])) - {row[0] for row in rows})
    if missing:
        raise JobNotFound(f"depends_on names no job {', '.join(map(str, missing))}")


def throughput_params(minutes: int) -> dict[str, Any]:
    check_limit(minutes, maximum=24 * 60)
    return {"since": time.time() - 60.0 * minutes}


def per_minute(rows: Iterable[Any], minutes: int) -> list[int]:
    counts = [0] * minutes
    for minute, n in rows:
        if 0 <= minute < minutes:
            counts[minute] = n
    return counts


def claimable_params(queue: str, capabilities: Iterable[str]) -> dict[str, Any]:
    return {
        "queue": check_queue_name(queue),
        "caps": encode_requires(capabilities, "capabilities") or "[]",
        "now": time.time(),
        "limit": 1,
    }
