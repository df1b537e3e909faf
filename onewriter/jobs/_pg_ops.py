"""The queue's writes on PostgreSQL, written once for both twins.

Each write is a generator that yields :class:`Statement` objects and is sent back their
:class:`Result`: it holds the logic, a driver (:mod:`onewriter.jobs._pg_run`) does the
I/O, synchronously or with ``await``, inside one transaction (or, for a write that is one
statement marked ``alone``, as that statement by itself). The generators take the same
arguments as the SQLite ops of :mod:`onewriter.jobs._ops` (the shared ``Calls`` build
them) and return results of the same shape, so both stores read results alike.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import OneWriterError
from . import _pg_sql as sql
from ._model import BACKOFF_CAP

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


#: The schema's statements (its only semicolons end statements).
_SCHEMA_STATEMENTS = [s.strip() for s in sql.SCHEMA.split(";") if s.strip()]


def _claim_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (-row[3], row[4], row[0])


def _array(json_text: str | None) -> list[Any] | None:
    """A JSON array argument (as the ops take them) as a list to bind as an array."""
    return None if json_text is None else list(json.loads(json_text))


def setup() -> Steps[int]:
    """Create the tables and indexes if missing; how many statements ran."""
    yield Statement(sql.SETUP_LOCK, {})
    if (yield Statement(sql.SCHEMA_PRESENT, {})).rows[0][0]:
        return 0
    for statement in _SCHEMA_STATEMENTS:
        yield Statement(statement, {})
    return len(_SCHEMA_STATEMENTS)


def enqueue(queue: str, groups: list[list[Any]], keyed: list[dict[str, Any]]) -> Steps[list[Any]]:
    """Insert ``groups`` of ``[options, payloads_json]`` (one statement each) and ``keyed``
    jobs one by one; ``[ids_per_group, [[id, created], ...]]``, as the SQLite op."""
    alone = len(groups) == 1 and not keyed
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
    return [group_ids, outcomes]


def _insert_keyed(queue: str, job: dict[str, Any]) -> Steps[list[Any]]:
    params = {**job, "requires": _array(job["requires"]), "queue": queue}
    for _ in range(_KEYED_TRIES):
        inserted = (yield Statement(sql.ENQUEUE, params)).rows[0][0]
        if inserted is not None:
            return [inserted, True]
        existing = yield Statement(sql.UNFINISHED_BY_KEY, params)
        if existing.rows:
            return [existing.rows[0][0], False]
    raise OneWriterError(f"unique key {job['unique_key']!r} kept changing hands; try again")


def claim(queue: str, worker: str, caps: str, limit: int, lease: float) -> Steps[list[Any]]:
    """Return expired leases, fire due schedules, then lease up to ``limit`` jobs."""
    yield Statement(sql.HOUSEKEEPING, {"cap": BACKOFF_CAP})
    params = {"queue": queue, "worker": worker, "caps": caps, "limit": limit}
    rows = (yield Statement(sql.CLAIM, {**params, "lease": lease})).rows
    if any(row[_ROW_CONCURRENCY_KEY] is not None for row in rows):
        rows = yield from _within_concurrency_limits(rows)
    rows.sort(key=_claim_order)
    return rows


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


def heartbeat(id: int, token: str, lease: float) -> Steps[float | None]:
    params = {"id": id, "token": token, "lease": lease}
    result = yield Statement(sql.HEARTBEAT, params, alone=True)
    return None if not result.rows else float(result.rows[0][0])


def complete(items: str) -> Steps[list[list[Any]]]:
    """``items`` is a JSON array of ``[id, token, result_json]``; the ``[id, token]``
    pairs whose token held."""
    decoded = json.loads(items)
    params = {
        "ids": [item[0] for item in decoded],
        "tokens": [item[1] for item in decoded],
        "results": [item[2] for item in decoded],
    }
    rows = (yield Statement(sql.COMPLETE, params, alone=True)).rows
    return [[row[0], row[1]] for row in rows]


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


def schedule(name: str, queue: str, payload: str, every: float, options: str) -> Steps[float]:
    job = json.loads(options)
    params = {
        **job,
        "requires": _array(job["requires"]),
        "name": name,
        "queue": queue,
        "payload": payload,
        "every": every,
    }
    return float((yield Statement(sql.SCHEDULE, params, alone=True)).rows[0][0])


def unschedule(name: str) -> Steps[bool]:
    return (yield Statement(sql.UNSCHEDULE, {"name": name}, alone=True)).rowcount == 1


def maintain(retention: float, limit: int) -> Steps[dict[str, int]]:
    reaped, fired = (yield Statement(sql.HOUSEKEEPING, {"cap": BACKOFF_CAP})).rows[0]
    pruned = (yield Statement(sql.PRUNE, {"retention": retention, "limit": limit})).rowcount
    return {"reaped": int(reaped), "fired": int(fired), "pruned": pruned}


#: The PostgreSQL twin of each op of ``jobs_ops``, by op name.
PG_OPS: dict[str, Callable[..., Steps[Any]]] = {
    "jobs_setup": setup,
    "jobs_enqueue": enqueue,
    "jobs_claim": claim,
    "jobs_heartbeat": heartbeat,
    "jobs_complete": complete,
    "jobs_fail": fail,
    "jobs_release": release,
    "jobs_requeue_dead": requeue_dead,
    "jobs_purge": purge,
    "jobs_prune": prune,
    "jobs_schedule": schedule,
    "jobs_unschedule": unschedule,
    "jobs_maintain": maintain,
}
