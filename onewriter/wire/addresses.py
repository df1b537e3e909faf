"""Where a writer is reached from other hosts: TCP addresses and the Redis keys that both
sides name."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def tcp_address(url: str) -> tuple[str, int]:
    """The host and port of ``tcp://HOST:PORT`` (IPv6 hosts in brackets)."""
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"expected tcp://HOST:PORT, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if port is None:
        raise ValueError(f"{url!r} names no port")
    return parts.hostname, port


def tcp_url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def processing_key(queue: str) -> str:
    """The list holding what the writer took from ``queue`` and has not answered."""
    return f"{queue}:processing"


def reply_key(queue: str, client: bytes) -> str:
    """The list on which one producer waits for its replies."""
    return f"{queue}:reply:{client.hex()}"


def redacted(url: str) -> str:
    """``url`` without its password, for logs and stats."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
