"""The dashboard in a real headless browser (Debian's chromium driven by Playwright):
it shows a dead-lettered job with its error, and its requeue button requeues it; its
buttons cancel, retry, pause and resume, and it shows a job's progress and detail."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from helpers import ONEWRITER_CLI, Child

CHROMIUM = "/usr/bin/chromium"
PRODUCER = "ui-producer"
WORKER = "ui-worker"

sync_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)


@pytest.fixture
def url(tmp_path: object) -> Iterator[str]:
    database = os.path.join(str(tmp_path), "ui.db")
    child = Child(
        [
            ONEWRITER_CLI,
            "jobs",
            "serve",
            database,
            "--port",
            "0",
            "--workers",
            "0",
            "--producer-token",
            PRODUCER,
            "--worker-token",
            WORKER,
        ]
    )
    try:
        yield json.loads(child.wait_line("READY ", timeout=60)[len("READY ") :])["url"]
    finally:
        child.stop()


def test_dashboard_shows_a_dead_letter_and_requeues_it(url: str) -> None:
    producer = {"Authorization": f"Bearer {PRODUCER}"}
    worker = {"Authorization": f"Bearer {WORKER}"}
    job_id = httpx.post(
        f"{url}/queues/render/jobs", json={"payload": "frame", "max_attempts": 1}, headers=producer
    ).json()["id"]
    [job] = httpx.post(f"{url}/queues/render/claim", json={}, headers=worker).json()["jobs"]
    httpx.post(
        f"{url}/jobs/{job_id}/fail",
        json={"token": job["token"], "error": "codec exploded"},
        headers=worker,
    )

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/ui")
            page.fill("#token", PRODUCER)
            page.dispatch_event("#token", "change")
            dead_row = page.locator("#dead tbody tr", has_text="codec exploded")
            dead_row.wait_for(timeout=15000)
            assert dead_row.locator("td").first.inner_text() == str(job_id)
            queues = page.locator("#queues tbody tr", has_text="render")
            queues.wait_for(timeout=15000)
            dead_row.locator("button", has_text="requeue").click()
            page.locator("#dead tbody tr").first.wait_for(state="detached", timeout=15000)
        finally:
            browser.close()

    state = httpx.get(f"{url}/jobs/{job_id}", headers=producer).json()
    assert (state["state"], state["attempts"]) == ("ready", 0)


def _state(url: str, job_id: int) -> dict[str, object]:
    data: dict[str, object] = httpx.get(
        f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {PRODUCER}"}
    ).json()
    return data


def _until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_dashboard_cancels_retries_pauses_and_shows_a_job(url: str) -> None:
    producer = {"Authorization": f"Bearer {PRODUCER}"}
    worker = {"Authorization": f"Bearer {WORKER}"}
    running = httpx.post(
        f"{url}/queues/render/jobs", json={"payload": {"frame": 7}}, headers=producer
    ).json()["id"]
    [job] = httpx.post(f"{url}/queues/render/claim", json={}, headers=worker).json()["jobs"]
    httpx.post(
        f"{url}/jobs/{running}/heartbeat",
        json={"token": job["token"], "progress": 40, "message": "frames 40/100"},
        headers=worker,
    )
    waiting = httpx.post(
        f"{url}/queues/render/jobs", json={"payload": "next"}, headers=producer
    ).json()["id"]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/ui")
            page.fill("#token", PRODUCER)
            page.dispatch_event("#token", "change")
            row = page.locator(f'#recent tbody tr[data-id="{running}"]')
            row.locator("td.progress", has_text="40% frames 40/100").wait_for(timeout=15000)

            row.locator("button", has_text="details").click()
            page.locator("#detail-payload", has_text='"frame": 7').wait_for(timeout=15000)
            assert page.locator('#detail dd[data-field="attempts"]').inner_text() == "1 of 3"
            progress = page.locator('#detail dd[data-field="progress"]').inner_text()
            assert progress == "40% frames 40/100"

            other = page.locator(f'#recent tbody tr[data-id="{waiting}"]')
            other.locator("button", has_text="cancel").click()
            _until(lambda: _state(url, waiting)["state"] == "cancelled")
            other.locator("button", has_text="retry").click()
            _until(lambda: _state(url, waiting)["state"] == "ready")

            row.locator("button", has_text="cancel").click()
            row.locator("td", has_text="running (cancelling)").wait_for(timeout=15000)

            queue_row = page.locator('#queues tbody tr[data-queue="render"]')
            queue_row.locator("button", has_text="pause").click()
            page.locator('#queues tbody tr.paused[data-queue="render"]').wait_for(timeout=15000)
            settings = httpx.get(f"{url}/queues/render", headers=producer).json()
            assert settings["paused"] is True
            queue_row.locator("button", has_text="resume").click()
            _until(lambda: not httpx.get(f"{url}/queues/render", headers=producer).json()["paused"])
        finally:
            browser.close()
    told = httpx.post(
        f"{url}/jobs/{running}/heartbeat", json={"token": job["token"]}, headers=worker
    )
    assert told.json()["error"]["code"] == "CANCELLED"
