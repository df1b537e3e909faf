"""The queue's writes on PostgreSQL, written once for both twins.

Each write is a generator that yields :class:`Statement` objects and is sent back their
:class:`Result`: it holds the logic, a driver (:mod:`onewriter.jobs.postgres.run`) does
the I/O, synchronously or with ``await``, inside one transaction (or, for a write that is
one statement marked ``alone``, as that statement by itself).
:class:`~onewriter.jobs.postgres.store.PgStore` turns their results into the typed values
of the store protocol.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ...errors import OneWriterError
from ..cron import next_time
from ..dependencies import (
    FAILED,
    RESOLVE_ROUNDS,
    RESOLVE_STEP,
    batch_parents,
    job_values,
    parents_of,
    place,
)
from ..model import BACKOFF_CAP, TIMEOUT_SLACK
from ..store import Maintenance
from . import sql

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: dict[str, Any]
    alone: bool = False
    """The whole write: run it without ``BEGIN``/``COMMIT`` (a statement is atomic)."""


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[tuple[Any, ...]]
    rowcount: int


Steps = Generator[Statement, Result, T]

_ROW_TOKEN = 12
_ROW_CONCURRENCY_KEY = 10
_ROW_CONCURRENCY_LIMIT = 11
#: How often an enqueue with a unique key retries when the job holding the key finished
#: between the refused insert and the look-up of its id.
_KEYED_TRIES = 5


def _split(script: str) -> list[str]:
    """A script's statements (its only semicolons end statements)."""
    return [s.strip() for s in script.split(";") if s.strip()]


_SCHEMA_STATEMENTS = _split(sql.SCHEMA)
_MIGRATIONS = {version: _split(script) for version, script in sql.MIGRATIONS.items()}


def _claim_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (-row[3], row[4], row[0])


def _array(json_text: str | None) -> list[Any] | None:
    """A JSON array argument (as the ops take them) as a list to bind as an array."""
    return None if json_text is None else list(json.loads(json_text))


def setup() -> Steps[int]:
    """Create the tables and indexes if missing, and bring an older schema to the current
    version (version 1 had no version table); the version."""
    yield Statement(sql.SETUP_LOCK, {})
    present, versioned = (yield Statement(sql.SCHEMA_PRESENT, {})).rows[0]
    version = 0
    if not present:
        for statement in _SCHEMA_STATEMENTS:
            yield Statement(statement, {})
        version = 1
    elif not versioned:
        version = 1
    else:
        version = int((yield Statement(sql.SCHEMA_VERSION, {})).rows[0][0])
    for later in sorted(v for v in _MIGRATIONS if v > version):
        for statement in _MIGRATIONS[later]:
            yield Statement(statement, {})
        version = later
    return version


def enqueue(
    queue: str,
    groups: list[list[Any]],
    keyed: list[dict[str, Any]],
    callback: dict[str, Any] | None = None,
) -> Steps[list[Any]]:
    """Insert ``groups`` of ``[options, payloads_json]`` (one statement each), ``keyed``
    jobs one by one, then the batch's ``callback``; ``[ids_per_group, [[id, created],
    ...]]`` and the callback's id, as the SQLite op."""
    alone = len(groups) == 1 and not keyed and callback is None
    group_ids = []
    for options, payloads in groups:
        params = {
            **options,
            "requires": _array(options["requires"]),
            "queue": queue,
            "payloads": json.loads(payloads),
        }
        result = yield Statement(sql.ENQUEUE_BULK, params, alone)
        group_ids.append(result.rows[0][0])
    outcomes = []
    for job in keyed:
        outcomes.append((yield from _insert_keyed(queue, job)))
    if callback is None:
        return [group_ids, outcomes]
    job = {**callback, "depends_on": batch_parents(group_ids, outcomes)}
    return [group_ids, outcomes, (yield from _insert_keyed(callback["queue"], job))[0]]


def _insert_keyed(queue: str, job: dict[str, Any]) -> Steps[list[Any]]:
    """One job with a unique key or parents."""
    parents = parents_of(job)
    placement = None
    if parents:
        rows = (yield Statement(sql.PARENT_STATES, {"ids": parents})).rows
        placement = place(parents, dict(rows), job["on_parent_failure"])
    params = {
        **job,
        **job_values(placement),
        "requires": _array(job["requires"]),
        "depends_on": parents or None,
        "queue": queue,
    }
    for _ in range(_KEYED_TRIES):
        inserted = (yield Statement(sql.ENQUEUE, params)).rows[0][0]
        if inserted is not None:
            if placement is not None and placement.open:
                yield Statement(sql.DEPEND, {"parents": placement.open, "child": inserted})
            return [inserted, True]
        existing = yield Statement(sql.UNFINISHED_BY_KEY, params)
        if existing.rows:
            return [existing.rows[0][0], False]
    raise OneWriterError(f"unique key {job['unique_key']!r} kept changing hands; try again")


def claim(queue: str, worker: str, caps: str, limit: int, lease: float) -> Steps[list[Any]]:
    """Return expired leases, fire due schedules, then lease up to ``limit`` jobs (fewer
    when the queue's rate limit says so)."""
    housekeeping = yield Statement(sql.HOUSEKEEPING, {"cap": BACKOFF_CAP, "queue": queue})
    reaped, _, _, resolvable, cron_due = housekeeping.rows[0]
    if cron_due:
        yield from _fire_cron()
    if resolvable or reaped:  # a job reaped by that statement may be a parent it missed
        yield from _resolve()
    rate_limited = housekeeping.rows[0][2] is not None
    if rate_limited:
        limit = yield from _rate_allows(queue, limit)
        if limit <= 0:
            return []
    params = {"queue": queue, "worker": worker, "caps": caps, "limit": limit}
    rows = (yield Statement(sql.CLAIM, {**params, "lease": lease, "slack": TIMEOUT_SLACK})).rows
    if any(row[_ROW_CONCURRENCY_KEY] is not None for row in rows):
        rows = yield from _within_concurrency_limits(rows)
    if rate_limited and rows:
        yield Statement(sql.RATE_RECORD, {"queue": queue, "n": len(rows)})
    rows.sort(key=_claim_order)
    return rows


def _fire_cron() -> Steps[int]:
    """Fire the due cron schedules this transaction could lock (each row stays locked
    until it commits, moved to its next time: one job per time, whatever the number of
    instances)."""
    due = (yield Statement(sql.DUE_CRON, {})).rows
    for name, cron, tz, now in due:
        yield Statement(sql.FIRE_CRON, {"name": name, "next_at": next_time(cron, tz, now)})
    return len(due)


def _resolve() -> Steps[int]:
    """Count waiting jobs down for their parents that finished (see ``_dependencies``)."""
    resolved = 0
    for _ in range(RESOLVE_ROUNDS):
        rows = (yield Statement(sql.RESOLVABLE, {"limit": RESOLVE_STEP})).rows
        if rows:
            parents, children = [r[0] for r in rows], [r[1] for r in rows]
            yield Statement(sql.RESOLVED, {"parents": parents, "children": children})
        for parent, child, state in rows:
            params = {"parent": parent, "child": child, "parent_state": state}
            yield Statement(sql.RESOLVE_CHILD, {**params, "failed": state in FAILED})
        resolved += len(rows)
        if len(rows) < RESOLVE_STEP:
            break
    return resolved


def _rate_allows(queue: str, wanted: int) -> Steps[int]:
    """How many jobs this claim may take: the queue's settings row stays locked until
    the claim commits, so claims of a rate-limited queue count and record in turn."""
    locked = (yield Statement(sql.LOCK_RATE, {"queue": queue})).rows
    if not locked or locked[0][0] is None:
        return wanted  # the limit was removed meanwhile
    limit, period = locked[0]
    used = (yield Statement(sql.RATE_USED, {"queue": queue, "period": period})).rows[0][0]
    return min(wanted, int(limit) - int(used))


def _within_concurrency_limits(rows: list[tuple[Any, ...]]) -> Steps[list[tuple[Any, ...]]]:
    """The claim's filter counted running jobs without a lock: concurrent claims may take
    jobs of one key together. Recount each key under an advisory lock (keys in sorted
    order, so two claims never wait on each other in a cycle); put the excess back."""
    by_key: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in sorted(rows, key=_claim_order):
        if row[_ROW_CONCURRENCY_KEY] is not None:
            by_key[row[_ROW_CONCURRENCY_KEY]].append(row)
    released: set[int] = set()
    for key in sorted(by_key):
        group = by_key[key]
        yield Statement(sql.LOCK_KEY, {"key": key})
        running = (yield Statement(sql.RUNNING_WITH_KEY, {"key": key})).rows[0][0]
        others = running - len(group)
        kept = 0
        for row in group:
            if others + kept < row[_ROW_CONCURRENCY_LIMIT]:
                kept += 1
                continue
            yield Statement(sql.RELEASE, {"id": row[0], "token": row[_ROW_TOKEN]})
            released.add(row[0])
    return [row for row in rows if row[0] not in released]


def heartbeat(
    id: int, token: str, lease: float, progress: float | None = None, message: str | None = None
) -> Steps[float | str | None]:
    params = {
        "id": id,
        "token": token,
        "lease": lease,
        "progress": progress,
        "message": message,
        "slack": TIMEOUT_SLACK,
    }
    result = yield Statement(sql.HEARTBEAT, params, alone=True)
    if not result.rows:
        return None
    until, state = result.rows[0]
    return "cancelled" if state == "cancelled" else float(until)


def complete(items: str) -> Steps[list[list[Any]]]:
    """``items`` is a JSON array of ``[id, token, result_json]``; the ``[id, token,
    state]`` of the pairs whose token held (as the SQLite op)."""
    decoded = json.loads(items)
    params = {
        "ids": [item[0] for item in decoded],
        "tokens": [item[1] for item in decoded],
        "results": [item[2] for item in decoded],
    }
    rows = (yield Statement(sql.COMPLETE, params, alone=True)).rows
    return [[row[0], row[1], row[2]] for row in rows]


def cancel(id: int) -> Steps[str | None]:
    """As the SQLite op: the state the job is in, ``"cancelling"``, or ``None``."""
    rows = (yield Statement(sql.CANCEL, {"id": id}, alone=True)).rows
    if not rows:
        return None
    state, requested = rows[0]
    return "cancelling" if state == "running" and requested else str(state)


def retry(id: int) -> Steps[str | None]:
    rows = (yield Statement(sql.RETRY, {"id": id}, alone=True)).rows
    return None if not rows else str(rows[0][0])


def configure(
    queue: str, paused: bool | None, rate_limit: list[Any] | None, set_rate_limit: bool
) -> Steps[list[Any]]:
    limit, period = rate_limit if rate_limit is not None else (None, None)
    params = {
        "queue": queue,
        "paused": paused,
        "limit": limit,
        "period": period,
        "set_rate": set_rate_limit,
    }
    return list((yield Statement(sql.CONFIGURE, params, alone=True)).rows[0])


def fail(id: int, token: str, error: str, retry: bool) -> Steps[list[Any] | None]:
    params = {"id": id, "token": token, "error": error, "retry": retry, "cap": BACKOFF_CAP}
    result = yield Statement(sql.FAIL, params, alone=True)
    return None if not result.rows else [result.rows[0][0], result.rows[0][1]]


def release(items: list[list[Any]]) -> Steps[list[bool]]:
    params = {"ids": [i for i, _ in items], "tokens": [t for _, t in items]}
    held = {row[0] for row in (yield Statement(sql.RELEASE_MANY, params, alone=True)).rows}
    return [job_id in held for job_id, _ in items]


def requeue_dead(ids: str | None, queue: str | None) -> Steps[int]:
    params = {"ids": _array(ids), "queue": queue}
    result = yield Statement(sql.REQUEUE_DEAD, params, alone=True)
    return int(result.rows[0][0])


def purge(queue: str | None, states: str) -> Steps[int]:
    params = {"queue": queue, "states": json.loads(states)}
    return (yield Statement(sql.PURGE, params, alone=True)).rowcount


def prune(retention: float, limit: int) -> Steps[int]:
    params = {"retention": retention, "limit": limit}
    return (yield Statement(sql.PRUNE, params, alone=True)).rowcount


def schedule(
    name: str,
    queue: str,
    payload: str,
    every: float | None,
    options: str,
    cron: str | None = None,
    tz: str | None = None,
) -> Steps[float]:
    job = json.loads(options)
    next_at = None
    if cron is not None:  # computed here, from the server's clock
        now = (yield Statement(sql.SERVER_TIME, {})).rows[0][0]
        next_at = next_time(cron, tz or "UTC", now)
    params = {
        **job,
        "requires": _array(job["requires"]),
        "name": name,
        "queue": queue,
        "payload": payload,
        "every": every,
        "cron": cron,
        "tz": tz,
        "next_at": next_at,
    }
    result = yield Statement(sql.SCHEDULE, params, alone=cron is None)
    return float(result.rows[0][0])


def unschedule(name: str) -> Steps[bool]:
    return (yield Statement(sql.UNSCHEDULE, {"name": name}, alone=True)).rowcount == 1


def maintain(retention: float, limit: int) -> Steps[Maintenance]:
    housekeeping = yield Statement(sql.HOUSEKEEPING, {"cap": BACKOFF_CAP, "queue": None})
    reaped, fired, _, resolvable, cron_due = housekeeping.rows[0]
    fired += (yield from _fire_cron()) if cron_due else 0
    resolved = (yield from _resolve()) if resolvable or reaped else 0
    pruned = (yield Statement(sql.PRUNE, {"retention": retention, "limit": limit})).rowcount
    return Maintenance(int(reaped), int(fired), resolved, pruned)
