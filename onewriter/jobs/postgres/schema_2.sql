-- Version 2 of the job queue's schema on PostgreSQL, applied after _pg_schema.sql (version
-- 1) to a new database and to one made by an older release alike: cancellation, timeouts,
-- progress, and queue settings (pause, rate limit).

ALTER TABLE onewriter_jobs DROP CONSTRAINT IF EXISTS onewriter_jobs_state_check;

ALTER TABLE onewriter_jobs ADD CONSTRAINT onewriter_jobs_state_check
    CHECK (state IN ('waiting', 'ready', 'running', 'done', 'dead', 'cancelled'));

ALTER TABLE onewriter_jobs
    ADD COLUMN IF NOT EXISTS timeout DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS progress DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS message TEXT,
    ADD COLUMN IF NOT EXISTS cancel_requested BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS depends_on BIGINT[],
    ADD COLUMN IF NOT EXISTS waiting_on BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS on_parent_failure TEXT;

ALTER TABLE onewriter_job_schedules
    ADD COLUMN IF NOT EXISTS timeout DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS cron TEXT,
    ADD COLUMN IF NOT EXISTS tz TEXT,
    ALTER COLUMN every DROP NOT NULL,
    ADD CONSTRAINT onewriter_job_schedules_period CHECK ((every IS NULL) <> (cron IS NULL));

-- Settings of queues that have any: paused (claims take nothing), rate limit.
CREATE TABLE IF NOT EXISTS onewriter_job_queues (
    queue TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT false,
    rate_limit BIGINT CHECK (rate_limit > 0),
    rate_period DOUBLE PRECISION CHECK (rate_period > 0)
);

-- A waiting job's parents that had not finished when it was enqueued. Each row goes once
-- its parent has finished (counted down in the child's waiting_on by housekeeping).
CREATE TABLE IF NOT EXISTS onewriter_job_deps (
    parent BIGINT NOT NULL,
    child BIGINT NOT NULL,
    PRIMARY KEY (parent, child)
);

-- Claims of rate-limited queues within their period (a sliding window, exact: counted
-- and recorded under the lock of the queue's settings row).
CREATE TABLE IF NOT EXISTS onewriter_job_claims (
    queue TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);

CREATE INDEX IF NOT EXISTS onewriter_job_claims_at ON onewriter_job_claims (queue, at);

CREATE TABLE IF NOT EXISTS onewriter_jobs_schema (version INTEGER NOT NULL);

INSERT INTO onewriter_jobs_schema (version) VALUES (2);
