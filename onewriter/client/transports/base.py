"""What a channel needs of a transport: open a link to the writer, sync or asyncio.

A link carries encoded messages one way and decoded replies the other. Everything a
request needs beyond that (ids, sequence numbers, acks, failover, retries, timeouts) is
the channel's, the same over every transport.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...errors import WriterUnavailable


class SyncLink(Protocol):
    """One thread's connection to the writer."""

    def send(self, body: bytes) -> None:
        """Send one encoded message. ``ConnectionError``: the link is gone (re-send on a
        new one); a ``OneWriterError``: this request failed and must not be re-sent."""

    def receive(self, deadline: float) -> list[Any]:
        """The next replies (decoded messages), waiting until ``deadline`` (monotonic);
        ``TimeoutError`` past it, ``ConnectionError`` when the link is gone."""
        ...

    def close(self) -> None: ...


class Receiver(Protocol):
    """What an asyncio link reports to its channel (on the channel's loop)."""

    def on_messages(self, messages: list[Any]) -> None:
        """Replies, decoded, in the order they came."""

    def on_sent(self, rids: list[int]) -> None:
        """These requests have left (fire-and-forget requests are done then)."""

    def on_failed(self, rids: list[int], error: BaseException) -> None:
        """These requests failed for good (they may or may not have reached the writer)."""

    def on_lost(self, link: AsyncLink) -> None:
        """The link is gone: what it had in flight is to be re-sent on a new one."""

    def on_unreadable(self, link: AsyncLink, error: BaseException) -> None:
        """The link received what it cannot read: what it had in flight failed."""

    def waiting(self) -> bool:
        """Whether any request still awaits its reply."""
        ...


class AsyncLink(Protocol):
    """An event loop's pipelined connection to the writer."""

    def send(self, items: list[tuple[int, bytes]]) -> None:
        """Send encoded messages (with their request ids) without waiting."""

    def close(self) -> None: ...

    async def aclose(self) -> None:
        """Close, releasing what only a coroutine can (a Redis client's connections)."""


class Transport(Protocol):
    """Opens links to one writer; ``None`` from ``open_*`` means nobody answers yet."""

    #: Each message names its client (no connection carries a hello): Redis.
    stamps_client: bool
    #: Writes are answered as soon as they are sent (``Config.fire_and_forget``).
    fire_and_forget: bool

    def open_sync(self, client: bytes) -> SyncLink | None: ...

    async def open_async(self, client: bytes, receiver: Receiver) -> AsyncLink | None: ...

    def unavailable(self) -> WriterUnavailable:
        """The error for callers once no link could be opened in time."""
        ...
