"""Two instances of the HTTP service (the real CLI, ``--store postgresql://...``) sharing
one PostgreSQL: the scale-out path. Jobs enqueued through one are claimed, expired,
completed and waited for through the other, each exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import ONEWRITER_CLI, PYTHON, Child
from http_inputs import check_bad_inputs
from pg_server import PostgresServer
from pg_server import postgres as postgres  # the fixture, for pytest
from test_jobs_http import CLAIMER

PRODUCER = "producer-secret"
WORKER = "worker-secret"
CLAIMERS = 10
JOBS = 300


class Instance:
    """One ``onewriter jobs serve`` and clients with each role's token."""

    def __init__(self, child: Child, ready: dict[str, Any]) -> None:
        self.child = child
        self.ready = ready
        self.url: str = ready["url"]
        self.producer = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {PRODUCER}"}, timeout=30
        )
        self.worker = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {WORKER}"}, timeout=30
        )

    def enqueue(self, queue: str, **job: Any) -> int:
        response = self.producer.post(f"/queues/{queue}/jobs", json=job)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def claim(self, queue: str, **body: Any) -> list[dict[str, Any]]:
        response = self.worker.post(f"/queues/{queue}/claim", json=body)
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    def close(self) -> None:
        self.producer.close()
        self.worker.close()


class Shared:
    def __init__(self, url: str, instances: list[Instance]) -> None:
        self.url = url
        self.instances = instances

    def rows(self, sql: str) -> list[Any]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def shared(postgres: PostgresServer) -> Iterator[Shared]:
    url = postgres.fresh_url()
    command = [
        ONEWRITER_CLI, "jobs", "serve", "--store", url, "--port", "0", "--workers", "1",
        "--producer-token", PRODUCER, "--worker-token", WORKER, "--pool-size", "4",
    ]  # fmt: skip
    children = [Child(command), Child(command)]
    instances: list[Instance] = []
    try:
        for child in children:
            ready = json.loads(child.wait_line("READY ", timeout=60)[len("READY ") :])
            instances.append(Instance(child, ready))
        yield Shared(url, instances)
    finally:
        for instance in instances:
            instance.close()
        for child in children:
            child.stop()
    for child in children:
        assert child.proc.returncode == 0, child.describe()


def test_exactly_once_completion_with_claimers_on_both_instances(shared: Shared) -> None:
    first, second = shared.instances
    response = first.producer.post(
        "/queues/race/jobs", json={"jobs": [{"payload": i} for i in range(JOBS)]}
    )
    assert response.status_code == 201
    ids = {job["id"] for job in response.json()["jobs"]}
    claimers = [
        Child([PYTHON, "-c", CLAIMER, shared.instances[i % 2].url, "race", WORKER])
        for i in range(CLAIMERS)
    ]
    try:
        for claimer in claimers:
            claimer.wait_line("WAITING", timeout=30)
        for claimer in claimers:
            claimer.send("GO")
        reports = [json.loads(c.wait_line("DONE ", timeout=90)[5:]) for c in claimers]
    finally:
        for claimer in claimers:
            claimer.stop()
    completed = [job_id for report in reports for job_id in report["completed"]]
    assert len(completed) == len(set(completed)) == JOBS
    assert set(completed) == ids
    assert sum(report["refused"] for report in reports) == 0
    per_instance = [sum(len(r["completed"]) for r in reports[i::2]) for i in (0, 1)]
    assert all(per_instance), per_instance  # both instances handed out work
    rows = shared.rows(
        "SELECT state, attempts, result = id::text, count(*) FROM onewriter_jobs "
        "WHERE queue = 'race' GROUP BY 1, 2, 3"
    )
    assert rows == [("done", 1, True, JOBS)]
    stats = second.producer.get("/stats").json()
    assert stats["queues"]["race"]["done"] == JOBS


def test_a_claim_waiting_on_one_instance_wakes_on_an_enqueue_through_the_other(
    shared: Shared,
) -> None:
    first, second = shared.instances
    got: list[Any] = []

    def claim() -> None:
        started = time.monotonic()
        got.append(second.claim("poll", wait=20))
        got.append(time.monotonic() - started)

    waiter = threading.Thread(target=claim)
    waiter.start()
    time.sleep(0.3)  # let the claim start waiting; correctness does not depend on it
    job_id = first.enqueue("poll", payload="wake up")
    waiter.join(30)
    assert not waiter.is_alive()
    jobs, elapsed = got
    assert [j["id"] for j in jobs] == [job_id]
    assert elapsed < 15
    listening = shared.rows(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN onewriter_jobs'"
    )
    assert listening[0][0] >= 1  # the waiting HTTP process LISTENs for enqueues


def test_lease_expiry_and_stale_token_across_instances(shared: Shared) -> None:
    first, second = shared.instances
    job_id = first.enqueue("lease", payload="x", backoff=0)
    [held] = first.claim("lease", lease=0.1)
    deadline = time.monotonic() + 10
    again: list[dict[str, Any]] = []
    while not again:
        assert time.monotonic() < deadline
        again = second.claim("lease", lease=30, wait=0.2)
    assert again[0]["id"] == job_id and again[0]["attempts"] == 2
    stale = first.worker.post(f"/jobs/{job_id}/complete", json={"token": held["token"]})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "LEASE_LOST"
    body = {"token": again[0]["token"], "result": 7}
    assert second.worker.post(f"/jobs/{job_id}/complete", json=body).status_code == 200
    job = first.worker.get(f"/jobs/{job_id}", params={"wait": 5}).json()
    assert job["state"] == "done" and job["result"] == 7 and "token" not in job


def test_health_metrics_and_ready_line_name_the_store(shared: Shared) -> None:
    first, second = shared.instances
    assert first.ready["database"].startswith("postgresql://")
    health = httpx.get(f"{second.url}/healthz").json()
    assert health["ok"] is True and health["store"] == "postgresql"
    metrics = httpx.get(f"{first.url}/metrics").text
    assert "# TYPE onewriter_jobs gauge" in metrics
    assert "onewriter_writer_commits_total" not in metrics  # no one writer to report on
    assert httpx.get(f"{first.url}/stats").status_code == 401


def test_rate_limit_holds_across_both_instances(shared: Shared) -> None:
    """Six claimers, three on each instance, claim as fast as they can for 2.5 s from a
    queue limited to 5 claims per second: at most 5 in any second, whichever instance."""
    first, second = shared.instances
    limit = {"rate_limit": {"limit": 5, "period": 1.0}}
    assert first.producer.put("/queues/limited", json=limit).json()["rate_limit"] == {
        "limit": 5,
        "period": 1.0,
    }
    assert second.producer.get("/queues/limited").json()["rate_limit"]["limit"] == 5
    response = first.producer.post(
        "/queues/limited/jobs", json={"jobs": [{"payload": i} for i in range(300)]}
    )
    assert response.status_code == 201
    claimed: list[int] = []
    stop = time.monotonic() + 2.5

    def claimer(instance: Instance) -> None:
        with httpx.Client(
            base_url=instance.url, headers={"Authorization": f"Bearer {WORKER}"}, timeout=30
        ) as client:
            while time.monotonic() < stop:
                jobs = client.post("/queues/limited/claim", json={"limit": 2}).json()["jobs"]
                claimed.extend(job["id"] for job in jobs)

    threads = [threading.Thread(target=claimer, args=(shared.instances[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(claimed) == len(set(claimed))
    assert 10 <= len(claimed) <= 5 * 4, len(claimed)  # 2.5 s spans at most 3 windows (+1)
    first.producer.put("/queues/limited", json={"rate_limit": None})
    rest = second.claim("limited", limit=1000)
    assert len(rest) == 300 - len(claimed)


def test_cron_time_fires_once_with_both_instances_housekeeping(shared: Shared) -> None:
    from onewriter.jobs import PgJobQueue

    with PgJobQueue(shared.url, pool_size=1) as queue:
        # once a year (its next time made due below), so no time of its own comes meanwhile
        queue.schedule("yearly", "crons", "tick", cron="0 0 1 1 *")
    with psycopg_conn(shared.url) as conn:
        conn.execute("UPDATE onewriter_job_schedules SET next_at = 0 WHERE name = 'yearly'")
    stop = time.monotonic() + 3.0  # both primaries run their housekeeping every second
    while time.monotonic() < stop:
        for instance in shared.instances:
            instance.claim("nothing-here")
    rows = shared.rows("SELECT count(*) FROM onewriter_jobs WHERE queue = 'crons'")
    assert rows == [(1,)]
    [(next_at,)] = shared.rows("SELECT next_at FROM onewriter_job_schedules")
    assert next_at > time.time() and next_at % 3600 == 0


def psycopg_conn(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_every_bad_input_gets_a_4xx_on_postgresql_too(shared: Shared) -> None:
    for instance in shared.instances:
        check_bad_inputs(instance.url, {"producer": PRODUCER, "worker": WORKER})
        assert not [line for line in instance.child.stderr_lines if "Traceback" in line]


def test_complete_many_answers_each_pair_on_postgresql(shared: Shared) -> None:
    first, second = shared.instances
    job_id = first.enqueue("pairs", payload=1)
    [job] = second.claim("pairs")
    body = {"jobs": [{"id": job_id, "token": "garbage"}, {"id": job_id, "token": job["token"]}]}
    assert first.worker.post("/jobs/complete", json=body).json() == {"completed": [False, True]}
    assert first.worker.get(f"/jobs/{job_id}").json()["state"] == "done"
