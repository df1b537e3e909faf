-- The job queue's tables, created idempotently by the jobs_setup op inside the writer's
-- transaction. Times are Unix seconds (UTC) taken from the writer's clock. This is the
-- schema at its current version (onewriter_jobs_schema); the op migrates older ones.

CREATE TABLE IF NOT EXISTS onewriter_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('waiting', 'ready', 'running', 'done', 'dead', 'cancelled')),
    priority INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    payload TEXT NOT NULL,
    requires TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff REAL NOT NULL,
    unique_key TEXT,
    concurrency_key TEXT,
    concurrency_limit INTEGER,
    token TEXT,
    worker TEXT,
    lease_until REAL,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    timeout REAL,
    progress REAL,
    message TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    depends_on TEXT,
    waiting_on INTEGER NOT NULL DEFAULT 0,
    on_parent_failure TEXT
);

-- The claim: equality on queue (state fixed by the partial index), then the claim order.
CREATE INDEX IF NOT EXISTS onewriter_jobs_ready
    ON onewriter_jobs (queue, priority DESC, run_at, id) WHERE state = 'ready';

-- Finding expired leases.
CREATE INDEX IF NOT EXISTS onewriter_jobs_leases
    ON onewriter_jobs (lease_until) WHERE state = 'running';

-- Counting running jobs per concurrency key.
CREATE INDEX IF NOT EXISTS onewriter_jobs_concurrency
    ON onewriter_jobs (concurrency_key) WHERE state = 'running' AND concurrency_key IS NOT NULL;

-- Idempotent enqueue: one unfinished job per (queue, unique_key).
CREATE UNIQUE INDEX IF NOT EXISTS onewriter_jobs_unique
    ON onewriter_jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('ready', 'running');

-- Pruning and throughput: finished jobs by time.
CREATE INDEX IF NOT EXISTS onewriter_jobs_finished
    ON onewriter_jobs (finished_at) WHERE state = 'done';

-- Dead letters, newest first.
CREATE INDEX IF NOT EXISTS onewriter_jobs_dead
    ON onewriter_jobs (queue, finished_at) WHERE state = 'dead';

-- Periodic jobs: each fires once per period (every seconds, or each time its cron
-- expression names in its time zone), whatever the number of service instances.
CREATE TABLE IF NOT EXISTS onewriter_job_schedules (
    name TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    every REAL CHECK (every > 0),
    options TEXT NOT NULL,
    next_at REAL NOT NULL,
    cron TEXT,
    tz TEXT,
    CHECK ((every IS NULL) <> (cron IS NULL))
);

-- Settings of queues that have any: paused (claims take nothing), rate limit.
CREATE TABLE IF NOT EXISTS onewriter_job_queues (
    queue TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    rate_limit INTEGER CHECK (rate_limit > 0),
    rate_period REAL CHECK (rate_period > 0)
);

-- A waiting job's parents that had not finished when it was enqueued. Each row goes once
-- its parent has finished (counted down in the child's waiting_on by housekeeping).
CREATE TABLE IF NOT EXISTS onewriter_job_deps (
    parent INTEGER NOT NULL,
    child INTEGER NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;

-- Claims of rate-limited queues within their period (a sliding window, exact).
CREATE TABLE IF NOT EXISTS onewriter_job_claims (
    queue TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS onewriter_job_claims_at ON onewriter_job_claims (queue, at);

-- The version of this schema: older databases are migrated by jobs_setup.
CREATE TABLE IF NOT EXISTS onewriter_jobs_schema (version INTEGER NOT NULL);
