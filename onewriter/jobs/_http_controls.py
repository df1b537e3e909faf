"""The HTTP endpoints of what goes beyond enqueue and claim: cancel and retry a job,
pause, resume and configure a queue, read its settings (all but the read need a producer
token: they are an operator's acts, as requeueing dead letters is)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._errors import BadRequest
from ._http_io import PRODUCER, WORKER, Fields

if TYPE_CHECKING:
    from ._async_store import AsyncJobStore

Handler = Callable[[Request], Awaitable[Response]]
Route = tuple[str, str, str, frozenset[str], Handler]


class ControlEndpoints:
    """The endpoints, over the service's store (``store()`` returns it once open)."""

    def __init__(
        self, store: Callable[[], AsyncJobStore], body: Callable[[Request], Awaitable[Any]]
    ) -> None:
        self.store = store
        self.body = body

    async def cancel(self, request: Request) -> Response:
        state = await self.store().cancel(request.path_params["job_id"])
        return JSONResponse({"state": state})

    async def retry(self, request: Request) -> Response:
        retried = await self.store().retry(request.path_params["job_id"])
        return JSONResponse({"retried": retried})

    async def pause(self, request: Request) -> Response:
        settings = await self.store().pause(request.path_params["queue"])
        return JSONResponse(settings.to_dict())

    async def resume(self, request: Request) -> Response:
        settings = await self.store().resume(request.path_params["queue"])
        return JSONResponse(settings.to_dict())

    async def get_queue(self, request: Request) -> Response:
        settings = await self.store().queue_settings(request.path_params["queue"])
        return JSONResponse(settings.to_dict())

    async def put_queue(self, request: Request) -> Response:
        """``{"paused": bool, "rate_limit": {"limit", "period"} | null}``, each optional."""
        data = await self.body(request)
        fields = Fields(data, ("paused", "rate_limit"))
        paused = fields.boolean("paused", True) if "paused" in data else None
        options: dict[str, Any] = {"paused": paused}
        if "rate_limit" in data:
            rate = data["rate_limit"]
            if rate is not None and not isinstance(rate, dict):
                raise BadRequest("rate_limit must be {limit, period} or null")
            options["rate_limit"] = rate
        settings = await self.store().configure(request.path_params["queue"], **options)
        return JSONResponse(settings.to_dict())

    def routes(self) -> list[Route]:
        producer = frozenset({PRODUCER})
        both = frozenset({PRODUCER, WORKER})
        return [
            ("/jobs/{job_id:int}/cancel", "POST", "cancel", producer, self.cancel),
            ("/jobs/{job_id:int}/retry", "POST", "retry", producer, self.retry),
            ("/queues/{queue}/pause", "POST", "pause", producer, self.pause),
            ("/queues/{queue}/resume", "POST", "resume", producer, self.resume),
            ("/queues/{queue}", "GET", "queue", both, self.get_queue),
            ("/queues/{queue}", "PUT", "configure_queue", producer, self.put_queue),
        ]
