"""The job queue's HTTP service, run as the real CLI (a primary and two worker
processes on one port), spoken to over real sockets."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import ONEWRITER_CLI, PYTHON, Child

PRODUCER = "producer-secret"
WORKER = "worker-secret"
CLAIMERS = 20
JOBS = 300


class Service:
    def __init__(self, child: Child, url: str, database: str) -> None:
        self.child = child
        self.url = url
        self.database = database
        self.producer = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {PRODUCER}"}, timeout=30
        )
        self.worker = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {WORKER}"}, timeout=30
        )

    def close(self) -> None:
        self.producer.close()
        self.worker.close()

    def enqueue(self, queue: str, **job: Any) -> int:
        response = self.producer.post(f"/queues/{queue}/jobs", json=job)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def claim(self, queue: str, **body: Any) -> list[dict[str, Any]]:
        response = self.worker.post(f"/queues/{queue}/claim", json=body)
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.database, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    database = str(tmp_path_factory.mktemp("jobs-http") / "jobs.db")
    child = Child(
        [
            ONEWRITER_CLI,
            "jobs",
            "serve",
            database,
            "--port",
            "0",
            "--workers",
            "2",
            "--producer-token",
            PRODUCER,
            "--worker-token",
            f"other-worker,{WORKER}",
            "--payload-limit",
            "2048",
        ]
    )
    try:
        ready = json.loads(child.wait_line("READY ", timeout=60)[len("READY ") :])
        assert len(ready["workers"]) == 2
        svc = Service(child, ready["url"], database)
        yield svc
        svc.close()
    finally:
        child.stop()
    assert child.proc.returncode == 0, child.describe()


# -- a claimer process: stdlib only, so that twenty of them start fast ---------------------

CLAIMER = """
import http.client, json, sys, time
from urllib.parse import urlsplit

url, queue, token = sys.argv[1:]
parts = urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

def post(path, body):
    conn.request("POST", path, json.dumps(body), headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())

print("WAITING", flush=True)
sys.stdin.readline()
completed, refused = [], 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    status, data = post("/queues/" + queue + "/claim", {"limit": 4, "wait": 0.5})
    assert status == 200, data
    if not data["jobs"]:
        break
    for job in data["jobs"]:
        body = {"token": job["token"], "result": job["id"]}
        status, _ = post("/jobs/%d/complete" % job["id"], body)
        if status == 200:
            completed.append(job["id"])
        else:
            refused += 1
print("DONE " + json.dumps({"completed": completed, "refused": refused}), flush=True)
"""


def test_exactly_once_completion_with_twenty_claimer_processes(service: Service) -> None:
    response = service.producer.post(
        "/queues/race/jobs", json={"jobs": [{"payload": i} for i in range(JOBS)]}
    )
    assert response.status_code == 201
    ids = {job["id"] for job in response.json()["jobs"]}
    command = [PYTHON, "-c", CLAIMER, service.url, "race", WORKER]
    claimers = [Child(command) for _ in range(CLAIMERS)]
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
    assert sum(1 for report in reports if report["completed"]) >= 2  # the work was shared
    rows = service.rows(
        "SELECT state, attempts, result = id, count(*) FROM onewriter_jobs WHERE queue = 'race' "
        "GROUP BY 1, 2, 3"
    )
    assert rows == [("done", 1, 1, JOBS)]


def test_auth_failures(service: Service) -> None:
    anonymous = httpx.post(f"{service.url}/queues/q/jobs", json={"payload": 1})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(
        f"{service.url}/queues/q/jobs",
        json={"payload": 1},
        headers={"Authorization": "Bearer nope"},
    )
    assert wrong.status_code == 401
    assert service.worker.post("/queues/q/jobs", json={"payload": 1}).status_code == 401
    assert service.producer.post("/queues/q/claim", json={}).status_code == 401
    assert service.producer.post("/dead/requeue", json={}).status_code == 200
    assert service.worker.post("/dead/requeue", json={}).status_code == 401
    other = httpx.post(
        f"{service.url}/queues/q/claim", json={}, headers={"Authorization": "Bearer other-worker"}
    )
    assert other.status_code == 200
    assert httpx.get(f"{service.url}/stats").status_code == 401
    assert httpx.get(f"{service.url}/healthz").json()["ok"] is True


def test_malformed_requests(service: Service) -> None:
    post = service.producer.post
    cases = [
        post("/queues/q/jobs", content=b"{not json"),
        post("/queues/q/jobs", content=b"[1, 2]"),
        post("/queues/q/jobs", json={"payload": 1, "priorty": 2}),
        post("/queues/q/jobs", json={"priority": 2}),
        post("/queues/q/jobs", json={"payload": 1, "priority": "high"}),
        post("/queues/q/jobs", json={"payload": 1, "requires": "ffmpeg"}),
        post("/queues/q/jobs", json={"jobs": []}),
        service.worker.post("/queues/q/claim", json={"limit": 0}),
        service.worker.post("/queues/q/claim", json={"capabilities": [1]}),
        service.worker.post("/jobs/1/complete", json={}),
        service.worker.post("/jobs/1/fail", json={"token": "t", "retry": "yes"}),
    ]
    for response in cases:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "BAD_REQUEST"
    too_large = post("/queues/q/jobs", json={"payload": "x" * 3000})
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "TOO_LARGE"
    unknown = service.worker.get("/nowhere")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    assert service.worker.get("/jobs/123456789").status_code == 404
    assert service.worker.get("/queues/q/claim").status_code == 405


def test_lease_expiry_and_stale_token_refused(service: Service) -> None:
    job_id = service.enqueue("lease", payload="x", backoff=0)
    [first] = service.claim("lease", lease=0.1)
    deadline = time.monotonic() + 10
    second: list[dict[str, Any]] = []
    while not second:
        assert time.monotonic() < deadline
        second = service.claim("lease", lease=30, wait=0.2)
    assert second[0]["id"] == job_id and second[0]["attempts"] == 2
    for action, body in [
        ("complete", {"token": first["token"]}),
        ("heartbeat", {"token": first["token"]}),
        ("fail", {"token": first["token"], "error": "late"}),
    ]:
        response = service.worker.post(f"/jobs/{job_id}/{action}", json=body)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "LEASE_LOST"
    body = {"token": second[0]["token"], "result": 7}
    ok = service.worker.post(f"/jobs/{job_id}/complete", json=body)
    assert ok.status_code == 200
    job = service.worker.get(f"/jobs/{job_id}").json()
    assert job["state"] == "done" and job["result"] == 7 and "token" not in job


def test_long_poll_claim_wakes_on_enqueue(service: Service) -> None:
    got: list[Any] = []

    def claim() -> None:
        started = time.monotonic()
        got.append(service.claim("poll", wait=20))
        got.append(time.monotonic() - started)

    waiter = threading.Thread(target=claim)
    waiter.start()
    time.sleep(0.3)  # let the claim start waiting; correctness does not depend on it
    job_id = service.enqueue("poll", payload="wake up")
    waiter.join(30)
    assert not waiter.is_alive()
    jobs, elapsed = got
    assert [j["id"] for j in jobs] == [job_id]
    assert elapsed < 15
    empty = service.claim("poll", wait=0.2)
    assert empty == []


def test_dead_letters_requeue_and_wait(service: Service) -> None:
    job_id = service.enqueue("dl", payload="doomed", max_attempts=1)
    [job] = service.claim("dl")
    failed = service.worker.post(
        f"/jobs/{job_id}/fail", json={"token": job["token"], "error": "kaput"}
    )
    assert failed.json() == {"state": "dead"}
    dead = service.producer.get("/dead", params={"queue": "dl"}).json()["jobs"]
    assert [(d["id"], d["error"]) for d in dead] == [(job_id, "kaput")]
    requeued = service.producer.post("/dead/requeue", json={"ids": [job_id]})
    assert requeued.json() == {"requeued": 1}
    [again] = service.claim("dl")

    def finish() -> None:
        time.sleep(0.2)
        service.worker.post(
            "/jobs/complete", json={"jobs": [{"id": job_id, "token": again["token"], "result": 1}]}
        )

    finisher = threading.Thread(target=finish)
    finisher.start()
    waited = service.worker.get(f"/jobs/{job_id}", params={"wait": 10})
    finisher.join()
    assert waited.json()["state"] == "done" and waited.json()["result"] == 1


def test_capability_routing_over_http(service: Service) -> None:
    video = service.enqueue("media", payload="v", requires=["ffmpeg"])
    assert service.claim("media", capabilities=["imagemagick"], limit=5, wait=0.1) == []
    [job] = service.claim("media", capabilities=["ffmpeg", "imagemagick"], limit=5)
    assert job["id"] == video and job["requires"] == ["ffmpeg"]


def test_openapi_metrics_and_stats(service: Service) -> None:
    job_id = service.enqueue("metered", payload=1)
    [job] = service.claim("metered")
    service.worker.post(f"/jobs/{job_id}/complete", json={"token": job["token"]})
    schema = httpx.get(f"{service.url}/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/queues/{queue}/jobs",
        "/queues/{queue}/claim",
        "/jobs/{job_id}/complete",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/queues/{queue}",
        "/queues/{queue}/pause",
        "/queues/{queue}/resume",
    } <= set(schema["paths"])
    assert "progress" in schema["components"]["schemas"]["Job"]["properties"]
    metrics = httpx.get(f"{service.url}/metrics").text
    assert "# TYPE onewriter_jobs gauge" in metrics
    assert 'onewriter_jobs{queue="metered",state="done"} 1' in metrics
    assert "onewriter_jobs_http_requests_total{" in metrics
    stats = service.producer.get("/stats").json()
    assert stats["queues"]["metered"]["done"] == 1
