"""The HTTP endpoints of what goes beyond enqueue and claim: cancel and retry a job,
pause, resume and configure a queue, read its settings (all but the read need a producer
token: they are an operator's acts, as requeueing dead letters is). Their routes are
entries of :data:`~onewriter.jobs.http.openapi.ENDPOINTS` like every other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from msgspec import UnsetType
from starlette.requests import Request
from starlette.responses import Response

from . import models as m
from .io import reply

if TYPE_CHECKING:
    from ..api.aio import AsyncJobStore

Handler = Callable[[Request, Any, Any], Awaitable[Response]]


class ControlEndpoints:
    """The endpoints, over the service's store; the path's id and queue read by
    ``job_id`` and ``queue_name`` (the service's checks)."""

    def __init__(
        self,
        store: Callable[[], AsyncJobStore],
        job_id: Callable[[Request], int],
        queue_name: Callable[[Request], str],
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.queue_name = queue_name

    async def cancel(self, request: Request, body: None, query: None) -> Response:
        return reply(m.Cancelled(state=await self.store().cancel(self.job_id(request))))

    async def retry(self, request: Request, body: None, query: None) -> Response:
        return reply(m.Retried(retried=await self.store().retry(self.job_id(request))))

    async def pause(self, request: Request, body: None, query: None) -> Response:
        return reply(await self.store().pause(self.queue_name(request)))

    async def resume(self, request: Request, body: None, query: None) -> Response:
        return reply(await self.store().resume(self.queue_name(request)))

    async def get_queue(self, request: Request, body: None, query: None) -> Response:
        return reply(await self.store().queue_settings(self.queue_name(request)))

    async def configure(self, request: Request, body: m.QueueConfig, query: None) -> Response:
        options: dict[str, Any] = {}
        if not isinstance(body.paused, UnsetType):
            options["paused"] = body.paused
        if not isinstance(body.rate_limit, UnsetType):
            rate = body.rate_limit
            options["rate_limit"] = None if rate is None else (rate.limit, rate.period)
        return reply(await self.store().configure(self.queue_name(request), **options))

    def handlers(self) -> dict[str, Handler]:
        """By the names of their :data:`~onewriter.jobs.http.openapi.ENDPOINTS` entries."""
        return {
            "cancel": self.cancel,
            "retry": self.retry,
            "pause": self.pause,
            "resume": self.resume,
            "queue": self.get_queue,
            "configure_queue": self.configure,
        }
