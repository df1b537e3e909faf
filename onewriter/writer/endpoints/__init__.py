"""The writer's faces to other processes and hosts: a Unix socket (``unix``), a TCP
listener (``tcp``), a Redis consumer (``redis``); each feeds the one intake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..intake import Origin
from .reads import RemoteReads, reads_allowed

if TYPE_CHECKING:
    from ..service import WriterService
    from .redis import RedisConsumer
    from .tcp import TcpListener


class RemoteEndpoints:
    """The writer's network faces, as configured: a TCP listener and a Redis consumer."""

    def __init__(self, service: WriterService) -> None:
        self.service = service
        self.reads = RemoteReads(service)
        self.tcp: TcpListener | None = None
        self.redis: RedisConsumer | None = None

    def origin(self, name: str) -> Origin:
        """What peers on the network transport ``name`` may do."""
        config = self.service.config
        allowed = reads_allowed(config, name)
        return Origin(
            name,
            allow_sql=config.allow_sql_remote,
            stats=allowed,
            reads=self.reads if allowed else None,
            acks=name != "redis",
        )

    async def start(self) -> None:
        config = self.service.config
        if config.listen is not None:
            from .tcp import TcpListener  # the transports are imported only when asked

            self.tcp = TcpListener(self.service, self.origin("tcp"))
            await self.tcp.start()
        if config.redis_url is not None:
            from .redis import RedisConsumer

            self.redis = RedisConsumer(self.service, self.origin("redis"))
            self.redis.start()

    def begin_drain(self) -> None:
        """Take no new connections or Redis requests; those already taken finish."""
        if self.tcp is not None:
            self.tcp.stop_listening()
        if self.redis is not None:
            self.redis.stop()

    async def finish(self) -> None:
        """Wait for the Redis consumer's last answers (bounded), then close."""
        if self.redis is not None:
            await self.redis.finish()
        self.close()

    def close(self) -> None:
        """Stop the Redis consumer at once and close the reader pool."""
        if self.redis is not None:
            self.redis.close()
        self.reads.close()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.reads.stats()
        if self.tcp is not None:
            data["tcp"] = self.tcp.stats()
        if self.redis is not None:
            data["redis"] = self.redis.stats()
        return data


async def start_endpoints(service: WriterService) -> RemoteEndpoints:
    """Start the remote faces that ``service.config`` asks for."""
    endpoints = RemoteEndpoints(service)
    try:
        await endpoints.start()
    except BaseException:
        endpoints.begin_drain()
        endpoints.close()
        raise
    return endpoints
