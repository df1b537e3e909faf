"""The demo service for real: a primary and worker processes on a free port, over HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onewriter.demo.launch import ServiceProcess
from onewriter.load import LoadPlan, run_load


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    db = tmp_path_factory.mktemp("demo") / "posts.db"
    with ServiceProcess(str(db), workers=3) as running:
        yield running


def call(
    url: str, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection (so that any worker may take it)."""
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = httpx.request(method, url + path, content=content, timeout=20.0)
    data = response.json()
    assert data["worker"] == int(response.headers["x-worker"])
    return response.status_code, data


def count_posts(db: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM posts").fetchone()[0])
    finally:
        conn.close()


def database_of(service: ServiceProcess) -> str:
    return service.command[service.command.index("serve") + 1]


def test_crud_round_trip(service: ServiceProcess) -> None:
    url = service.url
    status, first = call(url, "POST", "/posts", {"title": "first", "content": "hello"})
    assert status == 201
    status, second = call(url, "POST", "/posts", {"title": "second"})
    assert status == 201
    post_id = first["post"]["id"]
    assert second["post"]["id"] > post_id
    assert second["post"]["content"] == ""

    status, page = call(url, "GET", "/posts?limit=2")
    assert status == 200
    assert [p["id"] for p in page["posts"]] == [second["post"]["id"], post_id]  # newest first
    status, page = call(url, "GET", "/posts?limit=1&offset=1")
    assert [p["id"] for p in page["posts"]] == [post_id]

    status, changed = call(url, "PATCH", f"/posts/{post_id}", {"title": "renamed"})
    assert status == 200
    assert changed["post"]["title"] == "renamed"
    assert changed["post"]["content"] == "hello"
    status, fetched = call(url, "GET", f"/posts/{post_id}")
    assert (status, fetched["post"]["title"]) == (200, "renamed")

    status, deleted = call(url, "DELETE", f"/posts/{post_id}")
    assert (status, deleted["deleted"]) == (200, post_id)
    status, gone = call(url, "GET", f"/posts/{post_id}")
    assert (status, gone["error"]["code"]) == (404, "NOT_FOUND")


def test_answers_come_from_several_workers(service: ServiceProcess) -> None:
    seen: set[int] = set()
    for _ in range(200):
        status, data = call(service.url, "GET", "/healthz")
        assert status == 200 and data["ok"] is True
        seen.add(data["worker"])
        if len(seen) >= 2:
            break
    assert len(seen) >= 2
    assert service.pid not in seen  # the primary serves no HTTP


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "code"),
    [
        ("POST", "/posts", b"{not json", 400, "BAD_JSON"),
        ("POST", "/posts", b"[1, 2]", 422, "INVALID"),
        ("POST", "/posts", b'{"content": "no title"}', 422, "INVALID"),
        ("POST", "/posts", b'{"title": 5}', 422, "INVALID"),
        ("POST", "/posts", b'{"title": "   "}', 422, "INVALID"),
        ("POST", "/posts", b'{"title": "x", "author": "y"}', 422, "INVALID"),
        ("PATCH", "/posts/987654321", b'{"title": "x"}', 404, "NOT_FOUND"),
        ("PATCH", "/posts/1", b"{}", 422, "INVALID"),
        ("DELETE", "/posts/987654321", None, 404, "NOT_FOUND"),
        ("GET", "/posts/987654321", None, 404, "NOT_FOUND"),
        ("GET", "/posts/abc", None, 404, "NOT_FOUND"),
        ("GET", "/posts?limit=abc", None, 400, "BAD_QUERY"),
        ("GET", "/posts?limit=0", None, 400, "BAD_QUERY"),
        ("GET", "/nowhere", None, 404, "NOT_FOUND"),
    ],
)
def test_bad_requests_get_structured_errors(
    service: ServiceProcess, method: str, path: str, raw: bytes | None, status: int, code: str
) -> None:
    got, data = call(service.url, method, path, raw=raw)
    assert got == status
    assert data["error"]["code"] == code
    assert data["error"]["message"]


def test_concurrent_writes_from_the_load_client_all_land(service: ServiceProcess) -> None:
    db = database_of(service)
    before = count_posts(db)
    plan = LoadPlan(url=service.url, reads=40, writes=200, connections=24)
    summary = run_load(plan, progress=False, handle_signals=False)
    assert summary["errors"] == []
    assert summary["acknowledged_writes"] == 200
    assert count_posts(db) - before == 200
    assert sum(summary["workers"].values()) == 240


def test_stats_and_metrics_show_the_writer(service: ServiceProcess) -> None:
    status, _ = call(service.url, "POST", "/posts", {"title": "counted"})  # one commit at least
    assert status == 201
    status, data = call(service.url, "GET", "/stats")
    assert status == 200
    assert data["mode"] == "onewriter"
    assert data["writer"]["pid"] == service.pid
    assert data["writer"]["commits"] >= 1
    stats_sample = 'onewriter_demo_requests_total{method="GET",mode="onewriter",route="/stats"'
    deadline = time.monotonic() + 30  # the answering worker's count is flushed within 1 s
    while True:
        response = httpx.get(service.url + "/metrics", timeout=20.0)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "onewriter_writer_commits_total" in response.text
        assert "# TYPE onewriter_writer_commit_seconds summary" in response.text
        if stats_sample in response.text:
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


def _sample(text: str, name: str, labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_one_scrape_sums_the_requests_of_every_worker(tmp_path: Path) -> None:
    healthz = 'method="GET",mode="onewriter",route="/healthz",status="200"'
    with ServiceProcess(str(tmp_path / "posts.db"), workers=2) as running:
        served: dict[int, int] = {}
        deadline = time.monotonic() + 60
        sent = 0
        while (len(served) < 2 or min(served.values()) < 5) and sent < 400:
            assert time.monotonic() < deadline
            status, data = call(running.url, "GET", "/healthz")  # a fresh connection each
            assert status == 200
            served[data["worker"]] = served.get(data["worker"], 0) + 1
            sent += 1
        assert set(served) == set(running.worker_pids)  # both workers answered
        scraped_by: set[int] = set()
        deadline = time.monotonic() + 30  # each worker flushes its counts every second
        for _ in range(400):
            scrape = httpx.get(running.url + "/metrics", timeout=20.0)
            total = _sample(scrape.text, "onewriter_demo_requests_total", healthz)
            assert total <= sent, (served, scrape.text)
            if total < sent:
                assert time.monotonic() < deadline, (served, scrape.text)
                time.sleep(0.1)
                continue
            scraped_by.add(int(scrape.headers["x-worker"]))
            if len(scraped_by) == 2:
                break
        assert scraped_by == set(running.worker_pids)  # each worker's scrape sums both
        metrics_dir = next(
            path
            for path in Path(tempfile.gettempdir()).glob("onewriter-metrics-*")
            if any(path.glob(f"counter_{running.worker_pids[0]}.db"))
        )
    assert not metrics_dir.exists()  # the primary removed its directory at exit


def test_sigusr2_prints_the_writers_stats(service: ServiceProcess) -> None:
    start = len(service.lines)
    service.signal(signal.SIGUSR2)
    service.wait_for(r"^figure\s+value", 20, start)
    service.wait_for(r"^commits\s+[\d,]+$", 20, start)
    assert service.process is not None and service.process.poll() is None


def test_a_killed_worker_is_restarted(service: ServiceProcess) -> None:
    victim = service.worker_pids[0]
    start = len(service.lines)
    os.kill(victim, signal.SIGKILL)
    line = service.wait_for(r"^worker \d+ pid=\d+ ready", 60, start)
    newcomer = int(line.split("pid=")[1].split()[0])
    assert newcomer != victim
    seen: set[int] = set()
    for _ in range(300):
        status, data = call(service.url, "GET", "/healthz")
        assert status == 200
        seen.add(data["worker"])
        if newcomer in seen:
            break
    assert newcomer in seen
    assert victim not in seen


def test_sigterm_drains_without_losing_an_acknowledged_write(tmp_path: Path) -> None:
    db = str(tmp_path / "drain.db")
    service = ServiceProcess(db, workers=2).start()
    load = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onewriter.cli",
            "load",
            "--url",
            service.url,
            "--json",
            "--reads",
            "1",
            "--writes",
            "4",
            "--connections",
            "8",
            "--duration",
            "60",
            "--response-timeout",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while count_posts(db) < 100:
            assert time.monotonic() < deadline, "the load never got going"
            assert load.poll() is None
            time.sleep(0.05)
        service.signal(signal.SIGTERM)
        assert service.process is not None
        assert service.process.wait(40) == 0
        service.wait_for(r"^stopped$", 5)
        load.send_signal(signal.SIGINT)
        out, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(10)
        if load.stdout is not None:
            load.stdout.close()
        service.stop()
    summary = json.loads(out)
    assert summary["interrupted"] is True
    acknowledged = summary["acknowledged_writes"]
    assert acknowledged >= 100
    assert count_posts(db) >= acknowledged  # every acknowledged write is there
    for pid in service.worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_naive_mode_serves_the_same_api(tmp_path: Path) -> None:
    with ServiceProcess(str(tmp_path / "naive.db"), workers=2, naive=True) as service:
        status, created = call(service.url, "POST", "/posts", {"title": "direct"})
        assert status == 201
        status, page = call(service.url, "GET", "/posts")
        assert [p["id"] for p in page["posts"]] == [created["post"]["id"]]
        status, stats = call(service.url, "GET", "/stats")
        assert stats["mode"] == "naive" and stats["writer"] is None
        start = len(service.lines)
        service.signal(signal.SIGUSR2)
        service.wait_for("naive mode: no writer", 20, start)
        assert service.stop() == 0


def test_direct_mode_workers_write_themselves_under_the_turn(tmp_path: Path) -> None:
    db = str(tmp_path / "direct.db")
    with ServiceProcess(db, workers=2, direct=True) as service:
        plan = LoadPlan(url=service.url, reads=40, writes=200, connections=16)
        summary = run_load(plan, progress=False, handle_signals=False)
        assert summary["errors"] == []
        assert summary["acknowledged_writes"] == 200
        assert count_posts(db) == 200
        status, stats = call(service.url, "GET", "/stats")
        assert status == 200 and stats["mode"] == "direct"
        assert stats["writer"]["pid"] == service.pid  # the primary stays the writer
        assert stats["writer"]["ops"].get("create_post", 0) == 0  # it ran none of them
        assert service.stop() == 0
