"""How both sides talk to Redis: the keys they name, and clients that never re-send a
command by themselves (a re-sent RPUSH could queue a request twice)."""

from __future__ import annotations

from ..extras import missing_extra

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def sync_client(url: str) -> redis.Redis:
    """A client that never re-sends a command by itself."""
    return redis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )
