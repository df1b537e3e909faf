"""The queue over HTTP: a Starlette app over one job store.

Each worker process of ``onewriter jobs serve`` runs this app with its own store: an
:class:`~onewriter.AsyncDatabase` (role ``client``) whose writer the primary process
hosts, or a pool of PostgreSQL connections. A claim may long-poll (see
:mod:`onewriter.jobs.wake`) instead of hammering the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from msgspec import UnsetType
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ...database import connect_async
from ...errors import BadRequest, OneWriterError
from ...metrics import CONTENT_TYPE
from ...ops import Ops
from ..api.aio import AsyncJobStore
from ..api.sync import is_postgres_url
from ..model import Job
from ..sqlite.aio import AsyncJobQueue
from ..sqlite.ops import jobs_ops
from . import models as m
from .controls import ControlEndpoints
from .io import Settings, check_auth, error_response, read_body, reply
from .metrics import HttpMetrics, render
from .models import convert, decode
from .openapi import ENDPOINTS, Endpoint, openapi_schema
from .ui import PAGE

log = logging.getLogger("onewriter.jobs.http")

#: An endpoint's method: the request, its decoded body and query (``None`` without).
Handler = Callable[[Request, Any, Any], Awaitable[Response]]


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
        self.controls = ControlEndpoints(lambda: self.queue, self.job_id, self.queue_name)

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
            from ..postgres.queue import AsyncPgJobQueue

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
        async with self.open_store() as store, self.metrics.counters.flushing():
            await store.setup()
            self._queue = store
            if self.on_ready is not None:
                self.on_ready()
            yield

    # -- plumbing ------------------------------------------------------------------------

    def endpoint(self, spec: Endpoint, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``fn`` with auth, its body and query decoded into their types, error mapping
        and metrics around it."""

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            try:
                check_auth(request, self.settings, spec.roles)
                query = None
                if spec.query is not None:
                    query = convert(dict(request.query_params), spec.query)
                body = None
                if spec.body is not None:
                    body = decode(await read_body(request, self.settings.max_body), spec.body)
                response = await fn(request, body, query)
            except OneWriterError as exc:
                response = error_response(exc)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                response = error_response(OneWriterError("internal error; see the server log"))
            self.metrics.observe(spec.name, response.status_code, time.perf_counter() - started)
            return response

        return handle

    def wait_time(self, seconds: float) -> float:
        return min(seconds, self.settings.max_wait)

    @staticmethod
    def job_id(request: Request) -> int:
        """The path's job id (digits by the route), refused past SQLite's 64-bit range."""
        value: int = request.path_params["job_id"]
        if not 1 <= value < 2**63:
            raise BadRequest("job_id must be between 1 and 2**63-1")
        return value

    @staticmethod
    def queue_name(request: Request) -> str:
        value: str = request.path_params["queue"]
        if len(value) > 200 or not value.isprintable():
            raise BadRequest("the queue name must be at most 200 printable characters")
        return value

    # -- producers -----------------------------------------------------------------------

    async def enqueue(self, request: Request, body: m.Enqueue, query: None) -> Response:
        queue, specs, callback = self.queue_name(request), body.specs(), body.callback_spec()
        callback_id = None
        if callback is None:
            results = await self.queue.enqueue_many(queue, specs)
        else:
            target = None if isinstance(body.callback_queue, UnsetType) else body.callback_queue
            batch = await self.queue.enqueue_batch(queue, specs, callback, callback_queue=target)
            results, callback_id = batch.jobs, batch.callback
        self.metrics.handled("enqueued", sum(r.created for r in results))
        status = 201 if any(r.created for r in results) else 200
        created = [m.Created(id=r.id, created=r.created) for r in results]
        if isinstance(body.jobs, UnsetType):
            return reply(created[0], status)
        return reply(m.CreatedMany(jobs=created, callback=callback_id), status)

    async def get(self, request: Request, body: None, query: m.JobQuery) -> Response:
        job_id = self.job_id(request)
        wait = self.wait_time(query.wait)
        if wait > 0:
            try:
                job = await self.queue.wait(job_id, wait)
            except TimeoutError:
                job = await self.queue.get(job_id)
        else:
            job = await self.queue.get(job_id)
        return reply(_public(job))

    async def dead_letters(self, request: Request, body: None, query: m.DeadQuery) -> Response:
        jobs = await self.queue.dead_letters(query.queue, query.limit)
        return reply({"jobs": [_public(j) for j in jobs]})

    async def requeue(self, request: Request, body: m.Requeue, query: None) -> Response:
        moved = await self.queue.requeue_dead(body.ids, queue=body.queue)
        return reply(m.Requeued(requeued=moved))

    async def stats(self, request: Request, body: None, query: None) -> Response:
        return reply(await self.queue.stats())

    async def throughput(self, request: Request, body: None, query: m.ThroughputQuery) -> Response:
        return reply(m.PerMinute(per_minute=await self.queue.throughput(query.minutes)))

    async def recent(self, request: Request, body: None, query: m.RecentQuery) -> Response:
        jobs = await self.queue.recent(query.limit)
        return reply({"jobs": [_public(j) for j in jobs]})

    # -- workers -------------------------------------------------------------------------

    async def claim(self, request: Request, body: m.Claim, query: None) -> Response:
        worker = body.worker or f"http:{request.client.host if request.client else '?'}"
        jobs = await self.queue.claim(
            self.queue_name(request),
            worker=worker,
            capabilities=body.capabilities,
            limit=body.limit,
            lease=body.lease,
            wait=self.wait_time(body.wait),
        )
        self.metrics.handled("claimed", len(jobs))
        return reply({"jobs": [j.to_dict() for j in jobs]})

    async def heartbeat(self, request: Request, body: m.Heartbeat, query: None) -> Response:
        until = await self.queue.heartbeat(
            self.job_id(request),
            body.token,
            body.lease,
            progress=body.progress,
            message=body.message,
        )
        return reply(m.LeaseUntil(lease_until=until))

    async def complete(self, request: Request, body: m.Complete, query: None) -> Response:
        await self.queue.complete(self.job_id(request), body.token, body.result)
        self.metrics.handled("completed", 1)
        return reply(m.Completed(completed=True))

    async def complete_many(self, request: Request, body: m.CompleteMany, query: None) -> Response:
        held = await self.queue.complete_many([(j.id, j.token, j.result) for j in body.jobs])
        self.metrics.handled("completed", sum(held))
        return reply(m.CompletedMany(completed=held))

    async def fail(self, request: Request, body: m.Fail, query: None) -> Response:
        state = await self.queue.fail(
            self.job_id(request), body.token, body.error or "failed", retry=body.retry
        )
        self.metrics.handled("failed", 1)
        return reply({"state": state})

    async def release(self, request: Request, body: m.Release, query: None) -> Response:
        [held] = await self.queue.release([(self.job_id(request), body.token)])
        return reply(m.Released(released=held))

    # -- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request, body: None, query: None) -> Response:
        return reply({"ok": True, **await self.queue.health()})

    async def metrics_text(self, request: Request, body: None, query: None) -> Response:
        stats = await self.queue.stats()
        try:
            writer = await self.queue.writer_stats()
        except OneWriterError:
            writer = None
        return Response(render(stats, writer, self.metrics), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request, body: None, query: None) -> Response:
        return reply(openapi_schema())

    async def ui(self, request: Request, body: None, query: None) -> Response:
        return HTMLResponse(PAGE)

    def routes(self) -> list[Route]:
        """A route per :data:`ENDPOINTS` entry, served by the method of its name."""
        handlers: dict[str, Handler] = {
            "enqueue": self.enqueue,
            "claim": self.claim,
            "complete_many": self.complete_many,
            "get": self.get,
            "heartbeat": self.heartbeat,
            "complete": self.complete,
            "fail": self.fail,
            "release": self.release,
            "recent": self.recent,
            "dead_letters": self.dead_letters,
            "requeue": self.requeue,
            "stats": self.stats,
            "throughput": self.throughput,
            "healthz": self.healthz,
            "metrics": self.metrics_text,
            "openapi": self.openapi,
            "ui": self.ui,
            **self.controls.handlers(),
        }
        if set(handlers) != {e.name for e in ENDPOINTS}:
            raise RuntimeError("every endpoint needs exactly one handler")
        return [
            Route(e.path, self.endpoint(e, handlers[e.name]), methods=[e.method], name=e.name)
            for e in ENDPOINTS
        ]


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
