"""What the tests share: a schema and ops registry that child processes import too, the
child programs themselves, and tools to run real processes and speak the raw protocol.

Child processes run ``python -c "import helpers; helpers.<main>()"`` with this folder on
``PYTHONPATH``. Every wait has a deadline; every process is stopped terminate -> wait ->
kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onewriter
from onewriter.config import Config, Migration, resolve_paths
from onewriter.wire import frames as proto

TESTS_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable
ONEWRITER_CLI = str(Path(PYTHON).parent / "onewriter")

# -- the schema and the ops every test database uses ----------------------------------------

SCHEMA = """
CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL, content TEXT);
CREATE INDEX posts_title ON posts (title);
CREATE TABLE numbers (id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, n INTEGER NOT NULL);
CREATE TABLE parents (id INTEGER PRIMARY KEY);
CREATE TABLE children (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE migration_log (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL);
"""


def log_migration(conn: sqlite3.Connection) -> None:
    """A function migration that leaves a trace, to count how often it ran."""
    conn.execute("INSERT INTO migration_log (pid) VALUES (?)", (os.getpid(),))


MIGRATIONS: list[Migration] = [SCHEMA, log_migration]

ops = onewriter.Ops()


@ops.register
def create_post(conn: sqlite3.Connection, title: str, content: str | None = None) -> dict[str, Any]:
    row = conn.execute(
        "INSERT INTO posts (title, content) VALUES (?, ?) RETURNING id, title, content",
        (title, content),
    ).fetchone()
    return dict(zip(("id", "title", "content"), row, strict=True))


@ops.register
def insert_number(conn: sqlite3.Connection, worker: int, n: int) -> int:
    cur = conn.execute("INSERT INTO numbers (worker, n) VALUES (?, ?)", (worker, n))
    return int(cur.lastrowid or 0)


@ops.register
def slow(conn: sqlite3.Connection, seconds: float, marker: str | None = None) -> int:
    """Hold the writer for ``seconds``; touch ``marker`` first so a test knows it started."""
    if marker is not None:
        Path(marker).touch()
    time.sleep(seconds)
    conn.execute("INSERT INTO posts (title) VALUES ('slow')")
    return os.getpid()


@ops.register
def fail(conn: sqlite3.Connection, message: str) -> None:
    conn.execute("INSERT INTO posts (title) VALUES ('must be rolled back')")
    raise ValueError(message)


@ops.register
def control(conn: sqlite3.Connection, statement: str) -> None:
    """Try to end or begin the writer's transaction (it must be refused)."""
    conn.execute("INSERT INTO posts (title) VALUES ('must be rolled back')")
    if statement == "commit()":
        conn.commit()
    elif statement == "rollback()":
        conn.rollback()
    else:
        conn.execute(statement)


@ops.register
def orphan_child(conn: sqlite3.Connection) -> int:
    """Insert a row whose deferred foreign key fails only at COMMIT."""
    cur = conn.execute("INSERT INTO children (parent_id) VALUES (424242)")
    return int(cur.lastrowid or 0)


@ops.register
def overfill(conn: sqlite3.Connection) -> None:
    """Hit SQLITE_FULL for real: cap the file at its size, then grow it."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {int(pages)}")
    try:
        conn.execute("INSERT INTO posts (title) VALUES (hex(randomblob(200000)))")
    finally:
        conn.execute("PRAGMA max_page_count = 1073741823")


@ops.register
def writer_pid(conn: sqlite3.Connection) -> int:
    return os.getpid()


@ops.register
def increment(conn: sqlite3.Connection) -> int:
    """Read-modify-write: the next number of worker -1 (a lost update would show)."""
    balance = conn.execute("SELECT count(*) FROM numbers WHERE worker = -1").fetchone()[0]
    conn.execute("INSERT INTO numbers (worker, n) VALUES (-1, ?)", (balance + 1,))
    return int(balance + 1)


# -- paths ------------------------------------------------------------------------------------


def socket_path_for(database: str, config: Config | None = None) -> str:
    """Where the writer of ``database`` listens."""
    return resolve_paths(database, config or Config())[1]


def count(database: str, table: str = "numbers") -> int:
    """Rows in ``table``, read with a plain connection of this process."""
    conn = sqlite3.connect(database, timeout=10)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def user_version(database: str) -> int:
    conn = sqlite3.connect(database, timeout=10)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


# -- child processes ---------------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(TESTS_DIR), str(TESTS_DIR.parent)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("ONEWRITER_OPS", None)
    if extra:
        env.update(extra)
    return env


def main_command(main: str, *args: Any) -> list[str]:
    """The command line that runs ``helpers.<main>(*argv)`` in a fresh interpreter."""
    code = f"import sys, helpers; helpers.{main}(*sys.argv[1:])"
    return [PYTHON, "-c", code, *(str(a) for a in args)]


def run(
    cmd: list[str], *, timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion within ``timeout`` (the process is killed past it)."""
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd[:4]} exited {result.returncode}\nstdout:\n{result.stdout}\n"
            f"stderr:\n{result.stderr[-4000:]}"
        )
    return result


class Child:
    """A running child process whose stdout lines are read with deadlines."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or child_env(),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._readers:
            thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed at teardown
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))

    def describe(self) -> str:
        tail = "\n".join(self.stderr_lines[-40:])
        return f"child {self.pid} ({' '.join(self.cmd[:4])}), stderr tail:\n{tail}"

    def wait_line(self, prefix: str, timeout: float = 20.0) -> str:
        """The next stdout line starting with ``prefix`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {prefix!r} line within {timeout} s from {self.describe()}"
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)
                raise AssertionError(
                    f"stdout closed before a {prefix!r} line (exit {self.proc.poll()}); "
                    f"{self.describe()}"
                )
            if line.startswith(prefix):
                return line

    def wait_json(self, prefix: str, timeout: float = 20.0) -> Any:
        """The JSON that follows ``prefix`` on the next such line."""
        return json.loads(self.wait_line(prefix, timeout)[len(prefix) :])

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s: {self.describe()}") from None

    def kill9(self) -> None:
        """SIGKILL, and wait until the kernel has reaped it (its flock is released)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """terminate -> wait -> kill, then close the pipes."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for thread in self._readers:
            thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def start_ready(cmd: list[str], prefix: str, timeout: float = 20.0) -> tuple[Child, str]:
    """Start ``cmd`` and wait for its first ``prefix`` line; when that line never comes
    the child is stopped and its pipes closed (left to the garbage collector, they would
    warn in whichever test runs next)."""
    child = Child(cmd)
    try:
        return child, child.wait_line(prefix, timeout)
    except BaseException:
        child.stop()
        raise


class WriterProcess(Child):
    """A dedicated writer in a child process (``role="writer"``), waited on until READY."""

    def __init__(self, database: str, *, timeout: float = 20.0, **config: Any) -> None:
        super().__init__(main_command("main_writer", database, json.dumps(config)))
        self.database = database
        try:
            ready = self.wait_json("READY ", timeout)
        except BaseException:
            self.stop()
            raise
        self.writer_pid: int = ready["pid"]
        self.socket_path: str = ready["socket"]


class Children:
    """Every child a test started, stopped at teardown."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    def start(self, cmd: list[str]) -> Child:
        child = Child(cmd)
        self.started.append(child)
        return child

    def main(self, main: str, *args: Any) -> Child:
        return self.start(main_command(main, *args))

    def writer(self, database: str, **config: Any) -> WriterProcess:
        child = WriterProcess(database, **config)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.started):
            child.stop()


# -- the raw protocol ---------------------------------------------------------------------------


class RawClient:
    """A socket that speaks the wire protocol by hand, to send what no client would."""

    def __init__(self, path: str, *, hello: bool = True, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.reader = proto.FrameReader(1 << 30)
        self.inbox: list[Any] = []
        try:
            self.sock.connect(path)
            if hello:
                self.send({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": os.urandom(16)})
                self.greeting = self.recv()
        except BaseException:
            self.sock.close()
            raise

    def send(self, message: Any) -> None:
        self.sock.sendall(proto.frame(message))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> Any:
        """The next message; raises ``EOFError`` when the writer closed the connection."""
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the writer closed the connection")
            for body in self.reader.feed(data):
                self.inbox.extend(proto.messages(proto.unpack(body)))
        return self.inbox.pop(0)

    def recv_id(self, rid: Any) -> Any:
        """The next reply with id ``rid`` (other messages are dropped)."""
        while True:
            message = self.recv()
            if isinstance(message, dict) and message.get("id") == rid:
                return message

    def closed_by_peer(self) -> bool:
        """Whether the writer has closed this connection (read until EOF or timeout)."""
        try:
            while True:
                self.recv()
        except EOFError:
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ping(path: str) -> bool:
    """Whether a writer answers a ping on ``path`` right now."""
    with RawClient(path, timeout=5.0) as raw:
        raw.send({"id": 1, "t": "ping"})
        return bool(raw.recv_id(1).get("ok"))


# -- child programs (run in their own interpreter) -------------------------------------------


def _connect(database: str, **config: Any) -> onewriter.Database:
    return onewriter.connect(database, ops=ops, migrations=MIGRATIONS, **config)


def main_writer(database: str, config_json: str = "{}") -> None:
    """A dedicated writer: READY with its pid and socket, drains on SIGTERM."""
    config = json.loads(config_json)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    db = _connect(database, role="writer", **config)
    socket_path = socket_path_for(database, db.config)
    print("READY " + json.dumps({"pid": os.getpid(), "socket": socket_path}), flush=True)
    stop.wait()
    db.close()
    print("STOPPED", flush=True)


def main_insert(database: str, worker: str, rows: str) -> None:
    """Wait for GO, write ``rows`` rows, report who the writer was, wait for EXIT."""
    print("WAITING", flush=True)
    sys.stdin.readline()
    db = _connect(database)
    errors: dict[str, int] = {}
    writer_pids: set[int] = set()
    for n in range(int(rows)):
        try:
            db.write(insert_number, worker=int(worker), n=n)
        except onewriter.OneWriterError as exc:
            errors[exc.code] = errors.get(exc.code, 0) + 1
        if n % 250 == 0:
            writer_pids.add(db.stats()["pid"])
    writer_pids.add(db.stats()["pid"])
    report = {
        "pid": os.getpid(),
        "is_writer": db.is_writer,
        "writer_pids": sorted(writer_pids),
        "errors": errors,
    }
    print("DONE " + json.dumps(report), flush=True)
    sys.stdin.readline()
    still_writer = db.is_writer
    db.close()
    print("EXIT " + json.dumps({"was_writer_at_exit": still_writer}), flush=True)


def main_join(database: str) -> None:
    """Connect, write one post, say who the writer is; stay until told to EXIT."""
    db = _connect(database)
    post = db.write(create_post, title=f"from {os.getpid()}")
    report = {
        "pid": os.getpid(),
        "is_writer": db.is_writer,
        "writer_pid": db.stats()["pid"],  # the elected writer
        "op_pid": db.write(writer_pid),  # where a write ran (here, when direct)
        "stats_pid": db.stats()["pid"],
        "post_id": post["id"],
    }
    print("JOINED " + json.dumps(report), flush=True)
    sys.stdin.readline()
    db.close()


def main_reader(database: str) -> None:
    """Answer each ``<title>`` line on stdin with how many posts have that title."""
    db = onewriter.connect(database, ops=ops, role="client")
    print("READY", flush=True)
    for line in sys.stdin:
        title = line.strip()
        if not title:
            break
        n = db.read("SELECT count(*) AS n FROM posts WHERE title = ?", (title,))[0]["n"]
        print(f"SEEN {n}", flush=True)
    db.close()


def main_fork(database: str, mode: str, writes: str = "funnel") -> None:
    """Create a Database, use it, fork; the child must write on connections of its own.

    ``mode`` ``writer``: this process becomes the writer (role auto); ``client``: a
    writer runs elsewhere (role client). ``writes``: ``Config.writes``.
    """
    role = "auto" if mode == "writer" else "client"
    db = _connect(database, role=role, writes=writes)
    parent_core = db._core
    db.write(create_post, title="before fork")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            post = db.write(create_post, title="from child")
            report = {
                "post": post,
                "own_core": db._core is not parent_core,
                "is_writer": db.is_writer,
                "writer_pid": db.write(writer_pid),
                "seen": db.read("SELECT count(*) AS n FROM posts")[0]["n"],
            }
            os.write(write_fd, json.dumps(report).encode())
            db.close()
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child_report = json.loads(pipe.read() or b"null")
    _, wait_status = os.waitpid(pid, 0)
    after = db.write(create_post, title="parent after fork")
    report = {
        "child": child_report,
        "child_exit": os.waitstatus_to_exitcode(wait_status),
        "parent_post": after,
        "parent_is_writer": db.is_writer,
        "parent_pid": os.getpid(),
        "posts": db.read("SELECT count(*) AS n FROM posts")[0]["n"],
    }
    db.close()
    print("FORK " + json.dumps(report), flush=True)


def main_fork_pool(database: str, workers: str, rows: str, writes: str = "funnel") -> None:
    """A multiprocessing pool forked after this process became the writer: each worker
    uses the Database object it inherited."""
    import multiprocessing

    global _pool_db
    db = _pool_db = _connect(database, writes=writes)
    db.write(create_post, title="parent")
    with multiprocessing.get_context("fork").Pool(int(workers)) as pool:
        pids = pool.map(_pool_insert, [(w, int(rows)) for w in range(int(workers))])
        pool.close()
        pool.join()
    total = db.read("SELECT count(*) AS n FROM numbers")[0]["n"]
    db.close()
    report = {"child_writer_pids": pids, "parent": os.getpid(), "total": total}
    print("POOL " + json.dumps(report), flush=True)


_pool_db: onewriter.Database | None = None


def _pool_insert(task: tuple[int, int]) -> int:
    worker, rows = task
    assert _pool_db is not None
    for n in range(rows):
        _pool_db.write(insert_number, worker=worker, n=n)
    return int(_pool_db.write(writer_pid))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until true; fail after ``timeout``."""
    limit = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > limit:
            raise AssertionError(f"not true within {timeout} s: {what or condition}")
        time.sleep(0.01)
