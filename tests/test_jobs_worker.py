"""The worker runner: in process against the library API, and as the real CLI against
the HTTP service (graceful shutdown on SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ONEWRITER_CLI, Child, start_ready

import onewriter
from onewriter.jobs import AsyncJobQueue, Job, jobs_ops
from onewriter.jobs.worker.runner import PermanentError, Worker, WorkerOptions

# -- handlers (the CLI imports them as test_jobs_worker:<name>) ------------------------------


def sleepy(job: Job) -> Any:
    """Sleep as long as the payload says, then echo it."""
    time.sleep(job.payload["sleep"])
    return job.payload.get("echo")


async def doubling(job: Job) -> int:
    await asyncio.sleep(0)
    return int(job.payload) * 2


def picky(job: Job) -> str:
    if job.payload == "transient":
        raise RuntimeError("try again")
    if job.payload == "fatal":
        raise PermanentError("never works")
    return "ok"


# -- in process ------------------------------------------------------------------------------


def _ops() -> onewriter.Ops:
    ops = onewriter.Ops()
    ops.include(jobs_ops)
    return ops


def run_in_process(
    path: Path,
    handler: Callable[[Job], Any],
    scenario: Callable[[AsyncJobQueue, Worker], Any],
    **options: Any,
) -> Any:
    """Open the database, start a worker, run ``scenario`` beside it, stop, return."""

    async def main() -> Any:
        async with onewriter.connect_async(str(path), ops=_ops(), role="standalone") as db:
            queue = AsyncJobQueue(db)
            await queue.setup()
            worker = Worker(queue, handler, WorkerOptions(queue="q", wait=0.2, **options))
            running = asyncio.create_task(worker.run())
            try:
                return await asyncio.wait_for(scenario(queue, worker), 30)
            finally:
                worker.stop()
                await asyncio.wait_for(running, 30)

    return asyncio.run(main())


async def wait_finished(queue: AsyncJobQueue, ids: list[int]) -> list[Job]:
    return [await queue.wait(job_id, timeout=10) for job_id in ids]


def test_async_and_sync_handlers_store_results(tmp_path: Path) -> None:
    async def scenario(queue: AsyncJobQueue, worker: Worker) -> list[Job]:
        ids = [r.id for r in await queue.enqueue_many("q", range(20))]
        return await wait_finished(queue, ids)

    done = run_in_process(tmp_path / "a.db", doubling, scenario, concurrency=4)
    assert [(j.state, j.result) for j in done] == [("done", 2 * i) for i in range(20)]

    def sync_scenario(queue: AsyncJobQueue, worker: Worker) -> Any:
        async def go() -> list[Job]:
            job_id = await queue.enqueue("q", {"sleep": 0.01, "echo": "hi"})
            return await wait_finished(queue, [job_id])

        return go()

    [job] = run_in_process(tmp_path / "b.db", sleepy, sync_scenario)
    assert job.result == "hi" and job.attempts == 1


def test_failures_are_retried_then_dead_and_permanent_errors_are_not(tmp_path: Path) -> None:
    async def scenario(queue: AsyncJobQueue, worker: Worker) -> tuple[list[Job], Worker]:
        ids = [
            await queue.enqueue("q", "transient", max_attempts=2, backoff=0),
            await queue.enqueue("q", "fatal", max_attempts=5),
            await queue.enqueue("q", "fine"),
        ]
        return await wait_finished(queue, ids), worker

    (transient, fatal, fine), worker = run_in_process(tmp_path / "c.db", picky, scenario)
    assert (transient.state, transient.attempts) == ("dead", 2)
    assert transient.error == "RuntimeError: try again"
    assert (fatal.state, fatal.attempts) == ("dead", 1)
    assert (fine.state, fine.result) == ("done", "ok")
    assert worker.stats.failed == 3 and worker.stats.completed == 1


def test_heartbeats_keep_a_long_job_leased(tmp_path: Path) -> None:
    async def scenario(queue: AsyncJobQueue, worker: Worker) -> list[Job]:
        job_id = await queue.enqueue("q", {"sleep": 1.0, "echo": "slow"})
        return await wait_finished(queue, [job_id])

    [job] = run_in_process(tmp_path / "d.db", sleepy, scenario, lease=0.3)
    assert (job.state, job.attempts, job.result) == ("done", 1, "slow")


# -- the CLI against the HTTP service -------------------------------------------------------


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = str(tmp_path_factory.mktemp("jobs-worker") / "jobs.db")
    child = Child([ONEWRITER_CLI, "jobs", "serve", database, "--port", "0", "--workers", "0"])
    try:
        yield json.loads(child.wait_line("READY ", timeout=60)[len("READY ") :])["url"]
    finally:
        child.stop()


def start_worker(url: str, queue: str, *extra: str) -> Child:
    child, _ = start_ready(
        [
            ONEWRITER_CLI,
            "jobs",
            "work",
            "--url",
            url,
            "--queue",
            queue,
            "--handler",
            "test_jobs_worker:sleepy",
            "--concurrency",
            "3",
            "--wait",
            "0.2",
            *extra,
        ],
        "READY worker",
        timeout=30,
    )
    return child


def states(url: str, queue: str) -> dict[str, int]:
    stats = httpx.get(f"{url}/stats").json()
    return dict(stats["queues"].get(queue, {}))


def until_running(url: str, queue: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while states(url, queue).get("running", 0) < n:
        assert time.monotonic() < deadline, states(url, queue)
        time.sleep(0.02)


def test_sigterm_lets_running_jobs_finish(url: str) -> None:
    jobs = [{"payload": {"sleep": 1.0, "echo": i}} for i in range(3)]
    httpx.post(f"{url}/queues/graceful/jobs", json={"jobs": jobs})
    worker = start_worker(url, "graceful", "--grace", "20")
    try:
        until_running(url, "graceful", 3)
        httpx.post(f"{url}/queues/graceful/jobs", json={"payload": {"sleep": 0}})
        worker.proc.send_signal(signal.SIGTERM)
        summary = json.loads(worker.wait_line("stopped ", timeout=30)[len("stopped ") :])
        assert worker.wait_exit(10) == 0
    finally:
        worker.stop()
    assert summary["completed"] == 3 and summary["released"] == 0
    assert states(url, "graceful") | {"oldest_ready_age": 0, "done_last_minute": 0} == {
        "waiting": 0,
        "ready": 1,
        "running": 0,
        "done": 3,
        "dead": 0,
        "cancelled": 0,
        "oldest_ready_age": 0,
        "done_last_minute": 0,
        "paused": False,
        "rate_limit": None,
    }


def test_sigterm_releases_jobs_past_the_grace_period(url: str) -> None:
    jobs = [{"payload": {"sleep": 60}} for _ in range(2)]
    response = httpx.post(f"{url}/queues/release/jobs", json={"jobs": jobs})
    ids = [j["id"] for j in response.json()["jobs"]]
    worker = start_worker(url, "release", "--grace", "0.3")
    try:
        until_running(url, "release", 2)
        worker.proc.send_signal(signal.SIGTERM)
        summary = json.loads(worker.wait_line("stopped ", timeout=30)[len("stopped ") :])
        assert worker.wait_exit(10) == 0
    finally:
        worker.stop()
    assert summary["released"] == 2 and summary["completed"] == 0
    for job_id in ids:
        job = httpx.get(f"{url}/jobs/{job_id}").json()
        assert (job["state"], job["attempts"]) == ("ready", 0)
