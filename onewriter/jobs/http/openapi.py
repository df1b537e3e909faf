"""The HTTP service's endpoints as data, and the OpenAPI 3.1 description generated from
them (served at ``/openapi.json``).

Each :class:`Endpoint` names its request and response types (:mod:`._http_models`); the
app decodes requests into the same types, so the description is what is enforced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec

from ..model import Job, QueueSettings
from . import models as m
from .io import OPEN, PRODUCER, WORKER

BOTH = frozenset({PRODUCER, WORKER})
_PRODUCER = frozenset({PRODUCER})
_WORKER = frozenset({WORKER})

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)(?::(\w+))?}")


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One route: who may call it, what it reads and what it answers."""

    name: str
    method: str
    path: str
    """Starlette's path template (``{job_id:int}`` converts and matches digits only)."""
    roles: frozenset[str]
    summary: str
    body: type[Any] | None = None
    query: type[Any] | None = None
    response: Any = None
    """The response body's type (a tuple: one of them); ``None`` for any JSON object,
    ``str`` for text."""
    status: int = 200
    errors: tuple[int, ...] = ()
    """Statuses beyond those the inputs imply (400, 401, 413, 415)."""


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        name="enqueue",
        method="POST",
        path="/queues/{queue}/jobs",
        roles=_PRODUCER,
        summary="Enqueue one job, or a batch as {jobs: [...]} (201 when any was new)",
        body=m.Enqueue,
        response=(m.Created, m.CreatedMany),
        status=201,
        errors=(503,),
    ),
    Endpoint(
        name="claim",
        method="POST",
        path="/queues/{queue}/claim",
        roles=_WORKER,
        summary="Lease up to limit jobs (with their tokens); wait long-polls for one",
        body=m.Claim,
        response=m.JobList,
        errors=(503,),
    ),
    Endpoint(
        name="complete_many",
        method="POST",
        path="/jobs/complete",
        roles=_WORKER,
        summary="Complete many jobs; for each (id, token) pair, whether its token held",
        body=m.CompleteMany,
        response=m.CompletedMany,
    ),
    Endpoint(
        name="get",
        method="GET",
        path="/jobs/{job_id:int}",
        roles=BOTH,
        summary="A job (without its token); wait long-polls until it finishes",
        query=m.JobQuery,
        response=Job,
        errors=(404,),
    ),
    Endpoint(
        name="heartbeat",
        method="POST",
        path="/jobs/{job_id:int}/heartbeat",
        roles=_WORKER,
        summary="Extend the lease, with progress; 409 CANCELLED: stop, the job was cancelled",
        body=m.Heartbeat,
        response=m.LeaseUntil,
        errors=(409,),
    ),
    Endpoint(
        name="complete",
        method="POST",
        path="/jobs/{job_id:int}/complete",
        roles=_WORKER,
        summary="Mark done with a result",
        body=m.Complete,
        response=m.Completed,
        errors=(409,),
    ),
    Endpoint(
        name="fail",
        method="POST",
        path="/jobs/{job_id:int}/fail",
        roles=_WORKER,
        summary="Record a failed attempt: retried after a backoff, or dead",
        body=m.Fail,
        response=m.Failed,
        errors=(409,),
    ),
    Endpoint(
        name="release",
        method="POST",
        path="/jobs/{job_id:int}/release",
        roles=_WORKER,
        summary="Give the job back now, the attempt not counted",
        body=m.Release,
        response=m.Released,
    ),
    Endpoint(
        name="cancel",
        method="POST",
        path="/jobs/{job_id:int}/cancel",
        roles=_PRODUCER,
        summary="Cancel: a waiting or ready job at once, a running one at its next heartbeat",
        response=m.Cancelled,
        errors=(404,),
    ),
    Endpoint(
        name="retry",
        method="POST",
        path="/jobs/{job_id:int}/retry",
        roles=_PRODUCER,
        summary="Run a dead or cancelled job again, with fresh attempts",
        response=m.Retried,
    ),
    Endpoint(
        name="pause",
        method="POST",
        path="/queues/{queue}/pause",
        roles=_PRODUCER,
        summary="Claims of the queue get nothing until it is resumed (kept across restarts)",
        response=QueueSettings,
    ),
    Endpoint(
        name="resume",
        method="POST",
        path="/queues/{queue}/resume",
        roles=_PRODUCER,
        summary="Hand out the queue's jobs again",
        response=QueueSettings,
    ),
    Endpoint(
        name="queue",
        method="GET",
        path="/queues/{queue}",
        roles=BOTH,
        summary="The queue's settings: paused, rate limit",
        response=QueueSettings,
    ),
    Endpoint(
        name="configure_queue",
        method="PUT",
        path="/queues/{queue}",
        roles=_PRODUCER,
        summary="Pause or resume, set or remove (null) the rate limit",
        body=m.QueueConfig,
        response=QueueSettings,
    ),
    Endpoint(
        name="recent",
        method="GET",
        path="/jobs",
        roles=BOTH,
        summary="The newest jobs",
        query=m.RecentQuery,
        response=m.JobList,
    ),
    Endpoint(
        name="dead_letters",
        method="GET",
        path="/dead",
        roles=BOTH,
        summary="Dead letters, newest first, with their last error",
        query=m.DeadQuery,
        response=m.JobList,
    ),
    Endpoint(
        name="requeue",
        method="POST",
        path="/dead/requeue",
        roles=_PRODUCER,
        summary="Send dead letters back to ready; all when no filter",
        body=m.Requeue,
        response=m.Requeued,
    ),
    Endpoint(
        name="stats",
        method="GET",
        path="/stats",
        roles=BOTH,
        summary="Counts by queue and state, oldest ready age, throughput",
    ),
    Endpoint(
        name="throughput",
        method="GET",
        path="/throughput",
        roles=BOTH,
        summary="Jobs done per minute, oldest first",
        query=m.ThroughputQuery,
        response=m.PerMinute,
    ),
    Endpoint(
        name="healthz",
        method="GET",
        path="/healthz",
        roles=OPEN,
        summary="Readers and the writer answer",
        errors=(503,),
    ),
    Endpoint(
        name="metrics",
        method="GET",
        path="/metrics",
        roles=OPEN,
        summary="Prometheus metrics",
        response=str,
    ),
    Endpoint(
        name="openapi",
        method="GET",
        path="/openapi.json",
        roles=OPEN,
        summary="This description",
    ),
    Endpoint(
        name="ui", method="GET", path="/ui", roles=OPEN, summary="The dashboard", response=str
    ),
)


def openapi_path(path: str) -> str:
    """``/jobs/{job_id:int}`` as OpenAPI writes it: ``/jobs/{job_id}``."""
    return _PATH_PARAM.sub(lambda match: "{" + match.group(1) + "}", path)


def _json(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _operation(
    endpoint: Endpoint, schema_of: dict[Any, dict[str, Any]], components: dict[str, Any]
) -> dict[str, Any]:
    errors = set(endpoint.errors)
    if endpoint.roles:
        errors.add(401)
    if endpoint.body is not None or endpoint.query is not None or "{" in endpoint.path:
        errors.add(400)
    if endpoint.body is not None:
        errors |= {413, 415}
    if endpoint.response is str:
        ok = _json({"type": "string"}, "text/plain")
    elif isinstance(endpoint.response, tuple):
        ok = _json({"oneOf": [schema_of[kind] for kind in endpoint.response]})
    else:
        ok = _json(schema_of.get(endpoint.response, {"type": "object"}))
    responses: dict[str, Any] = {str(endpoint.status): {"description": "OK", **ok}}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": "refused",
            **_json({"$ref": _REF.format(name="Error")}),
        }
    operation: dict[str, Any] = {
        "operationId": endpoint.name,
        "summary": endpoint.summary,
        "responses": responses,
    }
    if not endpoint.roles:
        operation["security"] = []
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1}
            if kind == "int"
            else {"type": "string", "minLength": 1},
        }
        for name, kind in _PATH_PARAM.findall(endpoint.path)
    ]
    if endpoint.query is not None:
        query = components[endpoint.query.__name__]
        for name, schema in query["properties"].items():
            parameters.append({"name": name, "in": "query", "schema": schema})
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {"required": False, **_json(schema_of[endpoint.body])}
    return operation


@cache
def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document of :data:`ENDPOINTS`."""
    types: list[Any] = [m.Error]
    for endpoint in ENDPOINTS:
        response = endpoint.response
        alternatives = response if isinstance(response, tuple) else (response,)
        for kind in (endpoint.body, endpoint.query, *alternatives):
            if kind is not None and kind is not str and kind not in types:
                types.append(kind)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        operation = _operation(endpoint, schema_of, components)
        paths.setdefault(openapi_path(endpoint.path), {})[endpoint.method.lower()] = operation
    for endpoint in ENDPOINTS:
        if endpoint.query is not None:
            components.pop(endpoint.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "onewriter jobs",
            "version": "1",
            "description": "A durable job queue in one database. Errors are "
            "{error: {code, message}} with the codes of onewriter's error table; a stale "
            "lease token gets 409 LEASE_LOST. An empty body is an empty object.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
