"""The dashboard in a real headless browser (Debian's chromium driven by Playwright):
it shows a dead-lettered job with its error, and its requeue button requeues it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

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
