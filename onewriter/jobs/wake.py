"""Waking long-polling claims without hammering the writer.

A claim that found nothing waits for a notification from an enqueue made through the
same queue object (same process), and meanwhile checks with a cheap read whether a job
became claimable (an enqueue from another process), backing off from a few
milliseconds to :data:`MAX_POLL`.
"""

from __future__ import annotations

import asyncio
import threading

FIRST_POLL = 0.005
MAX_POLL = 0.1


class AsyncWaker:
    """Per-queue events for one event loop's waiting claims."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, queue: str | None = None) -> None:
        """Wake the claims waiting on ``queue`` (on every queue when ``None``)."""
        if queue is None:
            events, self._events = list(self._events.values()), {}
        else:
            event = self._events.pop(queue, None)
            events = [event] if event is not None else []
        for event in events:
            event.set()

    async def wait(self, queue: str, timeout: float) -> bool:
        """Whether a notification came within ``timeout`` seconds."""
        event = self._events.get(queue)
        if event is None:
            event = self._events[queue] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class ThreadWaker:
    """The same for threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def notify(self, queue: str | None = None) -> None:
        with self._lock:
            if queue is None:
                events, self._events = list(self._events.values()), {}
            else:
                event = self._events.pop(queue, None)
                events = [event] if event is not None else []
        for event in events:
            event.set()

    def wait(self, queue: str, timeout: float) -> bool:
        with self._lock:
            event = self._events.get(queue)
            if event is None:
                event = self._events[queue] = threading.Event()
        return event.wait(timeout)
