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
from http_inputs import check_bad_inputs

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


def test_every_bad_input_gets_a_4xx_with_its_code_and_the_service_keeps_serving(
    service: Service,
) -> None:
    check_bad_inputs(service.url, {"producer": PRODUCER, "worker": WORKER})
    assert not [line for line in service.child.stderr_lines if "Traceback" in line]


def test_complete_many_answers_each_pair_over_http(service: Service) -> None:
    ids = [service.enqueue("pairs", payload=i) for i in range(2)]
    first, second = service.claim("pairs", limit=2)
    assert {first["id"], second["id"]} == set(ids)
    body = {
        "jobs": [
            {"id": first["id"], "token": "garbage", "result": "forged"},
            {"id": first["id"], "token": first["token"], "result": "real"},
            {"id": second["id"], "token": first["token"]},
        ]
    }
    answer = service.worker.post("/jobs/complete", json=body)
    assert answer.json() == {"completed": [False, True, False]}
    assert service.worker.get(f"/jobs/{first['id']}").json()["result"] == "real"
    assert service.worker.get(f"/jobs/{second['id']}").json()["state"] == "running"


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
    assert schema["openapi"] == "3.1.0"
    paths = schema["paths"]
    routes = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert routes == {
        ("POST", "/queues/{queue}/jobs"),
        ("POST", "/queues/{queue}/claim"),
        ("POST", "/jobs/complete"),
        ("GET", "/jobs/{job_id}"),
        ("POST", "/jobs/{job_id}/heartbeat"),
        ("POST", "/jobs/{job_id}/complete"),
        ("POST", "/jobs/{job_id}/fail"),
        ("POST", "/jobs/{job_id}/release"),
        ("GET", "/jobs"),
        ("GET", "/dead"),
        ("POST", "/dead/requeue"),
        ("GET", "/stats"),
        ("GET", "/throughput"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/ui"),
        ("POST", "/jobs/{job_id}/cancel"),
        ("POST", "/jobs/{job_id}/retry"),
        ("POST", "/queues/{queue}/pause"),
        ("POST", "/queues/{queue}/resume"),
        ("GET", "/queues/{queue}"),
        ("PUT", "/queues/{queue}"),
    }
    assert "progress" in schema["components"]["schemas"]["Job"]["properties"]
    assert schema["components"]["schemas"]["Heartbeat"]["properties"]["progress"]["anyOf"]
    components = schema["components"]["schemas"]
    claim = components["Claim"]
    assert claim["additionalProperties"] is False
    assert claim["properties"]["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 1,
    }
    over = service.worker.post("/queues/metered/claim", json={"limit": 1001})
    assert over.status_code == 400 and "limit" in over.json()["error"]["message"]
    enqueue = paths["/queues/{queue}/jobs"]["post"]
    assert {"201", "400", "401", "413", "415"} <= set(enqueue["responses"])
    assert enqueue["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Enqueue"
    }
    [job_id_param, wait] = paths["/jobs/{job_id}"]["get"]["parameters"]
    assert job_id_param["in"] == "path" and job_id_param["schema"]["type"] == "integer"
    assert wait["in"] == "query" and wait["schema"]["maximum"] == 86400
    assert paths["/healthz"]["get"]["security"] == []
    for ref in _refs(schema):
        assert ref.removeprefix("#/components/schemas/") in components, ref
    metrics = _scrape_until(service.url, 'onewriter_jobs_handled_total{event="completed"}')
    assert "# TYPE onewriter_jobs gauge" in metrics
    assert 'onewriter_jobs{queue="metered",state="done"} 1.0' in metrics
    assert 'onewriter_jobs_http_requests_total{route="complete",status="200"}' in metrics


def _scrape_until(url: str, needle: str) -> str:
    """A scrape showing ``needle`` (each process flushes its counts every second)."""
    deadline = time.monotonic() + 30
    while needle not in (text := httpx.get(f"{url}/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    return text


def _healthz_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    sample = 'onewriter_jobs_http_requests_total{route="healthz",status="200"} '
    lines = [line for line in text.splitlines() if line.startswith(sample)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def _settled_healthz_count(url: str, deadline_s: float = 30.0) -> float:
    """The count once no process has any left to flush (earlier tests' probes of the
    shared service may still be on their way: each process flushes every second)."""
    deadline = time.monotonic() + deadline_s
    last = _healthz_count(url)
    while time.monotonic() < deadline:
        time.sleep(1.2)
        now = _healthz_count(url)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the healthz count kept moving: {last}")


def test_a_scrape_sums_the_counters_of_both_worker_processes(service: Service) -> None:
    job_id = service.enqueue("summed", payload=1)
    [job] = service.claim("summed")
    service.worker.post(f"/jobs/{job_id}/complete", json={"token": job["token"]})
    before = _settled_healthz_count(service.url)
    for _ in range(40):  # fresh connections: the kernel hands them to either process
        assert httpx.get(f"{service.url}/healthz").status_code == 200
    deadline = time.monotonic() + 30  # each process flushes its counts every second
    while (count := _healthz_count(service.url)) < before + 40:
        assert time.monotonic() < deadline, count
        time.sleep(0.1)
    for _ in range(5):  # whichever process answers the scrape counts them all
        assert _healthz_count(service.url) == before + 40
    stats = service.producer.get("/stats").json()
    assert stats["queues"]["summed"]["done"] == 1


def _refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)
