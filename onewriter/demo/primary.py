"""The primary process: the writer, the listening sockets and the workers it supervises.

It takes the writer role (running the migrations), binds the TCP port itself and starts
N worker processes that serve it. Each worker slot has its own listening socket on the
port (``SO_REUSEPORT``), so the kernel spreads new connections evenly over the workers;
with one shared socket, whichever worker woke first took a whole burst of keep-alive
connections and left others idle. A worker that dies is started again on its slot's
socket, so the connections queued there wait for it instead of failing (with a growing
pause if it keeps dying young); one that fails at start-up twice the same way (the same
last line on its stderr, which the primary passes on) stops the service with that line,
since starting it again would only fail again. SIGUSR2 prints the writer's figures.
SIGTERM or SIGINT drains, in the order that loses nothing: workers stop accepting and
finish their requests in flight, then the writer commits what is queued, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from ..cli.tables import print_stats
from ..config import Durability
from ..database import Database, connect
from ..metrics import MULTIPROC_ENV, multiprocess_dir
from .posts import MIGRATIONS, ops

log = logging.getLogger("onewriter.demo")

READY_TIMEOUT = 60.0
MIN_HEALTHY_LIFE = 10.0
MAX_RESTART_PAUSE = 5.0
BACKLOG = 2048


@dataclass(frozen=True, kw_only=True)
class ServiceOptions:
    """How to run the demo service."""

    database: str
    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = 2
    naive: bool = False
    direct: bool = False
    durability: Durability = "normal"
    max_pending: int = 500
    read_pool_size: int = 4
    graceful_timeout: float = 20.0


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class WorkerSlot:
    """One of the N places for a worker; keeps a worker running in it until the drain."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.listener: socket.socket | None = None
        self.last_error = ""
        """The last line the current worker wrote on its stderr."""


class Primary:
    """Runs the service until told to stop; see the module docstring."""

    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.db: Database | None = None
        self.slots = [WorkerSlot(i) for i in range(options.workers)]
        self.stopping = asyncio.Event()
        self.signals = 0
        self.failure: str | None = None
        """Why the service gave up, when a worker cannot start."""
        self.metrics_dir = ""

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.db = await loop.run_in_executor(None, self._open_database)
        try:
            with multiprocess_dir() as self.metrics_dir:
                clean = await self._serve()
        finally:
            self._close_listeners()
            db, self.db = self.db, None
            if db is not None:
                await loop.run_in_executor(None, db.close)
        print("stopped", flush=True)
        return 0 if clean else 1

    async def _serve(self) -> bool:
        """Bind, start the workers, say READY, wait for a stop signal, stop the workers;
        whether everything stopped cleanly."""
        loop = asyncio.get_running_loop()
        host, port = self.options.host, self.options.port
        try:
            listeners = bind_listeners(host, port, len(self.slots))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc}") from None
        for slot, listener in zip(self.slots, listeners, strict=True):
            slot.listener = listener
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGUSR2, self._on_stats_signal)
        supervisors = [loop.create_task(self._supervise(slot)) for slot in self.slots]
        if not await self._wait_all_ready():
            stopped_by_signal = self.stopping.is_set() and self.failure is None
            self.stopping.set()
            await self._stop_workers(supervisors)
            if self.failure is not None:
                print(f"onewriter demo serve: {self.failure}", file=sys.stderr, flush=True)
            return stopped_by_signal
        port = listeners[0].getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        pids = ",".join(str(s.process.pid) for s in self.slots if s.process is not None)
        print(
            f"READY port={port} url=http://{url_host}:{port} pid={os.getpid()} "
            f"workers={pids} mode={'naive' if self.options.naive else 'onewriter'}",
            flush=True,
        )
        await self.stopping.wait()
        print("draining: workers finish their requests, then the writer", flush=True)
        return await self._stop_workers(supervisors)

    def _open_database(self) -> Database | None:
        """Become the writer, migrating. In naive mode the workers write by themselves:
        the primary only migrates, then lets the role go."""
        options = self.options
        db = connect(
            options.database,
            ops=ops,
            role="writer",
            migrations=MIGRATIONS,
            durability=options.durability,
            max_pending=options.max_pending,
        )
        if options.naive:
            db.close()
            return None
        return db

    # -- workers --------------------------------------------------------------------------

    async def _wait_all_ready(self) -> bool:
        """Whether every worker said it is serving (before a stop signal or the timeout)."""

        async def all_ready() -> None:
            for slot in self.slots:
                await slot.ready.wait()

        ready = asyncio.ensure_future(all_ready())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait(
                [ready, stop], timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            stop.cancel()
        if self.stopping.is_set():
            return False
        if not all(slot.ready.is_set() for slot in self.slots):
            log.error("the workers were not all ready within %.0f s", READY_TIMEOUT)
            return False
        return True

    async def _supervise(self, slot: WorkerSlot) -> None:
        failures = 0
        start_failure: str | None = None
        while not self.stopping.is_set():
            started = time.monotonic()
            process, ready, relay = await self._start_worker(slot)
            returncode = await process.wait()
            await relay
            if self.stopping.is_set():
                return
            if not ready:
                why = f"{slot.last_error or 'no message'} (exit code {returncode})"
                if why == start_failure:
                    self.failure = f"worker {slot.index} failed at start-up twice: {why}"
                    self.stopping.set()
                    return
                start_failure = why
            else:
                start_failure = None
            lived = time.monotonic() - started
            failures = 0 if lived > MIN_HEALTHY_LIFE else failures + 1
            pause = min(MAX_RESTART_PAUSE, 0.05 * 2**failures) if failures else 0.0
            log.warning(
                "worker %d (pid %d) exited with %s after %.1f s; starting another%s",
                slot.index,
                process.pid,
                returncode,
                lived,
                f" in {pause:.2f} s" if pause else "",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)

    async def _start_worker(
        self, slot: WorkerSlot
    ) -> tuple[asyncio.subprocess.Process, bool, asyncio.Task[None]]:
        """The worker, whether it said ready, and the task passing its stderr on."""
        assert slot.listener is not None
        options = self.options
        read_end, write_end = os.pipe()
        command = [
            sys.executable,
            "-m",
            "onewriter.demo.worker",
            "--fd",
            str(slot.listener.fileno()),
            "--ready-fd",
            str(write_end),
            "--db",
            options.database,
            "--durability",
            options.durability,
            "--read-pool-size",
            str(options.read_pool_size),
            "--graceful-timeout",
            str(options.graceful_timeout),
        ]
        if options.naive:
            command.append("--naive")
        if options.direct:
            command.append("--direct")
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(slot.listener.fileno(), write_end),
                env={**os.environ, MULTIPROC_ENV: self.metrics_dir},  # one scrape sums all
                start_new_session=True,  # signals reach workers only through the primary
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        slot.process = process
        slot.last_error = ""
        assert process.stderr is not None
        relay = asyncio.get_running_loop().create_task(relay_stderr(process.stderr, slot))
        ready = await read_ready_line(read_end)
        if ready:
            slot.ready.set()
            print(f"worker {slot.index} pid={process.pid} ready", flush=True)
        return process, ready, relay

    async def _stop_workers(self, supervisors: list[asyncio.Task[None]]) -> bool:
        """SIGTERM every worker and wait for them (killing any past the grace period)."""
        for slot in self.slots:
            self._signal_worker(slot, signal.SIGTERM)
        self._close_listeners()  # once the workers close theirs, new connections are refused
        grace = self.options.graceful_timeout + 5.0
        _, late = await asyncio.wait(supervisors, timeout=grace)
        clean = not late
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                log.error("worker pid %d did not stop in %.0f s; killing it", process.pid, grace)
                self._signal_worker(slot, signal.SIGKILL)
                clean = False
        if late:
            await asyncio.wait(late, timeout=5.0)
        for task in supervisors:
            task.cancel()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode not in (0, None):
                log.warning("worker pid %d ended with %s", process.pid, process.returncode)
        return clean

    def _close_listeners(self) -> None:
        for slot in self.slots:
            listener, slot.listener = slot.listener, None
            if listener is not None:
                listener.close()

    @staticmethod
    def _signal_worker(slot: WorkerSlot, signum: int) -> None:
        process = slot.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    # -- signals ----------------------------------------------------------------------------

    def _on_stop_signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stopping.set()
            return
        # A second Ctrl-C: uvicorn treats a repeated SIGINT as "stop now".
        for slot in self.slots:
            self._signal_worker(slot, signal.SIGINT)

    def _on_stats_signal(self) -> None:
        asyncio.get_running_loop().create_task(self._print_stats())

    async def _print_stats(self) -> None:
        db = self.db
        if db is None or self.options.naive:
            print("naive mode: no writer (each worker writes on its own connection)", flush=True)
            return
        stats = await asyncio.get_running_loop().run_in_executor(None, db.stats)
        print_stats(stats)


def bind_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (``SO_REUSEPORT``), one per worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    port = claim_port(family, host, port)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(
                socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=True)
            )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def claim_port(family: socket.AddressFamily, host: str, port: int) -> int:
    """The port to use (a free one for 0), after checking that nothing listens on it:
    a second service would otherwise join this one's ``SO_REUSEPORT`` group and quietly
    take a share of its connections."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound


async def relay_stderr(stream: asyncio.StreamReader, slot: WorkerSlot) -> None:
    """Pass a worker's stderr on to ours, remembering its last line."""
    while line := await stream.readline():
        text = line.decode(errors="replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        if text.strip():
            slot.last_error = text.strip()


async def read_ready_line(fd: int) -> bool:
    """Wait for the worker's "ready" line on the pipe (False if it closes first)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        line = await asyncio.wait_for(reader.readline(), READY_TIMEOUT)
    except TimeoutError:
        return False
    finally:
        transport.close()
    return line.startswith(b"ready")
