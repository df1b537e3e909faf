"""What validating a request body costs: msgspec and pydantic on the job service's real
bodies (enqueue one, enqueue a batch, claim, complete a batch), each decoding the raw
bytes into checked types, beside ``json.loads`` alone (no checks at all). The service
uses msgspec (onewriter.jobs.http.models); the pydantic twins below have the same
fields and bounds. Writes the "http-models" section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

from msgspec import UnsetType
from pydantic import BaseModel, ConfigDict, Field

from benchmarks._report import update_section
from onewriter.cli.tables import format_table
from onewriter.jobs.http import models as m
from onewriter.jobs.http.models import json_value

from . import _cli

_I63 = 2**63 - 1
_Name = Annotated[str, Field(min_length=1, max_length=200)]
_Token = Annotated[str, Field(max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PNewJob(_Strict):
    payload: Any
    priority: Annotated[int, Field(ge=-(2**62) + 1, le=2**62 - 1)] = 0
    delay: Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)] | None = None
    run_at: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)] | None = None
    requires: Annotated[list[_Name], Field(max_length=100)] = []
    max_attempts: Annotated[int, Field(ge=1, le=2**31 - 1)] = 3
    unique_key: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    concurrency_key: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    backoff: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 1.0


class PBatch(_Strict):
    jobs: Annotated[list[PNewJob], Field(min_length=1, max_length=10_000)]


class PClaim(_Strict):
    worker: Annotated[str, Field(max_length=200)] | None = None
    capabilities: Annotated[list[_Name], Field(max_length=100)] = []
    limit: Annotated[int, Field(ge=1, le=1000)] = 1
    lease: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 30.0
    wait: Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] = 0.0


class PCompleteItem(_Strict):
    id: Annotated[int, Field(ge=1, le=_I63)]
    token: _Token
    result: Any = None


class PCompleteMany(_Strict):
    jobs: Annotated[list[PCompleteItem], Field(max_length=10_000)]


def _bodies(batch: int) -> dict[str, tuple[bytes, type[Any], type[BaseModel]]]:
    """The bodies ``RemoteQueue`` and the stress harness send, by request."""
    payload = {"user": 12345, "action": "resize", "path": "/img/12345.png", "sizes": [64, 256]}
    token = "3f2a9c4e1b7d8a6f0e5c2b1a9d8e7f6c"
    return {
        "enqueue one": (
            json.dumps({"payload": payload, "priority": 1}).encode(),
            m.Enqueue,
            PNewJob,
        ),
        f"enqueue {batch}": (
            json.dumps({"jobs": [{"payload": payload} for _ in range(batch)]}).encode(),
            m.Enqueue,
            PBatch,
        ),
        "claim": (
            json.dumps(
                {"capabilities": ["ffmpeg"], "limit": 8, "lease": 30.0, "wait": 0.5, "worker": "w1"}
            ).encode(),
            m.Claim,
            PClaim,
        ),
        "complete 8": (
            json.dumps(
                {"jobs": [{"id": 1000 + i, "token": token, "result": {"ok": i}} for i in range(8)]}
            ).encode(),
            m.CompleteMany,
            PCompleteMany,
        ),
    }


def _calls_per_round(fn: Callable[[], Any], seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds``."""
    n = 1
    while True:
        started = time.thread_time()
        for _ in range(n):
            fn()
        elapsed = time.thread_time() - started
        if elapsed > seconds / 10:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def _best_us(fns: list[Callable[[], Any]], seconds: float, rounds: int = 7) -> list[float]:
    """CPU microseconds per call of each of ``fns``, the best of ``rounds`` rounds, the
    functions taking turns within each round (a burst of load on the shared machine
    then hits them alike)."""
    counts = [_calls_per_round(fn, seconds / rounds / len(fns)) for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, (fn, n) in enumerate(zip(fns, counts, strict=True)):
            started = time.thread_time()
            for _ in range(n):
                fn()
            best[i] = min(best[i], (time.thread_time() - started) / n * 1e6)
    return best


def _msgspec(body: bytes, model: type[Any]) -> Callable[[], Any]:
    def run() -> Any:
        value = m.decode(body, model)
        if isinstance(value, m.Enqueue):  # the payloads as values, depth checked
            jobs = [value] if isinstance(value.jobs, UnsetType) else value.jobs
            return [json_value(job.payload, "payload") for job in jobs]
        return value

    return run


def _pydantic(body: bytes, model: type[BaseModel]) -> Callable[[], Any]:
    return lambda: model.model_validate_json(body)


def measure(batch: int, seconds: float) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for name, (body, ours, theirs) in _bodies(batch).items():
        assert _pydantic(body, theirs)() is not None
        loads, fast, slow = _best_us(
            [lambda b=body: json.loads(b), _msgspec(body, ours), _pydantic(body, theirs)],
            seconds,
        )
        rows.append(
            [name, len(body), f"{loads:.2f}", f"{fast:.2f}", f"{slow:.2f}", f"{slow / fast:.1f}x"]
        )
    return rows


def main() -> None:
    parser = _cli.parser("http_models", __doc__)
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue batch")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per body")
    args = parser.parse_args()
    headers = ["body", "bytes", "json.loads µs", "msgspec µs", "pydantic µs", "pydantic/msgspec"]
    table = format_table(headers, measure(args.batch, args.seconds))
    print(table)
    if not args.no_write:
        import msgspec
        import pydantic

        body = (
            f"msgspec {msgspec.__version__}, pydantic {pydantic.VERSION}. Per request body: "
            "decode the bytes into checked types (msgspec: the service's own types, with "
            "the payload depth checks; pydantic: the same fields and bounds, strict, "
            "`model_validate_json`), CPU time of this thread (not wall time: the machine is "
            "shared), best of 7 rounds taking turns. `json.loads` alone checks nothing and "
            "is the floor.\n\n```\n" + table + "\n```\n"
        )
        update_section(
            "http-models",
            "Jobs HTTP: validating request bodies, msgspec against pydantic",
            "python -m benchmarks.http_models",
            body,
        )


if __name__ == "__main__":
    main()
