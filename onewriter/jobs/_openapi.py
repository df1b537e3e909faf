"""The HTTP service's OpenAPI 3.1 description, served at ``/openapi.json``."""

from __future__ import annotations

from functools import cache
from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    ok: dict[str, Any] | None = None,
    status: str = "200",
    errors: tuple[int, ...] = (400, 401),
    params: list[dict[str, Any]] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK", **_json(ok or {"type": "object"})}}
    for code in errors:
        responses[str(code)] = {"description": "error", **_json(_ERROR)}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if params:
        operation["parameters"] = params
    if not secured:
        operation["security"] = []
    return operation


def _path_param(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": kind}, "description": description}


def _obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_NUMBER = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_ANY: dict[str, Any] = {}

_NEW_JOB = _obj(
    ("payload",),
    payload=_ANY,
    priority=_INT,
    delay={"type": "number", "description": "seconds from now (server clock)"},
    run_at={"type": "number", "description": "Unix seconds, UTC"},
    requires=_STRS,
    max_attempts=_INT,
    unique_key=_STR,
    concurrency_key=_STR,
    concurrency_limit=_INT,
    backoff={"type": "number", "description": "seconds; doubled per attempt, jittered"},
    timeout={"type": "number", "description": "seconds an attempt may run"},
    depends_on={"type": "array", "items": _INT, "description": "ids of jobs to wait for"},
    on_parent_failure={"type": "string", "enum": ["cancel", "run"]},
)

_STATES = ["waiting", "ready", "running", "done", "dead", "cancelled"]

_SETTINGS = _obj(
    queue=_STR,
    paused={"type": "boolean"},
    rate_limit={"oneOf": [_obj(("limit",), limit=_INT, period=_NUMBER), {"type": "null"}]},
)

_JOB = _obj(
    id=_INT,
    queue=_STR,
    state={"type": "string", "enum": _STATES},
    payload=_ANY,
    priority=_INT,
    run_at=_NUMBER,
    requires=_STRS,
    attempts=_INT,
    max_attempts=_INT,
    unique_key=_STR,
    concurrency_key=_STR,
    concurrency_limit=_INT,
    token={"type": "string", "description": "only in claim responses"},
    worker=_STR,
    lease_until=_NUMBER,
    result=_ANY,
    error=_STR,
    created_at=_NUMBER,
    started_at=_NUMBER,
    finished_at=_NUMBER,
    timeout=_NUMBER,
    progress={"type": "number", "description": "0 to 100, from the heartbeats"},
    message=_STR,
    cancel_requested={"type": "boolean"},
    depends_on={"type": "array", "items": _INT},
    on_parent_failure=_STR,
)

_JOBS = _obj(jobs={"type": "array", "items": {"$ref": "#/components/schemas/Job"}})
_ENQUEUED = _obj(id=_INT, created={"type": "boolean"})


@cache
def openapi_schema() -> dict[str, Any]:
    job_id = _path_param("job_id", "integer")
    queue = _path_param("queue", "string")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "onewriter jobs",
            "version": "1",
            "description": "A durable job queue in one SQLite database. Errors are "
            "{error: {code, message}} with the codes of onewriter's error table; a stale "
            "lease token gets 409 LEASE_LOST.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _obj(("error",), error=_obj(("code", "message"), code=_STR, message=_STR)),
                "NewJob": _NEW_JOB,
                "Job": _JOB,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/queues/{queue}/jobs": {
                "post": _op(
                    "Enqueue one job, or a batch as {jobs: [...]} (producer token)",
                    body={
                        "oneOf": [
                            {"$ref": "#/components/schemas/NewJob"},
                            _obj(
                                ("jobs",),
                                jobs={"type": "array", "items": _NEW_JOB},
                                callback=_NEW_JOB,
                                callback_queue=_STR,
                            ),
                        ]
                    },
                    ok={"oneOf": [_ENQUEUED, _obj(jobs={"type": "array", "items": _ENQUEUED})]},
                    status="201",
                    errors=(400, 401, 413, 503),
                    params=[queue],
                )
            },
            "/queues/{queue}/claim": {
                "post": _op(
                    "Lease up to limit jobs; wait (seconds) long-polls for one (worker token)",
                    body=_obj(
                        worker=_STR,
                        capabilities=_STRS,
                        limit=_INT,
                        lease=_NUMBER,
                        wait=_NUMBER,
                    ),
                    ok=_JOBS,
                    errors=(400, 401, 503),
                    params=[queue],
                )
            },
            "/jobs/complete": {
                "post": _op(
                    "Complete many jobs; which tokens still held (worker token)",
                    body=_obj(
                        ("jobs",),
                        jobs={
                            "type": "array",
                            "items": _obj(("id", "token"), id=_INT, token=_STR, result=_ANY),
                        },
                    ),
                    ok=_obj(completed={"type": "array", "items": {"type": "boolean"}}),
                )
            },
            "/jobs/{job_id}": {
                "get": _op(
                    "A job (without its token); wait long-polls until it finishes",
                    ok={"$ref": "#/components/schemas/Job"},
                    errors=(401, 404),
                    params=[job_id, _query("wait", "number", "seconds to wait for the end")],
                )
            },
            "/jobs/{job_id}/heartbeat": {
                "post": _op(
                    "Extend the lease, report progress; 409 CANCELLED: stop (worker token)",
                    body=_obj(
                        ("token",),
                        token=_STR,
                        lease=_NUMBER,
                        progress={"type": "number", "minimum": 0, "maximum": 100},
                        message=_STR,
                    ),
                    ok=_obj(lease_until=_NUMBER),
                    errors=(400, 401, 409),
                    params=[job_id],
                )
            },
            "/jobs/{job_id}/complete": {
                "post": _op(
                    "Mark done with a result (worker token)",
                    body=_obj(("token",), token=_STR, result=_ANY),
                    ok=_obj(completed={"type": "boolean"}),
                    errors=(400, 401, 409),
                    params=[job_id],
                )
            },
            "/jobs/{job_id}/fail": {
                "post": _op(
                    "Record a failed attempt: retried after a backoff, or dead (worker token)",
                    body=_obj(("token",), token=_STR, error=_STR, retry={"type": "boolean"}),
                    ok=_obj(state={"type": "string", "enum": ["ready", "dead", "cancelled"]}),
                    errors=(400, 401, 409),
                    params=[job_id],
                )
            },
            "/jobs/{job_id}/release": {
                "post": _op(
                    "Give the job back now, the attempt not counted (worker token)",
                    body=_obj(("token",), token=_STR),
                    ok=_obj(released={"type": "boolean"}),
                    params=[job_id],
                )
            },
            "/jobs/{job_id}/cancel": {
                "post": _op(
                    "Cancel: cancelled, cancelling (running), or its final state (producer)",
                    ok=_obj(state=_STR),
                    errors=(401, 404),
                    params=[job_id],
                )
            },
            "/jobs/{job_id}/retry": {
                "post": _op(
                    "Run a dead or cancelled job again, fresh attempts (producer token)",
                    ok=_obj(retried={"type": "boolean"}),
                    errors=(401,),
                    params=[job_id],
                )
            },
            "/queues/{queue}": {
                "get": _op("The queue's settings", ok=_SETTINGS, params=[queue]),
                "put": _op(
                    "Pause/resume, set or remove (null) the rate limit (producer token)",
                    body=_obj(
                        paused={"type": "boolean"},
                        rate_limit={
                            "oneOf": [
                                _obj(("limit",), limit=_INT, period=_NUMBER),
                                {"type": "null"},
                            ]
                        },
                    ),
                    ok=_SETTINGS,
                    params=[queue],
                ),
            },
            "/queues/{queue}/pause": {
                "post": _op(
                    "Claims get nothing until resumed (producer)", ok=_SETTINGS, params=[queue]
                )
            },
            "/queues/{queue}/resume": {
                "post": _op(
                    "Hand out the queue's jobs again (producer)", ok=_SETTINGS, params=[queue]
                )
            },
            "/jobs": {
                "get": _op(
                    "The newest jobs",
                    ok=_JOBS,
                    params=[_query("limit", "integer", "at most 1000")],
                )
            },
            "/dead": {
                "get": _op(
                    "Dead letters, newest first, with their last error",
                    ok=_JOBS,
                    params=[
                        _query("queue", "string", "only this queue"),
                        _query("limit", "integer", "at most 1000"),
                    ],
                )
            },
            "/dead/requeue": {
                "post": _op(
                    "Send dead letters back to ready (producer token); all when no filter",
                    body=_obj(ids={"type": "array", "items": _INT}, queue=_STR),
                    ok=_obj(requeued=_INT),
                )
            },
            "/stats": {"get": _op("Counts by queue and state, oldest ready age, throughput")},
            "/throughput": {
                "get": _op(
                    "Jobs done per minute, oldest first",
                    ok=_obj(per_minute={"type": "array", "items": _INT}),
                    params=[_query("minutes", "integer", "how many minutes (default 10)")],
                )
            },
            "/healthz": {"get": _op("Readers and the writer answer", secured=False, errors=(503,))},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
