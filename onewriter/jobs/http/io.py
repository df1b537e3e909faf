"""What every HTTP endpoint shares: settings, bearer-token auth, bounded JSON bodies,
JSON replies, and errors as ``{"error": {"code", "message"}}`` with their HTTP status."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ...errors import OneWriterError, TooLarge, Unauthorized
from ..errors import UnsupportedMediaType
from ..model import DEFAULT_PAYLOAD_LIMIT

PRODUCER = "producer"
WORKER = "worker"
OPEN: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How the HTTP service runs (passed to its worker processes as JSON)."""

    database: str
    """The store: a SQLite file's path, or a ``postgresql://`` URL."""
    producer_tokens: tuple[str, ...] = ()
    """Bearer tokens allowed to enqueue, requeue and read; none configured (and no worker
    tokens either) means no auth at all."""
    worker_tokens: tuple[str, ...] = ()
    """Bearer tokens allowed to claim, heartbeat, complete, fail and read."""
    payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    max_body: int = 16 * 1024 * 1024
    max_wait: float = 60.0
    """The longest long-poll (claim and job waits) a request may ask for."""
    failover_timeout: float = 15.0
    client_timeout: float = 60.0
    pool_size: int = 10
    """PostgreSQL connections per HTTP worker process (a waiting claim holds none)."""

    @property
    def auth_enabled(self) -> bool:
        return bool(self.producer_tokens or self.worker_tokens)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["producer_tokens"] = tuple(data.get("producer_tokens", ()))
        data["worker_tokens"] = tuple(data.get("worker_tokens", ()))
        return cls(**data)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _matches(token: str, candidates: Iterable[str]) -> bool:
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def check_auth(request: Request, settings: Settings, roles: frozenset[str]) -> None:
    """Refuse with ``UNAUTHORIZED`` unless the bearer token belongs to one of ``roles``."""
    if not roles or not settings.auth_enabled:
        return
    token = _token(request)
    if token is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    allowed = (PRODUCER in roles and _matches(token, settings.producer_tokens)) or (
        WORKER in roles and _matches(token, settings.worker_tokens)
    )
    if not allowed:
        raise Unauthorized(f"this endpoint needs a {' or '.join(sorted(roles))} token")


def error_response(exc: OneWriterError) -> Response:
    response = reply({"error": exc.to_wire()}, exc.http_status)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def read_body(request: Request, max_body: int) -> bytes:
    """The request's JSON body (``b"{}"`` when empty): ``TOO_LARGE`` past ``max_body``
    bytes, ``UNSUPPORTED_MEDIA_TYPE`` for a declared type other than JSON in UTF-8."""
    media = request.headers.get("content-type")
    if media is not None and not _is_json(media):
        raise UnsupportedMediaType(f"the body must be application/json, not {media[:100]!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise TooLarge(f"request body of {declared} bytes is over the limit of {max_body}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise TooLarge(f"request body is over the limit of {max_body} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    return body if body.strip() else b"{}"


def _is_json(media: str) -> bool:
    kind, _, params = media.partition(";")
    kind = kind.strip().lower()
    if kind != "application/json" and not (
        kind.startswith("application/") and kind.endswith("+json")
    ):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def reply(value: Any, status: int = 200) -> Response:
    """``value`` (plain data or a response model) as JSON."""
    return Response(msgspec.json.encode(value), status, media_type="application/json")
