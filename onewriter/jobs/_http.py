"""The queue over HTTP: a Starlette app over one job store.

Each worker process of ``onewriter jobs serve`` runs this app with its own store: an
:class:`~onewriter.AsyncDatabase` (role ``client``) whose writer the primary process
hosts, or a pool of PostgreSQL connections. A claim may long-poll (see
:mod:`onewriter.jobs._wake`) instead of hammering the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._database import connect_async
from .._errors import BadRequest, OneWriterError
from .._ops import Ops
from ._async_queue import AsyncJobQueue
from ._async_store import AsyncJobStore
from ._http_controls import ControlEndpoints
from ._http_io import (
    OPEN,
    PRODUCER,
    WORKER,
    Fields,
    Settings,
    check_auth,
    error_response,
    new_job,
    read_json,
)
from ._metrics import HttpMetrics, render
from ._model import DEFAULT_LEASE, Job
from ._openapi import openapi_schema
from ._ops import jobs_ops
from ._store import is_postgres_url
from ._ui import PAGE

log = logging.getLogger("onewriter.jobs.http")

Handler = Callable[[Request], Awaitable[Response]]

_CLAIM_FIELDS = ("worker", "capabilities", "limit", "lease", "wait")


def _public(job: Job) -> dict[str, Any]:
    """A job for readers other than its lease holder: the token is the holder's secret."""
    data = job.to_dict()
    data.pop("token")
    return data


class Service:
    """The endpoints, over one job store of this process."""

    def __init__(self, settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.on_ready = on_ready
        self.metrics = HttpMetrics()
        self._queue: AsyncJobStore | None = None
        self.controls = ControlEndpoints(lambda: self.queue, self.body)

    @property
    def queue(self) -> AsyncJobStore:
        assert self._queue is not None, "the service has not started"
        return self._queue

    @contextlib.asynccontextmanager
    async def open_store(self) -> AsyncIterator[AsyncJobStore]:
        """The store ``settings.database`` names: a ``postgresql://`` URL, or the path of
        a SQLite file whose writer another process (the primary) hosts."""
        settings = self.settings
        if is_postgres_url(settings.database):
            from ._pg import AsyncPgJobQueue

            async with AsyncPgJobQueue(
                settings.database,
                payload_limit=settings.payload_limit,
                pool_size=settings.pool_size,
            ) as store:
                yield store
            return
        ops = Ops()
        ops.include(jobs_ops)
        db = await connect_async(
            settings.database,
            ops=ops,
            role="client",
            failover_timeout=settings.failover_timeout,
            client_timeout=settings.client_timeout,
        )
        try:
            yield AsyncJobQueue(db, payload_limit=settings.payload_limit)
        finally:
            await db.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.open_store() as store:
            await store.setup()
            self._queue = store
            if self.on_ready is not None:
                self.on_ready()
            yield

    # -- plumbing ------------------------------------------------------------------------

    def endpoint(self, route: str, roles: frozenset[str], fn: Handler) -> Handler:
        """``fn`` with auth, error mapping and metrics around it."""

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            try:
                check_auth(request, self.settings, roles)
                response = await fn(request)
            except OneWriterError as exc:
                response = error_response(exc)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                response = error_response(OneWriterError("internal error; see the server log"))
            self.metrics.observe(route, response.status_code, time.perf_counter() - started)
            return response

        return handle

    async def body(self, request: Request) -> dict[str, Any]:
        return await read_json(request, self.settings.max_body)

    def wait_time(self, value: Any) -> float:
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BadRequest("wait must be a number of seconds, at least 0")
        return float(min(value, self.settings.max_wait))

    @staticmethod
    def job_id(request: Request) -> int:
        value: int = request.path_params["job_id"]
        return value

    # -- producers -----------------------------------------------------------------------

    async def enqueue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        data = await self.body(request)
        batch = "jobs" in data
        callback = None
        if batch:
            fields = Fields(data, ("jobs", "callback", "callback_queue"))
            items = data["jobs"]
            if not isinstance(items, list) or not items:
                raise BadRequest("jobs must be a non-empty list of job objects")
            specs = [new_job(item, f"jobs[{i}]") for i, item in enumerate(items)]
            if "callback" in data:
                callback = new_job(data["callback"], "callback")
        else:
            specs = [new_job(data)]
        if callback is not None:
            done = await self.queue.enqueue_batch(
                queue, specs, callback, callback_queue=fields.text("callback_queue")
            )
            results = done.jobs
        else:
            results = await self.queue.enqueue_many(queue, specs)
        self.metrics.jobs["enqueued"] += sum(r.created for r in results)
        status = 201 if any(r.created for r in results) else 200
        rendered = [{"id": r.id, "created": r.created} for r in results]
        body: dict[str, Any] = {"jobs": rendered} if batch else rendered[0]
        if callback is not None:
            body["callback"] = done.callback
        return JSONResponse(body, status_code=status)

    async def get_job(self, request: Request) -> Response:
        job_id = self.job_id(request)
        wait = self.wait_time(_query_number(request, "wait"))
        if wait > 0:
            try:
                job = await self.queue.wait(job_id, wait)
            except TimeoutError:
                job = await self.queue.get(job_id)
        else:
            job = await self.queue.get(job_id)
        return JSONResponse(_public(job))

    async def dead_letters(self, request: Request) -> Response:
        limit = _query_number(request, "limit")
        jobs = await self.queue.dead_letters(
            request.query_params.get("queue"), int(limit) if limit is not None else 100
        )
        return JSONResponse({"jobs": [_public(j) for j in jobs]})

    async def requeue(self, request: Request) -> Response:
        fields = Fields(await self.body(request), ("ids", "queue"))
        queue = fields.text("queue")
        moved = await self.queue.requeue_dead(fields.integers("ids"), queue=queue)
        return JSONResponse({"requeued": moved})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(await self.queue.stats())

    async def throughput(self, request: Request) -> Response:
        minutes = _query_number(request, "minutes")
        counts = await self.queue.throughput(int(minutes) if minutes is not None else 10)
        return JSONResponse({"per_minute": counts})

    async def recent(self, request: Request) -> Response:
        limit = _query_number(request, "limit")
        jobs = await self.queue.recent(int(limit) if limit is not None else 50)
        return JSONResponse({"jobs": [_public(j) for j in jobs]})

    # -- workers -------------------------------------------------------------------------

    async def claim(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        fields = Fields(await self.body(request), _CLAIM_FIELDS)
        worker = fields.text("worker") or f"http:{request.client.host if request.client else '?'}"
        capabilities = fields.strings("capabilities")
        limit = fields.integer("limit", 1)
        lease = fields.number("lease", DEFAULT_LEASE)
        jobs = await self.queue.claim(
            queue,
            worker=worker,
            capabilities=capabilities,
            limit=limit,
            lease=lease,
            wait=self.wait_time(fields.number("wait")),
        )
        self.metrics.jobs["claimed"] += len(jobs)
        return JSONResponse({"jobs": [j.to_dict() for j in jobs]})

    async def heartbeat(self, request: Request) -> Response:
        fields = Fields(await self.body(request), ("token", "lease", "progress", "message"))
        until = await self.queue.heartbeat(
            self.job_id(request),
            fields.text("token", required=True),
            fields.number("lease", DEFAULT_LEASE),
            progress=fields.number("progress"),
            message=fields.text("message"),
        )
        return JSONResponse({"lease_until": until})

    async def complete(self, request: Request) -> Response:
        fields = Fields(await self.body(request), ("token", "result"))
        token = fields.text("token", required=True)
        await self.queue.complete(self.job_id(request), token, fields.data.get("result"))
        self.metrics.jobs["completed"] += 1
        return JSONResponse({"completed": True})

    async def complete_many(self, request: Request) -> Response:
        items = Fields(await self.body(request), ("jobs",)).objects("jobs")
        parsed = []
        for i, item in enumerate(items):
            f = Fields(item, ("id", "token", "result"), f"jobs[{i}]")
            job_id = f.integer("id")
            if job_id is None:
                raise BadRequest(f"jobs[{i}] needs an id")
            parsed.append((job_id, f.text("token", required=True), item.get("result")))
        held = await self.queue.complete_many(parsed)
        self.metrics.jobs["completed"] += sum(held)
        return JSONResponse({"completed": held})

    async def fail(self, request: Request) -> Response:
        fields = Fields(await self.body(request), ("token", "error", "retry"))
        state = await self.queue.fail(
            self.job_id(request),
            fields.text("token", required=True),
            fields.text("error", "") or "failed",
            retry=fields.boolean("retry", True),
        )
        self.metrics.jobs["failed"] += 1
        return JSONResponse({"state": state})

    async def release(self, request: Request) -> Response:
        fields = Fields(await self.body(request), ("token",))
        job_id = self.job_id(request)
        [held] = await self.queue.release([(job_id, fields.text("token", required=True))])
        return JSONResponse({"released": held})

    # -- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True, **await self.queue.health()})

    async def metrics_text(self, request: Request) -> Response:
        stats = await self.queue.stats()
        try:
            writer = await self.queue.writer_stats()
        except OneWriterError:
            writer = None
        text = render(stats, writer, self.metrics)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema())

    async def ui(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    def routes(self) -> list[Route]:
        both = frozenset({PRODUCER, WORKER})
        producer = frozenset({PRODUCER})
        worker = frozenset({WORKER})
        table: list[tuple[str, str, str, frozenset[str], Handler]] = [
            ("/queues/{queue}/jobs", "POST", "enqueue", producer, self.enqueue),
            ("/queues/{queue}/claim", "POST", "claim", worker, self.claim),
            ("/jobs/complete", "POST", "complete_many", worker, self.complete_many),
            ("/jobs/{job_id:int}", "GET", "get", both, self.get_job),
            ("/jobs/{job_id:int}/heartbeat", "POST", "heartbeat", worker, self.heartbeat),
            ("/jobs/{job_id:int}/complete", "POST", "complete", worker, self.complete),
            ("/jobs/{job_id:int}/fail", "POST", "fail", worker, self.fail),
            ("/jobs/{job_id:int}/release", "POST", "release", worker, self.release),
            ("/jobs", "GET", "recent", both, self.recent),
            ("/dead", "GET", "dead_letters", both, self.dead_letters),
            ("/dead/requeue", "POST", "requeue", producer, self.requeue),
            ("/stats", "GET", "stats", both, self.stats),
            ("/throughput", "GET", "throughput", both, self.throughput),
            ("/healthz", "GET", "healthz", OPEN, self.healthz),
            ("/metrics", "GET", "metrics", OPEN, self.metrics_text),
            ("/openapi.json", "GET", "openapi", OPEN, self.openapi),
            ("/ui", "GET", "ui", OPEN, self.ui),
            *self.controls.routes(),
        ]
        return [
            Route(path, self.endpoint(name, roles, fn), methods=[method], name=name)
            for path, method, name, roles, fn in table
        ]


def _query_number(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the same JSON shape as the others."""
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def create_app(settings: Settings, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app for ``settings``; ``on_ready`` runs once its database is open."""
    service = Service(settings, on_ready)
    app = Starlette(
        routes=service.routes(),
        lifespan=service.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.service = service
    return app
