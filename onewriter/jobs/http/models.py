"""The HTTP service's bodies and query strings as msgspec types.

Decoding a request into its type is the validation (types, ranges, lengths, unknown
fields); the OpenAPI schema is generated from the same types, so the two cannot drift.
Bounds keep every value inside what both stores take: 64-bit integers, finite floats,
strings short enough to index.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from ...errors import BadRequest
from ..model import (
    BACKOFF_CAP,
    DEFAULT_BACKOFF,
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS,
    MAX_PARENTS,
    MESSAGE_LIMIT,
    Job,
    NewJob,
)

#: The deepest a payload or result may nest (JSON decoders and encoders recurse).
MAX_DEPTH = 100
_I63 = 2**63 - 1

JobId = Annotated[int, Meta(ge=1, le=_I63, description="a job's id")]
Priority = Annotated[int, Meta(ge=-(2**62) + 1, le=2**62 - 1, description="higher runs first")]
Seconds = Annotated[float, Meta(ge=0, le=1e10)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Key = Annotated[str, Meta(min_length=1, max_length=1000)]
Token = Annotated[str, Meta(max_length=200, description="the lease token from the claim")]
Names = Annotated[list[Name], Meta(max_length=100)]
Lease = Annotated[
    float, Meta(gt=0, le=86400, description="seconds the lease lasts (at most a day)")
]
Wait = Annotated[
    float, Meta(ge=0, le=86400, description="seconds to long-poll (capped by the server)")
]
Limit = Annotated[int, Meta(ge=1, le=1000)]
#: A payload: kept raw while the body is decoded, see :func:`json_value`.
JsonValue = Annotated[Raw, Meta(description="any JSON value")]


class _Body(Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body: unknown fields are refused, not ignored."""

    #: Fields holding any JSON (a NUL in their strings is stored escaped, and allowed).
    free_json: ClassVar[frozenset[str]] = frozenset({"payload", "result"})

    def json_values(self) -> list[Any]:
        """Its values of any JSON, decoded with it (their depth checked by :func:`decode`)."""
        return []


class JobOptions(_Body):
    """How a job runs, beside its payload."""

    priority: Priority = 0
    delay: Annotated[Seconds, Meta(description="seconds from now (server clock)")] | None = None
    run_at: Annotated[float, Meta(ge=0, le=1e11, description="Unix seconds, UTC")] | None = None
    requires: Annotated[Names, Meta(description="capabilities a worker must all have")] = []
    max_attempts: Annotated[int, Meta(ge=1, le=2**31 - 1)] = DEFAULT_MAX_ATTEMPTS
    unique_key: Key | None = None
    concurrency_key: Key | None = None
    concurrency_limit: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None
    backoff: Annotated[
        float, Meta(ge=0, le=BACKOFF_CAP, description="seconds; doubled per attempt, jittered")
    ] = DEFAULT_BACKOFF
    timeout: (
        Annotated[float, Meta(gt=0, le=7 * 86400, description="seconds an attempt may run")] | None
    ) = None
    depends_on: Annotated[
        list[JobId], Meta(max_length=MAX_PARENTS, description="jobs that must be done first")
    ] = []
    on_parent_failure: Annotated[
        Literal["cancel", "run"], Meta(description="when a parent ends dead or cancelled")
    ] = "cancel"

    def new_job(self, payload: Raw, what: str) -> NewJob:
        return NewJob(
            payload=json_value(payload, f"{what}.payload"),
            priority=self.priority,
            delay=self.delay,
            run_at=self.run_at,
            requires=self.requires,
            max_attempts=self.max_attempts,
            unique_key=self.unique_key,
            concurrency_key=self.concurrency_key,
            concurrency_limit=self.concurrency_limit,
            backoff=self.backoff,
            timeout=self.timeout,
            depends_on=self.depends_on,
            on_parent_failure=self.on_parent_failure,
        )


class NewJobBody(JobOptions, kw_only=True):
    """One job of a batch."""

    payload: JsonValue


class Enqueue(JobOptions):
    """One job (a payload and its options), or a batch: ``{"jobs": [...]}`` alone, or
    with a ``callback`` job (to ``callback_queue``) run once all of them have finished."""

    payload: JsonValue | UnsetType = UNSET
    jobs: Annotated[list[NewJobBody], Meta(min_length=1, max_length=10_000)] | UnsetType = UNSET
    callback: NewJobBody | UnsetType = UNSET
    callback_queue: Name | UnsetType = UNSET

    def specs(self) -> list[NewJob]:
        if isinstance(self.jobs, UnsetType):
            if isinstance(self.payload, UnsetType):
                raise BadRequest("a job needs a payload (or send a batch as {jobs: [...]})")
            if not isinstance(self.callback, UnsetType):
                raise BadRequest("a callback goes with a batch: {jobs: [...], callback: {...}}")
            return [self.new_job(self.payload, "$")]
        alone = Enqueue(jobs=self.jobs, callback=self.callback, callback_queue=self.callback_queue)
        if not isinstance(self.payload, UnsetType) or self != alone:
            raise BadRequest("a batch is {jobs: [...]} alone: options go on each job")
        return [job.new_job(job.payload, f"$.jobs[{i}]") for i, job in enumerate(self.jobs)]

    def callback_spec(self) -> NewJob | None:
        """The batch's callback job, if it has one."""
        if isinstance(self.callback, UnsetType):
            return None
        return self.callback.new_job(self.callback.payload, "$.callback")


class Claim(_Body):
    """Lease up to ``limit`` jobs of the queue; ``wait`` long-polls for the first."""

    worker: Annotated[str, Meta(max_length=200)] | None = None
    capabilities: Names = []
    limit: Limit = 1
    lease: Lease = DEFAULT_LEASE
    wait: Wait = 0.0


class Heartbeat(_Body):
    """Extend the lease; with the job's progress (0 to 100) and a short message."""

    token: Token
    lease: Lease = DEFAULT_LEASE
    progress: Annotated[float, Meta(ge=0, le=100)] | None = None
    message: Annotated[str, Meta(max_length=MESSAGE_LIMIT)] | None = None


class Complete(_Body):
    token: Token
    result: Annotated[Any, Meta(description="any JSON value")] = None

    def json_values(self) -> list[Any]:
        return [self.result]


class CompleteItem(_Body):
    id: JobId
    token: Token
    result: Annotated[Any, Meta(description="any JSON value")] = None


class CompleteMany(_Body):
    """Complete many jobs in one transaction; each (id, token) pair is answered."""

    jobs: Annotated[list[CompleteItem], Meta(max_length=10_000)]

    def json_values(self) -> list[Any]:
        return [job.result for job in self.jobs]


class Fail(_Body):
    token: Token
    error: Annotated[str, Meta(max_length=100_000, description="kept to 4000 chars")] = ""
    retry: bool = True


class Release(_Body):
    token: Token


class Requeue(_Body):
    """Dead letters back to ready: those of ``ids`` and ``queue``, all when neither."""

    ids: Annotated[list[JobId], Meta(max_length=10_000)] | None = None
    queue: Name | None = None


class RateLimitBody(_Body):
    """At most ``limit`` claims in any ``period`` seconds."""

    limit: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    period: Annotated[float, Meta(gt=0, le=86400)] = 1.0


class QueueConfig(_Body):
    """A queue's settings to change (those left out stay): ``rate_limit: null`` removes it."""

    paused: bool | UnsetType = UNSET
    rate_limit: RateLimitBody | UnsetType | None = UNSET


# -- query strings -----------------------------------------------------------------------


class JobQuery(Struct, forbid_unknown_fields=True):
    wait: Annotated[Wait, Meta(description="seconds to wait for the job to finish")] = 0.0


class DeadQuery(Struct, forbid_unknown_fields=True):
    queue: Annotated[Name, Meta(description="only this queue")] | None = None
    limit: Limit = 100


class RecentQuery(Struct, forbid_unknown_fields=True):
    limit: Limit = 50


class ThroughputQuery(Struct, forbid_unknown_fields=True):
    minutes: Annotated[int, Meta(ge=1, le=1440, description="how many minutes")] = 10


# -- responses ---------------------------------------------------------------------------


class Created(Struct):
    id: int
    created: Annotated[bool, Meta(description="false: an unfinished job had the unique key")]


class CreatedMany(Struct, omit_defaults=True):
    jobs: list[Created]
    callback: Annotated[int, Meta(description="the batch's callback job")] | None = None


class JobList(Struct):
    jobs: list[Job]


class LeaseUntil(Struct):
    lease_until: float


class Completed(Struct):
    completed: bool


class CompletedMany(Struct):
    completed: Annotated[list[bool], Meta(description="per pair: whether its token held")]


class Failed(Struct):
    state: Literal["ready", "dead", "cancelled"]


class Cancelled(Struct):
    state: Annotated[
        str, Meta(description="cancelled, cancelling (running: its worker is told), or final")
    ]


class Retried(Struct):
    retried: Annotated[bool, Meta(description="false: not dead or cancelled, or key taken")]


class Released(Struct):
    released: bool


class Requeued(Struct):
    requeued: int


class PerMinute(Struct):
    per_minute: Annotated[list[int], Meta(description="jobs done per minute, oldest first")]


class ErrorDetail(Struct):
    code: str
    message: str


class Error(Struct):
    """Every refusal: a stable code from onewriter's error table, and a message."""

    error: ErrorDetail


def _deep(data: bytes) -> bool:
    """Whether JSON ``data`` might nest past :data:`MAX_DEPTH`: the cheap bound (strings
    may hold brackets too), before walking anything."""
    return data.count(b"[") + data.count(b"{") > MAX_DEPTH


def json_value(raw: Raw, what: str) -> Any:
    """The value of a payload, ``BAD_REQUEST`` past :data:`MAX_DEPTH` nested arrays and
    objects. Payloads are left raw while their body is decoded so that, in a batch, only
    a payload with many brackets is walked."""
    text = bytes(raw)
    try:  # left raw, the value's UTF-8 and numbers are checked only now
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if _deep(text):
        _check_depth([value], what)
    return value


def _check_depth(values: list[Any], what: str) -> None:
    """``BAD_REQUEST`` if one of ``values`` nests past :data:`MAX_DEPTH` (walked level by
    level, all together: no recursion, one pass per level)."""
    level = values
    for _ in range(MAX_DEPTH):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    raise BadRequest(f"{what} nests deeper than {MAX_DEPTH} levels")


def decode(data: bytes, model: type[Any]) -> Any:
    """``data`` (JSON) as ``model``; ``BAD_REQUEST`` naming the first wrong field, or
    for a value of any JSON nested past :data:`MAX_DEPTH`."""
    try:
        value = msgspec.json.decode(data, type=model)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels") from None
    if isinstance(value, _Body):
        if _deep(data):
            _check_depth(value.json_values(), "a result")
        if b"\\u0000" in data and _holds_nul(value):  # JSON can only spell NUL so
            raise BadRequest(_NUL)
    return value


#: Text fields, queue names and query values may not hold NUL: PostgreSQL's text cannot
#: (checked in Python, and only when the body spells one: a pattern would cost every
#: string of every request a regular-expression match).
_NUL = "text fields may not contain NUL (\\u0000)"


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, _Body):
        return any(
            _holds_nul(getattr(value, name))
            for name in value.__struct_fields__
            if name not in value.free_json
        )
    return False


def convert(values: dict[str, str], model: type[Any]) -> Any:
    """Query-string ``values`` as ``model`` (numbers parsed, then range-checked)."""
    if any("\x00" in value for value in values.values()):
        raise BadRequest(_NUL)
    try:
        return msgspec.convert(values, type=model, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc).replace("$.", "query parameter ", 1)) from None
