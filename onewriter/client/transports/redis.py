"""The Redis transport, producer side: push requests onto the list, wait for replies on
this producer's reply key (see ``_redis.py`` for the writer's side and the key layout).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from ...extras import missing_extra

try:
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None

from ...config import Config
from ...errors import BadRequest, ClientTimeout, WriterUnavailable, error_from_wire
from ...ops import Ops
from ...wire import frames as proto
from ...writer.endpoints.redis import (
    MAX_REPLIES_PER_READ,
    SOCKET_TIMEOUT,
    log,
    redacted,
    reply_key,
    sync_client,
)
from ..channel import AsyncChannel, SyncChannel
from ..core import reply_value
from ..remote import RemoteCore


class RedisCore(RemoteCore):
    """A writer reached through a Redis list: ``redis://HOST:PORT/DB`` and a queue name."""

    def __init__(self, url: str, config: Config, ops: Ops) -> None:
        super().__init__(url, config, ops)
        self.queue = config.redis_queue

    def why_unavailable(self) -> str:
        return f"Redis at {redacted(self.database)} did not answer"

    def sync_channel(self) -> SyncChannel:
        return RedisSyncChannel(self)

    def async_channel(self, loop: asyncio.AbstractEventLoop) -> AsyncChannel:
        return RedisAsyncChannel(self, loop)

    async def aclose_channel(self, channel: AsyncChannel) -> None:
        if isinstance(channel, RedisAsyncChannel):
            await channel.aclose()


def _queue_failed(count: int, exc: Exception) -> WriterUnavailable:
    return WriterUnavailable(
        f"could not queue {count} request(s) in Redis ({exc}); they may or may not have been queued"
    )


class RedisSyncChannel(SyncChannel):
    """One thread's line to the writer through Redis: push, then wait on the reply key."""

    def __init__(self, core: RedisCore) -> None:
        super().__init__(core)
        self.queue = core.queue
        self.key = reply_key(core.queue, self.client)
        self.fire_and_forget = core.config.fire_and_forget
        self.redis = sync_client(core.database)

    def call(self, fields: dict[str, Any], *, write: bool = True) -> Any:
        if fields.get("t") == "ping":
            self._ping()
            return None
        self.seq += 1
        rid = self.seq
        message = {"id": rid, **fields, "client": self.client}
        if write:
            message["seq"] = rid
        deadline = time.monotonic() + self.core.config.client_timeout
        if write and self.fire_and_forget:
            message["noreply"] = True
            self._push(message)
            return None
        self._push(message)
        return self._wait(rid, deadline)

    def _ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise WriterUnavailable(f"Redis at {redacted(self.core.database)}: {exc}") from None

    def _push(self, message: dict[str, Any]) -> None:
        try:
            self.redis.rpush(self.queue, proto.pack(message))
        except redis.RedisError as exc:
            raise _queue_failed(1, exc) from None

    def _wait(self, rid: int, deadline: float) -> Any:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientTimeout(
                    f"no reply through Redis within {self.core.config.client_timeout:.1f} s"
                )
            try:
                got = self.redis.blpop([self.key], timeout=min(remaining, 1.0))
            except redis.RedisError:
                time.sleep(min(0.05, max(0.0, remaining)))
                continue
            if got is None:
                continue
            reply = proto.unpack(cast(tuple[bytes, bytes], got)[1])
            if isinstance(reply, dict) and reply.get("id") == rid:
                return reply_value(reply)

    def close(self) -> None:
        self.redis.close()


class RedisAsyncChannel(AsyncChannel):
    """A pipelined line through Redis for one event loop: requests made while a push is
    on the way go out together in the next RPUSH; one reader takes the replies."""

    def __init__(self, core: RedisCore, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(core, loop)
        self.queue = core.queue
        self.key = reply_key(core.queue, self.client)
        self.fire_and_forget = core.config.fire_and_forget
        self.redis = redis.asyncio.Redis.from_url(
            core.database,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=5.0,
        )
        self._outbox: list[tuple[bytes, int, bool]] = []
        self._pusher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._others: set[asyncio.Task[None]] = set()
        self._blmpop = True

    def _send(self, rid: int, entry: Any, *, retry: bool) -> None:
        message = entry.message
        if message.get("t") == "ping":
            task = self.loop.create_task(self._ping(rid))
            self._others.add(task)
            task.add_done_callback(self._others.discard)
            return
        message["client"] = self.client
        noreply = "seq" in message and self.fire_and_forget
        if noreply:
            message["noreply"] = True
        self._outbox.append((proto.pack(message), rid, noreply))
        if self._pusher is None or self._pusher.done():
            self._pusher = self.loop.create_task(self._push())
        if not noreply and (self._listener is None or self._listener.done()):
            self._listener = self.loop.create_task(self._listen())

    async def _ping(self, rid: int) -> None:
        try:
            await self.redis.ping()
        except redis.RedisError as exc:
            error = WriterUnavailable(f"Redis at {redacted(self.core.database)}: {exc}")
            self._resolve(rid, None, error)
            return
        self._resolve(rid, None, None)

    async def _push(self) -> None:
        while self._outbox and not self.closed:
            out, self._outbox = self._outbox, []
            try:
                await self.redis.rpush(self.queue, *[body for body, _, _ in out])
            except redis.RedisError as exc:
                error = _queue_failed(len(out), exc)
                for _, rid, _ in out:
                    self._resolve(rid, None, error)
                continue
            for _, rid, noreply in out:
                if noreply:
                    self._resolve(rid, None, None)

    async def _listen(self) -> None:
        while self.pending and not self.closed:
            try:
                bodies = await self._take_replies()
            except redis.RedisError as exc:
                log.debug("reading replies from Redis: %s", exc)
                await asyncio.sleep(0.05)
                continue
            for body in bodies:
                self._on_reply(body)

    async def _take_replies(self) -> list[bytes]:
        """The replies waiting (up to a second for the first): one BLMPOP on Redis 7,
        BLPOP and LPOP before it."""
        if self._blmpop:
            try:
                got = await self.redis.blmpop(
                    1, 1, self.key, direction="LEFT", count=MAX_REPLIES_PER_READ
                )
                return [] if got is None else cast(list[bytes], got[1])
            except redis.ResponseError:
                self._blmpop = False  # an older Redis
        first = await self.redis.blpop([self.key], timeout=1)
        if first is None:
            return []
        more = await self.redis.lpop(self.key, MAX_REPLIES_PER_READ)
        return [cast(bytes, first[1]), *cast(list[bytes], more or [])]

    def _on_reply(self, body: bytes) -> None:
        try:
            reply = proto.unpack(body)
        except BadRequest:
            return
        if not isinstance(reply, dict):
            return
        error = reply.get("error")
        if error is not None:
            self._resolve(reply.get("id"), None, error_from_wire(error))
        else:
            self._resolve(reply.get("id"), reply.get("result"), None)

    def close(self) -> None:
        super().close()
        for task in (self._pusher, self._listener, *self._others):
            if task is not None:
                task.cancel()

    async def aclose(self) -> None:
        """Close, and release the Redis connections (they need the loop to close)."""
        self.close()
        tasks = [t for t in (self._pusher, self._listener, *self._others) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.redis.aclose()
