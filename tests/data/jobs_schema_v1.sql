-- The job queue's SQLite schema at version 1 (before cancellation, timeouts, progress and
-- queue settings), kept to test the migration of databases made by that release.

CREATE TABLE IF NOT EXISTS onewriter_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ready', 'running', 'done', 'dead')),
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
    finished_at REAL
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

-- Periodic jobs: each fires once per period, whatever the number of service instances.
CREATE TABLE IF NOT EXISTS onewriter_job_schedules (
    name TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    every REAL NOT NULL CHECK (every > 0),
    options TEXT NOT NULL,
    next_at REAL NOT NULL
);
