"""What a job is on each side of the wire: the :class:`Job` record, the :class:`NewJob`
specification, and their checked encodings (JSON text in the database)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..errors import BadRequest, TooLarge

State = Literal["waiting", "ready", "running", "done", "dead", "cancelled"]
STATES: tuple[State, ...] = ("waiting", "ready", "running", "done", "dead", "cancelled")
FINISHED: frozenset[str] = frozenset({"done", "dead", "cancelled"})

DEFAULT_PAYLOAD_LIMIT = 64 * 1024
DEFAULT_LEASE = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF = 1.0
#: The longest a retry waits, whatever the attempt number.
BACKOFF_CAP = 3600.0
#: Finished jobs are kept this long before :meth:`prune` deletes them.
DEFAULT_RETENTION = 7 * 24 * 3600.0
#: A job with a ``timeout`` keeps its lease at most this long past it, so that a runner
#: that died or hung cannot hold it longer than that.
TIMEOUT_SLACK = 2.0
MESSAGE_LIMIT = 500
#: What a job whose parent ended dead or cancelled does: ends cancelled too, or runs.
ON_PARENT_FAILURE = ("cancel", "run")
MAX_PARENTS = 10_000


def dumps(value: Any) -> str:
    """Compact JSON, as stored and as sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(slots=True, kw_only=True)
class Job:
    """A job as read (a snapshot: changing it changes nothing stored). Times are Unix
    seconds (UTC) from the writer's clock.

    ``token`` is set only while the job is running: it is the lease holder's proof, needed
    to heartbeat, complete, fail or release it.
    """

    id: int
    queue: str
    state: State
    payload: Any
    priority: int = 0
    run_at: float = 0.0
    requires: tuple[str, ...] = ()
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    token: str | None = None
    worker: str | None = None
    lease_until: float | None = None
    result: Any = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    timeout: float | None = None
    progress: float | None = None
    message: str | None = None
    cancel_requested: bool = False
    depends_on: tuple[int, ...] = ()
    on_parent_failure: str | None = None

    @property
    def finished(self) -> bool:
        """Done, dead or cancelled: nothing more will happen to it unless requeued."""
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The job as plain JSON-ready values (the HTTP face sends this)."""
        return {
            "id": self.id,
            "queue": self.queue,
            "state": self.state,
            "payload": self.payload,
            "priority": self.priority,
            "run_at": self.run_at,
            "requires": list(self.requires),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "unique_key": self.unique_key,
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": self.concurrency_limit,
            "token": self.token,
            "worker": self.worker,
            "lease_until": self.lease_until,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "timeout": self.timeout,
            "progress": self.progress,
            "message": self.message,
            "cancel_requested": self.cancel_requested,
            "depends_on": list(self.depends_on),
            "on_parent_failure": self.on_parent_failure,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """The inverse of :meth:`to_dict` (the HTTP worker reads jobs with it)."""
        values = {name: data[name] for name in _JOB_FIELDS if name in data}
        values["requires"] = tuple(values.get("requires") or ())
        values["depends_on"] = tuple(values.get("depends_on") or ())
        return cls(**values)


_JOB_FIELDS = tuple(Job.__dataclass_fields__)


def job_from_row(row: Sequence[Any]) -> Job:
    """A :class:`Job` from a row of ``JOB_COLUMNS``."""
    return Job(
        id=row[0],
        queue=row[1],
        state=row[2],
        priority=row[3],
        run_at=row[4],
        payload=json.loads(row[5]),
        requires=tuple(json.loads(row[6])) if row[6] else (),
        attempts=row[7],
        max_attempts=row[8],
        unique_key=row[9],
        concurrency_key=row[10],
        concurrency_limit=row[11],
        token=row[12],
        worker=row[13],
        lease_until=row[14],
        result=json.loads(row[15]) if row[15] is not None else None,
        error=row[16],
        created_at=row[17],
        started_at=row[18],
        finished_at=row[19],
        timeout=row[20],
        progress=row[21],
        message=row[22],
        cancel_requested=bool(row[23]),
        depends_on=tuple(json.loads(row[24])) if row[24] else (),
        on_parent_failure=row[25],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A job to enqueue, with every option (``enqueue`` takes the same as keywords).

    ``delay`` (seconds from now on the writer's clock) and ``run_at`` (Unix seconds, UTC)
    are exclusive. ``requires`` lists the capabilities a worker must all have. With a
    ``unique_key``, enqueue is idempotent while a job with that key in this queue is not
    finished. With a ``concurrency_key``, at most ``concurrency_limit`` jobs sharing it
    run at once. A failed attempt waits ``backoff * 2^(attempt-1)`` seconds, jittered.
    With a ``timeout``, the worker runner stops an attempt that runs longer than that
    many seconds (and its lease ends then, should the runner die or hang). With
    ``depends_on`` (ids of jobs), it waits until all of them are done; when one ends dead
    or cancelled, it ends cancelled (``on_parent_failure="cancel"``) or runs all the same
    once they have all finished (``"run"``).
    """

    payload: Any
    priority: int = 0
    delay: float | None = None
    run_at: float | None = None
    requires: Sequence[str] = field(default_factory=tuple)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    backoff: float = DEFAULT_BACKOFF
    timeout: float | None = None
    depends_on: Sequence[int] = field(default_factory=tuple)
    on_parent_failure: Literal["cancel", "run"] = "cancel"


class Batch(NamedTuple):
    """What :meth:`enqueue_batch` did: each job's outcome, and the callback's id."""

    jobs: list[Enqueued]
    callback: int


class Enqueued(NamedTuple):
    """What an enqueue did: the job's id, and whether it is new (not an existing job
    with the same unique key)."""

    id: int
    created: bool


def check_queue_name(queue: Any) -> str:
    if not isinstance(queue, str) or not queue or len(queue) > 200:
        raise BadRequest("queue must be a non-empty string of at most 200 characters")
    return queue


def encode_requires(requires: Iterable[str] | None, what: str = "requires") -> str | None:
    """A sorted JSON array of capability names, or ``None`` for none."""
    if requires is None:
        return None
    if isinstance(requires, str | bytes):
        raise BadRequest(f"{what} must be a list of strings, not a string")
    names = sorted(set(requires))
    if not all(isinstance(n, str) and n for n in names):
        raise BadRequest(f"{what} must be a list of non-empty strings")
    return dumps(names) if names else None


def encode_value(value: Any, what: str, limit: int | None) -> str:
    """JSON text of ``value``, refused with ``TOO_LARGE`` past ``limit`` bytes."""
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{what} is not JSON-serializable: {exc}") from None
    if limit is not None and len(text) > limit // 4 and len(text.encode()) > limit:
        raise TooLarge(f"{what} is {len(text.encode())} bytes, over the limit of {limit}")
    return text


def _number(value: Any, what: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{what} must be a finite number")
    if minimum is not None and value < minimum:
        raise BadRequest(f"{what} must be at least {minimum:g}")
    return float(value)


def _integer(value: Any, what: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} must be an integer")
    if minimum is not None and value < minimum:
        raise BadRequest(f"{what} must be at least {minimum}")
    if abs(value) >= 2**62:
        raise BadRequest(f"{what} is out of range")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise BadRequest(f"{what} must be a non-empty string")
    return value


def encode_new_job(job: NewJob, payload_limit: int | None) -> dict[str, Any]:
    """The op arguments for one job, every option checked (``BAD_REQUEST``/``TOO_LARGE``)."""
    if job.delay is not None and job.run_at is not None:
        raise BadRequest("give delay or run_at, not both")
    concurrency_key = _optional_text(job.concurrency_key, "concurrency_key")
    limit = job.concurrency_limit
    if concurrency_key is not None:
        limit = _integer(1 if limit is None else limit, "concurrency_limit", minimum=1)
    elif limit is not None:
        raise BadRequest("concurrency_limit needs a concurrency_key")
    return {
        "payload": encode_value(job.payload, "payload", payload_limit),
        "priority": _integer(job.priority, "priority"),
        "delay": _number(0.0 if job.delay is None else job.delay, "delay", minimum=0),
        "run_at": None if job.run_at is None else _number(job.run_at, "run_at"),
        "requires": encode_requires(job.requires),
        "max_attempts": _integer(job.max_attempts, "max_attempts", minimum=1),
        "backoff": _number(job.backoff, "backoff", minimum=0),
        "unique_key": _optional_text(job.unique_key, "unique_key"),
        "concurrency_key": concurrency_key,
        "concurrency_limit": limit,
        "timeout": None if job.timeout is None else _timeout(job.timeout),
        **_dependencies(job),
    }


def _dependencies(job: NewJob) -> dict[str, Any]:
    parents = job.depends_on
    if isinstance(parents, str | bytes) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in parents
    ):
        raise BadRequest("depends_on must be a list of job ids")
    if len(parents) > MAX_PARENTS:
        raise BadRequest(f"depends_on takes at most {MAX_PARENTS} ids")
    if job.on_parent_failure not in ON_PARENT_FAILURE:
        raise BadRequest(f"on_parent_failure must be one of {', '.join(ON_PARENT_FAILURE)}")
    if not parents:
        return {"depends_on": None, "on_parent_failure": None}
    return {"depends_on": dumps(sorted(set(parents))), "on_parent_failure": job.on_parent_failure}


def _timeout(value: Any) -> float:
    seconds = _number(value, "timeout", minimum=0.001)
    if seconds > 7 * 86400:
        raise BadRequest("timeout must be at most a week")
    return seconds


#: Where each job of a batch went: ``(group, position)``, or ``(-1, index)`` for a job
#: with a unique key or parents (inserted on its own).
Layout = list[tuple[int, int]]

_DEFAULT_OPTIONS: dict[str, Any] = {
    "priority": 0,
    "delay": 0.0,
    "run_at": None,
    "requires": None,
    "max_attempts": DEFAULT_MAX_ATTEMPTS,
    "backoff": DEFAULT_BACKOFF,
    "concurrency_key": None,
    "concurrency_limit": None,
    "timeout": None,
}
_DEFAULT_KEY = tuple(_DEFAULT_OPTIONS.values())


def encode_batch(
    jobs: Iterable[NewJob | Any], payload_limit: int | None
) -> tuple[list[list[Any]], list[dict[str, Any]], Layout]:
    """The ``jobs_enqueue`` arguments for ``jobs`` (:class:`NewJob` or bare payloads):
    jobs sharing their options grouped (one statement each), keyed jobs apart."""
    group_of: dict[tuple[Any, ...], int] = {}
    options: list[dict[str, Any]] = []
    payloads: list[list[str]] = []
    keyed: list[dict[str, Any]] = []
    layout: Layout = []
    for job in jobs:
        if isinstance(job, NewJob):
            encoded = encode_new_job(job, payload_limit)
            if encoded["unique_key"] is not None or encoded["depends_on"] is not None:
                layout.append((-1, len(keyed)))
                keyed.append(encoded)
                continue
            payload = encoded.pop("payload")
            for alone in ("unique_key", "depends_on", "on_parent_failure"):
                del encoded[alone]
            key = tuple(encoded.values())
        else:
            payload = encode_value(job, "payload", payload_limit)
            encoded, key = _DEFAULT_OPTIONS, _DEFAULT_KEY
        group = group_of.get(key)
        if group is None:
            group = group_of[key] = len(options)
            options.append(encoded)
            payloads.append([])
        layout.append((group, len(payloads[group])))
        payloads[group].append(payload)
    groups = [[o, dumps(p)] for o, p in zip(options, payloads, strict=True)]
    return groups, keyed, layout


def decode_batch(result: Sequence[Any], layout: Layout) -> list[Enqueued]:
    """The outcome of each job of a batch, in the order given."""
    group_ids, keyed = result[0], result[1]
    return [
        Enqueued(int(keyed[i][0]), bool(keyed[i][1])) if g < 0 else Enqueued(group_ids[g][i], True)
        for g, i in layout
    ]


def check_lease(lease: Any) -> float:
    value = _number(lease, "lease", minimum=0.001)
    if value > 86400:
        raise BadRequest("lease must be at most one day")
    return value


def check_limit(limit: Any, maximum: int = 1000) -> int:
    value = _integer(limit, "limit", minimum=1)
    if value > maximum:
        raise BadRequest(f"limit must be at most {maximum}")
    return value


def check_progress(progress: Any, message: Any) -> tuple[float | None, str | None]:
    """A heartbeat's progress (0 to 100) and short message, checked."""
    if progress is not None:
        progress = _number(progress, "progress", minimum=0)
        if progress > 100:
            raise BadRequest("progress must be at most 100")
    if message is not None:
        if not isinstance(message, str):
            raise BadRequest("message must be a string")
        if len(message) > MESSAGE_LIMIT:
            raise BadRequest(f"message must be at most {MESSAGE_LIMIT} characters")
    return progress, message


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` claims of a queue's jobs in any ``period`` seconds."""

    limit: int
    period: float

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "period": self.period}


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What is set on a queue: whether it is paused (claims get nothing), and its rate
    limit. A queue nobody configured is running with no limit."""

    queue: str
    paused: bool = False
    rate_limit: RateLimit | None = None

    def to_dict(self) -> dict[str, Any]:
        limit = None if self.rate_limit is None else self.rate_limit.to_dict()
        return {"queue": self.queue, "paused": self.paused, "rate_limit": limit}


def settings_from_row(queue: str, row: Sequence[Any] | None) -> QueueSettings:
    """Settings from ``(paused, rate_limit, rate_period)`` (``None``: the defaults)."""
    if row is None:
        return QueueSettings(queue)
    paused, limit, period = row
    rate = None if limit is None else RateLimit(int(limit), float(period))
    return QueueSettings(queue, bool(paused), rate)


def check_rate_limit(limit: Any, period: Any) -> list[Any]:
    """``[limit, period]`` checked: at least one claim in a positive period."""
    return [
        _integer(limit, "rate_limit.limit", minimum=1),
        _timeout_like(period, "rate_limit.period"),
    ]


def _timeout_like(value: Any, what: str) -> float:
    seconds = _number(value, what, minimum=0.001)
    if seconds > 86400:
        raise BadRequest(f"{what} must be at most one day")
    return seconds
