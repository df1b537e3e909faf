"""The queue's SQL, as named statements. Values are always bound, never formatted in.

Times are Unix seconds from the writer's clock (``:now`` is bound by the op that runs on
the writer), so leases and ``run_at`` are judged by one clock only.
"""

from __future__ import annotations

from importlib.resources import files

SCHEMA = files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")

#: The columns of a job, in the order :func:`onewriter.jobs.model.job_from_row` reads.
JOB_COLUMNS = (
    "id, queue, state, priority, run_at, payload, requires, attempts, max_attempts, "
    "unique_key, concurrency_key, concurrency_limit, token, worker, lease_until, result, "
    "error, created_at, started_at, finished_at, timeout, progress, message, cancel_requested, "
    "depends_on, on_parent_failure"
)

#: Exponential backoff with jitter: ``backoff * 2^(attempts-1)``, capped at ``:cap``,
#: times a random factor in [0.75, 1.25). Reads the row's values before the update.
_BACKOFF = (
    "min(backoff * (1 << max(min(attempts - 1, 30), 0)), :cap)"
    " * (0.75 + (random() & 1048575) / 2097152.0)"
)

#: Jobs of ``:queue`` a worker with capabilities ``:caps`` (a JSON array) may take now.
_CANDIDATES = """
    FROM onewriter_jobs AS j
    WHERE j.queue = :queue AND j.state = 'ready' AND j.run_at <= :now
      AND (j.requires IS NULL OR NOT EXISTS (
            SELECT 1 FROM json_each(j.requires)
            WHERE value NOT IN (SELECT value FROM json_each(:caps))))
      AND (j.concurrency_key IS NULL OR (
            SELECT count(*) FROM onewriter_jobs AS r
            WHERE r.concurrency_key = j.concurrency_key AND r.state = 'running'
          ) < j.concurrency_limit)
      AND NOT EXISTS (
            SELECT 1 FROM onewriter_job_queues AS q WHERE q.queue = :queue AND q.paused)
"""

#: A lease ends at ``now + lease``, and no later than ``:slack`` past the job's timeout.
_LEASE_END = (
    "CASE WHEN timeout IS NULL THEN :now + :lease"
    " ELSE min(:now + :lease, coalesce(started_at, :now) + timeout + :slack) END"
)

#: One job, with a unique key (idempotent while a job with that key is unfinished) or
#: parents (``:state`` is ``waiting`` until they finish, ``:waiting_on`` of them).
ENQUEUE = """
INSERT INTO onewriter_jobs (
    queue, state, priority, run_at, payload, requires, max_attempts, backoff,
    unique_key, concurrency_key, concurrency_limit, timeout, created_at,
    depends_on, waiting_on, on_parent_failure, error, finished_at)
VALUES (
    :queue, :state, :priority, coalesce(:run_at, :now + :delay), :payload, :requires,
    :max_attempts, :backoff, :unique_key, :concurrency_key, :concurrency_limit, :timeout,
    :now, :depends_on, :waiting_on, :on_parent_failure, :error,
    CASE WHEN :state = 'cancelled' THEN :now END)
ON CONFLICT (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('ready', 'running') DO NOTHING
RETURNING id
"""

#: Many jobs sharing their options, one statement: ``:payloads`` is a JSON array of
#: payload texts. Ids grow with insertion order (AUTOINCREMENT), so sorted ids match
#: the array's order.
ENQUEUE_BULK = """
INSERT INTO onewriter_jobs (
    queue, state, priority, run_at, payload, requires, max_attempts, backoff,
    concurrency_key, concurrency_limit, timeout, created_at)
SELECT :queue, 'ready', :priority, coalesce(:run_at, :now + :delay), p.value, :requires,
    :max_attempts, :backoff, :concurrency_key, :concurrency_limit, :timeout, :now
FROM json_each(:payloads) AS p ORDER BY p.key
RETURNING id
"""

#: One job of default shape (no unique key, no parents): what ``ENQUEUE_BULK`` does for
#: one payload, without the JSON table.
ENQUEUE_ONE = """
INSERT INTO onewriter_jobs (
    queue, state, priority, run_at, payload, requires, max_attempts, backoff,
    concurrency_key, concurrency_limit, timeout, created_at)
VALUES (:queue, 'ready', :priority, coalesce(:run_at, :now + :delay), :payload, :requires,
    :max_attempts, :backoff, :concurrency_key, :concurrency_limit, :timeout, :now)
RETURNING id
"""

UNFINISHED_BY_KEY = """
SELECT id FROM onewriter_jobs
WHERE queue = ? AND unique_key = ? AND state IN ('ready', 'running')
"""

#: One atomic statement: pick in claim order, lease, count the attempt, hand out tokens.
CLAIM = f"""
UPDATE onewriter_jobs
SET state = 'running', attempts = attempts + 1, token = lower(hex(randomblob(16))),
    worker = :worker, started_at = :now, progress = NULL, message = NULL,
    lease_until = CASE WHEN timeout IS NULL THEN :now + :lease
                  ELSE min(:now + :lease, :now + timeout + :slack) END
WHERE id IN (
    SELECT j.id {_CANDIDATES}
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT :limit)
RETURNING {JOB_COLUMNS}
"""

#: The claim's inner query alone, for EXPLAIN QUERY PLAN and the long-poll check.
CLAIMABLE = f"SELECT j.id {_CANDIDATES} ORDER BY j.priority DESC, j.run_at, j.id LIMIT :limit"

RUNNING_WITH_KEY = """
SELECT count(*) FROM onewriter_jobs WHERE concurrency_key = ? AND state = 'running'
"""

#: Put back, uncounted, a job the claim took over its concurrency limit or a worker
#: released on shutdown (one whose cancellation was asked for ends cancelled).
RELEASE = """
UPDATE onewriter_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,
    finished_at = CASE WHEN cancel_requested THEN :now END,
    attempts = max(attempts - 1, 0), token = NULL, lease_until = NULL,
    started_at = NULL, run_at = min(run_at, :now)
WHERE id = :id AND token = :token AND state = 'running'
"""

#: Leases that ran out go back to ready after a backoff, or to the dead letters when the
#: attempt (counted at claim time) was the last, or end cancelled when that was asked for.
#: A lease cut short by the job's timeout says so.
REAP = f"""
UPDATE onewriter_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN attempts >= max_attempts THEN 'dead' ELSE 'ready' END,
    run_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN run_at
             ELSE :now + {_BACKOFF} END,
    finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN :now END,
    error = CASE WHEN timeout IS NOT NULL AND lease_until >= started_at + timeout
                 THEN 'timed out: ran past its timeout of ' || timeout || ' s on worker '
                 ELSE 'lease expired on worker ' END || coalesce(worker, '?'),
    token = NULL, lease_until = NULL
WHERE state = 'running' AND lease_until < :now
"""

#: Extend the lease and record progress; a job whose cancellation was asked for ends
#: cancelled instead (its worker is told so).
HEARTBEAT = f"""
UPDATE onewriter_jobs
SET lease_until = CASE WHEN cancel_requested THEN NULL ELSE {_LEASE_END} END,
    state = CASE WHEN cancel_requested THEN 'cancelled' ELSE state END,
    finished_at = CASE WHEN cancel_requested THEN :now END,
    token = CASE WHEN cancel_requested THEN NULL ELSE token END,
    progress = coalesce(:progress, progress), message = coalesce(:message, message)
WHERE id = :id AND token = :token AND state = 'running'
RETURNING lease_until, state
"""

#: The ``[id, token]`` pairs of ``:items`` whose token holds its running job, and whether
#: its cancellation was asked for (read before :data:`COMPLETE`, which cannot return its
#: ``FROM`` table's token).
COMPLETE_HELD = """
SELECT DISTINCT j.id, j.token, j.cancel_requested
FROM json_each(:items) AS i
JOIN onewriter_jobs AS j
  ON j.id = json_extract(i.value, '$[0]')
  AND j.token = json_extract(i.value, '$[1]')
  AND j.state = 'running'
"""

#: One job's completion (what ``COMPLETE_HELD`` and ``COMPLETE`` do for one item): its
#: state after, or no row when the token no longer holds.
COMPLETE_ONE = """
UPDATE onewriter_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'done' END,
    result = CASE WHEN cancel_requested THEN NULL ELSE :result END,
    finished_at = :now, token = NULL, lease_until = NULL
WHERE id = :id AND token = :token AND state = 'running'
RETURNING state
"""

#: ``:items`` is a JSON array of ``[id, token, result_text]``; a job whose cancellation
#: was asked for meanwhile ends cancelled, its result dropped.
COMPLETE = """
UPDATE onewriter_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'done' END,
    result = CASE WHEN cancel_requested THEN NULL ELSE json_extract(i.value, '$[2]') END,
    finished_at = :now, token = NULL, lease_until = NULL
FROM json_each(:items) AS i
WHERE onewriter_jobs.id = json_extract(i.value, '$[0]')
  AND onewriter_jobs.token = json_extract(i.value, '$[1]')
  AND onewriter_jobs.state = 'running'
"""

FAIL = f"""
UPDATE onewriter_jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN :retry AND attempts < max_attempts THEN 'ready' ELSE 'dead' END,
    run_at = CASE WHEN :retry AND attempts < max_attempts AND NOT cancel_requested
             THEN :now + {_BACKOFF} ELSE run_at END,
    finished_at = CASE WHEN :retry AND attempts < max_attempts AND NOT cancel_requested
                  THEN NULL ELSE :now END,
    error = :error, token = NULL, lease_until = NULL
WHERE id = :id AND token = :token AND state = 'running'
RETURNING state, run_at
"""

#: ``UPDATE OR IGNORE``: a dead job whose unique key is taken again by a live job stays dead.
REQUEUE_DEAD = """
UPDATE OR IGNORE onewriter_jobs
SET state = 'ready', attempts = 0, run_at = :now, finished_at = NULL, token = NULL,
    lease_until = NULL, cancel_requested = 0
WHERE state = 'dead'
  AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
  AND (:queue IS NULL OR queue = :queue)
"""

#: Cancel a job: a ready (or delayed) one at once; a running one when its worker next
#: heartbeats, completes or fails (or its lease ends). Its state and whether it waits
#: for its worker; no row for no job.
CANCEL = """
UPDATE onewriter_jobs
SET state = CASE WHEN state IN ('ready', 'waiting') THEN 'cancelled' ELSE state END,
    finished_at = CASE WHEN state IN ('ready', 'waiting') THEN :now ELSE finished_at END,
    cancel_requested = CASE WHEN state IN ('ready', 'waiting', 'running') THEN 1
                       ELSE cancel_requested END
WHERE id = :id
RETURNING state, cancel_requested
"""

#: Run a dead or cancelled job again, with fresh attempts (``OR IGNORE``: not while a live
#: job holds its unique key).
RETRY = """
UPDATE OR IGNORE onewriter_jobs
SET state = 'ready', attempts = 0, run_at = :now, finished_at = NULL, token = NULL,
    lease_until = NULL, cancel_requested = 0, progress = NULL, message = NULL
WHERE id = :id AND state IN ('dead', 'cancelled')
RETURNING queue
"""

PURGE = """
DELETE FROM onewriter_jobs
WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)
"""

PRUNE = """
DELETE FROM onewriter_jobs WHERE id IN (
    SELECT id FROM onewriter_jobs WHERE state = 'done' AND finished_at < :before LIMIT :limit)
"""

#: Declaring a schedule again with the same period keeps its next firing time.
SCHEDULE = """
INSERT INTO onewriter_job_schedules (name, queue, payload, every, options, next_at, cron, tz)
VALUES (:name, :queue, :payload, :every, :options, :next_at, :cron, :tz)
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue, payload = excluded.payload, options = excluded.options,
    next_at = CASE WHEN every IS excluded.every AND cron IS excluded.cron AND tz IS excluded.tz
              THEN next_at ELSE excluded.next_at END,
    every = excluded.every, cron = excluded.cron, tz = excluded.tz
"""

SCHEDULE_NEXT = "SELECT next_at FROM onewriter_job_schedules WHERE name = ?"

UNSCHEDULE = "DELETE FROM onewriter_job_schedules WHERE name = ?"

DUE_SCHEDULES = """
SELECT name, queue, payload, every, options, cron, tz FROM onewriter_job_schedules
WHERE next_at <= ?
"""

SCHEDULE_FIRED = "UPDATE onewriter_job_schedules SET next_at = ? WHERE name = ?"


#: The parents a job names, with their states (missing ones were pruned: done).
PARENT_STATES = "SELECT id, state FROM onewriter_jobs WHERE id IN (SELECT value FROM json_each(?))"

DEPEND = (
    "INSERT OR IGNORE INTO onewriter_job_deps (parent, child) SELECT value, ? FROM json_each(?)"
)

#: Dependencies whose parent has finished (or is gone: pruned when done).
RESOLVABLE = """
SELECT d.parent, d.child, coalesce(p.state, 'done') FROM onewriter_job_deps AS d
LEFT JOIN onewriter_jobs AS p ON p.id = d.parent
WHERE p.id IS NULL OR p.state IN ('done', 'dead', 'cancelled')
LIMIT ?
"""

RESOLVED = "DELETE FROM onewriter_job_deps WHERE parent = ? AND child = ?"

#: One parent of a waiting job finished: count it down; the job is ready once none is
#: left, or ends cancelled at once when the parent failed and it asked for that.
RESOLVE_CHILD = """
UPDATE onewriter_jobs
SET waiting_on = waiting_on - 1,
    state = CASE WHEN :failed AND on_parent_failure = 'cancel' THEN 'cancelled'
                 WHEN waiting_on <= 1 THEN 'ready' ELSE state END,
    finished_at = CASE WHEN :failed AND on_parent_failure = 'cancel' THEN :now END,
    error = CASE WHEN :failed AND on_parent_failure = 'cancel'
                 THEN 'parent job ' || :parent || ' ended ' || :parent_state ELSE error END
WHERE id = :child AND state = 'waiting'
"""

#: A queue's settings row (created on first use by ``PAUSE`` or ``RATE_LIMIT``).
QUEUE_ROW = "INSERT INTO onewriter_job_queues (queue) VALUES (?) ON CONFLICT (queue) DO NOTHING"

PAUSE = "UPDATE onewriter_job_queues SET paused = ? WHERE queue = ?"

SET_RATE_LIMIT = "UPDATE onewriter_job_queues SET rate_limit = ?, rate_period = ? WHERE queue = ?"

#: What a claim has to do before it claims: expired leases, due schedules, dependencies
#: (any: their parents are checked by ``RESOLVABLE``), and the queue's rate limit.
CLAIM_PROBE = """
SELECT
    EXISTS (SELECT 1 FROM onewriter_jobs WHERE state = 'running' AND lease_until < :now),
    EXISTS (SELECT 1 FROM onewriter_job_schedules WHERE next_at <= :now),
    EXISTS (SELECT 1 FROM onewriter_job_deps),
    q.rate_limit, q.rate_period
FROM (SELECT 1) LEFT JOIN onewriter_job_queues AS q ON q.queue = :queue
"""

#: Forget claims that left the window; count those in it; record new ones.
RATE_FORGET = "DELETE FROM onewriter_job_claims WHERE queue = ? AND at <= ?"
RATE_USED = "SELECT count(*) FROM onewriter_job_claims WHERE queue = ? AND at > ?"
RATE_RECORD = "INSERT INTO onewriter_job_claims (queue, at) VALUES (?, ?)"

SCHEMA_VERSION = "SELECT max(version) FROM onewriter_jobs_schema"
SET_SCHEMA_VERSION = "INSERT INTO onewriter_jobs_schema (version) VALUES (?)"
TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
INDEXES_OF_JOBS = """
SELECT name FROM sqlite_master
WHERE type = 'index' AND tbl_name = 'onewriter_jobs' AND sql IS NOT NULL
"""

# -- reads ---------------------------------------------------------------------------------

GET = f"SELECT {JOB_COLUMNS} FROM onewriter_jobs WHERE id = :id"

DEAD_LETTERS = f"""
SELECT {JOB_COLUMNS} FROM onewriter_jobs
WHERE state = 'dead' AND (:queue IS NULL OR queue = :queue)
ORDER BY finished_at DESC, id DESC LIMIT :limit
"""

RECENT = f"SELECT {JOB_COLUMNS} FROM onewriter_jobs ORDER BY id DESC LIMIT :limit"

COUNTS = "SELECT queue, state, count(*) FROM onewriter_jobs GROUP BY queue, state"

OLDEST_READY = """
SELECT queue, min(run_at) FROM onewriter_jobs
WHERE state = 'ready' AND run_at <= :now GROUP BY queue
"""

DONE_SINCE = """
SELECT queue, count(*) FROM onewriter_jobs
WHERE state = 'done' AND finished_at >= :since GROUP BY queue
"""

DONE_PER_MINUTE = """
SELECT CAST((finished_at - :since) / 60 AS INTEGER) AS minute, count(*)
FROM onewriter_jobs WHERE state = 'done' AND finished_at >= :since GROUP BY minute
"""

QUEUE = "SELECT paused, rate_limit, rate_period FROM onewriter_job_queues WHERE queue = :queue"

QUEUES = "SELECT queue, paused, rate_limit, rate_period FROM onewriter_job_queues"

EXISTING = "SELECT id FROM onewriter_jobs WHERE id IN (SELECT value FROM json_each(:ids))"
