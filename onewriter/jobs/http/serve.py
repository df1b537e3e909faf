"""``onewriter jobs serve``: one primary process and N HTTP worker processes on one port.

The primary creates the queue's tables, binds the listening socket and starts the
workers, which inherit that socket and serve the app with uvicorn. On SQLite the primary
hosts the writer (``role="writer"``) and the workers connect to it as clients; on
PostgreSQL every process has its own connections, and several instances of the service
may share one database. The primary also runs the queue's housekeeping every second,
restarts a worker that dies, and on SIGTERM or SIGINT stops the workers (each finishes
its requests) before draining the writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from ...database import Database, connect
from ...errors import OneWriterError
from ...metrics import MULTIPROC_ENV, multiprocess_dir
from ...ops import Ops
from ..api.sync import JobStore, is_postgres_url
from ..model import DEFAULT_RETENTION
from ..sqlite.ops import jobs_ops
from ..sqlite.queue import JobQueue
from .app import create_app
from .io import Settings

log = logging.getLogger("onewriter.jobs.serve")

SETTINGS_ENV = "ONEWRITER_JOBS_SERVICE"
FDS_ENV = "ONEWRITER_JOBS_FDS"
_CHILD = "from onewriter.jobs.http.serve import child_main; child_main()"
_STARTUP_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0
_GRACEFUL_SECONDS = 3


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    durability: str = "normal"
    max_pending: int = 5000
    maintain_every: float = 1.0
    retention: float = DEFAULT_RETENTION


def _uvicorn_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=_GRACEFUL_SECONDS,
    )


def child_main() -> None:
    """A worker process: serve the app on the inherited socket until SIGTERM."""
    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    listen_fd, ready_fd = (int(fd) for fd in os.environ[FDS_ENV].split(","))
    listener = socket.socket(fileno=listen_fd)

    def ready() -> None:
        os.write(ready_fd, f"{os.getpid()}\n".encode())
        os.close(ready_fd)

    server = uvicorn.Server(_uvicorn_config(create_app(settings, ready)))
    parent = os.getppid()

    def orphaned() -> None:
        # The primary (and its writer) is gone: stop rather than serve errors forever.
        while not server.should_exit:
            time.sleep(1.0)
            if os.getppid() != parent:
                log.warning("the primary process %d is gone; stopping", parent)
                server.should_exit = True

    threading.Thread(target=orphaned, name="onewriter-orphan-watch", daemon=True).start()
    server.run(sockets=[listener])


class _Workers:
    """The worker processes, started with the socket and restarted when they die."""

    def __init__(
        self, settings: Settings, listener: socket.socket, count: int, metrics_dir: str
    ) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.listener = listener
        self.count = count
        self.ready_r, self.ready_w = os.pipe()
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[SETTINGS_ENV] = self.settings.to_json()
        env[FDS_ENV] = f"{self.listener.fileno()},{self.ready_w}"
        env[MULTIPROC_ENV] = self.metrics_dir  # one scrape sums every worker's counters
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            env=env,
            pass_fds=(self.listener.fileno(), self.ready_w),
        )

    def start(self) -> list[int]:
        """Start them all; their pids once each has opened the database."""
        self.procs = [self._spawn() for _ in range(self.count)]
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        ready: list[int] = []
        buffer = b""
        while len(ready) < self.count:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"HTTP worker {dead[0].pid} exited with {dead[0].returncode}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("HTTP workers did not start in time")
            readable, _, _ = select.select([self.ready_r], [], [], min(left, 0.2))
            if readable:
                buffer += os.read(self.ready_r, 4096)
                *lines, rest = buffer.split(b"\n")
                buffer = rest
                ready.extend(int(line) for line in lines if line.strip())
        return [p.pid for p in self.procs]

    def restart_dead(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                log.warning(
                    "HTTP worker %d exited with %s; starting another", proc.pid, proc.returncode
                )
                self.procs[i] = self._spawn()
        self._drain_ready_pipe()

    def _drain_ready_pipe(self) -> None:
        while select.select([self.ready_r], [], [], 0)[0]:
            if not os.read(self.ready_r, 4096):
                return

    def stop(self) -> None:
        """SIGTERM each (uvicorn finishes open requests), then wait, then kill."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("HTTP worker %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait(5)
        os.close(self.ready_r)
        os.close(self.ready_w)


class _InProcess:
    """``--workers 0``: the app served by a thread of the primary itself."""

    def __init__(self, settings: Settings, listener: socket.socket) -> None:
        self.ready = threading.Event()
        self.server = uvicorn.Server(_uvicorn_config(create_app(settings, self.ready.set)))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [listener]}, name="onewriter-http"
        )

    def start(self) -> list[int]:
        self.thread.start()
        if not self.ready.wait(_STARTUP_TIMEOUT):
            raise RuntimeError("the HTTP server did not start in time")
        return [os.getpid()]

    def restart_dead(self) -> None:
        if not self.thread.is_alive():
            raise RuntimeError("the HTTP server thread stopped")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(_STOP_TIMEOUT + _GRACEFUL_SECONDS)


def _open_writer(settings: Settings, options: ServeOptions) -> Database:
    ops = Ops()
    ops.include(jobs_ops)
    return connect(
        settings.database,
        ops=ops,
        role="writer",
        durability=options.durability,
        max_pending=options.max_pending,
    )


def _redacted(url: str) -> str:
    """A PostgreSQL URL fit to print: its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


@contextlib.contextmanager
def _open_primary(settings: Settings, options: ServeOptions) -> Iterator[tuple[JobStore, str]]:
    """The primary's store (tables, housekeeping) and how READY names it; on SQLite the
    primary hosts the writer."""
    if is_postgres_url(settings.database):
        from ..postgres.queue import PgJobQueue

        with PgJobQueue(settings.database, retention=options.retention, pool_size=2) as queue:
            yield queue, _redacted(settings.database)
        return
    db = _open_writer(settings, options)
    try:
        yield JobQueue(db, retention=options.retention), db.path
    finally:
        db.close()


def serve(
    settings: Settings, options: ServeOptions, announce: Callable[[str], None] = print
) -> int:
    """Run the service until SIGTERM or SIGINT; announces ``READY {json}`` when serving."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        with _open_primary(settings, options) as (queue, where):
            _serve_until(stop, queue, where, settings, options, announce)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    announce("stopped")
    return 0


def _serve_until(
    stop: threading.Event,
    queue: JobStore,
    where: str,
    settings: Settings,
    options: ServeOptions,
    announce: Callable[[str], None],
) -> None:
    listener = socket.create_server((options.host, options.port), backlog=4096)
    try:
        with multiprocess_dir() as metrics_dir:
            workers: _Workers | _InProcess = (
                _Workers(settings, listener, options.workers, metrics_dir)
                if options.workers > 0
                else _InProcess(settings, listener)
            )
            pids = workers.start()
            try:
                host, port = listener.getsockname()[:2]
                info = {
                    "url": f"http://{host}:{port}",
                    "pid": os.getpid(),
                    "workers": pids,
                    "database": where,
                }
                announce("READY " + json.dumps(info))
                while not stop.wait(options.maintain_every):
                    _maintain(queue)
                    workers.restart_dead()
            finally:
                workers.stop()
    finally:
        listener.close()


def _maintain(queue: JobStore) -> None:
    try:
        done = queue.maintain()
    except OneWriterError as exc:
        log.warning("queue housekeeping failed: %s", exc)
        return
    if any(done.values()):
        log.info("housekeeping: %s", done)
