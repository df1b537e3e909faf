"""What goes beyond enqueue and claim, over any store: batches with a callback, cancel
and retry a job, pause and resume a queue, set its rate limit, read its settings. Mixed
into
:class:`~onewriter.jobs.JobStore` and :class:`~onewriter.jobs.AsyncJobStore`, whose two
primitives (``_write``, ``_read``) they use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..model import Batch, NewJob, QueueSettings, check_queue_name, decode_batch
from .calls import Call, Calls, check_parents, parents_params

if TYPE_CHECKING:
    from ..wake import AsyncWaker, ThreadWaker
    from .sync import Reads

#: ``rate_limit`` left as it is by :meth:`Controls.configure`.
UNCHANGED: Any = object()


class Controls:
    """Cancel, pause, resume and rate limits, from synchronous code."""

    _calls: Calls
    _reads: Reads
    _waker: ThreadWaker

    if TYPE_CHECKING:  # the store's primitives

        def _write(self, call: Call) -> Any: ...

        def _read(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]: ...

    def enqueue_batch(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob,
        *,
        callback_queue: str | None = None,
    ) -> Batch:
        """Add ``jobs`` and a ``callback`` job (to ``callback_queue``, default the same)
        that runs once all of them have finished, however they ended (its
        ``depends_on`` lists them: it can read their results), in one transaction."""
        jobs = list(jobs)
        if (params := parents_params(jobs)) is not None:
            check_parents(params, self._read(self._reads.existing, params))
        call, layout = self._calls.enqueue_call(queue, jobs, callback, callback_queue)
        result = self._write(call)
        self._waker.notify(queue)
        return Batch(decode_batch(result, layout), int(result[2]))

    def cancel(self, job_id: int) -> str:
        """Cancel a job. ``"cancelled"``: it was waiting and will never run.
        ``"cancelling"``: it is running; its worker is told at its next heartbeat or
        completion (the runner stops the handler) and it ends ``cancelled``. A finished
        job stays as it was: its state (``"done"``, ``"dead"``, ``"cancelled"``)."""
        return self._calls.cancel_result(job_id, self._write(self._calls.cancel_call(job_id)))

    def retry(self, job_id: int) -> bool:
        """Run a dead or cancelled job again, with fresh attempts; whether it moved (not
        when it is in another state, or a live job holds its unique key)."""
        queue = self._write(self._calls.retry_call(job_id))
        if queue is not None:
            self._waker.notify(queue)
        return queue is not None

    def pause(self, queue: str) -> QueueSettings:
        """Stop handing out the queue's jobs (claims get none) until :meth:`resume`;
        running jobs go on. Stored, so it survives restarts of every process."""
        return self.configure(queue, paused=True)

    def resume(self, queue: str) -> QueueSettings:
        """Hand out the queue's jobs again."""
        settings = self.configure(queue, paused=False)
        self._waker.notify(queue)
        return settings

    def set_rate_limit(self, queue: str, limit: int | None, period: float = 1.0) -> QueueSettings:
        """At most ``limit`` jobs of the queue claimed in any ``period`` seconds, whatever
        the number of workers and service instances; ``None`` removes the limit."""
        rate = None if limit is None else (limit, period)
        return self.configure(queue, rate_limit=rate)

    def configure(
        self, queue: str, *, paused: bool | None = None, rate_limit: Any = UNCHANGED
    ) -> QueueSettings:
        """Change a queue's settings in one write: ``paused`` (``None``: unchanged),
        ``rate_limit`` as ``(limit, period)`` or ``{"limit", "period"}``, ``None`` to
        remove it; the settings after the change."""
        set_rate = rate_limit is not UNCHANGED
        call = self._calls.configure_call(queue, paused, rate_limit if set_rate else None, set_rate)
        return self._calls.settings_result(queue, self._write(call))

    def queue_settings(self, queue: str) -> QueueSettings:
        """The queue's settings (a queue nobody configured: running, no limit)."""
        rows = self._read(self._reads.queue, {"queue": check_queue_name(queue)})
        return self._calls.settings_result(queue, rows[0] if rows else None)


class AsyncControls:
    """The asyncio twin of :class:`Controls`."""

    _calls: Calls
    _reads: Reads
    _waker: AsyncWaker

    if TYPE_CHECKING:  # the store's primitives

        async def _write(self, call: Call) -> Any: ...

        async def _read(
            self, statement: str, params: dict[str, Any] | None = None
        ) -> list[Any]: ...

    async def enqueue_batch(
        self,
        queue: str,
        jobs: Iterable[NewJob | Any],
        callback: NewJob,
        *,
        callback_queue: str | None = None,
    ) -> Batch:
        """Add ``jobs`` and a callback run once all have finished (see
        :meth:`Controls.enqueue_batch`)."""
        jobs = list(jobs)
        if (params := parents_params(jobs)) is not None:
            check_parents(params, await self._read(self._reads.existing, params))
        call, layout = self._calls.enqueue_call(queue, jobs, callback, callback_queue)
        result = await self._write(call)
        self._waker.notify(queue)
        return Batch(decode_batch(result, layout), int(result[2]))

    async def cancel(self, job_id: int) -> str:
        """Cancel a job (see :meth:`Controls.cancel`)."""
        state = await self._write(self._calls.cancel_call(job_id))
        return self._calls.cancel_result(job_id, state)

    async def retry(self, job_id: int) -> bool:
        """Run a dead or cancelled job again (see :meth:`Controls.retry`)."""
        queue = await self._write(self._calls.retry_call(job_id))
        if queue is not None:
            self._waker.notify(queue)
        return queue is not None

    async def pause(self, queue: str) -> QueueSettings:
        """Stop handing out the queue's jobs until :meth:`resume`."""
        return await self.configure(queue, paused=True)

    async def resume(self, queue: str) -> QueueSettings:
        """Hand out the queue's jobs again."""
        settings = await self.configure(queue, paused=False)
        self._waker.notify(queue)
        return settings

    async def set_rate_limit(
        self, queue: str, limit: int | None, period: float = 1.0
    ) -> QueueSettings:
        """At most ``limit`` claims in any ``period`` seconds; ``None`` removes it."""
        rate = None if limit is None else (limit, period)
        return await self.configure(queue, rate_limit=rate)

    async def configure(
        self, queue: str, *, paused: bool | None = None, rate_limit: Any = UNCHANGED
    ) -> QueueSettings:
        """Change a queue's settings in one write (see :meth:`Controls.configure`)."""
        set_rate = rate_limit is not UNCHANGED
        call = self._calls.configure_call(queue, paused, rate_limit if set_rate else None, set_rate)
        return self._calls.settings_result(queue, await self._write(call))

    async def queue_settings(self, queue: str) -> QueueSettings:
        """The queue's settings."""
        rows = await self._read(self._reads.queue, {"queue": check_queue_name(queue)})
        return self._calls.settings_result(queue, rows[0] if rows else None)
