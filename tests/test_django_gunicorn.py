"""The Django example as a user runs it: ``examples/django/serve`` (migrate, then
gunicorn with 4 workers) on a real file, driven over real sockets; one worker is
SIGKILLed while it holds the write turn mid-transaction."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("gunicorn")

from benchmarks.django import free_port, start_site, stop_site


class Site:
    def __init__(self, proc: Any, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def call(self, method: str, path: str, timeout: float = 30) -> tuple[int, Any, str]:
        """Status, JSON body and the answering worker's pid."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return (
                response.status,
                json.loads(response.read()),
                response.getheader("X-Worker-Pid", ""),
            )
        finally:
            conn.close()

    def wait_for_log(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log.read_text())
            if match:
                return match
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the log:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    log_path, port = tmp_path / "site.log", free_port()
    with open(log_path, "w") as log:
        proc = start_site("onewriter", str(tmp_path / "counters.sqlite3"), port, log)
        try:
            yield Site(proc, port, log_path)
        finally:
            stop_site(proc)


def test_serve_migrates_and_no_increment_is_lost(site: Site) -> None:
    assert site.call("GET", "/counters/")[:2] == (200, {"counters": []})  # migrated

    def bump(_: int) -> tuple[int, str]:
        status, _body, pid = site.call("POST", "/counters/n/increment")
        return status, pid

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(bump, range(200)))
    assert [status for status, _ in answers] == [200] * 200
    assert len({pid for _, pid in answers}) >= 2  # several workers wrote
    assert site.call("GET", "/counters/")[1] == {"counters": [{"name": "n", "value": 200}]}


def test_a_worker_killed_holding_the_turn_frees_it(site: Site) -> None:
    assert site.call("POST", "/counters/k/increment")[0] == 200
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        held = pool.submit(site.call, "POST", "/counters/k/hold?seconds=30")
        pid = int(site.wait_for_log(r"worker (\d+) holds the write turn").group(1))
        waiting = pool.submit(site.call, "POST", "/counters/k/increment")
        status, body, _ = site.call("GET", "/counters/", timeout=5)  # reads go on
        assert (status, body) == (200, {"counters": [{"name": "k", "value": 1}]})
        time.sleep(0.5)
        assert not waiting.done()  # the write waits for the turn
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        assert waiting.result(timeout=10)[0] == 200
        assert time.monotonic() - killed_at < 8  # handed on, not at the 10 s turn timeout
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            held.result(timeout=10)
        others = [pool.submit(site.call, "POST", "/counters/k/increment") for _ in range(20)]
        assert [f.result(timeout=30)[0] for f in others] == [200] * 20
    # the killed transaction's +1000 is gone; every acknowledged increment is there
    assert site.call("GET", "/counters/")[1] == {"counters": [{"name": "k", "value": 22}]}
    assert site.proc.poll() is None
