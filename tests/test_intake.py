"""One intake, every origin (docs/protocol.md): the same request gets the same answer
whether it comes from the writer's own process (the in-process link), the Unix socket,
TCP or Redis; what an origin changes is only what it is allowed.

Three deployments, each started once for the module (and only if a test asks for it):

* ``open`` allows raw SQL everywhere (``allow_sql`` and ``allow_sql_remote``);
* ``closed`` allows it nowhere (``allow_sql=False``, ``allow_sql_remote=False``);
* ``swapped`` only remotely (``allow_sql=False``, ``allow_sql_remote=True``), so that an
  origin that followed the other origin's setting would show.

Each has a writer process that serves its Unix socket, a TCP listener and (when
redis-server is installed) a Redis queue, and two writers in this very process (one for
the sync face, one for the asyncio face, each on a database of its own: the writer role
belongs to one ``Database`` object). Every request of the table goes through the public
API of eight faces: {local, unix, tcp, redis} x {sync, asyncio}. Raw messages go through
a raw sender per origin: the in-process link itself, ``RawClient``, ``RawTcp``, and
elements pushed onto the Redis list.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MIGRATIONS,
    RawClient,
    WriterProcess,
    count,
    insert_number,
    ops,
    wait_until,
)
from peers import TOKEN, RawTcp
from redis_server import HAVE_REDIS, RedisServer, needs_redis, start_redis

import onewriter
from onewriter.client.transports.inprocess import InProcessSyncLink
from onewriter.wire import frames as proto
from onewriter.wire.addresses import reply_key
from onewriter.writer.service import WriterService

#: The writers' and the clients' frame limit: small, so that TOO_LARGE is cheap to reach.
MAX_FRAME = 64 * 1024
#: Bounds every wait of a client (a request nobody answers fails the test, not the run).
CLIENT_TIMEOUT = 10.0

ORIGINS = ("local", "unix", "tcp", "redis")


def faces(*origins: str) -> list[Any]:
    """The faces of ``origins``, sync and asyncio (Redis ones skipped without Redis)."""
    return [
        pytest.param(f"{origin}-{kind}", marks=[needs_redis] if origin == "redis" else [])
        for origin in origins
        for kind in ("sync", "async")
    ]


FACES = faces(*ORIGINS)
RAW_ORIGINS = [
    pytest.param(origin, marks=[needs_redis] if origin == "redis" else []) for origin in ORIGINS
]

_numbers = itertools.count(1_000, 100)


# -- an event loop for the asyncio faces -------------------------------------------------------


class LoopThread:
    """One event loop on a thread of its own; the asyncio faces live on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


# -- faces: one origin seen through the public API -----------------------------------------------


@dataclass
class Face:
    """A public database object reaching one writer through one origin."""

    name: str  # e.g. "tcp-async"
    origin: str  # local, unix, tcp or redis
    db: Any  # Database or AsyncDatabase
    database: str  # the file that writer writes, for plain sqlite3 checks
    writer_pid: int
    runner: LoopThread | None = None  # set for the asyncio faces

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.db, method)
        if self.runner is None:
            return bound(*args, **kwargs)
        return self.runner.run(bound(*args, **kwargs))

    def refused(self, method: str, *args: Any, **kwargs: Any) -> onewriter.OneWriterError:
        """The error the call raises (the test fails if it succeeds)."""
        with pytest.raises(onewriter.OneWriterError) as caught:
            self.call(method, *args, **kwargs)
        return caught.value


# -- raw senders: one origin, messages by hand -------------------------------------------------


class RawLocal:
    """The in-process link itself: encoded messages straight into the writer's intake."""

    def __init__(self, service: WriterService) -> None:
        self.link = InProcessSyncLink(service, os.urandom(16))
        self.inbox: list[Any] = []

    def send(self, message: Any) -> None:
        self.link.send(proto.pack(message))

    def recv(self) -> Any:
        while not self.inbox:
            self.inbox.extend(self.link.receive(time.monotonic() + CLIENT_TIMEOUT))
        return self.inbox.pop(0)

    def close(self) -> None:
        self.link.close()


class RawRedis:
    """A producer that pushes hand-made elements and pops its reply key."""

    def __init__(self, url: str, queue: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.queue = queue
        self.id = os.urandom(16)
        self.key = reply_key(queue, self.id)
        self.unread: list[Any] = []

    def send(self, message: dict[str, Any]) -> None:
        self.client.rpush(self.queue, proto.pack({**message, "client": self.id}))

    def recv(self) -> Any:
        if not self.unread:  # an element holds a reply, or a list of them
            got: Any = self.client.blpop([self.key], timeout=CLIENT_TIMEOUT)
            assert got is not None, f"no reply on {self.key} within {CLIENT_TIMEOUT} s"
            self.unread += proto.messages(proto.unpack(got[1]))
        return self.unread.pop(0)

    def close(self) -> None:
        self.client.close()


Raw = RawLocal | RawClient | RawRedis


def exchange(raw: Raw, message: Any) -> Any:
    """Send one message, return the next reply."""
    raw.send(message)
    return raw.recv()


def pings(raw: Raw) -> bool:
    """The sender's line still serves: a ping is answered."""
    reply = exchange(raw, {"id": 424_242, "t": "ping"})
    return bool(reply == {"id": 424_242, "ok": True, "result": None})


# -- deployments -------------------------------------------------------------------------------


LIMITS = {"max_frame": MAX_FRAME, "client_timeout": CLIENT_TIMEOUT}


def open_sync(stack: contextlib.ExitStack, path: str, **config: Any) -> onewriter.Database:
    db = onewriter.connect(path, ops=ops, **{**LIMITS, **config})
    stack.callback(db.close)
    return db


def open_async(
    stack: contextlib.ExitStack, runner: LoopThread, path: str, **config: Any
) -> onewriter.AsyncDatabase:
    db = onewriter.connect_async(path, ops=ops, **{**LIMITS, **config})
    stack.callback(lambda: runner.run(db.close()))
    runner.run(db.start())
    return db


@dataclass
class Deployment:
    """One writer process (Unix, TCP, Redis) and two writers in this process."""

    writer: WriterProcess
    remote_db: str
    local: onewriter.Database
    runner: LoopThread
    tcp_url: str = ""
    redis_url: str | None = None
    queue: str = ""
    faces: dict[str, Face] = field(default_factory=dict)

    def face(self, name: str) -> Face:
        return self.faces[name]

    def client_face(self, stack: contextlib.ExitStack, name: str, **config: Any) -> Face:
        """A new client of the writer process through ``name`` (``unix-sync``,
        ``tcp-async``, ...), closed by ``stack``."""
        origin, kind = name.split("-")
        address = {"unix": self.remote_db, "tcp": self.tcp_url, "redis": self.redis_url}[origin]
        assert address is not None
        config |= {
            "unix": {"role": "client"},
            "tcp": {"token": TOKEN},
            "redis": {"queue": self.queue},
        }[origin]
        if kind == "sync":
            db: Any = open_sync(stack, address, **config)
            return Face(name, origin, db, self.remote_db, self.writer.writer_pid)
        db = open_async(stack, self.runner, address, **config)
        return Face(name, origin, db, self.remote_db, self.writer.writer_pid, self.runner)

    @contextlib.contextmanager
    def raw(self, origin: str) -> Iterator[Raw]:
        sender: Raw
        if origin == "local":
            service = self.local._core.local_writer
            assert service is not None and service.running
            sender = RawLocal(service)
        elif origin == "unix":
            sender = RawClient(self.writer.socket_path)
        elif origin == "tcp":
            sender = RawTcp(self.tcp_url)
        else:
            assert self.redis_url is not None
            sender = RawRedis(self.redis_url, self.queue)
        try:
            yield sender
        finally:
            sender.close()


def start_deployment(
    stack: contextlib.ExitStack,
    directory: Path,
    runner: LoopThread,
    redis_url: str | None,
    **rules: Any,
) -> Deployment:
    """Start a deployment whose every writer has ``rules``; everything started is undone
    by ``stack``."""
    directory.mkdir()
    remote_db = str(directory / "remote.db")
    queue = f"intake-{directory.name}-{os.getpid()}"
    config: dict[str, Any] = {"listen": "tcp://127.0.0.1:0", "token": TOKEN, **LIMITS, **rules}
    if redis_url is not None:
        config.update(redis_url=redis_url, redis_queue=queue)
    writer = WriterProcess(remote_db, **config)
    stack.callback(writer.stop)

    in_process = {"role": "writer", "writes": "funnel", "migrations": MIGRATIONS, **rules}
    local_sync_path = str(directory / "local-sync.db")
    local_async_path = str(directory / "local-async.db")
    local = open_sync(stack, local_sync_path, **in_process)
    local_async = open_async(stack, runner, local_async_path, **in_process)
    assert local.is_writer and local_async.is_writer
    me = os.getpid()

    deployment = Deployment(writer, remote_db, local, runner, redis_url=redis_url, queue=queue)
    unix = deployment.client_face(stack, "unix-sync")
    deployment.tcp_url = unix.call("stats")["remote"]["tcp"]["url"]
    names = ["unix-async", "tcp-sync", "tcp-async"]
    if redis_url is not None:
        names += ["redis-sync", "redis-async"]
    faces = [
        Face("local-sync", "local", local, local_sync_path, me),
        Face("local-async", "local", local_async, local_async_path, me, runner),
        unix,
        *(deployment.client_face(stack, name) for name in names),
    ]
    deployment.faces = {face.name: face for face in faces}
    return deployment


@pytest.fixture(scope="module")
def runner() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A throwaway redis-server for the module, or ``None`` when it is not installed (the
    Redis cases are skipped then, the others run)."""
    if not HAVE_REDIS:
        yield None
        return
    server: RedisServer = start_redis(str(tmp_path_factory.mktemp("redis")))
    try:
        yield server.url
    finally:
        server.stop()


def deployment_fixture(name: str, doc: str, **rules: Any) -> Any:
    """A module-scoped fixture ``<name>_deployment``: a deployment with ``rules``."""

    @pytest.fixture(scope="module", name=f"{name}_deployment")
    def fixture(
        tmp_path_factory: pytest.TempPathFactory, runner: LoopThread, redis_url: str | None
    ) -> Iterator[Deployment]:
        with contextlib.ExitStack() as stack:
            directory = tmp_path_factory.mktemp("intake") / name
            yield start_deployment(stack, directory, runner, redis_url, **rules)

    fixture.__doc__ = doc
    return fixture


open_deployment = deployment_fixture(
    "open", "Raw SQL allowed on every origin.", allow_sql=True, allow_sql_remote=True
)
closed_deployment = deployment_fixture(
    "closed",
    "Raw SQL allowed on no origin, the writer's own process included.",
    allow_sql=False,
    allow_sql_remote=False,
)
swapped_deployment = deployment_fixture(
    "swapped",
    "The defaults the other way round: raw SQL only from TCP and Redis.",
    allow_sql=False,
    allow_sql_remote=True,
)


@pytest.fixture
def n() -> int:
    """A hundred integers of this test's own (row ids and titles no other test uses)."""
    return next(_numbers)


def posts(database: str, where: str = "1", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``posts`` read with a plain sqlite3 connection."""
    conn = sqlite3.connect(database, timeout=10)
    try:
        return conn.execute(
            f"SELECT id, title, content FROM posts WHERE {where}", params
        ).fetchall()
    finally:
        conn.close()


# -- the table: one request, every face ----------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    face: Face
    n: int
    tmp: Path


@dataclass(frozen=True)
class Request:
    """One request through the public API and the answer it must get on every face:
    ``result`` (computed after the call, from the database), or ``error`` (the class, its
    code, and a fragment its message must hold). ``after`` checks the database with plain
    sqlite3."""

    method: str
    args: Callable[[Ctx], tuple[Any, ...]]
    kwargs: Callable[[Ctx], dict[str, Any]] = lambda c: {}
    result: Callable[[Ctx], Any] | None = None
    error: tuple[type[onewriter.OneWriterError], str, str] | None = None
    after: Callable[[Ctx], None] | None = None


def _big(c: Ctx) -> str:
    return "x" * (MAX_FRAME + 1)


def _nothing_titled(title: str) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        assert posts(c.face.database, "title = ?", (title.format(n=c.n),)) == []

    return check


def _no_long_title(c: Ctx) -> None:
    assert posts(c.face.database, "length(title) > ?", (MAX_FRAME,)) == []


def _no_file(c: Ctx) -> None:
    assert not (c.tmp / f"attached-{c.n}.db").exists()


def _the_post(c: Ctx) -> dict[str, Any]:
    (row,) = posts(c.face.database, "title = ?", (f"op {c.n}",))
    return {"id": row[0], "title": f"op {c.n}", "content": "by keyword"}


def _the_number(c: Ctx) -> int:
    conn = sqlite3.connect(c.face.database, timeout=10)
    try:
        (row,) = conn.execute("SELECT id, n FROM numbers WHERE worker = ?", (c.n,)).fetchall()
    finally:
        conn.close()
    assert row[1] == 7
    return int(row[0])


def _near_the_limit(c: Ctx) -> str:
    """A title that keeps the request (and the op's result) just under MAX_FRAME."""
    return f"near {c.n} " + "x" * (MAX_FRAME - 200)


def _the_near_post(c: Ctx) -> dict[str, Any]:
    (row,) = posts(c.face.database, "title = ?", (_near_the_limit(c),))
    return {"id": row[0], "title": _near_the_limit(c), "content": None}


def _not_inserted(c: Ctx) -> None:
    assert posts(c.face.database, "id = ?", (c.n,)) == []


def _inserted(c: Ctx) -> None:
    assert posts(c.face.database, "id = ?", (c.n,)) == [(c.n, f"sql {c.n}", None)]


def _inserted_many(c: Ctx) -> None:
    rows = posts(c.face.database, "title = ?", (f"many {c.n}",))
    assert [row[0] for row in rows] == [c.n, c.n + 1, c.n + 2]


REQUESTS = {
    "op-good-args": Request(
        "write",
        lambda c: ("create_post", f"op {c.n}"),
        lambda c: {"content": "by keyword"},
        result=_the_post,
    ),
    "op-by-object": Request(
        "write",
        lambda c: (insert_number, c.n),
        lambda c: {"n": 7},
        result=_the_number,
    ),
    "op-just-under-the-limit": Request(
        "write",
        lambda c: ("create_post", _near_the_limit(c)),
        result=_the_near_post,
    ),
    "op-unknown": Request(
        "write",
        lambda c: ("no_such_op", 1),
        error=(onewriter.UnknownOp, "UNKNOWN_OP", "no op named 'no_such_op'"),
    ),
    "op-private-name": Request(
        "write",
        lambda c: ("__class__",),
        error=(onewriter.UnknownOp, "UNKNOWN_OP", "no op named '__class__'"),
    ),
    "op-raises": Request(
        "write",
        lambda c: ("fail",),
        lambda c: {"message": f"boom {c.n}"},
        error=(onewriter.OpFailed, "OP_FAILED", "op 'fail' raised ValueError: boom"),
        after=_nothing_titled("must be rolled back"),
    ),
    "op-wrong-kwarg": Request(
        "write",
        lambda c: ("create_post",),
        lambda c: {"titel": f"typo {c.n}"},
        error=(onewriter.OpFailed, "OP_FAILED", "raised TypeError"),
    ),
    "op-unencodable-arg": Request(
        "write",
        lambda c: ("create_post", object()),
        error=(onewriter.BadRequest, "BAD_REQUEST", "the request cannot be encoded"),
    ),
    "op-too-large": Request(
        "write",
        lambda c: ("create_post", _big(c)),
        error=(onewriter.TooLarge, "TOO_LARGE", f"over the frame limit of {MAX_FRAME}"),
        after=_no_long_title,
    ),
    "sql-insert": Request(
        "execute_write",
        lambda c: ("INSERT INTO posts (id, title) VALUES (?, ?)", (c.n, f"sql {c.n}")),
        result=lambda c: onewriter.WriteResult(rowcount=1, lastrowid=c.n, rows=[]),
        after=_inserted,
    ),
    "sql-insert-returning": Request(
        "execute_write",
        lambda c: (
            "INSERT INTO posts (id, title, content) VALUES (:id, :title, 'r') "
            "RETURNING id, title, content",
            {"id": c.n, "title": f"returning {c.n}"},
        ),
        result=lambda c: onewriter.WriteResult(
            rowcount=1, lastrowid=c.n, rows=[[c.n, f"returning {c.n}", "r"]]
        ),
    ),
    "sql-many": Request(
        "execute_write",
        lambda c: (
            "INSERT INTO posts (id, title) VALUES (?, ?)",
            [(c.n + i, f"many {c.n}") for i in range(3)],
        ),
        lambda c: {"many": True},
        result=lambda c: onewriter.WriteResult(rowcount=3, lastrowid=None, rows=[]),
        after=_inserted_many,
    ),
    "sql-too-many-params": Request(
        "execute_write",
        lambda c: ("INSERT INTO posts (title) VALUES (?)", (f"count {c.n}", "extra")),
        error=(onewriter.BadRequest, "BAD_REQUEST", "SQL parameters"),
        after=_nothing_titled("count {n}"),
    ),
    "sql-too-few-params": Request(
        "execute_write",
        lambda c: ("INSERT INTO posts (title, content) VALUES (?, ?)", (f"few {c.n}",)),
        error=(onewriter.BadRequest, "BAD_REQUEST", "SQL parameters"),
        after=_nothing_titled("few {n}"),
    ),
    "sql-missing-named-param": Request(
        "execute_write",
        lambda c: ("INSERT INTO posts (title) VALUES (:title)", {"titel": f"named {c.n}"}),
        error=(onewriter.BadRequest, "BAD_REQUEST", "SQL parameters"),
        after=_nothing_titled("named {n}"),
    ),
    "sql-unencodable-param": Request(
        "execute_write",
        lambda c: ("INSERT INTO posts (title) VALUES (?)", (object(),)),
        error=(onewriter.BadRequest, "BAD_REQUEST", "the request cannot be encoded"),
    ),
    "sql-too-large": Request(
        "execute_write",
        lambda c: ("INSERT INTO posts (title) VALUES (?)", (_big(c),)),
        error=(onewriter.TooLarge, "TOO_LARGE", f"over the frame limit of {MAX_FRAME}"),
    ),
    "sql-attach": Request(
        "execute_write",
        lambda c: (f"ATTACH DATABASE '{c.tmp / f'attached-{c.n}.db'}' AS other",),
        error=(onewriter.SqlNotAllowed, "SQL_NOT_ALLOWED", "refused"),
        after=_no_file,
    ),
    "sql-result-over-the-limit": Request(
        "execute_write",
        lambda c: (
            "INSERT INTO posts (id, title) VALUES (?, 'big') RETURNING hex(randomblob(?))",
            (c.n, MAX_FRAME // 2 + 1),
        ),
        error=(onewriter.OpFailed, "OP_FAILED", "returned a result that cannot be sent"),
        after=_not_inserted,
    ),
    "sql-error": Request(
        "execute_write",
        lambda c: ("INSERT INTO nowhere VALUES (1)",),
        error=(onewriter.OpFailed, "OP_FAILED", "no such table: nowhere"),
    ),
}


@pytest.mark.parametrize("face_name", FACES)
@pytest.mark.parametrize("request_name", list(REQUESTS))
def test_the_same_request_gets_the_same_answer_on_every_face(
    open_deployment: Deployment, face_name: str, request_name: str, n: int, tmp_path: Path
) -> None:
    face = open_deployment.face(face_name)
    request = REQUESTS[request_name]
    c = Ctx(face, n, tmp_path)
    args, kwargs = request.args(c), request.kwargs(c)
    if request.error is not None:
        cls, code, fragment = request.error
        error = face.refused(request.method, *args, **kwargs)
        assert (type(error), error.code) == (cls, code), error
        assert fragment in str(error)
    else:
        assert request.result is not None
        got = face.call(request.method, *args, **kwargs)
        assert got == request.result(c)
    if request.after is not None:
        request.after(c)


def writer_stats(deployment: Deployment, face: Face) -> dict[str, Any]:
    """The stats of the writer behind ``face`` (asked where stats are served)."""
    stats_face = face if face.origin == "local" else deployment.face("unix-sync")
    result: dict[str, Any] = stats_face.call("stats")
    return result


@pytest.mark.parametrize("face_name", FACES)
def test_what_the_client_cannot_send_never_reaches_the_writer(
    open_deployment: Deployment, face_name: str, n: int
) -> None:
    face = open_deployment.face(face_name)

    def seen() -> tuple[int, dict[str, int]]:
        stats = writer_stats(open_deployment, face)
        return stats["requests"], stats["errors"]

    before = seen()
    insert = "INSERT INTO posts (title) VALUES (?)"
    for method, args, code in [
        ("write", ("create_post", object()), "BAD_REQUEST"),
        ("execute_write", (insert, (object(),)), "BAD_REQUEST"),
        ("write", ("create_post", "x" * (MAX_FRAME + 1)), "TOO_LARGE"),
        ("execute_write", (insert, ("x" * (MAX_FRAME + 1),)), "TOO_LARGE"),
    ]:
        assert face.refused(method, *args).code == code
    assert seen() == before
    # The measure works: a BAD_REQUEST that the writer itself gives is counted.
    assert face.refused("execute_write", insert, (f"two {n}", "params")).code == "BAD_REQUEST"
    assert seen() != before


# -- what each origin is allowed ------------------------------------------------------------------


@pytest.mark.parametrize("face_name", FACES)
def test_raw_sql_is_refused_on_every_origin_when_it_is_off(
    closed_deployment: Deployment, face_name: str, n: int, tmp_path: Path
) -> None:
    face = closed_deployment.face(face_name)
    before = count(face.database, "posts")
    elsewhere = tmp_path / "elsewhere.db"
    for sql, params in [
        ("INSERT INTO posts (title) VALUES (?)", (f"forbidden {n}",)),
        ("DELETE FROM posts", ()),
        (f"ATTACH DATABASE '{elsewhere}' AS other", ()),
    ]:
        error = face.refused("execute_write", sql, params)
        assert type(error) is onewriter.SqlNotAllowed
        assert error.code == "SQL_NOT_ALLOWED"
        assert f"disabled on this transport ({face.origin})" in str(error)
    assert count(face.database, "posts") == before  # plain sqlite3: nothing was written
    assert not elsewhere.exists()
    # The origin itself works: named ops are allowed everywhere.
    post = face.call("write", "create_post", f"allowed {n}")
    assert posts(face.database, "title = ?", (f"allowed {n}",)) == [
        (post["id"], post["title"], None)
    ]
    assert count(face.database, "posts") == before + 1


@pytest.mark.parametrize("face_name", FACES)
def test_raw_sql_follows_the_setting_of_its_origin(
    swapped_deployment: Deployment, face_name: str, n: int
) -> None:
    """``allow_sql`` governs the writer's own process and the Unix socket,
    ``allow_sql_remote`` TCP and Redis: with them swapped, each origin follows its own."""
    face = swapped_deployment.face(face_name)
    sql, params = "INSERT INTO posts (id, title) VALUES (?, ?)", (n, f"swapped {n}")
    if face.origin in ("tcp", "redis"):
        assert face.call("execute_write", sql, params) == onewriter.WriteResult(1, n, [])
        assert posts(face.database, "id = ?", (n,)) == [(n, f"swapped {n}", None)]
    else:
        error = face.refused("execute_write", sql, params)
        assert (type(error), error.code) == (onewriter.SqlNotAllowed, "SQL_NOT_ALLOWED")
        assert f"disabled on this transport ({face.origin})" in str(error)
        assert posts(face.database, "id = ?", (n,)) == []


@pytest.mark.parametrize("origin", RAW_ORIGINS)
def test_a_raw_sql_message_is_refused_on_every_origin_when_it_is_off(
    closed_deployment: Deployment, origin: str, n: int
) -> None:
    database = closed_deployment.faces[f"{origin}-sync"].database
    before = count(database, "posts")
    with closed_deployment.raw(origin) as raw:
        message = {"id": 5, "sql": "INSERT INTO posts (title) VALUES (?)", "params": [f"r{n}"]}
        reply = exchange(raw, {**message, "seq": 1})
        assert reply["id"] == 5
        assert reply["error"]["code"] == "SQL_NOT_ALLOWED"
        assert reply["error"]["message"] == (
            f"raw SQL writes are disabled on this transport ({origin})"
        )
        assert pings(raw)
    assert count(database, "posts") == before


STATS = {"local": True, "unix": True, "tcp": True, "redis": False}  # remote_reads="tcp"


@pytest.mark.parametrize("face_name", FACES)
def test_stats_are_served_as_the_origin_allows(open_deployment: Deployment, face_name: str) -> None:
    face = open_deployment.face(face_name)
    if STATS[face.origin]:
        stats = face.call("stats")
        assert stats["pid"] == face.writer_pid
    else:
        error = face.refused("stats")
        assert type(error) is onewriter.ReadsDisabled
        assert f"no reads or stats over {face.origin}" in str(error)


@pytest.mark.parametrize("face_name", faces("tcp", "redis"))
def test_remote_reads_are_served_on_tcp_and_refused_on_redis_by_default(
    open_deployment: Deployment, face_name: str, n: int
) -> None:
    face = open_deployment.face(face_name)
    face.call("write", "create_post", f"read me {n}")
    sql, params = "SELECT title FROM posts WHERE title = ?", (f"read me {n}",)
    if face.origin == "tcp":
        rows = face.call("read", sql, params)
        assert [tuple(row) for row in rows] == [(f"read me {n}",)]
    else:
        error = face.refused("read", sql, params)
        assert type(error) is onewriter.ReadsDisabled


READ_ANSWERS = {
    "local": ("READS_DISABLED", "read on their own connections"),
    "unix": ("READS_DISABLED", "read on their own connections"),
    "tcp": None,
    "redis": ("READS_DISABLED", "no reads or stats over redis"),
}


@pytest.mark.parametrize("origin", RAW_ORIGINS)
def test_a_read_message_is_answered_as_the_origin_allows(
    open_deployment: Deployment, origin: str
) -> None:
    with open_deployment.raw(origin) as raw:
        reply = exchange(raw, {"id": 11, "t": "read", "sql": "SELECT 41 + 1 AS n", "params": []})
        refusal = READ_ANSWERS[origin]
        if refusal is None:
            assert reply == {"id": 11, "ok": True, "result": {"columns": ["n"], "rows": [[42]]}}
        else:
            assert reply["id"] == 11
            assert reply["error"]["code"] == refusal[0]
            assert refusal[1] in reply["error"]["message"]
        assert pings(raw)


@pytest.mark.parametrize("origin", RAW_ORIGINS)
def test_a_stats_message_is_answered_as_the_origin_allows(
    open_deployment: Deployment, origin: str
) -> None:
    writer_pid = open_deployment.faces[f"{origin}-sync"].writer_pid
    with open_deployment.raw(origin) as raw:
        reply = exchange(raw, {"id": 12, "t": "stats"})
        assert reply["id"] == 12
        if STATS[origin]:
            assert reply["ok"] is True
            assert reply["result"]["pid"] == writer_pid
        else:
            assert reply["error"]["code"] == "READS_DISABLED"


# -- malformed messages: the same reply, word for word, on every origin ---------------------------

MALFORMED = {
    "no-id": ({"op": "create_post", "kwargs": {"title": "x"}}, None, "BAD_REQUEST"),
    "string-id": ({"id": "7", "op": "writer_pid"}, None, "BAD_REQUEST"),
    "bool-id": ({"id": True, "op": "writer_pid"}, None, "BAD_REQUEST"),
    "float-id": ({"id": 1.0, "op": "writer_pid"}, None, "BAD_REQUEST"),
    "t-not-string": ({"id": 1, "t": 5}, 1, "BAD_REQUEST"),
    "t-bytes": ({"id": 2, "t": b"ping"}, 2, "BAD_REQUEST"),
    "t-unknown": ({"id": 3, "t": "launch"}, 3, "BAD_REQUEST"),
    "t-retired-tx-begin": ({"id": 4, "t": "tx_begin"}, 4, "BAD_REQUEST"),
    "args-map": ({"id": 5, "op": "create_post", "args": {"title": "x"}}, 5, "BAD_REQUEST"),
    "args-string": ({"id": 6, "op": "create_post", "args": "x"}, 6, "BAD_REQUEST"),
    "kwargs-int-key": ({"id": 7, "op": "create_post", "kwargs": {1: "x"}}, 7, "BAD_REQUEST"),
    "kwargs-list": ({"id": 8, "op": "create_post", "kwargs": ["x"]}, 8, "BAD_REQUEST"),
    "deadline-nan": ({"id": 9, "op": "writer_pid", "deadline": math.nan}, 9, "BAD_REQUEST"),
    "deadline-string": ({"id": 10, "op": "writer_pid", "deadline": "soon"}, 10, "BAD_REQUEST"),
    "deadline-bool": ({"id": 11, "op": "writer_pid", "deadline": True}, 11, "BAD_REQUEST"),
    "seq-too-big": ({"id": 12, "op": "writer_pid", "seq": 2**63}, 12, "BAD_REQUEST"),
    "seq-negative": ({"id": 13, "op": "writer_pid", "seq": -1}, 13, "BAD_REQUEST"),
    "seq-string": ({"id": 14, "op": "writer_pid", "seq": "1"}, 14, "BAD_REQUEST"),
    "op-not-string": ({"id": 15, "op": 5}, 15, "BAD_REQUEST"),
    "neither-op-nor-sql": ({"id": 16}, 16, "BAD_REQUEST"),
    "sql-not-string": ({"id": 17, "sql": 42}, 17, "BAD_REQUEST"),
    "params-not-list": ({"id": 18, "sql": "SELECT 1", "params": 3}, 18, "BAD_REQUEST"),
    "many-not-lists": (
        {"id": 19, "sql": "SELECT ?", "params": [1], "many": True},
        19,
        "BAD_REQUEST",
    ),
    "op-unknown": ({"id": 20, "op": "no_such_op"}, 20, "UNKNOWN_OP"),
    "deadline-past": ({"id": 21, "op": "writer_pid", "deadline": -5}, 21, "TIMEOUT"),
}


def comparable(reply: Any) -> Any:
    """``reply`` with the milliseconds in its message (how late a TIMEOUT was) blanked."""
    error = reply.get("error")
    if not isinstance(error, dict):
        return reply
    message = re.sub(r"\d+ ms\b", "<n> ms", error["message"])
    return {**reply, "error": {**error, "message": message}}


@pytest.mark.parametrize("origin", RAW_ORIGINS)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_message_gets_the_same_reply_on_every_origin(
    open_deployment: Deployment, origin: str, case: str
) -> None:
    message, reply_id, code = MALFORMED[case]
    with open_deployment.raw("local") as raw:
        reference = exchange(raw, message)
    assert reference["id"] == reply_id, reference
    assert reference["error"]["code"] == code, reference
    assert set(reference) == {"id", "error"}

    with open_deployment.raw(origin) as raw:
        reply = exchange(raw, message)
        assert comparable(reply) == comparable(reference)  # the same code and words
        assert pings(raw)  # and the line goes on serving


@pytest.mark.parametrize("origin", ["unix", "tcp"])
def test_a_frame_over_max_frame_gets_too_large_and_a_close(
    open_deployment: Deployment, origin: str
) -> None:
    """Only the stream transports have frames to refuse: elsewhere the client refuses
    such a request before sending it (``op-too-large`` and ``sql-too-large`` above)."""
    with open_deployment.raw(origin) as raw:
        assert isinstance(raw, RawClient)
        raw.send_bytes(proto.HEADER.pack(MAX_FRAME + 1) + b"x" * 64)
        reply = raw.recv()
        assert reply["id"] is None
        assert reply["error"]["code"] == "TOO_LARGE"
        assert raw.closed_by_peer()
    with open_deployment.raw(origin) as raw:
        assert pings(raw)


# -- an error reply over max_frame ----------------------------------------------------------------

#: ``control`` executes its argument: SQLite's syntax error quotes the whole statement, so
#: the error reply is some 10 bytes over MAX_FRAME while the request (even over Redis, with
#: its client id) stays under it.
OVERSIZED_STATEMENT = "x" * (MAX_FRAME - 90)


def every_face(kinds: tuple[str, ...]) -> list[Any]:
    return [
        pytest.param(
            f"{origin}-{kind}",
            marks=[needs_redis] * (origin == "redis"),
        )
        for origin in ORIGINS
        for kind in kinds
    ]


def op_failures(deployment: Deployment, face: Face) -> int:
    """How many requests the face's writer has failed with OP_FAILED so far."""
    return int(writer_stats(deployment, face)["errors"].get("OP_FAILED", 0))


@contextlib.contextmanager
def own_face(deployment: Deployment, name: str) -> Iterator[Face]:
    """A client of this test's own (a broken line must not outlive the test), waiting at
    most 2 s for a reply. The writers in this process hold their role on the module's
    faces, so those are used for ``local``."""
    if name.startswith("local"):
        yield deployment.face(name)
        return
    with contextlib.ExitStack() as stack:
        face = deployment.client_face(stack, name, client_timeout=2.0)
        try:
            yield face
        finally:
            stack.close()
            settle(deployment, face)


def settle(deployment: Deployment, face: Face) -> None:
    """Wait until the writer has stopped failing ops: a request a closed client re-sent
    may still be running, and the next test counts what the writer did."""
    runs = [-1, op_failures(deployment, face)]
    limit = time.monotonic() + 5.0
    while runs[-1] != runs[-2] and time.monotonic() < limit:
        time.sleep(0.1)
        runs.append(op_failures(deployment, face))


@pytest.mark.parametrize("face_name", every_face(("sync", "async")))
def test_an_error_reply_over_max_frame_is_op_failed_on_every_face_and_runs_once(
    open_deployment: Deployment, face_name: str
) -> None:
    with own_face(open_deployment, face_name) as face:
        before = op_failures(open_deployment, face)
        error = face.refused("write", "control", OVERSIZED_STATEMENT)
        runs = op_failures(open_deployment, face) - before  # once: not re-sent, not re-run
        assert (type(error), error.code, runs) == (onewriter.OpFailed, "OP_FAILED", 1), error
        assert str(error).startswith("op 'control' raised OperationalError: near")
    assert posts(face.database, "title = ?", ("must be rolled back",)) == []


@pytest.mark.parametrize("face_name", every_face(("sync",)))
def test_a_line_still_serves_after_an_error_reply_over_max_frame(
    open_deployment: Deployment, face_name: str, n: int
) -> None:
    with own_face(open_deployment, face_name) as face:
        with contextlib.suppress(onewriter.OneWriterError):
            face.call("write", "control", OVERSIZED_STATEMENT)
        title = f"after the big error {n}"
        answer: Any
        try:
            answer = face.call("write", "create_post", title)
        except onewriter.OneWriterError as exc:
            answer = exc
        # Committed (a refused reply may come before the COMMIT), and once.
        wait_until(lambda: posts(face.database, "title = ?", (title,)) != [], 5.0, title)
        (stored,) = posts(face.database, "title = ?", (title,))
        assert answer == {"id": stored[0], "title": title, "content": None}  # and answered so
