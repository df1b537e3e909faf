"""A writer reached through a Redis list: ``redis://HOST:PORT/DB`` and a queue name.

Producers push requests onto the list and wait for replies on a key of their own (the
writer's side and the key layout: ``writer/endpoints/redis.py``). No connection carries
a hello, so every message names its client. A push that fails may or may not have
queued its requests: they fail with ``WRITER_UNAVAILABLE`` and are never pushed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, cast

from ...extras import missing_extra

try:
    import redis
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None


from ...config import Config
from ...errors import BadRequest, WriterUnavailable
from ...wire import frames as proto
from ...wire.addresses import redacted, reply_key
from ...wire.resp import SOCKET_TIMEOUT, RespClient, RespSocket
from .base import AsyncLink, Receiver, SyncLink

log = logging.getLogger("onewriter.redis")

MAX_REPLIES_PER_READ = 1000
#: Seconds a blocking read of replies may take: it blocks up to one second in Redis.
_READ = 1.0 + SOCKET_TIMEOUT


def _queue_failed(count: int, exc: Exception) -> WriterUnavailable:
    return WriterUnavailable(
        f"could not queue {count} request(s) in Redis ({exc}); they may or may not have been queued"
    )


class RedisTransport:
    """Links through the list ``config.redis_queue`` of the Redis at ``url``."""

    stamps_client = True

    def __init__(self, url: str, config: Config) -> None:
        self.url = url
        self.queue = config.redis_queue
        self.fire_and_forget = config.fire_and_forget
        self.max_element = config.max_frame

    def _down(self, exc: Exception) -> WriterUnavailable:
        return WriterUnavailable(f"Redis at {redacted(self.url)}: {exc}")

    def open_sync(self, client: bytes) -> SyncLink | None:
        link = RedisSyncLink(self, client)
        try:
            link.redis.call("PING")
        except redis.RedisError as exc:
            link.close()
            raise self._down(exc) from None
        return link

    async def open_async(self, client: bytes, receiver: Receiver) -> AsyncLink | None:
        link = RedisAsyncLink(self, client, receiver)
        try:
            await link.pushes.call("PING")
        except redis.RedisError as exc:
            await link.aclose()
            raise self._down(exc) from None
        return link

    def unavailable(self) -> WriterUnavailable:
        return WriterUnavailable(f"Redis at {redacted(self.url)} did not answer")


class RedisSyncLink:
    """Push, then wait on the reply key."""

    def __init__(self, transport: RedisTransport, client: bytes) -> None:
        self.queue = transport.queue
        self.key = reply_key(transport.queue, client)
        self.redis = RespSocket(transport.url)

    def send(self, body: bytes) -> None:
        try:
            self.redis.call("RPUSH", self.queue, body)
        except redis.RedisError as exc:
            raise _queue_failed(1, exc) from None

    def receive(self, deadline: float) -> list[Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                got = self.redis.call("BLPOP", self.key, min(remaining, 1.0))
            except redis.RedisError:
                time.sleep(min(0.05, max(0.0, remaining)))
                continue
            if got is not None:
                return proto.messages(proto.unpack(got[1]))

    def close(self) -> None:
        self.redis.close()


class RedisAsyncLink:
    """Requests made while a push is on its way go out together in the next RPUSH; one
    reader takes the replies while any are awaited. Pushes and reads each have a lean
    connection of their own (``wire/resp.py``): a blocking read holds its connection."""

    def __init__(self, transport: RedisTransport, client: bytes, receiver: Receiver) -> None:
        self.queue = transport.queue
        self.max_element = transport.max_element
        self.key = reply_key(transport.queue, client)
        self.receiver = receiver
        self.pushes = RespClient(transport.url)
        self.reads = RespClient(transport.url)
        self.loop = asyncio.get_running_loop()
        self._outbox: list[tuple[int, bytes]] = []
        self._pusher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._blmpop = True
        self.closed = False

    def send(self, items: list[tuple[int, bytes]]) -> None:
        self._outbox += items
        if self._pusher is None or self._pusher.done():
            self._pusher = self.loop.create_task(self._push())

    async def _push(self) -> None:
        while self._outbox and not self.closed:
            out, self._outbox = self._outbox, []
            rids = [rid for rid, _ in out]
            # One element per flush (a list of requests), not one per request.
            push = ("RPUSH", self.queue, *proto.grouped([b for _, b in out], self.max_element))
            try:
                if self._listener is None or self._listener.done():
                    # Nobody reads replies now: the read goes out right behind the push,
                    # on the reading connection, in the same write.
                    pushed, read = await self.reads.send([push, self._read_command()], _READ)
                    self._listener = self.loop.create_task(self._listen(read))
                    await pushed
                else:
                    await self.pushes.call(*push)
            except redis.RedisError as exc:
                self.receiver.on_failed(rids, _queue_failed(len(out), exc))
                continue
            self.receiver.on_sent(rids)
            if self._listener is None or self._listener.done():
                self._listener = self.loop.create_task(self._listen())

    async def _listen(self, sent: asyncio.Future[Any] | None = None) -> None:
        """Read replies while any are awaited; ``sent`` is a read already written."""
        receiver = self.receiver
        while (sent is not None or receiver.waiting()) and not self.closed:
            try:
                bodies = await self._take_replies(sent)
            except redis.RedisError as exc:
                log.debug("reading replies from Redis: %s", exc)
                await asyncio.sleep(0.05)
                continue
            finally:
                sent = None
            for body in bodies:
                try:
                    messages = proto.messages(proto.unpack(body))
                except BadRequest:
                    continue
                receiver.on_messages(messages)

    def _read_command(self) -> tuple[Any, ...]:
        """Wait up to a second for replies: one BLMPOP on Redis 7, BLPOP before it."""
        if self._blmpop:
            return ("BLMPOP", 1, 1, self.key, "LEFT", "COUNT", MAX_REPLIES_PER_READ)
        return ("BLPOP", self.key, 1)

    def _read_now(self) -> Coroutine[Any, Any, Any]:
        return self.reads.call(*self._read_command(), timeout=_READ)

    async def _take_replies(self, sent: asyncio.Future[Any] | None) -> list[bytes]:
        """The replies waiting, from the read ``sent`` or one sent now (and LPOP for
        the rest where BLPOP was used)."""
        if self._blmpop:
            try:
                got = await (sent if sent is not None else self._read_now())
                return [] if got is None else cast(list[bytes], got[1])
            except redis.ResponseError:
                self._blmpop = False  # an older Redis
                sent = None
        first = await (sent if sent is not None else self._read_now())
        if first is None:
            return []
        more = await self.reads.call("LPOP", self.key, MAX_REPLIES_PER_READ)
        return [cast(bytes, first[1]), *cast(list[bytes], more or [])]

    def close(self) -> None:
        self.closed = True
        for task in (self._pusher, self._listener):
            if task is not None:
                task.cancel()

    async def aclose(self) -> None:
        """Close, and release the Redis connections (they need the loop to close)."""
        self.close()
        tasks = [t for t in (self._pusher, self._listener) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pushes.aclose()
        await self.reads.aclose()
