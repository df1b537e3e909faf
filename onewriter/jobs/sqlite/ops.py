"""The queue's writes, as ops: each runs on the writer inside its transaction (in a
savepoint of its own), with the writer's clock. Add them to your registry with
``ops.include(jobs_ops)`` so that the writer serving your database can run them.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import defaultdict
from typing import Any

from ...ops import Ops
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
from . import sql

jobs_ops = Ops()

_ROW_TOKEN = 12
_ROW_CONCURRENCY_KEY = 10
_ROW_CONCURRENCY_LIMIT = 11


def _statements(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]


_SCHEMA_STATEMENTS = _statements(sql.SCHEMA)

#: The version ``_schema.sql`` creates. Version 1 had no cancellation, timeouts,
#: progress or queue settings (and no version table).
SCHEMA_VERSION = 2

#: The columns a version 1 database's jobs have, copied as they are by the migration.
_V1_COLUMNS = (
    "id, queue, state, priority, run_at, payload, requires, attempts, max_attempts, backoff, "
    "unique_key, concurrency_key, concurrency_limit, token, worker, lease_until, result, "
    "error, created_at, started_at, finished_at"
)
_V1_SCHEDULE_COLUMNS = "name, queue, payload, every, options, next_at"


@jobs_ops.register
def jobs_setup(conn: sqlite3.Connection) -> int:
    """Create the queue's tables and indexes if missing, or migrate older ones to the
    current version (idempotent, composes with any user migrations: it does not touch
    ``user_version``). Returns the schema version."""
    if conn.execute(sql.TABLE_EXISTS, ("onewriter_jobs_schema",)).fetchone():
        version = conn.execute(sql.SCHEMA_VERSION).fetchone()[0] or SCHEMA_VERSION
    elif conn.execute(sql.TABLE_EXISTS, ("onewriter_jobs",)).fetchone():
        version = 1
    else:
        version = SCHEMA_VERSION
    if version == 1:
        _rebuild_jobs_table(conn)
    for statement in _SCHEMA_STATEMENTS:
        conn.execute(statement)
    if version == 1:
        _copy_v1_jobs(conn)
    if conn.execute(sql.SCHEMA_VERSION).fetchone()[0] is None:
        conn.execute(sql.SET_SCHEMA_VERSION, (SCHEMA_VERSION,))
    return SCHEMA_VERSION


def _rebuild_jobs_table(conn: sqlite3.Connection) -> None:
    """Version 1 to 2, first half: the checks of jobs' states and schedules' periods
    change, which SQLite can only do by building the tables anew. Move the old ones
    aside without their indexes (the schema then creates the new tables and the indexes
    under their names)."""
    for (name,) in conn.execute(sql.INDEXES_OF_JOBS).fetchall():
        conn.execute(f'DROP INDEX "{name}"')  # names read from sqlite_master, not input
    conn.execute("ALTER TABLE onewriter_jobs RENAME TO onewriter_jobs_v1")
    conn.execute("ALTER TABLE onewriter_job_schedules RENAME TO onewriter_job_schedules_v1")


def _copy_v1_jobs(conn: sqlite3.Connection) -> None:
    """Second half: copy every job and schedule, keep the id sequence (ids of pruned jobs
    are never reused), drop the old tables."""
    conn.execute(
        f"INSERT INTO onewriter_jobs ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM onewriter_jobs_v1"
    )
    conn.execute(
        f"INSERT INTO onewriter_job_schedules ({_V1_SCHEDULE_COLUMNS}) "
        f"SELECT {_V1_SCHEDULE_COLUMNS} FROM onewriter_job_schedules_v1"
    )
    conn.execute("DROP TABLE onewriter_job_schedules_v1")
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'onewriter_jobs_v1'")
    old = seq.fetchone()
    if old is not None:
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'onewriter_jobs'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('onewriter_jobs', ?)", old)
    conn.execute("DROP TABLE onewriter_jobs_v1")


@jobs_ops.register
def jobs_enqueue(
    conn: sqlite3.Connection,
    queue: str,
    groups: list[list[Any]],
    keyed: list[dict[str, Any]],
    callback: dict[str, Any] | None = None,
) -> list[Any]:
    """Insert jobs: ``groups`` of ``[options, payloads_json]`` sharing their options (one
    statement each), and ``keyed`` jobs with a unique key or parents, one by one; then
    the batch's ``callback`` job (with its ``queue``), waiting for all of them.

    Returns ``[ids_per_group, [[id, created], ...]]``, and the callback's id if any.
    """
    now = time.time()
    group_ids = []
    for options, payloads in groups:
        params = {**options, "queue": queue, "now": now, "payloads": payloads}
        texts = json.loads(payloads)
        if len(texts) == 1:  # one job: a plain insert, no JSON table
            params["payload"] = texts[0]
            group_ids.append([conn.execute(sql.ENQUEUE_ONE, params).fetchone()[0]])
            continue
        group_ids.append(sorted(row[0] for row in conn.execute(sql.ENQUEUE_BULK, params)))
    outcomes = [_insert(conn, queue, job, now) for job in keyed]
    if callback is None:
        return [group_ids, outcomes]
    job = {**callback, "depends_on": batch_parents(group_ids, outcomes)}
    return [group_ids, outcomes, _insert(conn, callback["queue"], job, now)[0]]


def _insert(conn: sqlite3.Connection, queue: str, job: dict[str, Any], now: float) -> list[Any]:
    parents = parents_of(job)
    placement = None
    if parents:
        rows = conn.execute(sql.PARENT_STATES, (job["depends_on"],)).fetchall()
        placement = place(parents, dict(rows), job["on_parent_failure"])
    values = {**job, **job_values(placement), "queue": queue, "now": now}
    row = conn.execute(sql.ENQUEUE, values).fetchone()
    if row is not None:
        if placement is not None and placement.open:
            conn.execute(sql.DEPEND, (row[0], json.dumps(placement.open)))
        return [row[0], True]
    existing = conn.execute(sql.UNFINISHED_BY_KEY, (queue, job["unique_key"])).fetchone()
    return [existing[0], False]


@jobs_ops.register
def jobs_claim(
    conn: sqlite3.Connection, queue: str, worker: str, caps: str, limit: int, lease: float
) -> list[Any]:
    """Take up to ``limit`` jobs a worker with capabilities ``caps`` (JSON array) may run.

    Expired leases are returned to the queue, due periodic jobs fired and finished
    parents counted off first, so the queue needs no janitor process to stay correct. One
    probe says which of those there is to do, and the queue's rate limit.
    """
    now = time.time()
    expired, due, deps, rate_limit, period = conn.execute(
        sql.CLAIM_PROBE, {"now": now, "queue": queue}
    ).fetchone()
    if expired:
        _reap(conn, now)
    if due:
        _fire_schedules(conn, now)
    if deps or expired:  # a lease that ended on a last attempt made a dead parent
        _resolve(conn, now)
    if rate_limit is not None:
        conn.execute(sql.RATE_FORGET, (queue, now - period))
        used = conn.execute(sql.RATE_USED, (queue, now - period)).fetchone()[0]
        limit = min(limit, rate_limit - used)
        if limit <= 0:
            return []
    params = {
        "queue": queue,
        "worker": worker,
        "caps": caps,
        "limit": limit,
        "slack": TIMEOUT_SLACK,
    }
    rows = conn.execute(sql.CLAIM, {**params, "lease": lease, "now": now}).fetchall()
    if any(row[_ROW_CONCURRENCY_KEY] is not None for row in rows):
        rows = _within_concurrency_limits(conn, rows, now)
    if rate_limit is not None:
        conn.executemany(sql.RATE_RECORD, [(queue, now)] * len(rows))
    rows.sort(key=lambda r: (-r[3], r[4], r[0]))
    return rows


def _within_concurrency_limits(conn: sqlite3.Connection, rows: list[Any], now: float) -> list[Any]:
    """The claim counted running jobs before it ran; several jobs sharing a key in one
    claim may overshoot the limit. Put the excess back, uncounted, in claim order."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (-r[3], r[4], r[0])):
        if row[_ROW_CONCURRENCY_KEY] is not None:
            by_key[row[_ROW_CONCURRENCY_KEY]].append(row)
    released: set[int] = set()
    for key, group in by_key.items():
        running = conn.execute(sql.RUNNING_WITH_KEY, (key,)).fetchone()[0]
        others = running - len(group)
        kept = 0
        for row in group:
            if others + kept < row[_ROW_CONCURRENCY_LIMIT]:
                kept += 1
                continue
            conn.execute(sql.RELEASE, {"id": row[0], "token": row[_ROW_TOKEN], "now": now})
            released.add(row[0])
    return [row for row in rows if row[0] not in released]


def _resolve(conn: sqlite3.Connection, now: float) -> int:
    """Count waiting jobs down for their parents that finished (see ``_dependencies``)."""
    resolved = 0
    for _ in range(RESOLVE_ROUNDS):
        rows = conn.execute(sql.RESOLVABLE, (RESOLVE_STEP,)).fetchall()
        for parent, child, state in rows:
            conn.execute(sql.RESOLVED, (parent, child))
            params = {"parent": parent, "child": child, "parent_state": state}
            conn.execute(sql.RESOLVE_CHILD, {**params, "failed": state in FAILED, "now": now})
        resolved += len(rows)
        if len(rows) < RESOLVE_STEP:
            break
    return resolved


def _reap(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute(sql.REAP, {"now": now, "cap": BACKOFF_CAP}).rowcount


def _fire_schedules(conn: sqlite3.Connection, now: float) -> int:
    due = conn.execute(sql.DUE_SCHEDULES, (now,)).fetchall()
    for name, queue, payload, every, options, cron, tz in due:
        job = {**_SCHEDULE_DEFAULTS, **_decode_options(options), "payload": payload}
        _insert(conn, queue, job, now)
        later = next_slot(now, every) if cron is None else next_time(cron, tz, now)
        conn.execute(sql.SCHEDULE_FIRED, (later, name))
    return len(due)


#: Options that schedules declared by an older version did not store.
_SCHEDULE_DEFAULTS = {"timeout": None, "depends_on": None, "on_parent_failure": None}


def _decode_options(options: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(options)
    return value


def next_slot(now: float, every: float) -> float:
    """The start of the next period: periods are aligned to multiples of ``every``."""
    return (math.floor(now / every) + 1) * every


@jobs_ops.register
def jobs_heartbeat(
    conn: sqlite3.Connection,
    id: int,
    token: str,
    lease: float,
    progress: float | None = None,
    message: str | None = None,
) -> float | str | None:
    """Extend a lease and record progress; the new ``lease_until``, ``"cancelled"`` when
    the job's cancellation was asked for (it ends now), or ``None`` when the token no
    longer holds."""
    params = {"id": id, "token": token, "lease": lease, "progress": progress, "message": message}
    row = conn.execute(
        sql.HEARTBEAT, {**params, "now": time.time(), "slack": TIMEOUT_SLACK}
    ).fetchone()
    if row is None:
        return None
    return "cancelled" if row[1] == "cancelled" else float(row[0])


@jobs_ops.register
def jobs_complete(conn: sqlite3.Connection, items: str) -> list[list[Any]]:
    """Mark jobs done: ``items`` is a JSON array of ``[id, token, result_json]``. Returns
    the ``[id, token, state]`` of the pairs whose token still held: ``done``, or
    ``cancelled`` for a job whose cancellation was asked for meanwhile."""
    decoded = json.loads(items)
    if len(decoded) == 1:  # one job: a plain update, no JSON table
        [[job_id, token, result]] = decoded
        params = {"id": job_id, "token": token, "result": result, "now": time.time()}
        row = conn.execute(sql.COMPLETE_ONE, params).fetchone()
        return [] if row is None else [[job_id, token, row[0]]]
    held = [
        [row[0], row[1], "cancelled" if row[2] else "done"]
        for row in conn.execute(sql.COMPLETE_HELD, {"items": items})
    ]
    if held:
        conn.execute(sql.COMPLETE, {"items": items, "now": time.time()})
    return held


@jobs_ops.register
def jobs_cancel(conn: sqlite3.Connection, id: int) -> str | None:
    """Cancel a job: ``"cancelled"`` (it will not run), ``"cancelling"`` (running: its
    worker is told at its next heartbeat or completion), the state it had already
    finished in, or ``None`` when there is no such job."""
    row = conn.execute(sql.CANCEL, {"id": id, "now": time.time()}).fetchone()
    if row is None:
        return None
    state, requested = row
    return "cancelling" if state == "running" and requested else str(state)


@jobs_ops.register
def jobs_retry(conn: sqlite3.Connection, id: int) -> str | None:
    """Run a dead or cancelled job again with fresh attempts; its queue, or ``None`` when
    it is not dead or cancelled (or a live job holds its unique key)."""
    row = conn.execute(sql.RETRY, {"id": id, "now": time.time()}).fetchone()
    return None if row is None else str(row[0])


@jobs_ops.register
def jobs_configure(
    conn: sqlite3.Connection,
    queue: str,
    paused: bool | None,
    rate_limit: list[Any] | None,
    set_rate_limit: bool,
) -> list[Any]:
    """Pause or resume a queue, set or remove its rate limit (``[limit, period]``);
    its settings as ``[paused, rate_limit, rate_period]``."""
    conn.execute(sql.QUEUE_ROW, (queue,))
    if paused is not None:
        conn.execute(sql.PAUSE, (int(paused), queue))
    if set_rate_limit:
        limit, period = rate_limit if rate_limit is not None else (None, None)
        conn.execute(sql.SET_RATE_LIMIT, (limit, period, queue))
    return list(conn.execute(sql.QUEUE, {"queue": queue}).fetchone())


@jobs_ops.register
def jobs_fail(
    conn: sqlite3.Connection, id: int, token: str, error: str, retry: bool
) -> list[Any] | None:
    """Record a failed attempt: ``[state, run_at]`` (ready again later, or dead), or
    ``None`` when the token no longer holds."""
    params = {"id": id, "token": token, "error": error, "retry": retry}
    row = conn.execute(sql.FAIL, {**params, "now": time.time(), "cap": BACKOFF_CAP}).fetchone()
    return None if row is None else [row[0], row[1]]


@jobs_ops.register
def jobs_release(conn: sqlite3.Connection, items: list[list[Any]]) -> list[bool]:
    """Give ``[id, token]`` jobs back to the queue at once, the attempt not counted."""
    now = time.time()
    return [
        conn.execute(sql.RELEASE, {"id": i, "token": t, "now": now}).rowcount == 1 for i, t in items
    ]


@jobs_ops.register
def jobs_requeue_dead(conn: sqlite3.Connection, ids: str | None, queue: str | None) -> int:
    """Move dead letters (all, of ``queue``, or the ``ids`` JSON array) back to ready."""
    params = {"ids": ids, "queue": queue, "now": time.time()}
    return conn.execute(sql.REQUEUE_DEAD, params).rowcount


@jobs_ops.register
def jobs_purge(conn: sqlite3.Connection, queue: str | None, states: str) -> int:
    """Delete jobs in ``states`` (JSON array), of one queue or all."""
    return conn.execute(sql.PURGE, {"queue": queue, "states": states}).rowcount


@jobs_ops.register
def jobs_prune(conn: sqlite3.Connection, retention: float, limit: int) -> int:
    """Delete up to ``limit`` done jobs finished more than ``retention`` seconds ago."""
    params = {"before": time.time() - retention, "limit": limit}
    return conn.execute(sql.PRUNE, params).rowcount


@jobs_ops.register
def jobs_schedule(
    conn: sqlite3.Connection,
    name: str,
    queue: str,
    payload: str,
    every: float | None,
    options: str,
    cron: str | None = None,
    tz: str | None = None,
) -> float:
    """Declare (or update) a periodic job, fired every ``every`` seconds or when the
    ``cron`` expression says in time zone ``tz``; its next firing time. Declaring it
    again with the same period, from any instance, keeps its next firing time."""
    now = time.time()
    later = next_slot(now, every) if every is not None else next_time(cron or "", tz or "", now)
    params = {"name": name, "queue": queue, "payload": payload, "every": every}
    conn.execute(
        sql.SCHEDULE, {**params, "options": options, "next_at": later, "cron": cron, "tz": tz}
    )
    return float(conn.execute(sql.SCHEDULE_NEXT, (name,)).fetchone()[0])


@jobs_ops.register
def jobs_unschedule(conn: sqlite3.Connection, name: str) -> bool:
    """Remove a periodic job; whether it existed."""
    return conn.execute(sql.UNSCHEDULE, (name,)).rowcount == 1


@jobs_ops.register
def jobs_maintain(conn: sqlite3.Connection, retention: float, limit: int) -> dict[str, int]:
    """Housekeeping: expired leases, due periodic jobs, finished parents of waiting jobs,
    and a bounded prune."""
    now = time.time()
    reaped = _reap(conn, now)
    fired = _fire_schedules(conn, now)
    resolved = _resolve(conn, now)
    pruned = conn.execute(sql.PRUNE, {"before": now - retention, "limit": limit}).rowcount
    return {"reaped": reaped, "fired": fired, "resolved": resolved, "pruned": pruned}
