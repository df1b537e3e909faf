"""A throwaway ``redis-server`` for the tests: a free loopback port, a temp directory, no
persistence; stopped terminate -> wait -> kill. Tests that use it are skipped cleanly
when the binary (or the redis client package) is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server")
HAVE_REDIS = REDIS_SERVER is not None and importlib.util.find_spec("redis") is not None
_READY = "Ready to accept connections"

needs_redis = pytest.mark.skipif(
    not HAVE_REDIS, reason="redis-server or the redis package is not installed"
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process, started and waited on until it accepts connections."""

    def __init__(self, directory: str, *, timeout: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                directory,
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._ready = threading.Event()
        self.log: list[str] = []
        self._pump = threading.Thread(target=self._read_log, daemon=True)
        self._pump.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("redis-server did not start:\n" + "\n".join(self.log[-20:]))

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip("\n"))
            if _READY in line:
                self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        self._pump.join(5)


def start_redis(directory: str, attempts: int = 3) -> RedisServer:
    """Start one, trying another port when the chosen one was taken in the meantime."""
    for _ in range(attempts - 1):
        with contextlib.suppress(AssertionError):
            return RedisServer(directory)
    return RedisServer(directory)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the module's tests (each test uses queues of its own)."""
    if not HAVE_REDIS:
        pytest.skip("redis-server or the redis package is not installed")
    directory = tempfile.mkdtemp(prefix="ow-redis-")
    server = start_redis(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
