"""The posts API: a small Starlette app whose every answer names the worker pid.

Reads go to the worker's reader pool, writes to the store's write path. Errors are JSON
``{"error": {"code", "message"}}`` with the status of their code (docs/api.md's table for
onewriter's codes; 400/422 for bad input, 404 for a missing post).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import OneWriterError
from ..metrics import CONTENT_TYPE
from .metrics import CountRequests, RequestCounts, prometheus_text
from .posts import GET_POST, LIST_POSTS, create_post, delete_post, post_dict, update_post
from .stores import Store

MAX_TITLE = 200
MAX_CONTENT = 100_000
MAX_BODY = 1024 * 1024
HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


class ApiError(Exception):
    """A request the API refuses, with its status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def answer(data: dict[str, Any], status: int = 200) -> JSONResponse:
    """A JSON answer naming this worker (in the body and in ``x-worker``)."""
    pid = os.getpid()
    return JSONResponse({"worker": pid, **data}, status, headers={"x-worker": str(pid)})


def failure(status: int, code: str, message: str) -> JSONResponse:
    return answer({"error": {"code": code, "message": message}}, status)


# -- input ------------------------------------------------------------------------------------


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object: 400 when it is not JSON, 422 when not an object."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "TOO_LARGE", f"the body is over {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(413, "TOO_LARGE", f"the body is over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "BAD_JSON", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "INVALID", "the body must be a JSON object")
    return data


def post_fields(data: dict[str, Any], *, partial: bool) -> dict[str, str]:
    """``title`` and ``content`` checked: strings, within limits, nothing else."""
    unknown = sorted(set(data) - {"title", "content"})
    if unknown:
        raise ApiError(422, "INVALID", f"unknown field(s): {', '.join(unknown)}")
    fields: dict[str, str] = {}
    for name, limit in (("title", MAX_TITLE), ("content", MAX_CONTENT)):
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, str):
            raise ApiError(422, "INVALID", f"{name} must be a string")
        if len(value) > limit:
            raise ApiError(422, "INVALID", f"{name} is longer than {limit} characters")
        fields[name] = value
    if "title" in fields and not fields["title"].strip():
        raise ApiError(422, "INVALID", "title must not be empty")
    if not partial and "title" not in fields:
        raise ApiError(422, "INVALID", "title is required")
    if partial and not fields:
        raise ApiError(422, "INVALID", "give title, content or both")
    return fields


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BAD_QUERY", f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "BAD_QUERY", f"{name} must be between {low} and {high}")
    return value


# -- endpoints --------------------------------------------------------------------------------


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def list_posts(request: Request) -> Response:
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0, 2**62)
    rows = await store_of(request).read(LIST_POSTS, (limit, offset))
    return answer({"posts": [post_dict(r) for r in rows], "limit": limit, "offset": offset})


async def get_post(request: Request) -> Response:
    post_id: int = request.path_params["post_id"]
    rows = await store_of(request).read(GET_POST, (post_id,))
    if not rows:
        raise ApiError(404, "NOT_FOUND", f"no post {post_id}")
    return answer({"post": post_dict(rows[0])})


async def add_post(request: Request) -> Response:
    fields = post_fields(await json_object(request), partial=False)
    post = await store_of(request).write(create_post, **fields)
    return answer({"post": post}, 201)


async def change_post(request: Request) -> Response:
    post_id: int = request.path_params["post_id"]
    fields = post_fields(await json_object(request), partial=True)
    post = await store_of(request).write(update_post, post_id=post_id, **fields)
    if post is None:
        raise ApiError(404, "NOT_FOUND", f"no post {post_id}")
    return answer({"post": post})


async def remove_post(request: Request) -> Response:
    post_id: int = request.path_params["post_id"]
    if not await store_of(request).write(delete_post, post_id=post_id):
        raise ApiError(404, "NOT_FOUND", f"no post {post_id}")
    return answer({"deleted": post_id})


async def healthz(request: Request) -> Response:
    store = store_of(request)
    await store.read("SELECT 1")
    return answer({"ok": True, "mode": store.mode})


async def stats(request: Request) -> Response:
    store = store_of(request)
    figures = await store.stats()
    if store.mode == "naive":
        return answer({"mode": store.mode, "writer": None, "naive": figures})
    return answer({"mode": store.mode, "writer": figures})


async def metrics(request: Request) -> Response:
    store = store_of(request)
    writer = await store.stats() if store.mode != "naive" else None
    counts: RequestCounts = request.app.state.counts
    return Response(
        prometheus_text(counts, writer),
        headers={"x-worker": str(os.getpid())},
        media_type=CONTENT_TYPE,
    )


# -- errors -----------------------------------------------------------------------------------


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return failure(exc.status, exc.code, exc.message)


async def on_onewriter_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OneWriterError)
    return failure(exc.http_status, exc.code, exc.message)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette raises the exception again after this answer, so uvicorn logs it.
    return failure(500, "INTERNAL", f"{type(exc).__name__} while answering")


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    return failure(exc.status_code, code, str(exc.detail))


def create_app(open_store: Callable[[], Store]) -> Starlette:
    """The posts app; ``open_store`` is called once the worker's event loop runs."""
    counts = RequestCounts()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store()
        await store.open()
        app.state.store = store
        counts.mode = store.mode
        try:
            async with counts.counters.flushing():
                yield
        finally:
            await store.close()

    app = Starlette(
        routes=[
            Route("/posts", list_posts, methods=["GET"]),
            Route("/posts", add_post, methods=["POST"]),
            Route("/posts/{post_id:int}", get_post, methods=["GET"]),
            Route("/posts/{post_id:int}", change_post, methods=["PATCH"]),
            Route("/posts/{post_id:int}", remove_post, methods=["DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        middleware=[Middleware(CountRequests, counts=counts)],
        exception_handlers={
            ApiError: on_api_error,
            OneWriterError: on_onewriter_error,
            HTTPException: on_http_error,
            Exception: on_unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.counts = counts
    return app
