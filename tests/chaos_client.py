"""Chaos runs: client processes write unique keys while the writer is killed again and again.

Run as a program, this is one chaos client. It connects to the database, writes the keys
``<name>-<n>`` (or ``<name>t<task>-<n>`` with asyncio tasks) through the ``insert_key`` op
until a stop file appears, and logs every attempt, acknowledgement and error as one
unbuffered line of its own log file, so that a SIGKILL loses nothing it had logged::

    python chaos_client.py DB --name c1 --log c1.log --stop STOP [--tasks 8] [--role auto]

Imported, it gives :class:`ChaosRun`, which starts the clients (and, in ``serve`` mode, a
dedicated ``onewriter serve`` writer), kills whoever holds the writer role, and checks the
logs against the database. The chaos test and ``benchmarks/failover.py`` both use it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onewriter

SCHEMA = """
CREATE TABLE chaos_keys (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    writer_pid INTEGER NOT NULL
);
CREATE TABLE blobs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, data BLOB NOT NULL);
"""

migrations = [SCHEMA]
ops = onewriter.Ops()

HERE = Path(__file__).resolve().parent
Mode = Literal["auto", "serve"]


@ops.register
def insert_key(conn: sqlite3.Connection, key: str) -> list[int]:
    """Insert ``key`` once (the column is UNIQUE); returns its row id and the writer's pid."""
    cur = conn.execute("INSERT INTO chaos_keys (key, writer_pid) VALUES (?, ?)", (key, os.getpid()))
    return [int(cur.lastrowid or 0), os.getpid()]


@ops.register
def put(conn: sqlite3.Connection, key: str, data: bytes, seconds: float = 0.0) -> int:
    """Store ``data`` under ``key``, after holding the writer for ``seconds`` (a slow op)."""
    if seconds > 0:
        time.sleep(seconds)
    cur = conn.execute("INSERT INTO blobs (key, data) VALUES (?, ?)", (key, data))
    return int(cur.lastrowid or 0)


# -- the child program --------------------------------------------------------------------


class _Log:
    """Append-only log; each line is one ``write(2)``, so a SIGKILL never tears one."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def line(self, *parts: object) -> None:
        os.write(self.fd, (" ".join(map(str, parts)) + "\n").encode())


def _write_one(log: _Log, db: onewriter.Database, key: str) -> None:
    log.line("a", key)
    try:
        rowid, pid = db.write(insert_key, key=key)
    except onewriter.OneWriterError as exc:
        log.line("e", key, exc.code, exc.message.replace("\n", " "))
    else:
        log.line("k", key, rowid, pid, repr(time.monotonic()))


async def _write_one_async(log: _Log, db: onewriter.AsyncDatabase, key: str) -> None:
    log.line("a", key)
    try:
        rowid, pid = await db.write(insert_key, key=key)
    except onewriter.OneWriterError as exc:
        log.line("e", key, exc.code, exc.message.replace("\n", " "))
    else:
        log.line("k", key, rowid, pid, repr(time.monotonic()))


def _client_config(args: argparse.Namespace) -> onewriter.Config:
    return onewriter.Config(
        role=args.role,
        migrations=migrations,
        failover_timeout=args.failover_timeout,
        read_pool_size=1,
    )


def _run_sync(args: argparse.Namespace, log: _Log) -> int:
    db = onewriter.connect(args.database, ops=ops, config=_client_config(args))
    print(f"READY {os.getpid()}", flush=True)
    n = 0
    try:
        while not os.path.exists(args.stop):
            n += 1
            _write_one(log, db, f"{args.name}-{n}")
    finally:
        db.close()
    return n


async def _run_async(args: argparse.Namespace, log: _Log) -> int:
    counts = [0] * args.tasks
    async with onewriter.connect_async(args.database, ops=ops, config=_client_config(args)) as db:
        print(f"READY {os.getpid()}", flush=True)

        async def task(t: int) -> None:
            while not os.path.exists(args.stop):
                counts[t] += 1
                await _write_one_async(log, db, f"{args.name}t{t}-{counts[t]}")

        await asyncio.gather(*(task(t) for t in range(args.tasks)))
    return sum(counts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one chaos client (see the module docstring)")
    parser.add_argument("database")
    parser.add_argument("--name", required=True, help="prefix of this client's keys")
    parser.add_argument("--log", required=True, help="this client's log file")
    parser.add_argument("--stop", required=True, help="stop once this file exists")
    parser.add_argument("--tasks", type=int, default=0, help="asyncio tasks (0: sync)")
    parser.add_argument("--role", default="auto", choices=["auto", "client"])
    parser.add_argument("--failover-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    log = _Log(args.log)
    n = asyncio.run(_run_async(args, log)) if args.tasks else _run_sync(args, log)
    print(f"DONE {n}", flush=True)
    return 0


# -- the harness --------------------------------------------------------------------------


def lock_holder(lock_path: str) -> int | None:
    """The pid holding the ``flock`` on ``lock_path``, from ``/proc/locks``."""
    try:
        inode = os.stat(lock_path).st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].endswith(f":{inode}"):
            return int(parts[4])
    return None


def wait_for_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float) -> bytes:
    """Read ``proc``'s stdout until a line starting with ``prefix`` (or fail at ``timeout``)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.startswith(prefix):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {prefix!r} line from pid {proc.pid} in {timeout} s")
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"pid {proc.pid} exited (rc={proc.wait()}) before {prefix!r}")
            buf += chunk


def child_env() -> dict[str, str]:
    """The environment of a child: this directory importable (for ``chaos_client:ops``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate, wait, then kill."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def start_serve(
    database: str, stderr: Path, *flags: str, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """``onewriter serve`` with this module's ops and schema, once it printed READY."""
    with open(stderr, "ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onewriter.cli",
                "serve",
                database,
                "--ops",
                "chaos_client:ops",
                "--migrations",
                "chaos_client:migrations",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env=child_env(),
        )
    try:
        wait_for_line(proc, b"READY", timeout)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@dataclass
class _Client:
    name: str
    log: Path
    proc: subprocess.Popen[bytes]
    tasks: int
    killed: bool = False
    done: bool = False


class _Tail:
    """Reads a client log incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [line.decode() for line in lines]


@dataclass
class Outcome:
    """What a chaos run did, checked against the database."""

    attempted: int = 0
    acknowledged: int = 0
    rows: int = 0
    kills: int = 0
    lost: list[str] = field(default_factory=list)
    """Acknowledged but not in the database."""
    duplicated: list[str] = field(default_factory=list)
    """In the database twice, or refused by the UNIQUE constraint (applied twice)."""
    wrong_result: list[str] = field(default_factory=list)
    """Acknowledged with a row id other than the one in the database."""
    unacknowledged: list[str] = field(default_factory=list)
    """Attempted by a client that was never killed, and never answered."""
    in_doubt: list[str] = field(default_factory=list)
    """Attempted by a client process that was itself killed (it held the writer role)."""
    in_doubt_applied: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    pauses_ms: list[float] = field(default_factory=list)
    """Per kill: time from the kill to the first write committed by another writer."""
    replayed: int = 0
    """Acknowledgements that came after their committing writer was killed: answered
    from the exactly-once record by the next writer."""

    def summary(self) -> str:
        return (
            f"kills={self.kills} attempted={self.attempted} acknowledged={self.acknowledged} "
            f"rows={self.rows} lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"wrong_result={len(self.wrong_result)} unacknowledged={len(self.unacknowledged)} "
            f"in_doubt={len(self.in_doubt)} (applied {self.in_doubt_applied}) "
            f"replayed={self.replayed} errors={dict(self.errors)}"
        )


class ChaosRun:
    """Clients writing unique keys; :meth:`kill_writer` SIGKILLs the writer of the moment.

    ``mode="auto"``: every client is ``role=auto``, so the writer is one of them; a killed
    client is replaced by a fresh one. ``mode="serve"``: clients are ``role=client`` and the
    writer is an ``onewriter serve`` process, restarted after each kill (with
    ``client_role="auto"`` the clients elect one of themselves once it is gone).
    """

    def __init__(
        self,
        directory: Path,
        *,
        mode: Mode = "auto",
        sync_clients: int = 3,
        async_clients: int = 2,
        tasks: int = 8,
        failover_timeout: float = 15.0,
        client_role: Literal["auto", "client"] | None = None,
    ) -> None:
        self.dir = directory
        self.mode = mode
        self.client_role = client_role or ("client" if mode == "serve" else "auto")
        self.sync_clients = sync_clients
        self.async_clients = async_clients
        self.tasks = tasks
        self.failover_timeout = failover_timeout
        self.db = str(directory / "chaos.db")
        self.lock = self.db + ".onewriter.lock"
        self.stop_file = directory / "STOP"
        self.clients: list[_Client] = []
        self.tails: dict[str, _Tail] = {}
        self.serve: subprocess.Popen[bytes] | None = None
        self.kills: list[tuple[int, float]] = []
        self._sigkilled: set[int] = set()
        self._acks: list[tuple[float, int]] = []
        self._state: dict[str, dict[str, Any]] = {}
        self._next = 0

    # -- processes --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        if self.mode == "serve":
            self._start_serve(timeout)
        for i in range(self.sync_clients + self.async_clients):
            self._start_client(tasks=self.tasks if i >= self.sync_clients else 0)
        for client in self.clients:
            wait_for_line(client.proc, b"READY", timeout)

    def _start_serve(self, timeout: float) -> subprocess.Popen[bytes]:
        self.serve = start_serve(self.db, self.dir / "serve.err", timeout=timeout)
        return self.serve

    def _start_client(self, tasks: int) -> _Client:
        self._next += 1
        name = f"c{self._next}"
        log = self.dir / f"{name}.log"
        stderr = open(self.dir / f"{name}.err", "ab")  # noqa: SIM115 (owned by the child)
        cmd = [
            sys.executable,
            str(HERE / "chaos_client.py"),
            self.db,
            "--name",
            name,
            "--log",
            str(log),
            "--stop",
            str(self.stop_file),
            "--tasks",
            str(tasks),
            "--role",
            self.client_role,
            "--failover-timeout",
            str(self.failover_timeout),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=child_env())
        stderr.close()
        client = _Client(name, log, proc, tasks)
        self.clients.append(client)
        self.tails[name] = _Tail(log)
        self._state[name] = {"attempted": set(), "acked": {}, "errors": []}
        return client

    def writer_pid(self) -> int | None:
        return lock_holder(self.lock)

    def kill_writer(self) -> int:
        """SIGKILL the process holding the writer role and replace it; returns its pid."""
        pid = self.writer_pid()
        if pid is None:
            raise RuntimeError("nobody holds the writer role")
        owner = next((c for c in self.clients if c.proc.pid == pid), None)
        is_serve = self.serve is not None and self.serve.pid == pid
        if owner is None and not is_serve:
            raise RuntimeError(f"the writer role is held by pid {pid}, not one of this run's")
        os.kill(pid, signal.SIGKILL)
        self.kills.append((pid, time.monotonic()))
        self._sigkilled.add(pid)
        if owner is not None:
            owner.killed = True
            owner.proc.wait(10)
            self._start_client(tasks=owner.tasks)
        else:
            assert self.serve is not None
            self.serve.wait(10)
            stop_process(self.serve)
            self._start_serve(timeout=30.0)
        return pid

    def kill_repeatedly(
        self, kills: int, interval: float, on_kill: Callable[[int, int], None] | None = None
    ) -> None:
        """Every ``interval`` seconds SIGKILL the writer, then wait for the next to write."""
        if not self.wait_for_progress():
            raise RuntimeError("no write was acknowledged before the first kill")
        for n in range(kills):
            time.sleep(interval)  # the chaos cadence, not a synchronisation
            pid = self.kill_writer()
            if not self.wait_for_progress():
                raise RuntimeError(f"no writer acknowledged a write after killing {pid}")
            if on_kill is not None:
                on_kill(n + 1, pid)

    def terminate_serve(self, timeout: float = 30.0) -> int:
        """SIGTERM the ``serve`` writer (it drains and hands over); returns its exit code."""
        assert self.serve is not None
        proc, self.serve = self.serve, None
        proc.send_signal(signal.SIGTERM)
        self.kills.append((proc.pid, time.monotonic()))
        wait_for_line(proc, b"stopped", timeout)
        rc = proc.wait(timeout)
        stop_process(proc)
        return rc

    def wait_for_progress(self, timeout: float = 15.0) -> bool:
        """Wait until a writer other than the last one killed has acknowledged a write."""
        pid, since = self.kills[-1] if self.kills else (0, 0.0)
        deadline = time.monotonic() + timeout
        start = len(self._acks)
        while time.monotonic() < deadline:
            self.poll_logs()
            if any(t > since and p != pid for t, p in self._acks[start:]):
                return True
            start = len(self._acks)
            self._check_clients_alive()
            time.sleep(0.01)
        return False

    def _check_clients_alive(self) -> None:
        for client in self.clients:
            if not client.killed and client.proc.poll() is not None:
                err = (self.dir / f"{client.name}.err").read_text()[-2000:]
                raise RuntimeError(f"client {client.name} exited early: {err}")

    def poll_logs(self) -> None:
        for name, tail in self.tails.items():
            state = self._state[name]
            for line in tail.new_lines():
                kind, key, *rest = line.split(" ", 5)
                if kind == "a":
                    state["attempted"].add(key)
                elif kind == "k":
                    rowid, pid, t = int(rest[0]), int(rest[1]), float(rest[2])
                    state["acked"][key] = rowid
                    self._acks.append((t, pid))
                elif kind == "e":
                    state["errors"].append((key, rest[0], " ".join(rest[1:])))

    def stop(self, timeout: float = 60.0) -> Outcome:
        """Let the clients finish, stop the writer, and check everything."""
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        for client in self.clients:
            if client.killed:
                continue
            wait_for_line(client.proc, b"DONE", max(0.1, deadline - time.monotonic()))
            rc = client.proc.wait(max(0.1, deadline - time.monotonic()))
            if rc != 0:
                raise RuntimeError(f"client {client.name} exited with {rc}")
            client.done = True
        if self.serve is not None:
            self.serve.send_signal(signal.SIGTERM)
            self.serve.wait(max(0.1, deadline - time.monotonic()))
        self.poll_logs()
        return self._check()

    def close(self) -> None:
        """Teardown: terminate whatever still runs."""
        for client in self.clients:
            stop_process(client.proc)
        if self.serve is not None:
            stop_process(self.serve)

    # -- checking ---------------------------------------------------------------------

    def _check(self) -> Outcome:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            rows: dict[str, int] = {}
            out = Outcome(kills=len(self._sigkilled))
            for key, rowid in conn.execute("SELECT key, id FROM chaos_keys"):
                if key in rows:
                    out.duplicated.append(key)
                rows[key] = rowid
            out.rows = len(rows)
        finally:
            conn.close()
        for client in self.clients:
            state = self._state[client.name]
            attempted: set[str] = state["attempted"]
            acked: dict[str, int] = state["acked"]
            out.attempted += len(attempted)
            out.acknowledged += len(acked)
            for key, rowid in acked.items():
                if key not in rows:
                    out.lost.append(key)
                elif rows[key] != rowid:
                    out.wrong_result.append(key)
            answered = set(acked)
            for key, code, message in state["errors"]:
                out.errors[code] += 1
                answered.add(key)
                if "UNIQUE" in message:
                    out.duplicated.append(key)
            for key in sorted(attempted - answered):
                if client.killed:
                    out.in_doubt.append(key)
                    out.in_doubt_applied += key in rows
                else:
                    out.unacknowledged.append(key)
        out.pauses_ms = self._pauses()
        killed_at = {pid: t for pid, t in self.kills if pid in self._sigkilled}
        out.replayed = sum(1 for t, p in self._acks if p in killed_at and t > killed_at[p])
        return out

    def _pauses(self) -> list[float]:
        acks = sorted(self._acks)
        pauses = []
        for pid, killed_at in self.kills:
            first = next((t for t, p in acks if t > killed_at and p != pid), None)
            if first is not None:
                pauses.append(1000 * (first - killed_at))
        return pauses


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    data = sorted(values)
    return data[min(len(data) - 1, round(q * (len(data) - 1)))]


if __name__ == "__main__":
    sys.exit(main())
