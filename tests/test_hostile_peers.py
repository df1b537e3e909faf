"""Hostile peers: the documented messages with hostile values, sent by hand to a real
``onewriter serve`` over its Unix socket and its TCP listener (as a peer that knows the
token) and through a real redis-server. Each message gets a structured answer (a result,
or an error whose code is in the error hierarchy) or, where the protocol says so, a
clean close; nothing escapes the writer's handlers (its stderr stays free of
tracebacks), nothing hostile is applied, and the writer keeps serving throughout.
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from helpers import Children as ChildProcesses
from helpers import RawClient, count, create_post, socket_path_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import TOKEN, RawTcp, serve_command, serve_tcp
from redis_server import RedisServer, needs_redis
from redis_server import redis_server as redis_server  # the fixture, for pytest

import onewriter
from onewriter.errors import ERRORS_BY_CODE
from onewriter.wire import frames as proto

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

from writer_fuzz import junk_maps  # the fuzz target's message shapes

CODES = frozenset(ERRORS_BY_CODE)


def deep(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = [
    None,
    True,
    -1,
    0,
    2**63,
    2**64 - 1,
    -(2**63),
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x" * 70_000,
    "SELECT 1; DROP TABLE posts",
    "__class__",
    b"\x00\xff" * 40,
    [],
    [1, [2, [3, {"a": b""}]]],
    {},
    {"a": {"b": [None]}, 1: 2},
    deep(900),
    msgpack.ExtType(5, b"ext"),
    msgpack.Timestamp(0),
]

FIELDS = [
    "id",
    "t",
    "op",
    "args",
    "kwargs",
    "sql",
    "params",
    "many",
    "deadline",
    "seq",
    "ack",
    "retry",
    "tx",
    "timeout",
    "client",
    "noreply",
]

#: Op names that are not registered: private attributes of the registry and of ops, SQL.
NOT_OPS = [
    "no_such_op",
    "__init__",
    "__class__",
    "_by_name",
    "get",
    "register",
    "include",
    "fn",
    "create_post.fn",
    "create_post; DROP TABLE posts",
    "DROP TABLE posts",
    "",
    "x" * 10_000,
]


#: Message kinds the writer does not know, the retired transaction kinds among them.
UNKNOWN_KINDS: list[dict[str, Any]] = [
    {"t": "tx_begin", "deadline": 1000.0},
    {"t": "tx_exec", "tx": 1, "sql": "DELETE FROM posts", "params": []},
    {"t": "tx_commit", "tx": 1, "seq": 3},
    {"t": "tx_rollback", "tx": 1},
    {"t": "hello", "v": 1},
    {"t": "__class__"},
]


def bases(tcp: bool) -> list[dict[str, Any]]:
    """Well-formed messages of every kind a peer may send, and kinds it may not."""
    messages: list[dict[str, Any]] = [
        {"op": "insert_number", "kwargs": {"worker": 77, "n": 1}, "seq": 1, "deadline": 5000.0},
        {"sql": "INSERT INTO numbers (worker, n) VALUES (77, ?)", "params": [1]},
        {"t": "stats"},
        {"t": "ping"},
        *UNKNOWN_KINDS,
    ]
    if tcp:
        messages.append(
            {"t": "read", "sql": "SELECT count(*) FROM numbers", "params": [], "timeout": 5.0}
        )
    return messages


class Writer:
    """One ``onewriter serve`` with its Unix socket and TCP listener, for the module."""

    def __init__(self, directory: Path) -> None:
        self.children = ChildProcesses()
        self.db_path = str(directory / "hostile.db")
        self.child, self.url = serve_tcp(self.children, self.db_path, directory)
        self.socket = socket_path_for(self.db_path)

    def connect(self, tcp: bool) -> RawClient:
        return RawTcp(self.url) if tcp else RawClient(self.socket)

    def assert_healthy(self) -> None:
        assert self.child.proc.poll() is None, self.child.describe()
        escaped = [
            line
            for line in self.child.stderr_lines
            if "Traceback" in line or "Fatal error" in line or "Exception in" in line
        ]
        assert escaped == [], self.child.describe()
        db = onewriter.connect(self.url, token=TOKEN)
        try:
            assert db.write(create_post, title="still serving")["id"] >= 1
        finally:
            db.close()
        # The posts table only holds what this well-behaved client wrote.
        conn = sqlite3.connect(self.db_path)
        try:
            titles = {title for (title,) in conn.execute("SELECT title FROM posts")}
        finally:
            conn.close()
        assert titles == {"still serving"}


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Writer]:
    live = Writer(tmp_path_factory.mktemp("hostile"))
    try:
        yield live
    finally:
        live.children.stop_all()


def structured(reply: Any, rid: Any) -> str:
    """The outcome of ``reply`` ("ok" or its code); fails unless it is well formed."""
    assert isinstance(reply, dict), reply
    expected_id = rid if isinstance(rid, int) and not isinstance(rid, bool) else None
    assert reply.get("id") == expected_id, (reply, rid)
    if reply.get("ok") is True:
        return "ok"
    error = reply.get("error")
    assert isinstance(error, dict) and error.get("code") in CODES, reply
    assert isinstance(error.get("message"), str), reply
    return str(error["code"])


def exchange(raw: RawClient, message: dict[str, Any]) -> str:
    """Send one message; its one reply's outcome."""
    raw.send(message)
    return structured(raw.recv(), message.get("id"))


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_every_field_with_every_hostile_value(writer: Writer, tcp: bool) -> None:
    outcomes: dict[str, int] = {}
    rid = 1000
    with writer.connect(tcp) as raw:
        for base in bases(tcp):
            for field in FIELDS:
                for value in HOSTILE:
                    rid += 1
                    message = {"id": rid, **base, field: value}
                    outcome = exchange(raw, message)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        raw.send({"id": 1, "t": "ping"})
        assert raw.recv_id(1)["ok"] is True
    assert outcomes.get("BAD_REQUEST", 0) > 0 and outcomes.get("ok", 0) > 0, outcomes
    if tcp:
        assert outcomes.get("SQL_NOT_ALLOWED", 0) > 0, outcomes
    writer.assert_healthy()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_unregistered_op_names_private_attributes_and_sql_are_unknown_ops(
    writer: Writer, tcp: bool
) -> None:
    posts = count(writer.db_path, "posts")
    with writer.connect(tcp) as raw:
        for n, name in enumerate(NOT_OPS):
            message = {"id": n, "op": name, "args": [], "kwargs": {}, "seq": n}
            assert exchange(raw, message) == "UNKNOWN_OP", name
        for n, value in enumerate(HOSTILE):
            if not isinstance(value, str):
                assert exchange(raw, {"id": n, "op": value}) == "BAD_REQUEST", value
    assert count(writer.db_path, "posts") == posts
    writer.assert_healthy()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_negative_nan_and_huge_deadlines(writer: Writer, tcp: bool) -> None:
    op = {"op": "insert_number", "kwargs": {"worker": 78, "n": 1}}
    expected = {
        -1.0: "TIMEOUT",
        -math.inf: "TIMEOUT",
        0: "TIMEOUT",
        math.nan: "BAD_REQUEST",
        "soon": "BAD_REQUEST",
        math.inf: "ok",
        2**64 - 1: "ok",
        1e308: "ok",
    }
    with writer.connect(tcp) as raw:
        for n, (deadline, outcome) in enumerate(expected.items()):
            assert exchange(raw, {"id": n, **op, "deadline": deadline}) == outcome, deadline
        if tcp:
            for n, timeout in enumerate([-1, 0, math.nan, math.inf, "1", [1]]):
                read = {"id": n, "t": "read", "sql": "SELECT 1", "timeout": timeout}
                assert exchange(raw, read) == "BAD_REQUEST", timeout
    writer.assert_healthy()


def test_oversized_sql_and_params(writer: Writer) -> None:
    with RawTcp(writer.url) as raw:
        huge_sql = "SELECT 1 -- " + "x" * (7 * 1024 * 1024)
        assert exchange(raw, {"id": 1, "t": "read", "sql": huge_sql, "params": []}) == "ok"
        many = {"id": 2, "t": "read", "sql": "SELECT ?", "params": list(range(200_000))}
        assert exchange(raw, many) == "BAD_REQUEST"
        huge_int = {"id": 3, "t": "read", "sql": "SELECT ?", "params": [2**64 - 1]}
        assert exchange(raw, huge_int) == "BAD_REQUEST"
        nested = {"id": 4, "t": "read", "sql": "SELECT ?", "params": [deep(900)]}
        assert exchange(raw, nested) == "BAD_REQUEST"
        raw.send({"id": 5, "sql": huge_sql, "params": list(range(200_000))})
        assert structured(raw.recv(), 5) == "SQL_NOT_ALLOWED"
        # A frame over max_frame cannot be resynchronised: TOO_LARGE, then a clean close.
        raw.send_bytes(proto.HEADER.pack(9 * 1024 * 1024) + b"\x80")
        assert structured(raw.recv(), None) == "TOO_LARGE"
        assert raw.closed_by_peer()
    writer.assert_healthy()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_bodies_that_are_not_maps(writer: Writer, tcp: bool) -> None:
    with writer.connect(tcp) as raw:
        for body in [1, "text", None, b"bytes", [1, "x", None], [[{"id": 1}]], deep(900)]:
            raw.send(body)
            sent = len(body) if isinstance(body, list) else 1
            for _ in range(sent):
                assert structured(raw.recv(), None) == "BAD_REQUEST", body
        raw.send_bytes(proto.HEADER.pack(3) + b"\xc1\xc1\xc1")  # not msgpack
        assert structured(raw.recv(), None) == "BAD_REQUEST"
        raw.send_bytes(proto.HEADER.pack(2001) + b"\x91" * 2000 + b"\xc0")  # too deep to decode
        assert structured(raw.recv(), None) == "BAD_REQUEST"
        assert exchange(raw, {"id": 9, "t": "ping"}) == "ok"
    writer.assert_healthy()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_hostile_hellos_are_refused_and_closed(writer: Writer, tcp: bool) -> None:
    hellos: list[Any] = [{"t": "stats", "id": 1}, {"t": "hello", "v": 2}]
    hellos += [{"t": "hello", "v": 1, "client": value} for value in HOSTILE if value is not None]
    hellos += [{"t": "hello", "v": value} for value in HOSTILE if value != 1]
    for hello in hellos:
        if tcp:
            raw: RawClient = RawTcp(writer.url, hello=False)
        else:
            raw = RawClient(writer.socket, hello=False)
        with raw:
            raw.send(hello)
            assert structured(raw.recv(), None) == "BAD_REQUEST", hello
            assert raw.closed_by_peer()
    writer.assert_healthy()


def test_hostile_authentication_over_tcp(writer: Writer) -> None:
    answers: list[Any] = [
        {"t": "hello", "v": 1},
        {"t": "auth", "nonce": 1, "mac": b""},
        {"t": "auth", "nonce": os.urandom(32), "mac": [1]},
        {"t": "auth", "nonce": os.urandom(32), "mac": deep(50)},
        {"t": "auth", "nonce": os.urandom(31), "mac": os.urandom(32)},
        [1, 2, 3],
    ]
    for answer in answers:
        with RawTcp(writer.url, authenticate=False) as raw:
            raw.recv()  # the challenge
            raw.send(answer)
            reply = raw.recv()
            assert structured(reply, None) == "UNAUTHORIZED", answer
            assert raw.closed_by_peer()
    with RawTcp(
        writer.url, authenticate=False
    ) as raw:  # more than a challenge answer needs, unauthenticated
        raw.recv()
        raw.send({"t": "auth", "nonce": os.urandom(32), "mac": b"x" * 5000})
        assert structured(raw.recv(), None) == "TOO_LARGE"
        assert raw.closed_by_peer()
    writer.assert_healthy()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(messages=st.lists(junk_maps, min_size=1, max_size=8))
def _fuzz_shapes_examples(writer: Writer, messages: list[dict[str, Any]]) -> None:
    marker = 2**62 + 7
    with RawTcp(writer.url) as raw:
        raw.send([*messages, {"id": marker, "t": "ping"}])
        answers = []
        while True:
            reply = raw.recv()
            if reply.get("id") == marker:
                break
            answers.append(reply)
        assert len(answers) == len(messages)
        for message, reply in zip(messages, answers, strict=True):
            structured(reply, message.get("id"))


def test_the_fuzz_shapes_over_tcp(writer: Writer) -> None:
    """The fuzz target's arbitrary maps, pipelined in one frame over TCP (where every
    answer is immediate): one structured answer each, before a ping sent after them."""
    _fuzz_shapes_examples(writer)
    writer.assert_healthy()


# -- raw SQL, where it is allowed ---------------------------------------------------------------


def test_allowed_raw_sql_still_cannot_reach_other_files_or_the_shared_connection(
    children: ChildProcesses, tmp_path: Path
) -> None:
    """With ``--allow-sql`` a peer may write the database, but not attach (create) files
    elsewhere nor change the connection that every client's writes share."""
    db_path = str(tmp_path / "sql.db")
    url = serve_tcp(children, db_path, tmp_path, "--allow-sql")[1]
    outside = tmp_path / "outside.db"
    db = onewriter.connect(url, token=TOKEN)
    try:
        for sql in [
            f"ATTACH DATABASE '{outside}' AS o",
            "DETACH DATABASE main",
            "PRAGMA synchronous = OFF",
            "PRAGMA query_only = ON",
            "PRAGMA writable_schema = ON",
            "PRAGMA journal_mode = DELETE",
            "SELECT load_extension('x')",
        ]:
            with pytest.raises(onewriter.SqlNotAllowed, match="refused"):
                db.execute_write(sql)
        assert db.execute_write("PRAGMA user_version = 9").rowcount == -1
        db.execute_write("INSERT INTO posts (title) VALUES (?)", ("raw",))
        assert db.read("PRAGMA user_version")[0][0] == 9
    finally:
        db.close()
    with RawTcp(url) as raw:  # raw SQL allowed opens no transaction kinds either
        for rid, kind in enumerate(UNKNOWN_KINDS, start=1):
            attach = {**kind, "sql": f"ATTACH '{outside}' AS o"}
            assert exchange(raw, {"id": rid, **attach}) == "BAD_REQUEST", kind
    assert not outside.exists()
    assert count(db_path, "posts") == 1


# -- Redis ------------------------------------------------------------------------------------


@needs_redis
def test_hostile_redis_elements(
    redis_server: RedisServer, tmp_path: Path, children: ChildProcesses
) -> None:
    import redis

    db_path = str(tmp_path / "redis.db")
    queue = f"hostile-{os.getpid()}"
    child = children.start(
        serve_command(db_path, "--redis", redis_server.url, "--redis-queue", queue)
    )
    child.wait_line("READY ")
    client = redis.Redis.from_url(redis_server.url)
    producer = os.urandom(16)
    try:
        sent = 0
        for base in bases(tcp=True):
            for field in FIELDS:
                for value in HOSTILE:
                    message = {"id": sent, **base, field: value, "client": producer}
                    if field in ("client", "noreply"):
                        continue  # an element without a client id has nobody to answer
                    client.rpush(queue, proto.pack(message))
                    sent += 1
        client.rpush(queue, b"\xc1 not msgpack", proto.pack([1, 2]), proto.pack({"id": 1}))
        targeted = {  # well-formed messages a Redis producer may not send
            10**6 + n: (message, code)
            for n, (message, code) in enumerate(
                [
                    ({"t": "read", "sql": "SELECT 1", "params": []}, "READS_DISABLED"),
                    ({"t": "stats"}, "READS_DISABLED"),
                    *((kind, "BAD_REQUEST") for kind in UNKNOWN_KINDS),
                    ({"sql": "DELETE FROM posts", "params": []}, "SQL_NOT_ALLOWED"),
                    ({"op": "__class__"}, "UNKNOWN_OP"),
                ]
            )
        }
        for rid, (message, _) in targeted.items():
            client.rpush(queue, proto.pack({"id": rid, **message, "client": producer}))
        sent += len(targeted)
        reply_key = f"{queue}:reply:{producer.hex()}"
        outcomes: dict[str, int] = {}
        deadline = time.monotonic() + 60
        got = 0
        while got < sent:
            assert time.monotonic() < deadline, f"{got} of {sent} replies"
            item = client.blpop([reply_key], timeout=1)
            if item is None:
                continue
            for reply in proto.messages(proto.unpack(item[1])):  # a reply, or a list of them
                outcome = structured(reply, reply.get("id"))
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if reply.get("id") in targeted:
                    assert outcome == targeted[reply["id"]][1], (targeted[reply["id"]], reply)
                got += 1
        assert outcomes.get("READS_DISABLED", 0) > 0 and outcomes.get("ok", 0) > 0, outcomes
        assert count(db_path, "posts") == 0
        assert child.proc.poll() is None
        assert not [line for line in child.stderr_lines if "Traceback" in line]
        db = onewriter.connect(redis_server.url, queue=queue)
        try:
            assert db.write(create_post, title="still serving")["id"] == 1
        finally:
            db.close()
    finally:
        client.close()
