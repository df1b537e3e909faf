"""Cancel, progress, timeouts, pauses, dependencies and batches through the real CLI: the
HTTP service (a primary and a worker process) and the worker runner as processes of
their own, spoken to over real sockets, the runner killed where a test says so."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ONEWRITER_CLI, Child, start_ready

from onewriter.jobs import Job, report_progress

PRODUCER = "features-producer"
WORKER = "features-worker"

# -- the handler (the runner imports it as test_jobs_features_http:patient) -----------------


def patient(job: Job) -> str:
    """Report progress, then work (in small steps) for as long as the payload says."""
    report_progress(50, f"half of {job.payload['name']}")
    deadline = time.monotonic() + job.payload.get("seconds", 60)
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished"


# -- processes -----------------------------------------------------------------------------


def serve(database: str) -> tuple[Child, str]:
    child, line = start_ready(
        [
            ONEWRITER_CLI, "jobs", "serve", database, "--port", "0", "--workers", "1",
            "--producer-token", PRODUCER, "--worker-token", WORKER,
        ],
        "READY ",
        timeout=60,
    )  # fmt: skip
    ready = json.loads(line[len("READY ") :])
    return child, str(ready["url"])


def work(url: str, queue: str, *extra: str) -> Child:
    child, _ = start_ready(
        [
            ONEWRITER_CLI, "jobs", "work", "--url", url, "--queue", queue, "--token", WORKER,
            "--handler", "test_jobs_features_http:patient", "--wait", "0.2", *extra,
        ],
        "READY worker",
        timeout=30,
    )  # fmt: skip
    return child


class Api:
    def __init__(self, url: str) -> None:
        self.producer = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {PRODUCER}"}, timeout=30
        )
        self.worker = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {WORKER}"}, timeout=30
        )

    def post(self, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.producer.post(path, json=body)
        assert response.status_code == status, response.text
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.producer.get(f"/jobs/{job_id}").json()
        return data

    def close(self) -> None:
        self.producer.close()
        self.worker.close()


def until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Api, str, str]]:
    database = str(tmp_path / "features.db")
    child, url = serve(database)
    api = Api(url)
    try:
        yield api, url, database
    finally:
        api.close()
        child.stop()


# -- the tests -----------------------------------------------------------------------------


def test_runner_shows_progress_stops_a_cancelled_job_and_times_out_a_slow_one(
    service: tuple[Api, str, str],
) -> None:
    api, url, _ = service
    long = api.post("/queues/media/jobs", {"payload": {"name": "film"}}, 201)["id"]
    slow = api.post(
        "/queues/media/jobs",
        {"payload": {"name": "clip"}, "timeout": 1, "max_attempts": 1},
        201,
    )["id"]
    runner = work(url, "media", "--lease", "3", "--concurrency", "2")
    try:
        seen = until(lambda: (j := api.job(long))["progress"] is not None and j)
        assert (seen["state"], seen["progress"], seen["message"]) == ("running", 50, "half of film")
        assert api.post(f"/jobs/{long}/cancel") == {"state": "cancelling"}
        cancelled = until(lambda: (j := api.job(long))["state"] == "cancelled" and j, timeout=10)
        assert cancelled["result"] is None
        dead = until(lambda: (j := api.job(slow))["state"] == "dead" and j, timeout=15)
        assert dead["error"] == "TimeoutError: the handler ran past the job's timeout of 1 s"
        assert api.post(f"/jobs/{long}/cancel") == {"state": "cancelled"}
        runner.proc.send_signal(signal.SIGTERM)
        summary = json.loads(runner.wait_line("stopped ", timeout=30)[len("stopped ") :])
        assert runner.wait_exit(15) == 0
    finally:
        runner.stop()
    assert (summary["cancelled"], summary["timed_out"], summary["completed"]) == (1, 1, 0)


def test_heartbeat_progress_and_cancel_over_http(service: tuple[Api, str, str]) -> None:
    api, _, _ = service
    job_id = api.post("/queues/h/jobs", {"payload": 1}, 201)["id"]
    [job] = api.worker.post("/queues/h/claim", json={}).json()["jobs"]
    beat = api.worker.post(
        f"/jobs/{job_id}/heartbeat", json={"token": job["token"], "progress": 20, "message": "m"}
    )
    assert beat.status_code == 200, beat.text
    bad = api.worker.post(
        f"/jobs/{job_id}/heartbeat", json={"token": job["token"], "progress": 120}
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "BAD_REQUEST")
    assert (api.job(job_id)["progress"], api.job(job_id)["message"]) == (20, "m")
    api.post(f"/jobs/{job_id}/cancel")
    told = api.worker.post(f"/jobs/{job_id}/heartbeat", json={"token": job["token"]})
    assert (told.status_code, told.json()["error"]["code"]) == (409, "CANCELLED")
    assert api.job(job_id)["state"] == "cancelled"
    assert api.post(f"/jobs/{job_id}/retry") == {"retried": True}
    assert api.job(job_id)["state"] == "ready"
    assert api.post("/jobs/999999/cancel", status=404)["error"]["code"] == "NOT_FOUND"
    refused = api.worker.post(f"/jobs/{job_id}/cancel")  # an operator's act
    assert refused.status_code == 401


def test_paused_queue_stays_paused_across_a_service_restart(tmp_path: Path) -> None:
    database = str(tmp_path / "paused.db")
    child, url = serve(database)
    api = Api(url)
    try:
        job_id = api.post("/queues/mail/jobs", {"payload": "hello"}, 201)["id"]
        assert api.post("/queues/mail/pause") == {
            "queue": "mail",
            "paused": True,
            "rate_limit": None,
        }
    finally:
        api.close()
        child.stop()
    child, url = serve(database)
    api = Api(url)
    try:
        assert api.worker.post("/queues/mail/claim", json={}).json()["jobs"] == []
        assert api.producer.get("/queues/mail").json()["paused"] is True
        assert api.producer.get("/stats").json()["queues"]["mail"]["paused"] is True
        metrics = httpx.get(f"{url}/metrics").text
        assert 'onewriter_jobs_queue_paused{queue="mail"} 1' in metrics
        put = api.producer.put("/queues/mail", json={"rate_limit": {"limit": 5, "period": 2}})
        assert put.json() == {
            "queue": "mail",
            "paused": True,
            "rate_limit": {"limit": 5, "period": 2},
        }
        bad = api.producer.put("/queues/mail", json={"rate_limit": {"limit": 0}})
        assert bad.status_code == 400
        assert api.post("/queues/mail/resume")["paused"] is False
        [job] = api.worker.post("/queues/mail/claim", json={}).json()["jobs"]
        assert job["id"] == job_id
    finally:
        api.close()
        child.stop()


def test_children_of_a_parent_whose_worker_dies(service: tuple[Api, str, str]) -> None:
    """The runner holding the parent is killed; its lease runs out on its last attempt,
    so the parent is dead: its child is cancelled, the batch's callback runs anyway."""
    api, url, _ = service
    batch = api.post(
        "/queues/render/jobs",
        {
            "jobs": [{"payload": {"name": "frames"}, "max_attempts": 1}],
            "callback": {"payload": "report"},
            "callback_queue": "reports",
        },
        201,
    )
    [parent] = [j["id"] for j in batch["jobs"]]
    child = api.post(
        "/queues/render/jobs", {"payload": {"name": "encode"}, "depends_on": [parent]}, 201
    )["id"]
    assert api.job(child)["state"] == "waiting"
    runner = work(url, "render", "--lease", "1")
    try:
        until(lambda: api.job(parent)["state"] == "running")
        runner.kill9()
    finally:
        runner.stop()
    dead = until(lambda: (j := api.job(parent))["state"] == "dead" and j)
    assert dead["error"].startswith("lease expired on worker")
    cancelled = until(lambda: (j := api.job(child))["state"] == "cancelled" and j, timeout=10)
    assert cancelled["error"] == f"parent job {parent} ended dead"
    [callback] = until(lambda: api.worker.post("/queues/reports/claim", json={}).json()["jobs"])
    assert callback["id"] == batch["callback"] and callback["depends_on"] == [parent]
