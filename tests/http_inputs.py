"""Bad inputs for the job service's HTTP face, shared by the SQLite and PostgreSQL
service tests: every one must get its 4xx and error code (never a 500), and the service
must serve normally afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

BIG = 2**64
MAX_BODY = 16 * 1024 * 1024


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@dataclass
class Case:
    """One request and the refusal it must get."""

    role: str  # "producer" or "worker": whose token it carries
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, client: httpx.Client) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.content is not None:
            kwargs["content"] = self.content
            kwargs["headers"] = {"content-type": "application/json", **self.headers}
        elif self.json is not None:
            kwargs["json"] = self.json
        return client.request(self.method, self.path, **kwargs)


def _bad(role: str, method: str, path: str, **kwargs: Any) -> Case:
    return Case(role, method, path, 400, "BAD_REQUEST", **kwargs)


def _enqueue(body: Any = None, *, content: bytes | None = None) -> Case:
    return _bad("producer", "POST", "/queues/inputs/jobs", json=body, content=content)


def _claim(body: Any) -> Case:
    return _bad("worker", "POST", "/queues/inputs/claim", json=body)


def _get(path: str) -> Case:
    return _bad("worker", "GET", path)


def cases() -> Iterator[Case]:
    """Malformed, oversized, deeply nested, non-finite, out-of-range and ill-typed inputs
    for every route and parameter."""
    # -- bodies that are not a JSON object ----------------------------------------------
    yield _enqueue(content=b"{not json")
    yield _enqueue(content=b"[1, 2]")
    yield _enqueue(content=b'"a string"')
    yield _enqueue(content=b"12")
    yield _enqueue(content=b'{"payload": NaN}')
    yield _enqueue(content=b'{"payload": Infinity}')
    yield _enqueue(content=b'{"payload": "\xff\xfe"}')  # invalid UTF-8
    yield _enqueue(content=b'{"payload": "\\ud800"}')  # a lone surrogate
    yield _enqueue(content=b'{"payload": 1e400}')  # beyond a double
    yield _bad("worker", "POST", "/queues/inputs/claim", content=b'{"worker": "\xc3"}')
    # -- nesting ------------------------------------------------------------------------
    yield _enqueue(content=b'{"payload": ' + _nested(1200) + b"}")
    yield _enqueue(content=b'{"payload": ' + _nested(100_000) + b"}")
    yield _enqueue(content=b'{"payload": ' + _nested(101) + b"}")
    yield _enqueue(content=b'{"jobs": [{"payload": ' + _nested(150) + b"}]}")
    yield _bad(
        "worker",
        "POST",
        "/jobs/1/complete",
        content=b'{"token": "t", "result": ' + _nested(150) + b"}",
    )
    yield _bad(
        "worker",
        "POST",
        "/jobs/complete",
        content=b'{"jobs": [{"id": 1, "token": "t", "result": ' + _nested(2000) + b"}]}",
    )
    # -- fields: unknown, missing, ill-typed -------------------------------------------
    yield _enqueue({"payload": 1, "priorty": 2})
    yield _enqueue({"priority": 2})
    yield _enqueue({})
    yield _enqueue({"payload": 1, "priority": "high"})
    yield _enqueue({"payload": 1, "priority": True})
    yield _enqueue({"payload": 1, "priority": 1.5})
    yield _enqueue({"payload": 1, "requires": "ffmpeg"})
    yield _enqueue({"payload": 1, "requires": [1]})
    yield _enqueue({"jobs": []})
    yield _enqueue({"jobs": "all of them"})
    yield _enqueue({"jobs": [1, 2]})
    yield _enqueue({"jobs": [{"priority": 1}]})
    yield _enqueue({"jobs": [{"payload": 1}], "priority": 3})
    yield _enqueue({"jobs": [{"payload": 1}], "payload": 2})
    yield _claim({"limit": "3"})
    yield _claim({"capabilities": [1]})
    yield _claim({"capabilities": "ffmpeg"})
    yield _bad("worker", "POST", "/jobs/1/complete", json={})
    yield _bad("worker", "POST", "/jobs/1/complete", json={"token": 5})
    yield _bad("worker", "POST", "/jobs/1/fail", json={"token": "t", "retry": "yes"})
    yield _bad("worker", "POST", "/jobs/1/fail", json={"token": "t", "error": 5})
    yield _bad("worker", "POST", "/jobs/1/heartbeat", json={"lease": 5})
    yield _bad("worker", "POST", "/jobs/1/release", json={"token": None})
    yield _bad("worker", "POST", "/jobs/complete", json={})
    yield _bad("worker", "POST", "/jobs/complete", json={"jobs": [{"token": "t"}]})
    yield _bad("worker", "POST", "/jobs/complete", json={"jobs": [{"id": "1", "token": "t"}]})
    yield _bad("worker", "POST", "/jobs/complete", json={"jobs": {"id": 1}})
    yield _bad("producer", "POST", "/dead/requeue", json={"ids": "1"})
    yield _bad("producer", "POST", "/dead/requeue", json={"ids": [1.0]})
    # -- out of range -------------------------------------------------------------------
    yield _enqueue({"payload": 1, "priority": BIG})
    yield _enqueue({"payload": 1, "priority": -BIG})
    yield _enqueue({"payload": 1, "priority": 2**62})
    yield _enqueue({"payload": 1, "max_attempts": 0})
    yield _enqueue({"payload": 1, "max_attempts": BIG})
    yield _enqueue({"payload": 1, "delay": -1})
    yield _enqueue({"payload": 1, "delay": 1e300})
    yield _enqueue({"payload": 1, "run_at": -5})
    yield _enqueue({"payload": 1, "run_at": 1e300})
    yield _enqueue({"payload": 1, "backoff": 1e300})
    yield _enqueue({"payload": 1, "concurrency_key": "k", "concurrency_limit": 0})
    yield _enqueue({"payload": 1, "concurrency_key": "k", "concurrency_limit": BIG})
    yield _enqueue({"payload": 1, "concurrency_limit": 2})  # without a key
    yield _enqueue({"payload": 1, "delay": 1, "run_at": 1})
    yield _claim({"limit": 0})
    yield _claim({"limit": -1})
    yield _claim({"limit": BIG})
    yield _claim({"lease": 0})
    yield _claim({"lease": 1e300})
    yield _claim({"wait": -1})
    yield _claim({"wait": 1e300})
    yield _bad("worker", "POST", "/jobs/1/heartbeat", json={"token": "t", "lease": -1})
    yield _bad("worker", "POST", "/jobs/complete", json={"jobs": [{"id": BIG, "token": "t"}]})
    yield _bad("worker", "POST", "/jobs/complete", json={"jobs": [{"id": 0, "token": "t"}]})
    yield _bad("producer", "POST", "/dead/requeue", json={"ids": [BIG]})
    yield _bad("producer", "POST", "/dead/requeue", json={"ids": [-1]})
    # timeouts, dependencies, batches, progress, queue settings
    yield _enqueue({"payload": 1, "timeout": 0})
    yield _enqueue({"payload": 1, "timeout": 10**9})
    yield _enqueue({"payload": 1, "depends_on": ["1"]})
    yield _enqueue({"payload": 1, "depends_on": [0]})
    yield _enqueue({"payload": 1, "on_parent_failure": "maybe"})
    yield _enqueue({"payload": 1, "callback": {"payload": 2}})
    yield _enqueue({"jobs": [{"payload": 1}], "callback": {"priority": 1}})
    yield _enqueue({"jobs": [{"payload": 1}], "callback_queue": ""})
    yield Case("producer", "POST", "/queues/inputs/jobs", 404, "NOT_FOUND",
               json={"payload": 1, "depends_on": [2**62]})  # fmt: skip
    yield _bad("worker", "POST", "/jobs/1/heartbeat", json={"token": "t", "progress": 101})
    yield _bad("worker", "POST", "/jobs/1/heartbeat", json={"token": "t", "progress": "half"})
    yield _bad("worker", "POST", "/jobs/1/heartbeat", json={"token": "t", "message": "m" * 501})
    yield _bad("producer", "PUT", "/queues/inputs", json={"paused": "yes"})
    yield _bad("producer", "PUT", "/queues/inputs", json={"rate_limit": {"limit": 0}})
    yield _bad("producer", "PUT", "/queues/inputs", json={"rate_limit": {"limit": 1, "period": 0}})
    yield _bad("producer", "PUT", "/queues/inputs", json={"rate_limit": 5})
    yield _bad("producer", "PUT", "/queues/inputs", json={"rate": None})
    yield _bad("producer", "POST", "/jobs/0/cancel")
    yield Case("producer", "POST", "/jobs/999999999/cancel", 404, "NOT_FOUND")
    yield Case("worker", "POST", "/jobs/1/cancel", 401, "UNAUTHORIZED")
    yield Case("worker", "PUT", "/queues/inputs", 401, "UNAUTHORIZED", json={"paused": True})
    # -- strings: empty, huge, NUL ------------------------------------------------------
    yield _enqueue({"payload": 1, "unique_key": ""})
    yield _enqueue({"payload": 1, "unique_key": "k" * 5000})
    yield _enqueue({"payload": 1, "unique_key": "a\x00b"})
    yield _enqueue({"payload": 1, "concurrency_key": ""})
    yield _enqueue({"payload": 1, "requires": [""]})
    yield _enqueue({"payload": 1, "requires": ["x" * 500]})
    yield _enqueue({"payload": 1, "requires": [f"c{i}" for i in range(500)]})
    yield _claim({"worker": "w" * 10_000})
    yield _claim({"worker": "w\x00"})
    yield _claim({"capabilities": ["\x00"]})
    yield _bad("worker", "POST", "/jobs/1/complete", json={"token": "t" * 10_000})
    yield _bad("worker", "POST", "/jobs/1/fail", json={"token": "t", "error": "e" * 200_000})
    yield _bad("worker", "POST", "/jobs/1/fail", json={"token": "t", "error": "e\x00"})
    yield _bad("producer", "POST", "/dead/requeue", json={"queue": ""})
    # -- path parameters ----------------------------------------------------------------
    yield _get("/jobs/99999999999999999999999")
    yield _get(f"/jobs/{2**63}")
    yield _get("/jobs/0")
    yield _bad("worker", "POST", "/jobs/99999999999999999999999/complete", json={"token": "t"})
    yield _bad("worker", "POST", f"/jobs/{BIG}/heartbeat", json={"token": "t"})
    yield _bad("worker", "POST", f"/jobs/{BIG}/fail", json={"token": "t"})
    yield _bad("worker", "POST", f"/jobs/{BIG}/release", json={"token": "t"})
    yield _bad("producer", "POST", "/queues/" + "q" * 300 + "/jobs", json={"payload": 1})
    yield _bad("producer", "POST", "/queues/a%00b/jobs", json={"payload": 1})
    yield _bad("worker", "POST", "/queues/a%0Ab/claim", json={})
    yield Case("worker", "GET", "/jobs/abc", 404, "NOT_FOUND")
    yield Case("worker", "GET", "/jobs/-1", 404, "NOT_FOUND")
    yield Case("worker", "GET", "/queues/q/claim", 405, "METHOD_NOT_ALLOWED")
    yield Case("worker", "GET", "/nowhere", 404, "NOT_FOUND")
    # -- query strings --------------------------------------------------------------------
    for query in (
        "limit=nan",
        "limit=inf",
        "limit=-1",
        "limit=0",
        "limit=1001",
        "limit=1e4",
        "limit=1.5",
    ):
        yield _get(f"/dead?{query}")
        yield _get(f"/jobs?{query}")
    yield _get(f"/dead?limit={BIG}")
    yield _get("/dead?limit=99999999999999999999999")
    yield _get("/dead?queue=")
    yield _get("/dead?queue=" + "q" * 300)
    yield _get("/dead?queue=a%00b")
    for query in ("minutes=inf", "minutes=nan", "minutes=0", "minutes=-3", "minutes=100000"):
        yield _get(f"/throughput?{query}")
    yield _get(f"/throughput?minutes={BIG}")
    for query in ("wait=nan", "wait=inf", "wait=-1", "wait=1e400", "wait=soon"):
        yield _get(f"/jobs/1?{query}")
    yield _get("/jobs?colour=blue")
    # -- content types and sizes ----------------------------------------------------------
    for media in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        yield Case(
            "producer",
            "POST",
            "/queues/inputs/jobs",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            content=b'{"payload": 1}',
            headers={"content-type": media},
        )
    yield Case(
        "producer", "POST", "/queues/inputs/jobs", 413, "TOO_LARGE", json={"payload": "x" * 70_000}
    )
    yield Case(
        "producer",
        "POST",
        "/queues/inputs/jobs",
        413,
        "TOO_LARGE",
        content=b'{"payload": "' + b"x" * MAX_BODY + b'"}',
    )


def _chunks() -> Iterator[bytes]:
    """A body over the limit sent chunked: no Content-Length to refuse it by."""
    yield b'{"payload": "'
    for _ in range(MAX_BODY // (1 << 20) + 1):
        yield b"x" * (1 << 20)
    yield b'"}'


def check_bad_inputs(url: str, tokens: dict[str, str]) -> None:
    """Send every case, check its answer, then check that the service still works."""
    clients = {
        role: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {t}"}, timeout=60)
        for role, t in tokens.items()
    }
    try:
        wrong = []
        for case in cases():
            response = case.send(clients[case.role])
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if (response.status_code, code) != (case.status, case.code):
                wrong.append(
                    (case.method, case.path[:60], response.status_code, response.text[:200])
                )
        chunked = clients["producer"].post(
            "/queues/inputs/jobs", content=_chunks(), headers={"content-type": "application/json"}
        )
        if chunked.status_code != 413:
            wrong.append(
                ("POST", "chunked over the limit", chunked.status_code, chunked.text[:200])
            )
        assert not wrong, "\n".join(map(str, wrong))
        _still_serving(clients["producer"], clients["worker"])
    finally:
        for client in clients.values():
            client.close()


def _still_serving(producer: httpx.Client, worker: httpx.Client) -> None:
    assert producer.get("/healthz").json()["ok"] is True
    created = producer.post("/queues/inputs-after/jobs", json={"payload": {"n": 1}})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    [job] = worker.post("/queues/inputs-after/claim", json={"wait": 5}).json()["jobs"]
    assert job["id"] == job_id
    done = worker.post(f"/jobs/{job_id}/complete", json={"token": job["token"], "result": 2})
    assert done.json() == {"completed": True}
    assert producer.get(f"/jobs/{job_id}").json()["result"] == 2
