"""An asyncio client of the HTTP service, with the worker-side methods of
:class:`~onewriter.jobs.AsyncJobQueue` (so the worker runner drives either)."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from functools import cache
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from ...errors import ERRORS_BY_CODE, OneWriterError, WriterUnavailable
from ..errors import JobCancelled, JobNotFound, LeaseLost, UnsupportedMediaType
from ..model import (
    DEFAULT_LEASE,
    Batch,
    Enqueued,
    Job,
    NewJob,
    QueueSettings,
    State,
    settings_from_row,
)

_CODES: dict[str, type[OneWriterError]] = {
    **ERRORS_BY_CODE,
    LeaseLost.code: LeaseLost,
    JobCancelled.code: JobCancelled,
    JobNotFound.code: JobNotFound,
    UnsupportedMediaType.code: UnsupportedMediaType,
}


@cache
def _tls_context() -> ssl.SSLContext:
    """One verifying context for every client: loading the CA bundle costs ~0.1 s."""
    return ssl.create_default_context()


def _spec(job: NewJob | Any) -> dict[str, Any]:
    if not isinstance(job, NewJob):
        return {"payload": job}
    data = {
        "payload": job.payload,
        "priority": job.priority,
        "delay": job.delay,
        "run_at": job.run_at,
        "requires": list(job.requires),
        "max_attempts": job.max_attempts,
        "unique_key": job.unique_key,
        "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit,
        "backoff": job.backoff,
        "timeout": job.timeout,
        "depends_on": list(job.depends_on) or None,
        "on_parent_failure": job.on_parent_failure if job.depends_on else None,
    }
    return {k: v for k, v in data.items() if v is not None}


def _settings(data: dict[str, Any]) -> QueueSettings:
    rate = data.get("rate_limit")
    limit, period = (None, None) if rate is None else (rate["limit"], rate["period"])
    return settings_from_row(data["queue"], (data["paused"], limit, period))


class RemoteQueue:
    """The queue behind ``onewriter jobs serve``, over HTTP (keep-alive connections).

    Errors come back as the same exception classes as in process (by their code).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_connections: int = 100,
        worker: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.timeout = timeout
        self.worker = worker
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            limits=limits,
            verify=_tls_context() if url.startswith("https:") else False,
        )

    async def __aenter__(self) -> RemoteQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        try:
            response = await self.http.request(
                method, path, json=body, params=params, timeout=timeout or self.timeout
            )
        except httpx.TransportError as exc:
            raise WriterUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            cls = _CODES.get(str(error.get("code")), OneWriterError)
            raise cls(str(error.get("message")))
        raise OneWriterError(f"{method} {path}: HTTP {response.status_code}")

    # -- producers -----------------------------------------------------------------------

    async def enqueue(self, queue: str, payload: Any, **options: Any) -> int:
        """Add a job (options as for :meth:`AsyncJobQueue.enqueue`); its id."""
        body = _spec(NewJob(payload=payload, **options))
        result = await self._call("POST", f"/queues/{queue}/jobs", body)
        return int(result["id"])

    async def enqueue_many(self, queue: str, jobs: Iterable[NewJob | Any]) -> list[Enqueued]:
        """Add many jobs in one request."""
        body = {"jobs": [_spec(job) for job in jobs]}
        result = await self._call("POST", f"/queues/{queue}/jobs", body)
        return [Enqueued(int(r["id"]), bool(r["created"])) for r in result["jobs"]]

    async def get(self, job_id: int, wait: float = 0.0) -> Job:
        """The job (no token); with ``wait``, once finished or after that many seconds."""
        params = {"wait": wait} if wait else None
        data = await self._call(
            "GET", f"/jobs/{job_id}", params=params, timeout=self.timeout + wait
        )
        return Job.from_dict(data)

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[Job]:
        params: dict[str, Any] = {"limit": limit}
        if queue is not None:
            params["queue"] = queue
        data = await self._call("GET", "/dead", params=params)
        return [Job.from_dict(j) for j in data["jobs"]]

    async def requeue_dead(
        self, ids: Iterable[int] | None = None, *, queue: str | None = None
    ) -> int:
        body: dict[str, Any] = {}
        if ids is not None:
            body["ids"] = list(ids)
        if queue is not None:
            body["queue"] = queue
        return int((await self._call("POST", "/dead/requeue", body))["requeued"])

    async def enqueue_batch(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob,
        *,
        callback_queue: str | None = None,
    ) -> Batch:
        """Add jobs and a callback run once all have finished, in one request."""
        body: dict[str, Any] = {"jobs": [_spec(job) for job in jobs], "callback": _spec(callback)}
        if callback_queue is not None:
            body["callback_queue"] = callback_queue
        result = await self._call("POST", f"/queues/{quote(queue, safe='')}/jobs", body)
        enqueued = [Enqueued(int(r["id"]), bool(r["created"])) for r in result["jobs"]]
        return Batch(enqueued, int(result["callback"]))

    async def cancel(self, job_id: int) -> str:
        """Cancel a job; its state, or ``"cancelling"`` while its worker is told."""
        return str((await self._call("POST", f"/jobs/{job_id}/cancel"))["state"])

    async def retry(self, job_id: int) -> bool:
        """Run a dead or cancelled job again; whether it moved."""
        return bool((await self._call("POST", f"/jobs/{job_id}/retry"))["retried"])

    async def pause(self, queue: str) -> QueueSettings:
        return _settings(await self._call("POST", f"/queues/{quote(queue, safe='')}/pause"))

    async def resume(self, queue: str) -> QueueSettings:
        return _settings(await self._call("POST", f"/queues/{quote(queue, safe='')}/resume"))

    async def set_rate_limit(
        self, queue: str, limit: int | None, period: float = 1.0
    ) -> QueueSettings:
        rate = None if limit is None else {"limit": limit, "period": period}
        body = {"rate_limit": rate}
        return _settings(await self._call("PUT", f"/queues/{quote(queue, safe='')}", body))

    async def queue_settings(self, queue: str) -> QueueSettings:
        return _settings(await self._call("GET", f"/queues/{quote(queue, safe='')}"))

    # -- workers -------------------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        *,
        worker: str | None = None,
        capabilities: Iterable[str] = (),
        limit: int = 1,
        lease: float = DEFAULT_LEASE,
        wait: float = 0.0,
    ) -> list[Job]:
        """Lease up to ``limit`` jobs, the server long-polling up to ``wait`` seconds."""
        body: dict[str, Any] = {
            "capabilities": list(capabilities),
            "limit": limit,
            "lease": lease,
            "wait": wait,
        }
        if worker or self.worker:
            body["worker"] = worker or self.worker
        data = await self._call("POST", f"/queues/{queue}/claim", body, timeout=self.timeout + wait)
        return [Job.from_dict(j) for j in data["jobs"]]

    async def heartbeat(
        self,
        job_id: int,
        token: str,
        lease: float = DEFAULT_LEASE,
        *,
        progress: float | None = None,
        message: str | None = None,
    ) -> float:
        """Extend the lease, with progress if given (``CANCELLED``: stop working on it)."""
        body: dict[str, Any] = {"token": token, "lease": lease}
        if progress is not None:
            body["progress"] = progress
        if message is not None:
            body["message"] = message
        data = await self._call("POST", f"/jobs/{job_id}/heartbeat", body)
        return float(data["lease_until"])

    async def complete(self, job_id: int, token: str, result: Any = None) -> None:
        await self._call("POST", f"/jobs/{job_id}/complete", {"token": token, "result": result})

    async def complete_many(self, items: Iterable[tuple[int, str, Any]]) -> list[bool]:
        jobs = [{"id": i, "token": t, "result": r} for i, t, r in items]
        if not jobs:
            return []
        data = await self._call("POST", "/jobs/complete", {"jobs": jobs})
        return [bool(ok) for ok in data["completed"]]

    async def fail(self, job_id: int, token: str, error: str, *, retry: bool = True) -> State:
        body = {"token": token, "error": error, "retry": retry}
        state: State = (await self._call("POST", f"/jobs/{job_id}/fail", body))["state"]
        return state

    async def release(self, items: Iterable[tuple[int, str]]) -> list[bool]:
        held = []
        for job_id, token in items:
            data = await self._call("POST", f"/jobs/{job_id}/release", {"token": token})
            held.append(bool(data["released"]))
        return held
