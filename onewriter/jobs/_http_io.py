"""What every HTTP endpoint shares: settings, bearer-token auth, bounded JSON bodies,
checked fields, and errors as ``{"error": {"code", "message"}}`` with their HTTP status."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .._errors import BadRequest, OneWriterError, TooLarge, Unauthorized
from ._model import DEFAULT_PAYLOAD_LIMIT, NewJob

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


def error_response(exc: OneWriterError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse({"error": exc.to_wire()}, status_code=exc.http_status, headers=headers)


async def read_json(request: Request, max_body: int) -> dict[str, Any]:
    """The request's JSON object; ``TOO_LARGE`` past ``max_body`` bytes, else
    ``BAD_REQUEST`` for anything that is not a JSON object."""
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
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


class Fields:
    """Typed access to a JSON object's members, refusing unknown or ill-typed ones."""

    def __init__(self, data: Mapping[str, Any], allowed: Iterable[str], what: str = "body") -> None:
        unknown = set(data) - set(allowed)
        if unknown:
            raise BadRequest(f"unknown field(s) in {what}: {', '.join(sorted(unknown))}")
        self.data = data

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.data.get(name, default)
        if value is None and required:
            raise BadRequest(f"{name} is required")
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        return value

    def number(self, name: str, default: float | None = None) -> Any:
        value = self.data.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"{name} must be a number")
        if not math.isfinite(value):
            raise BadRequest(f"{name} must be finite")
        return value

    def integer(self, name: str, default: int | None = None) -> Any:
        value = self.data.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"{name} must be an integer")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false")
        return value

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRequest(f"{name} must be a list of strings")
        return value

    def integers(self, name: str) -> list[int] | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise BadRequest(f"{name} must be a list of integers")
        return value

    def objects(self, name: str) -> list[dict[str, Any]]:
        value = self.data.get(name)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise BadRequest(f"{name} must be a list of objects")
        return value


NEW_JOB_FIELDS = (
    "payload",
    "priority",
    "delay",
    "run_at",
    "requires",
    "max_attempts",
    "unique_key",
    "concurrency_key",
    "concurrency_limit",
    "backoff",
    "timeout",
    "depends_on",
    "on_parent_failure",
)


def new_job(data: Mapping[str, Any], what: str = "job") -> NewJob:
    """A :class:`NewJob` from its JSON form (values are checked when encoded)."""
    if not isinstance(data, Mapping):
        raise BadRequest(f"{what} must be a JSON object")
    fields = Fields(data, NEW_JOB_FIELDS, what)
    if "payload" not in data:
        raise BadRequest(f"{what} needs a payload")
    options = {k: v for k, v in data.items() if k != "payload" and v is not None}
    if "requires" in options:
        options["requires"] = fields.strings("requires")
    if "depends_on" in options:
        options["depends_on"] = fields.integers("depends_on")
    return NewJob(payload=data["payload"], **options)
