"""The writer service: one thread owns the write connection and an event loop of its own.

Frames are read and batches run on that same thread (no thread hop per batch), and no
application's event loop ever runs SQLite work. Requests from this process arrive
through ``call_soon_threadsafe``; requests from other processes through the socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Config
from ..errors import OneWriterError, QueueFull, ShuttingDown, WriterUnavailable
from ..extras import missing_extra
from ..ops import Ops
from ..sqlite.connect import check_filesystem, open_connection
from ..sqlite.versions import log_sqlite_version
from .election import ElectionLock
from .endpoints.stream import StreamPeer
from .endpoints.unix import UnixListener
from .engine import Engine, Request
from .intake import Intake, Origin, Peer

if TYPE_CHECKING:
    from .endpoints import RemoteEndpoints

log = logging.getLogger("onewriter.writer")

_abandoned: list[Any] = []


class LocalPeer(Peer, Protocol):
    """A caller in the writer's own process: an intake peer that also takes the
    immediate answers (refusals, control messages)."""

    def answer(self, body: bytes) -> None: ...


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop for the writer's thread: uvloop's when asked for or, with
    ``auto``, when it is installed; asyncio's otherwise."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError as exc:
            if kind == "uvloop":
                raise missing_extra("speed", "writer_loop='uvloop'", exc) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class WriterService:
    """Hosts the engine on its own thread; its endpoints feed the intake, the intake the
    queue, the queue the engine, one batch per turn of the loop."""

    def __init__(
        self,
        db_path: str,
        config: Config,
        ops: Ops,
        lock: ElectionLock | None,
        socket_path: str | None,
    ) -> None:
        self.db_path = db_path
        self.config = config
        self.ops = ops
        self.lock = lock
        self.socket_path = socket_path
        self.pid = os.getpid()
        self.engine: Engine
        self.schema_version = 0
        self.engine_errors: Counter[str] = Counter()
        self.connections: set[StreamPeer] = set()
        self.intake = Intake(self)
        #: This process's own callers, and processes on the Unix socket: same rules.
        self.local_origin = Origin("local", allow_sql=config.allow_sql, stats=True)
        self.unix_origin = Origin("unix", allow_sql=config.allow_sql, stats=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[Request] = collections.deque()
        self._scheduled = False
        self._fill_timer: asyncio.TimerHandle | None = None
        self._fill_wait = config.commit_delay if config.durability == "full" else 0.0
        self._draining = False
        self._finishing: asyncio.Task[None] | None = None
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.unix = UnixListener(self, socket_path) if socket_path is not None else None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.remote: RemoteEndpoints | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open the database, migrate, bind the socket; returns when serving."""
        self._thread = threading.Thread(target=self._main, name="onewriter-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def _main(self) -> None:
        try:
            loop = new_loop(self.config.writer_loop)
        except BaseException as exc:
            self._startup_error = exc
            self._release()
            self._ready.set()
            self._stopped.set()
            return
        self.loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._startup_error = exc
            self._release()
            self._ready.set()
            loop.close()
            self._stopped.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._stopped.set()

    async def _startup(self) -> None:
        log_sqlite_version()
        check_filesystem(self.db_path)
        conn = open_connection(self.db_path, self.config, "writer")
        try:
            self.engine = Engine(self.db_path, conn, self.config, self.ops)
            version = self.schema_version = self.engine.prepare(self.config.migrations)
        except BaseException:
            conn.close()
            raise
        if self.unix is not None:
            await self.unix.start()
        if self.config.listen is not None or self.config.redis_url is not None:
            from .endpoints import start_endpoints

            try:
                self.remote = await start_endpoints(self)
            except BaseException:
                if self.unix is not None:
                    self.unix.stop_listening()
                self.engine.close()
                raise
        log.info(
            "writer %d serving %s (schema version %d%s)",
            self.pid,
            self.db_path,
            version,
            f", socket {self.socket_path}" if self.socket_path else "",
        )

    @property
    def running(self) -> bool:
        return self._ready.is_set() and not self._stopped.is_set() and not self._draining

    def close(self, timeout: float | None = None) -> None:
        """Drain: refuse new requests, finish the queued ones, commit, release the role."""
        loop = self.loop
        if loop is None or self._stopped.is_set():
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() called from the writer's own thread")
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._begin_drain)
        self._stopped.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def request_drain(self) -> None:
        """Begin draining from any thread or a signal handler (returns at once)."""
        loop = self.loop
        if loop is not None and not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_drain)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _begin_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("writer %d draining %d queued requests", self.pid, len(self._pending))
        if self.unix is not None:
            self.unix.stop_listening()
        if self.remote is not None:
            self.remote.begin_drain()
        self._schedule()

    def _finish_drain(self) -> None:
        """The queue is empty: finish once the remote faces have pushed their last
        answers (the Redis consumer answers on this loop)."""
        if self._finishing is None:
            assert self.loop is not None
            self._finishing = self.loop.create_task(self._finish_and_stop())

    async def _finish_and_stop(self) -> None:
        loop = self.loop
        assert loop is not None
        if self.remote is not None:
            await self.remote.finish()
        for conn in list(self.connections):
            conn.flush()
            if conn.transport is not None:
                conn.transport.close()
        self.engine.close()
        self._release()
        log.info("writer %d stopped", self.pid)
        loop.stop()

    def _release(self) -> None:
        if self.unix is not None:
            self.unix.remove()
        if self.lock is not None:
            self.lock.release()

    def abandon_after_fork(self) -> None:
        """In a forked child: never touch the parent's connection or loop again."""
        _abandoned.append(self)

    # -- intake (writer thread) ---------------------------------------------------------

    def accept(self, request: Request) -> None:
        """Queue a request or refuse it at once."""
        error: OneWriterError | None = None
        if self._draining:
            error = ShuttingDown("the writer is draining; retry on the next writer")
        elif len(self._pending) >= self.config.max_pending:
            error = QueueFull(f"{len(self._pending)} requests are pending at the writer")
        if error is not None:
            request.error = error
            self.engine_errors[error.code] += 1
            request.sink.deliver([request])
            request.sink.flush()
            return
        self._pending.append(request)
        if not self._scheduled or self._fill_timer is not None:
            self._schedule()

    def submit_threadsafe(self, peer: LocalPeer, body: bytes) -> None:
        """Take a frame body from a caller in this process, from any thread: it goes
        through the intake on the writer's thread, as one from the socket would."""
        loop = self.loop
        if loop is None or self._stopped.is_set() or loop.is_closed():
            raise WriterUnavailable("the writer in this process has stopped")
        try:
            loop.call_soon_threadsafe(self._take_local, peer, body)
        except RuntimeError:
            raise WriterUnavailable("the writer in this process has stopped") from None

    def _take_local(self, peer: LocalPeer, body: bytes) -> None:
        self.intake.take_body(peer, body, peer.answer)
        peer.flush()

    def _schedule(self) -> None:
        if self._scheduled:
            if self._fill_timer is not None and len(self._pending) >= len(self.connections):
                # Every connected client has a request waiting: stop waiting for more.
                self._fill_timer.cancel()
                self._fill_timer = None
                assert self.loop is not None
                self.loop.call_soon(self._run)
            return
        self._scheduled = True
        assert self.loop is not None
        if self._fill_wait and len(self.connections) > max(1, len(self._pending)):
            # With durability=full every COMMIT waits for fsync: wait a moment for the
            # other clients' requests so that one fsync serves them all.
            self._fill_timer = self.loop.call_later(self._fill_wait, self._run)
        else:
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._fill_timer = None
        pending = self._pending
        if pending:
            n = min(len(pending), self.config.max_batch)
            batch = [pending.popleft() for _ in range(n)]
            self.in_flight = n
            try:
                self.engine.run_batch(batch)
            except Exception:
                log.exception("a batch failed unexpectedly")
            finally:
                self.in_flight = 0
        if pending:
            self._schedule()
            self.engine.maybe_checkpoint(idle=False)
            return
        if self._draining:
            self._finish_drain()
            return
        self.engine.maybe_checkpoint(idle=True)

    # -- stats ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot of the writer's figures (call on the writer's thread)."""
        data = self.engine.stats()
        errors = Counter(data["errors"])
        errors.update(self.engine_errors)
        data["errors"] = dict(errors)
        data["pending"] = len(self._pending)
        data["in_flight"] = self.in_flight
        data["clients"] = len(self.connections)
        data["draining"] = self._draining
        data["max_pending"] = self.config.max_pending
        data["durability"] = self.config.durability
        data["writer_loop"] = (
            "uvloop" if type(self.loop).__module__.startswith("uvloop") else "asyncio"
        )
        data["database"] = self.db_path
        if self.remote is not None:
            data["remote"] = self.remote.stats()
        return data
