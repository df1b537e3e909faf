"""Bad frames against a live writer: each gets a structured error or a clean close, and
the writer keeps serving everyone else. Also the codes only a raw peer can provoke:
UNAUTHORIZED (another user) and SHUTTING_DOWN (a request that arrives while draining)."""

from __future__ import annotations

import binascii
import os
import random
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    PYTHON,
    Children,
    RawClient,
    WriterProcess,
    create_post,
    ops,
    ping,
    socket_path_for,
    wait_until,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onewriter
from onewriter.wire import frames as proto

OpenDb = Callable[..., onewriter.Database]
PING_ID = 987_654_321


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WriterProcess]:
    """One writer process for the whole module; every test checks it still serves."""
    database = str(tmp_path_factory.mktemp("protocol") / "app.db")
    live = WriterProcess(database)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def raw(writer: WriterProcess) -> Iterator[RawClient]:
    with RawClient(writer.socket_path) as client:
        yield client
    assert_still_serving(writer)


def assert_still_serving(writer: WriterProcess) -> None:
    """The writer process is alive, answers a new connection, and commits a real write."""
    assert writer.proc.poll() is None, writer.describe()
    assert ping(writer.socket_path)
    with onewriter.connect(
        writer.database, ops=ops, role="client", socket_path=writer.socket_path
    ) as db:
        assert db.write(create_post, title="well-behaved")["title"] == "well-behaved"
        assert db.stats()["pid"] == writer.writer_pid


def error_code(message: Any) -> str:
    assert isinstance(message, dict), message
    assert "error" in message, message
    return str(message["error"]["code"])


def still_open(raw: RawClient) -> bool:
    raw.send({"id": PING_ID, "t": "ping"})
    return bool(raw.recv_id(PING_ID)["ok"])


# -- requests that are answered, on a connection that stays open -----------------------------

ANSWERED = [
    pytest.param({"op": "create_post", "kwargs": {"title": "x"}}, None, "BAD_REQUEST", id="no-id"),
    pytest.param({"id": "7", "op": "create_post"}, None, "BAD_REQUEST", id="string-id"),
    pytest.param({"id": True, "op": "create_post"}, None, "BAD_REQUEST", id="bool-id"),
    pytest.param({"id": 1, "op": 5}, 1, "BAD_REQUEST", id="int-op"),
    pytest.param({"id": 2, "op": "create_post", "args": {"a": 1}}, 2, "BAD_REQUEST", id="args-map"),
    pytest.param(
        {"id": 3, "op": "create_post", "kwargs": {1: "x"}}, 3, "BAD_REQUEST", id="int-key"
    ),
    pytest.param({"id": 4, "op": "create_post", "kwargs": [1]}, 4, "BAD_REQUEST", id="kwargs-list"),
    pytest.param(
        {"id": 5, "op": "create_post", "deadline": "soon"}, 5, "BAD_REQUEST", id="deadline"
    ),
    pytest.param({"id": 6, "op": "writer_pid", "seq": "one"}, 6, "BAD_REQUEST", id="seq-type"),
    pytest.param({"id": 7, "op": "writer_pid", "seq": 2**64 - 1}, 7, "BAD_REQUEST", id="seq-huge"),
    pytest.param({"id": 8, "op": "no_such_op"}, 8, "UNKNOWN_OP", id="unknown-op"),
    pytest.param({"id": 9, "t": "launch"}, 9, "BAD_REQUEST", id="unknown-type"),
    pytest.param({"id": 10}, 10, "BAD_REQUEST", id="neither-op-nor-sql"),
    pytest.param({"id": 11, "sql": 42}, 11, "BAD_REQUEST", id="sql-type"),
    pytest.param({"id": 12, "sql": "SELECT 1", "params": 3}, 12, "BAD_REQUEST", id="params"),
    pytest.param(
        {"id": 13, "sql": "SELECT 1", "params": [1], "many": True}, 13, "BAD_REQUEST", id="many"
    ),
    pytest.param(
        {"id": 14, "op": "create_post", "kwargs": {"titel": "x"}}, 14, "OP_FAILED", id="wrong-kwarg"
    ),
    pytest.param(
        {"id": 15, "sql": "INSERT INTO nowhere VALUES (1)"}, 15, "OP_FAILED", id="bad-sql"
    ),
    pytest.param({"id": 16, "op": "writer_pid", "deadline": -5}, 16, "TIMEOUT", id="past-deadline"),
    pytest.param(7, None, "BAD_REQUEST", id="not-a-map"),
    pytest.param([1, "two", None], None, "BAD_REQUEST", id="list-of-non-maps"),
]


@pytest.mark.parametrize(("message", "reply_id", "code"), ANSWERED)
def test_a_malformed_request_gets_a_structured_error(
    raw: RawClient, message: Any, reply_id: Any, code: str
) -> None:
    raw.send(message)
    reply = raw.recv()
    assert reply.get("id") == reply_id, reply
    assert error_code(reply) == code
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert still_open(raw)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x92\x01", id="truncated"),
        pytest.param(b"\x01\x02", id="trailing-bytes"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map-claiming-4g-entries"),
    ],
)
def test_a_body_that_is_not_msgpack_gets_bad_request(raw: RawClient, body: bytes) -> None:
    raw.send_bytes(proto.HEADER.pack(len(body)) + body)
    reply = raw.recv()
    assert reply["id"] is None
    assert error_code(reply) == "BAD_REQUEST"
    assert still_open(raw)


def test_a_huge_ack_is_ignored_and_the_batch_commits(raw: RawClient) -> None:
    raw.send(
        {"id": 1, "op": "create_post", "kwargs": {"title": "acked"}, "seq": 1, "ack": 2**64 - 1}
    )
    reply = raw.recv_id(1)
    assert reply["ok"] is True
    assert reply["result"]["title"] == "acked"


def test_good_and_bad_messages_in_one_frame_are_each_answered(raw: RawClient) -> None:
    raw.send(
        [
            {"id": 1, "op": "create_post", "kwargs": {"title": "good"}},
            {"id": 2, "op": "no_such_op"},
            "not a map",
            {"id": 3, "op": "fail", "kwargs": {"message": "bad"}},
            {"id": 4, "op": "create_post", "kwargs": {"title": "also good"}},
        ]
    )
    replies: dict[Any, Any] = {}
    while len(replies) < 5:
        message = raw.recv()
        replies[message["id"] if message["id"] is not None else "none"] = message
    assert replies[1]["result"]["title"] == "good"
    assert error_code(replies[2]) == "UNKNOWN_OP"
    assert error_code(replies["none"]) == "BAD_REQUEST"
    assert error_code(replies[3]) == "OP_FAILED"
    assert replies[4]["result"]["title"] == "also good"


# -- frames after which the writer closes the connection -------------------------------------


def test_a_huge_length_prefix_gets_too_large_and_a_close(raw: RawClient) -> None:
    raw.send_bytes(b"\xff\xff\xff\xff" + b"x" * 100)
    reply = raw.recv()
    assert reply["id"] is None
    assert error_code(reply) == "TOO_LARGE"
    assert raw.closed_by_peer()


@pytest.mark.parametrize(
    "hello",
    [
        pytest.param({"id": 1, "op": "writer_pid"}, id="request-before-hello"),
        pytest.param({"t": "hello", "v": 999}, id="unknown-version"),
        pytest.param({"t": "hello", "v": 1, "client": "text"}, id="client-not-bytes"),
        pytest.param({"t": "hello", "v": 1, "client": b"x" * 65}, id="client-too-long"),
    ],
)
def test_a_bad_hello_gets_bad_request_and_a_close(writer: WriterProcess, hello: Any) -> None:
    with RawClient(writer.socket_path, hello=False) as raw:
        raw.send(hello)
        assert error_code(raw.recv()) == "BAD_REQUEST"
        assert raw.closed_by_peer()
    assert_still_serving(writer)


def test_a_peer_that_vanishes_mid_frame_costs_nothing(writer: WriterProcess) -> None:
    for _ in range(20):
        with RawClient(writer.socket_path) as raw:
            raw.send_bytes(proto.HEADER.pack(1000) + b"partial")
    assert_still_serving(writer)


# -- random input ---------------------------------------------------------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["id", "t", "op", "sql", "args", "kwargs", "params", "many", "deadline", "seq", "ack", "retry"]
)
_ops = st.sampled_from(["create_post", "insert_number", "fail", "writer_pid", "no_such_op"])
_sql = st.sampled_from(["SELECT 1", "INSERT INTO posts (title) VALUES (?)", "not sql", ""])
_requests = (
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.integers(min_value=-5, max_value=2**64 - 1) | _values,
            "op": _ops | _values,
            "sql": _sql | _values,
            "args": _values,
            "kwargs": st.dictionaries(
                st.sampled_from(["title", "content", "worker", "n", "x"]), _values
            )
            | _values,
            "params": _values,
            "many": _values,
            "deadline": _values,
            "seq": _values,
            "ack": _values,
            "retry": _values,
            "t": st.sampled_from(["ping", "stats", "hello"]) | _values,
        },
    )
    | st.dictionaries(_keys, _values, max_size=6)
    | _values
)

_FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def answered_or_closed(raw: RawClient) -> bool:
    """After anything at all: a ping on the same connection is answered, or the writer
    closed the connection cleanly."""
    try:
        raw.send({"id": PING_ID, "t": "ping"})
        return bool(raw.recv_id(PING_ID)["ok"])
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return True


@_FUZZ
@given(message=_requests)
def test_random_messages_never_hurt_the_writer(writer: WriterProcess, message: Any) -> None:
    with RawClient(writer.socket_path) as raw:
        raw.send(message)
        assert answered_or_closed(raw)
    assert ping(writer.socket_path)


@_FUZZ
@given(body=st.binary(max_size=64))
def test_random_frame_bodies_never_hurt_the_writer(writer: WriterProcess, body: bytes) -> None:
    with RawClient(writer.socket_path) as raw:
        raw.send_bytes(proto.HEADER.pack(len(body)) + body)
        assert answered_or_closed(raw)
    assert ping(writer.socket_path)


@_FUZZ
@given(data=st.binary(min_size=1, max_size=256), greet=st.booleans())
def test_random_byte_streams_never_hurt_the_writer(
    writer: WriterProcess, data: bytes, greet: bool
) -> None:
    with RawClient(writer.socket_path, hello=greet) as raw:
        try:
            raw.send_bytes(data)
            raw.sock.shutdown(socket.SHUT_WR)  # the writer sees EOF and must let go
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert raw.closed_by_peer()
    assert ping(writer.socket_path)


def test_after_random_streams_the_writer_still_commits(writer: WriterProcess) -> None:
    """Self-contained (it does not rely on the fuzz tests having run first): random
    streams, greeted or not, then a real write commits on the same writer."""
    rng = random.Random(20261206)
    for _ in range(40):
        data = rng.randbytes(rng.randint(1, 256))
        with RawClient(writer.socket_path, hello=rng.random() < 0.5) as raw:
            try:
                raw.send_bytes(data)
                raw.sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert raw.closed_by_peer()
    assert_still_serving(writer)


# -- UNAUTHORIZED: a process of another user ----------------------------------------------------

NOBODY = 65534
_PEER_PROGRAM = """
import binascii, os, socket, sys
os.setgroups([])
os.setgid(int(sys.argv[4]))
os.setuid(int(sys.argv[4]))  # credentials are taken at connect(): drop them first
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(sys.argv[1])
try:
    sock.sendall(binascii.unhexlify(sys.argv[2]))
except BrokenPipeError:  # refused before the hello went out; the answer is still there
    pass
data = b""
while True:
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:  # closed with our hello unread: a reset, not a FIN
        break
    if not chunk:
        break
    data += chunk
    if sys.argv[3] == "once":
        break
print(binascii.hexlify(data).decode())
"""


def as_nobody(socket_path: str, until: str) -> list[Any]:
    """Say hello from a process running as user ``nobody``; the messages it got back."""
    hello = proto.frame({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": os.urandom(16)})
    result = subprocess.run(
        [PYTHON, "-I", "-S", "-c", _PEER_PROGRAM, socket_path, hello.hex(), until, str(NOBODY)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reader = proto.FrameReader(1 << 20)
    return [
        message
        for body in reader.feed(binascii.unhexlify(result.stdout.strip()))
        for message in proto.messages(proto.unpack(body))
    ]


@pytest.fixture
def open_socket_dir(short_dir: str) -> str:
    """A directory other users can traverse (the socket itself is made 0666 later)."""
    os.chmod(short_dir, 0o755)
    return short_dir


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a peer as nobody")


@needs_root
def test_a_peer_of_another_user_is_refused_with_unauthorized(
    db_path: str, open_socket_dir: str, children: Children
) -> None:
    sock_path = os.path.join(open_socket_dir, "w.sock")
    writer = children.writer(db_path, socket_path=sock_path)
    os.chmod(sock_path, 0o666)  # the file mode no longer protects it: the uid check must

    messages = as_nobody(sock_path, until="eof")  # reads until the writer closes
    assert len(messages) == 1, messages
    assert messages[0]["id"] is None
    assert error_code(messages[0]) == "UNAUTHORIZED"
    assert_still_serving(writer)


@needs_root
def test_allowed_uids_let_another_user_in(
    db_path: str, open_socket_dir: str, children: Children
) -> None:
    sock_path = os.path.join(open_socket_dir, "w.sock")
    children.writer(db_path, socket_path=sock_path, allowed_uids=[NOBODY])
    os.chmod(sock_path, 0o666)
    (greeting,) = as_nobody(sock_path, until="once")
    assert greeting["t"] == "hello"


def test_the_socket_is_private_to_its_user(db_path: str, children: Children) -> None:
    writer = children.writer(db_path)
    assert Path(writer.socket_path).stat().st_mode & 0o777 == 0o600


# -- SHUTTING_DOWN: a request that arrives while the writer drains --------------------------


def test_a_request_arriving_while_the_writer_drains_gets_shutting_down(
    db_path: str, open_db: OpenDb, tmp_path: Path
) -> None:
    # asyncio's loop runs a thread-safe callback (the drain) before the socket read that
    # became ready in the same turn; uvloop reads first, and request 2 would simply be
    # queued before the drain began (and commit). Pin the loop whose order the test needs.
    db = open_db(role="writer", writes="funnel", writer_loop="asyncio")
    service = db._core.local_writer
    assert service is not None
    marker = tmp_path / "slow-started"
    with RawClient(socket_path_for(db_path)) as raw:
        raw.send({"id": 1, "op": "slow", "kwargs": {"seconds": 0.8, "marker": str(marker)}})
        wait_until(marker.exists, what="the slow op started")
        service.request_drain()  # runs on the writer's loop right after the slow batch
        raw.send({"id": 2, "op": "create_post", "kwargs": {"title": "too late"}})

        first = raw.recv_id(1)
        assert first["ok"] is True  # what was queued before the drain still commits
        second = raw.recv_id(2)
        assert error_code(second) == "SHUTTING_DOWN"
        assert raw.closed_by_peer()  # the drained writer closes its connections
    assert service.wait_stopped(10)
    with pytest.raises(onewriter.WriterUnavailable):  # the role was given up
        onewriter.connect(db_path, ops=ops, role="client", failover_timeout=0.3)
    # The next write elects a writer again.
    assert db.write(create_post, title="next writer")["title"] == "next writer"
    assert db._core.local_writer is not service


@given(
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.sampled_from([0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 2**32 - 1, 2**32]),
        st.none(),
        st.booleans(),
        st.text(max_size=8),
    )
)
def test_ids_and_counts_spliced_into_replies_encode_as_msgpack_would(value: Any) -> None:
    """The writer splices request ids, row counts and rowids into replies without a
    packer: each must be the bytes msgpack itself gives."""
    assert proto.pack_id(value) == proto.pack(value)
