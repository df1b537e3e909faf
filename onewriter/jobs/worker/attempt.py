"""One run of a handler by the worker runner: how the handler reports its progress
(:func:`report_progress`), and how the runner stops it when its job is cancelled or runs
past its timeout.

An async handler is stopped by cancelling its task. A sync handler runs in a thread,
which Python cannot kill: the runner raises :class:`JobStopped` in that thread instead
(``PyThreadState_SetAsyncExc``), which takes effect at its next Python instruction (a
handler blocked in one long C call, a ``time.sleep(600)``, stops when that call returns).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from contextvars import ContextVar
from typing import Any

from ..model import Job, check_progress

_current: ContextVar[Attempt] = ContextVar("onewriter_job_attempt")


class JobStopped(BaseException):
    """Raised inside a sync handler's thread to stop it (its job was cancelled or ran
    past its timeout). A ``BaseException``, so that a handler's ``except Exception``
    does not swallow it."""


class Attempt:
    """The runner's side of one handler call: the progress to send with the next
    heartbeat, and the thread running a sync handler (to stop it)."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.progress: float | None = None
        self.message: str | None = None
        self.reported = asyncio.Event()
        self._loop = loop
        self._lock = threading.Lock()
        self._thread: int | None = None

    def report(self, progress: float | None, message: str | None) -> None:
        progress, message = check_progress(progress, message)
        if progress is not None:
            self.progress = progress
        if message is not None:
            self.message = message
        self._loop.call_soon_threadsafe(self.reported.set)

    def run_in_thread(self, handler: Any) -> Any:
        """Call the sync ``handler`` on the job in this (executor) thread, stoppable."""
        token = _current.set(self)
        with self._lock:
            self._thread = threading.get_ident()
        try:
            return handler(self.job)
        finally:
            with self._lock:
                self._thread = None
                # A stop that raced the handler's return must not fire later, in code
                # that is not the handler's: clear what may still be pending.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(threading.get_ident()), None
                )
            _current.reset(token)

    def stop_thread(self) -> bool:
        """Raise :class:`JobStopped` in the thread running the handler; whether it was
        still running."""
        with self._lock:
            thread, self._thread = self._thread, None  # once: never into a later job
            if thread is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread), ctypes.py_object(JobStopped)
            )
            return True

    def bind(self) -> None:
        """Make :func:`report_progress` report to this attempt (in the current context)."""
        _current.set(self)


def report_progress(progress: float | None = None, message: str | None = None) -> None:
    """From inside a handler run by :class:`~onewriter.jobs.Worker`: record the job's
    progress (0 to 100) and a short message, sent with the next heartbeat (sooner than
    the usual third of a lease) and shown by ``GET /jobs/{id}`` and the dashboard."""
    attempt = _current.get(None)
    if attempt is None:
        raise RuntimeError("report_progress is for handlers run by the worker runner")
    attempt.report(progress, message)
