"""The queue's SQL for PostgreSQL, as named statements. Values are always bound (psycopg's
``%(name)s`` placeholders), never formatted in.

Times come from the server's clock (``now()``, the start of the transaction), so every
service instance sharing the database judges leases and ``run_at`` by one clock. Claims,
reaping, firing schedules and pruning lock rows with ``FOR UPDATE SKIP LOCKED``: concurrent
transactions take disjoint rows instead of waiting on each other.
"""

from __future__ import annotations

from importlib.resources import files

SCHEMA = files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
#: Each later version's changes, applied in order (to new and older databases alike).
MIGRATIONS = {
    2: files(__package__).joinpath("schema_2.sql").read_text(encoding="utf-8"),
}

#: The notification channel; the payload is the queue's name.
CHANNEL = "onewriter_jobs"

#: Serialises schema creation across processes (an arbitrary constant key).
SETUP_LOCK = "SELECT pg_advisory_xact_lock(7305693514226391)"

#: The last object version 1 creates, and the table that holds later versions.
SCHEMA_PRESENT = """
SELECT to_regclass('onewriter_job_schedules') IS NOT NULL,
       to_regclass('onewriter_jobs_schema') IS NOT NULL
"""

SCHEMA_VERSION = "SELECT max(version) FROM onewriter_jobs_schema"

_NOW = "extract(epoch FROM now())::float8"


def _columns(alias: str) -> str:
    """The columns of a job, in the order :func:`onewriter.jobs.model.job_from_row` reads
    (capabilities as JSON text, like the SQLite store)."""
    names = [
        "id", "queue", "state", "priority", "run_at", "payload", "requires", "attempts",
        "max_attempts", "unique_key", "concurrency_key", "concurrency_limit", "token",
        "worker", "lease_until", "result", "error", "created_at", "started_at", "finished_at",
        "timeout", "progress", "message", "cancel_requested", "depends_on", "on_parent_failure",
    ]  # fmt: skip
    return ", ".join(
        f"to_json({alias}.{n})::text" if n in _ARRAYS else f"{alias}.{n}" for n in names
    )


#: Array columns, read as JSON text like the SQLite store's.
_ARRAYS = ("requires", "depends_on")


JOB_COLUMNS = _columns("j")

#: Exponential backoff with jitter: ``backoff * 2^(attempts-1)``, capped at ``%(cap)s``,
#: times a random factor in [0.75, 1.25). Reads the row's values before the update.
_BACKOFF = (
    "least(j.backoff * power(2::float8, greatest(least(j.attempts - 1, 30), 0)), %(cap)s)"
    " * (0.75 + random() * 0.5)"
)

_NOTIFY_EACH = "CROSS JOIN LATERAL (SELECT pg_notify('" + CHANNEL + "', changed.queue)) AS n"


#: Jobs of ``%(queue)s`` a worker with capabilities ``%(caps)s`` (a JSON array) may take
#: now.
_CANDIDATES = f"""
    FROM onewriter_jobs AS j
    WHERE j.queue = %(queue)s AND j.state = 'ready' AND j.run_at <= {_NOW}
      AND (j.requires IS NULL
           OR j.requires <@ ARRAY(SELECT json_array_elements_text(%(caps)s::json)))
      AND (j.concurrency_key IS NULL OR (
            SELECT count(*) FROM onewriter_jobs AS r
            WHERE r.concurrency_key = j.concurrency_key AND r.state = 'running'
          ) < j.concurrency_limit)
      AND NOT EXISTS (
            SELECT 1 FROM onewriter_job_queues AS q WHERE q.queue = %(queue)s AND q.paused)
"""

#: Claims waiting on the queue are notified (once per statement: the aggregate's one row).
_NOTIFY_QUEUE = f"pg_notify('{CHANNEL}', %(queue)s)"

#: One job, with a unique key: idempotent while a job with that key is unfinished. Its id,
#: or NULL when the key is taken.
ENQUEUE = f"""
WITH inserted AS (
    INSERT INTO onewriter_jobs (
        queue, state, priority, run_at, payload, requires, max_attempts, backoff,
        unique_key, concurrency_key, concurrency_limit, timeout, created_at,
        depends_on, waiting_on, on_parent_failure, error, finished_at)
    VALUES (
        %(queue)s, %(state)s, %(priority)s, coalesce(%(run_at)s, {_NOW} + %(delay)s),
        %(payload)s, %(requires)s, %(max_attempts)s, %(backoff)s, %(unique_key)s,
        %(concurrency_key)s, %(concurrency_limit)s, %(timeout)s, {_NOW},
        %(depends_on)s, %(waiting_on)s, %(on_parent_failure)s, %(error)s,
        CASE WHEN %(state)s = 'cancelled' THEN {_NOW} END)
    ON CONFLICT (queue, unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('ready', 'running') DO NOTHING
    RETURNING id)
SELECT max(id), {_NOTIFY_QUEUE} FROM inserted
"""

#: Many jobs sharing their options, one statement; their ids as an array. Identity values
#: are drawn in the order rows are produced (``ORDER BY n``), so sorted ids match the
#: payloads' order.
ENQUEUE_BULK = f"""
WITH inserted AS (
    INSERT INTO onewriter_jobs (
        queue, state, priority, run_at, payload, requires, max_attempts, backoff,
        concurrency_key, concurrency_limit, timeout, created_at)
    SELECT %(queue)s, 'ready', %(priority)s, coalesce(%(run_at)s, {_NOW} + %(delay)s),
        p.payload, %(requires)s, %(max_attempts)s, %(backoff)s, %(concurrency_key)s,
        %(concurrency_limit)s, %(timeout)s, {_NOW}
    FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY p.n
    RETURNING id)
SELECT array_agg(id ORDER BY id), {_NOTIFY_QUEUE} FROM inserted
"""

UNFINISHED_BY_KEY = """
SELECT id FROM onewriter_jobs
WHERE queue = %(queue)s AND unique_key = %(unique_key)s AND state IN ('ready', 'running')
"""

#: Pick in claim order, skipping rows other claims hold, then lease, count the attempt
#: and hand out fresh tokens.
CLAIM = f"""
WITH picked AS (
    SELECT j.id {_CANDIDATES}
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED)
UPDATE onewriter_jobs AS j
SET state = 'running', attempts = j.attempts + 1,
    token = replace(gen_random_uuid()::text, '-', ''),
    worker = %(worker)s, started_at = {_NOW}, progress = NULL, message = NULL,
    lease_until = CASE WHEN j.timeout IS NULL THEN {_NOW} + %(lease)s
                  ELSE least({_NOW} + %(lease)s, {_NOW} + j.timeout + %(slack)s) END
FROM picked WHERE j.id = picked.id
RETURNING {JOB_COLUMNS}
"""

#: The claim's inner query alone, for EXPLAIN and the long-poll check (no locks).
CLAIMABLE = f"SELECT j.id {_CANDIDATES} ORDER BY j.priority DESC, j.run_at, j.id LIMIT %(limit)s"

#: Serialises the recount of one concurrency key across transactions.
LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 7305693514226391))"

RUNNING_WITH_KEY = """
SELECT count(*) FROM onewriter_jobs WHERE concurrency_key = %(key)s AND state = 'running'
"""

#: Put back, uncounted, a job the claim took over its concurrency limit.
RELEASE = f"""
UPDATE onewriter_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,
    finished_at = CASE WHEN cancel_requested THEN {_NOW} END,
    attempts = greatest(attempts - 1, 0), token = NULL, lease_until = NULL,
    started_at = NULL, run_at = least(run_at, {_NOW})
WHERE id = %(id)s AND token = %(token)s AND state = 'running'
"""

#: Jobs a worker hands back (shutdown), uncounted; the ids that were held (those whose
#: cancellation was asked for end cancelled). Waiting claims of their queues are notified.
RELEASE_MANY = f"""
WITH changed AS (
    UPDATE onewriter_jobs AS j
    SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        finished_at = CASE WHEN j.cancel_requested THEN {_NOW} END,
        attempts = greatest(j.attempts - 1, 0), token = NULL,
        lease_until = NULL, started_at = NULL, run_at = least(j.run_at, {_NOW})
    FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS i(id, token)
    WHERE j.id = i.id AND j.token = i.token AND j.state = 'running'
    RETURNING j.id, j.queue)
SELECT changed.id FROM changed {_NOTIFY_EACH}
"""

#: Dependencies whose parent has finished (or is gone: pruned when done).
_FINISHED_PARENTS = """
    SELECT d.parent, d.child, coalesce(p.state, 'done') FROM onewriter_job_deps AS d
    LEFT JOIN onewriter_jobs AS p ON p.id = d.parent
    WHERE p.id IS NULL OR p.state IN ('done', 'dead', 'cancelled')
"""

#: Those rows, locked (another instance resolving some takes others).
RESOLVABLE = f"{_FINISHED_PARENTS} LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED"

RESOLVED = """
DELETE FROM onewriter_job_deps AS d
USING unnest(%(parents)s::bigint[], %(children)s::bigint[]) AS r(parent, child)
WHERE d.parent = r.parent AND d.child = r.child
"""

#: One parent of a waiting job finished: count it down; the job is ready once none is
#: left, or ends cancelled at once when the parent failed and it asked for that. An
#: update of the child's row: concurrent resolutions of one child take turns.
RESOLVE_CHILD = f"""
UPDATE onewriter_jobs AS j
SET waiting_on = j.waiting_on - 1,
    state = CASE WHEN %(failed)s AND j.on_parent_failure = 'cancel' THEN 'cancelled'
                 WHEN j.waiting_on <= 1 THEN 'ready' ELSE j.state END,
    finished_at = CASE WHEN %(failed)s AND j.on_parent_failure = 'cancel' THEN {_NOW} END,
    error = CASE WHEN %(failed)s AND j.on_parent_failure = 'cancel'
                 THEN 'parent job ' || %(parent)s || ' ended ' || %(parent_state)s
                 ELSE j.error END
WHERE j.id = %(child)s AND j.state = 'waiting'
"""

#: The parents a job names, with their states.
PARENT_STATES = "SELECT id, state FROM onewriter_jobs WHERE id = ANY(%(ids)s::bigint[])"

DEPEND = """
INSERT INTO onewriter_job_deps (parent, child)
SELECT unnest(%(parents)s::bigint[]), %(child)s ON CONFLICT DO NOTHING
"""

#: Housekeeping, in one statement; how many leases were reaped and schedules fired.
#:
#: Leases that ran out go back to ready after a backoff, or to the dead letters when the
#: attempt (counted at claim time) was the last. Rows another transaction holds (being
#: completed, or reaped by another instance) are left to it.
#:
#: Due periodic jobs: lock each schedule row (skipping those another instance is firing),
#: move it to its next period and insert its job.
HOUSEKEEPING = f"""
WITH expired AS (
    SELECT id FROM onewriter_jobs
    WHERE state = 'running' AND lease_until < {_NOW}
    FOR UPDATE SKIP LOCKED),
reaped AS (
    UPDATE onewriter_jobs AS j
    SET state = CASE WHEN j.cancel_requested THEN 'cancelled'
                     WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'ready' END,
        run_at = CASE WHEN j.cancel_requested OR j.attempts >= j.max_attempts THEN j.run_at
                 ELSE {_NOW} + {_BACKOFF} END,
        finished_at = CASE WHEN j.cancel_requested OR j.attempts >= j.max_attempts
                      THEN {_NOW} END,
        error = CASE WHEN j.timeout IS NOT NULL AND j.lease_until >= j.started_at + j.timeout
                     THEN 'timed out: ran past its timeout of ' || j.timeout || ' s on worker '
                     ELSE 'lease expired on worker ' END || coalesce(j.worker, '?'),
        token = NULL, lease_until = NULL
    FROM expired WHERE j.id = expired.id
    RETURNING j.id),
due AS (
    SELECT * FROM onewriter_job_schedules WHERE next_at <= {_NOW} AND every IS NOT NULL
    FOR UPDATE SKIP LOCKED),
moved AS (
    UPDATE onewriter_job_schedules AS s
    SET next_at = (floor({_NOW} / s.every) + 1) * s.every
    FROM due WHERE s.name = due.name),
fired AS (
    INSERT INTO onewriter_jobs (
        queue, state, priority, run_at, payload, requires, max_attempts, backoff,
        unique_key, concurrency_key, concurrency_limit, timeout, created_at)
    SELECT queue, 'ready', priority, coalesce(run_at, {_NOW} + delay), payload, requires,
        max_attempts, backoff, unique_key, concurrency_key, concurrency_limit, timeout, {_NOW}
    FROM due
    ON CONFLICT (queue, unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('ready', 'running') DO NOTHING)
SELECT (SELECT count(*) FROM reaped), (SELECT count(*) FROM due),
    (SELECT rate_limit FROM onewriter_job_queues WHERE queue = %(queue)s),
    EXISTS ({_FINISHED_PARENTS}),
    EXISTS (SELECT 1 FROM onewriter_job_schedules WHERE cron IS NOT NULL AND next_at <= {_NOW})
"""

#: Cron schedules due, locked (another instance firing some takes others), with the
#: server's time to compute their next firing from.
DUE_CRON = f"""
SELECT name, cron, tz, {_NOW} FROM onewriter_job_schedules
WHERE cron IS NOT NULL AND next_at <= {_NOW}
FOR UPDATE SKIP LOCKED
"""

#: Move a cron schedule on and insert its job, in one statement.
FIRE_CRON = f"""
WITH s AS (
    UPDATE onewriter_job_schedules SET next_at = %(next_at)s WHERE name = %(name)s
    RETURNING *)
INSERT INTO onewriter_jobs (
    queue, state, priority, run_at, payload, requires, max_attempts, backoff,
    unique_key, concurrency_key, concurrency_limit, timeout, created_at)
SELECT queue, 'ready', priority, coalesce(run_at, {_NOW} + delay), payload, requires,
    max_attempts, backoff, unique_key, concurrency_key, concurrency_limit, timeout, {_NOW}
FROM s
ON CONFLICT (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('ready', 'running') DO NOTHING
"""

SERVER_TIME = f"SELECT {_NOW}"

#: Extend the lease (never past the timeout's slack) and record progress; a job whose
#: cancellation was asked for ends cancelled instead (its worker is told so).
HEARTBEAT = f"""
UPDATE onewriter_jobs AS j
SET lease_until = CASE WHEN j.cancel_requested THEN NULL
                       WHEN j.timeout IS NULL THEN {_NOW} + %(lease)s
                       ELSE least({_NOW} + %(lease)s, j.started_at + j.timeout + %(slack)s) END,
    state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE j.state END,
    finished_at = CASE WHEN j.cancel_requested THEN {_NOW} END,
    token = CASE WHEN j.cancel_requested THEN NULL ELSE j.token END,
    progress = coalesce(%(progress)s, j.progress), message = coalesce(%(message)s, j.message)
WHERE j.id = %(id)s AND j.token = %(token)s AND j.state = 'running'
RETURNING j.lease_until, j.state
"""

#: ``ids``, ``tokens`` and ``results`` side by side; the ``(id, token)`` pairs that held,
#: with their state (``cancelled`` for a job whose cancellation was asked for meanwhile).
COMPLETE = f"""
UPDATE onewriter_jobs AS j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'done' END,
    result = CASE WHEN j.cancel_requested THEN NULL ELSE i.result END,
    finished_at = {_NOW}, token = NULL, lease_until = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(results)s::text[]) AS i(id, token, result)
WHERE j.id = i.id AND j.token = i.token AND j.state = 'running'
RETURNING j.id, i.token, j.state
"""

FAIL = f"""
UPDATE onewriter_jobs AS j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled'
                 WHEN %(retry)s AND j.attempts < j.max_attempts THEN 'ready' ELSE 'dead' END,
    run_at = CASE WHEN %(retry)s AND j.attempts < j.max_attempts AND NOT j.cancel_requested
             THEN {_NOW} + {_BACKOFF} ELSE j.run_at END,
    finished_at = CASE WHEN %(retry)s AND j.attempts < j.max_attempts
                       AND NOT j.cancel_requested THEN NULL ELSE {_NOW} END,
    error = %(error)s, token = NULL, lease_until = NULL
WHERE j.id = %(id)s AND j.token = %(token)s AND j.state = 'running'
RETURNING j.state, j.run_at
"""

#: Dead letters back to ready with fresh attempts. A dead job whose unique key a live job
#: holds stays dead, and of several dead jobs sharing a key only the oldest moves (as the
#: SQLite store's ``UPDATE OR IGNORE`` does).
REQUEUE_DEAD = f"""
WITH changed AS (
    UPDATE onewriter_jobs AS j
    SET state = 'ready', attempts = 0, run_at = {_NOW}, finished_at = NULL, token = NULL,
        lease_until = NULL, cancel_requested = false
    WHERE j.state = 'dead'
      AND (%(ids)s::bigint[] IS NULL OR j.id = ANY(%(ids)s::bigint[]))
      AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
      AND (j.unique_key IS NULL OR (
            NOT EXISTS (
                SELECT 1 FROM onewriter_jobs AS l
                WHERE l.queue = j.queue AND l.unique_key = j.unique_key
                  AND l.state IN ('ready', 'running'))
            AND j.id = (
                SELECT min(d.id) FROM onewriter_jobs AS d
                WHERE d.queue = j.queue AND d.unique_key = j.unique_key AND d.state = 'dead'
                  AND (%(ids)s::bigint[] IS NULL OR d.id = ANY(%(ids)s::bigint[])))))
    RETURNING j.queue)
SELECT count(*) FROM changed {_NOTIFY_EACH}
"""

#: Cancel a job: a ready (or delayed) one at once; a running one when its worker next
#: heartbeats, completes or fails (or its lease ends). Its state and whether it waits for
#: its worker; no row for no job.
CANCEL = f"""
UPDATE onewriter_jobs AS j
SET state = CASE WHEN j.state IN ('ready', 'waiting') THEN 'cancelled' ELSE j.state END,
    finished_at = CASE WHEN j.state IN ('ready', 'waiting') THEN {_NOW} ELSE j.finished_at END,
    cancel_requested = j.cancel_requested OR j.state IN ('ready', 'waiting', 'running')
WHERE j.id = %(id)s
RETURNING j.state, j.cancel_requested
"""

#: Change a queue's settings (``set_rate`` false: its rate limit stays); the settings.
CONFIGURE = """
INSERT INTO onewriter_job_queues AS q (queue, paused, rate_limit, rate_period)
VALUES (%(queue)s, coalesce(%(paused)s, false), %(limit)s, %(period)s)
ON CONFLICT (queue) DO UPDATE SET
    paused = coalesce(%(paused)s, q.paused),
    rate_limit = CASE WHEN %(set_rate)s THEN excluded.rate_limit ELSE q.rate_limit END,
    rate_period = CASE WHEN %(set_rate)s THEN excluded.rate_period ELSE q.rate_period END
RETURNING paused, rate_limit, rate_period
"""

#: The rate limit, its row locked: claims of a rate-limited queue take turns, so the
#: count below and the claims recorded after it are exact across instances.
LOCK_RATE = """
SELECT rate_limit, rate_period FROM onewriter_job_queues WHERE queue = %(queue)s FOR UPDATE
"""

_CLOCK = "extract(epoch FROM clock_timestamp())::float8"

#: Forget claims that left the window and count those in it (the clock read after the
#: lock: ``now()`` is the transaction's start, which may be before it).
RATE_USED = f"""
WITH forgotten AS (
    DELETE FROM onewriter_job_claims WHERE queue = %(queue)s AND at <= {_CLOCK} - %(period)s)
SELECT count(*) FROM onewriter_job_claims WHERE queue = %(queue)s AND at > {_CLOCK} - %(period)s
"""

RATE_RECORD = f"""
INSERT INTO onewriter_job_claims (queue, at)
SELECT %(queue)s, {_CLOCK} FROM generate_series(1, %(n)s)
"""

#: Run a dead or cancelled job again, with fresh attempts (not while a live job holds its
#: unique key); its queue is notified.
RETRY = f"""
WITH changed AS (
    UPDATE onewriter_jobs AS j
    SET state = 'ready', attempts = 0, run_at = {_NOW}, finished_at = NULL, token = NULL,
        lease_until = NULL, cancel_requested = false, progress = NULL, message = NULL
    WHERE j.id = %(id)s AND j.state IN ('dead', 'cancelled')
      AND (j.unique_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM onewriter_jobs AS l
            WHERE l.queue = j.queue AND l.unique_key = j.unique_key
              AND l.state IN ('ready', 'running')))
    RETURNING j.queue)
SELECT changed.queue FROM changed {_NOTIFY_EACH}
"""

PURGE = """
DELETE FROM onewriter_jobs
WHERE state = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
"""

PRUNE = f"""
DELETE FROM onewriter_jobs WHERE id IN (
    SELECT id FROM onewriter_jobs
    WHERE state = 'done' AND finished_at < {_NOW} - %(retention)s
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
"""

#: Declaring a schedule again with the same period keeps its next firing time.
SCHEDULE = f"""
INSERT INTO onewriter_job_schedules AS s (
    name, queue, payload, every, priority, delay, run_at, requires, max_attempts, backoff,
    unique_key, concurrency_key, concurrency_limit, timeout, cron, tz, next_at)
VALUES (
    %(name)s, %(queue)s, %(payload)s, %(every)s, %(priority)s, %(delay)s, %(run_at)s,
    %(requires)s, %(max_attempts)s, %(backoff)s, %(unique_key)s, %(concurrency_key)s,
    %(concurrency_limit)s, %(timeout)s, %(cron)s, %(tz)s,
    coalesce(%(next_at)s, (floor({_NOW} / %(every)s) + 1) * %(every)s))
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue, payload = excluded.payload, priority = excluded.priority,
    delay = excluded.delay, run_at = excluded.run_at, requires = excluded.requires,
    max_attempts = excluded.max_attempts, backoff = excluded.backoff,
    unique_key = excluded.unique_key, concurrency_key = excluded.concurrency_key,
    concurrency_limit = excluded.concurrency_limit, timeout = excluded.timeout,
    next_at = CASE WHEN s.every IS NOT DISTINCT FROM excluded.every
                    AND s.cron IS NOT DISTINCT FROM excluded.cron
                    AND s.tz IS NOT DISTINCT FROM excluded.tz
              THEN s.next_at ELSE excluded.next_at END,
    every = excluded.every, cron = excluded.cron, tz = excluded.tz
RETURNING next_at
"""

UNSCHEDULE = "DELETE FROM onewriter_job_schedules WHERE name = %(name)s"

# -- reads ---------------------------------------------------------------------------------

GET = f"SELECT {JOB_COLUMNS} FROM onewriter_jobs AS j WHERE j.id = %(id)s"

DEAD_LETTERS = f"""
SELECT {JOB_COLUMNS} FROM onewriter_jobs AS j
WHERE j.state = 'dead' AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
ORDER BY j.finished_at DESC, j.id DESC LIMIT %(limit)s
"""

RECENT = f"SELECT {JOB_COLUMNS} FROM onewriter_jobs AS j ORDER BY j.id DESC LIMIT %(limit)s"

COUNTS = "SELECT queue, state, count(*) FROM onewriter_jobs GROUP BY queue, state"

OLDEST_READY = """
SELECT queue, min(run_at) FROM onewriter_jobs
WHERE state = 'ready' AND run_at <= %(now)s GROUP BY queue
"""

DONE_SINCE = """
SELECT queue, count(*) FROM onewriter_jobs
WHERE state = 'done' AND finished_at >= %(since)s GROUP BY queue
"""

DONE_PER_MINUTE = """
SELECT floor((finished_at - %(since)s) / 60)::int AS minute, count(*)
FROM onewriter_jobs WHERE state = 'done' AND finished_at >= %(since)s GROUP BY minute
"""

QUEUE = """
SELECT paused, rate_limit, rate_period FROM onewriter_job_queues WHERE queue = %(queue)s
"""

QUEUES = "SELECT queue, paused, rate_limit, rate_period FROM onewriter_job_queues"

EXISTING = """
SELECT id FROM onewriter_jobs
WHERE id IN (SELECT json_array_elements_text(%(ids)s::json)::bigint)
"""
