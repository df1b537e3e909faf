"""One HTTP worker process: the posts app under uvicorn, on the primary's listening socket.

Started by the primary as ``python -m onewriter.demo.worker``. It tells the primary it is
serving by writing one line on ``--ready-fd``; SIGTERM (sent by the primary) makes uvicorn
stop accepting, finish the requests in flight and close the store; then it exits 0. It
also stops by itself if the primary disappears.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from ..config import Config
from .app import create_app
from .stores import Store, open_store

PARENT_CHECK_INTERVAL = 1.0


class WorkerServer(uvicorn.Server):
    """uvicorn's server that reports readiness and watches its parent."""

    def __init__(self, config: uvicorn.Config, ready_fd: int, parent: int) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd
        self.parent = parent
        self._watch: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, f"ready {os.getpid()}\n".encode())
            with contextlib.suppress(OSError):
                os.close(self.ready_fd)
            self._watch = asyncio.get_running_loop().create_task(self._watch_parent())

    async def _watch_parent(self) -> None:
        while not self.should_exit:
            if os.getppid() != self.parent:
                self.should_exit = True
                return
            await asyncio.sleep(PARENT_CHECK_INTERVAL)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onewriter.demo.worker")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    parser.add_argument("--ready-fd", type=int, required=True, help="where to say 'ready'")
    parser.add_argument("--db", required=True)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument("--read-pool-size", type=int, default=4)
    parser.add_argument("--graceful-timeout", type=float, default=20.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server: WorkerServer | None = None

    def on_stop(signum: int, frame: Any) -> None:
        # Before uvicorn takes over the signals nothing is served yet: just leave. After
        # a graceful stop uvicorn raises the signal again to this handler: ignore it, so
        # that a drained worker exits 0.
        if server is None or not server.started:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    config = Config(
        durability=args.durability,
        read_pool_size=args.read_pool_size,
    )

    def store() -> Store:
        return open_store(args.db, config, naive=args.naive, direct=args.direct)

    listener = socket.socket(fileno=args.fd)
    server_config = uvicorn.Config(
        create_app(store),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,
    )
    server = WorkerServer(server_config, args.ready_fd, os.getppid())
    server.run(sockets=[listener])
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
