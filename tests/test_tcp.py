"""The TCP transport against a real ``onewriter serve --listen``: token challenge-response,
raw SQL refused by default, reads served by the writer's host, TLS, limits, failover."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ONEWRITER_CLI, Child, Children, count, create_post, insert_number

import onewriter
from onewriter.wire import frames as proto
from onewriter.wire.auth import CLIENT_LABEL, SERVER_LABEL, check_auth_reply, proof

TOKEN = "correct horse battery staple"


def serve(children: Children, db_path: str, token_file: Path, *extra: str) -> tuple[Child, str]:
    """``onewriter serve --listen``, waited on until READY; returns it and its tcp:// URL."""
    child = children.start(
        [
            ONEWRITER_CLI,
            "serve",
            db_path,
            "--ops",
            "helpers:ops",
            "--migrations",
            "helpers:MIGRATIONS",
            "--token-file",
            str(token_file),
            *extra,
        ]
    )
    line = child.wait_line("READY ")
    url = next(word.split("=", 1)[1] for word in line.split() if word.startswith("listen="))
    return child, url


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def writer(children: Children, db_path: str, token_file: Path) -> str:
    """A writer listening on a free loopback port, with the default settings."""
    return serve(children, db_path, token_file, "--listen", "tcp://127.0.0.1:0")[1]


class RawTcp:
    """A TCP connection that speaks the handshake by hand."""

    def __init__(self, url: str, context: ssl.SSLContext | None = None) -> None:
        host, port = host_port(url)
        sock = socket.create_connection((host, port), timeout=10)
        self.sock = context.wrap_socket(sock, server_hostname=host) if context else sock
        self.reader = proto.FrameReader(1 << 24)
        self.inbox: list[Any] = []

    def send(self, message: Any) -> None:
        self.sock.sendall(proto.frame(message))

    def recv(self) -> Any:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed by the writer")
            for body in self.reader.feed(data):
                self.inbox.extend(proto.messages(proto.unpack(body)))
        return self.inbox.pop(0)

    def closed_by_peer(self) -> bool:
        try:
            while True:
                self.recv()
        except (EOFError, ConnectionResetError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def authenticate(raw: RawTcp, token: str) -> tuple[dict[str, Any], Any]:
    """Answer the challenge with ``token``; the auth message sent and the answer."""
    challenge = raw.recv()
    nonce = os.urandom(32)
    mac = proof(token, CLIENT_LABEL, challenge["nonce"], nonce)
    auth = {"t": "auth", "nonce": nonce, "mac": mac}
    raw.send(auth)
    return auth, raw.recv()


# -- the default writer ------------------------------------------------------------------------


def test_named_ops_reads_and_stats_over_tcp(writer: str, db_path: str) -> None:
    db = onewriter.connect(writer, token=TOKEN)
    try:
        assert db.is_writer is False and db.path == writer
        post = db.write(create_post, title="over tcp")
        rows = db.read("SELECT id, title FROM posts WHERE title = ?", ("over tcp",))
        assert isinstance(rows[0], sqlite3.Row)
        assert [(r["id"], r["title"]) for r in rows] == [(post["id"], "over tcp")]
        assert db.read("SELECT * FROM posts WHERE id < 0") == []
        stats = db.stats()
        assert stats["remote"]["tcp"]["url"] == writer
        assert stats["remote"]["reads_served"] >= 2
    finally:
        db.close()


def test_raw_sql_is_refused_over_tcp_by_default(writer: str, db_path: str) -> None:
    db = onewriter.connect(writer, token=TOKEN)
    try:
        db.write(create_post, title="keep me")
        with pytest.raises(onewriter.SqlNotAllowed):
            db.execute_write("DELETE FROM posts")
    finally:
        db.close()
    assert count(db_path, "posts") == 1


def test_a_wrong_or_missing_token_is_refused(writer: str) -> None:
    with pytest.raises(onewriter.Unauthorized):
        onewriter.connect(writer, token="wrong")
    with pytest.raises(onewriter.Unauthorized):
        onewriter.connect(writer)

    raw = RawTcp(writer)
    try:
        _, answer = authenticate(raw, "wrong")
        assert answer["error"]["code"] == "UNAUTHORIZED"
        assert raw.closed_by_peer()
    finally:
        raw.close()


def test_an_answer_replayed_on_another_connection_is_refused(writer: str) -> None:
    first, second = RawTcp(writer), RawTcp(writer)
    try:
        challenge = first.recv()
        nonce = os.urandom(32)
        mac = proof(TOKEN, CLIENT_LABEL, challenge["nonce"], nonce)
        auth = {"t": "auth", "nonce": nonce, "mac": mac}
        first.send(auth)
        check_auth_reply(first.recv(), TOKEN, nonce, challenge["nonce"])  # the writer's proof

        assert second.recv()["nonce"] != challenge["nonce"]
        second.send(auth)  # valid, but for the first connection's challenge
        assert second.recv()["error"]["code"] == "UNAUTHORIZED"
        assert second.closed_by_peer()
    finally:
        first.close()
        second.close()


def test_the_client_refuses_a_writer_that_cannot_prove_the_token() -> None:
    nonce, server_nonce = os.urandom(32), os.urandom(32)
    good = {"t": "auth", "ok": True, "mac": proof(TOKEN, SERVER_LABEL, nonce, server_nonce)}
    check_auth_reply(good, TOKEN, nonce, server_nonce)
    forged = {**good, "mac": proof("guess", SERVER_LABEL, nonce, server_nonce)}
    with pytest.raises(onewriter.Unauthorized):
        check_auth_reply(forged, TOKEN, nonce, server_nonce)


def test_a_large_frame_before_authentication_is_refused(writer: str) -> None:
    raw = RawTcp(writer)
    try:
        assert raw.recv()["t"] == "challenge"
        raw.sock.sendall(proto.HEADER.pack(1 << 20))
        assert raw.recv()["error"]["code"] == "TOO_LARGE"
        assert raw.closed_by_peer()
    finally:
        raw.close()


def test_pipelined_asyncio_writes_over_tcp(writer: str, db_path: str) -> None:
    async def run() -> list[int]:
        async with onewriter.connect_async(writer, token=TOKEN) as adb:
            ids = await asyncio.gather(
                *(adb.write(insert_number, worker=1, n=n) for n in range(300))
            )
            rows = await adb.read("SELECT count(*) AS n FROM numbers")
            assert rows[0]["n"] == 300
            with pytest.raises(onewriter.SqlNotAllowed):
                await adb.execute_write("DELETE FROM numbers")
            return list(ids)

    assert len(set(asyncio.run(run()))) == 300
    assert count(db_path) == 300


def test_asyncio_client_with_a_wrong_token_fails_at_once(writer: str) -> None:
    async def run() -> None:
        async with onewriter.connect_async(writer, token="wrong", failover_timeout=30):
            pass

    with pytest.raises(onewriter.Unauthorized):
        asyncio.run(asyncio.wait_for(run(), 10))


# -- TLS, --allow-sql, limits ------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def tls_writer(
    children: Children, db_path: str, token_file: Path, certificate: tuple[Path, Path]
) -> Iterator[tuple[str, ssl.SSLContext]]:
    cert, key = certificate
    _, url = serve(
        children,
        db_path,
        token_file,
        "--listen",
        "tcp://127.0.0.1:0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--allow-sql",
        "--max-connections",
        "2",
    )
    yield url, ssl.create_default_context(cafile=str(cert))


def test_tls_round_trip_with_sql_allowed(
    tls_writer: tuple[str, ssl.SSLContext], db_path: str
) -> None:
    url, context = tls_writer
    db = onewriter.connect(url, token=TOKEN, ssl=context)
    try:
        db.write(create_post, title="encrypted")
        result = db.execute_write("UPDATE posts SET content = 'x' WHERE title = ?", ("encrypted",))
        assert result.rowcount == 1
        rows = db.read("SELECT title, content FROM posts")
        assert [tuple(r) for r in rows] == [("encrypted", "x")]
        assert db.stats()["remote"]["tcp"]["tls"] is True
    finally:
        db.close()

    async def pipelined() -> int:
        async with onewriter.connect_async(url, token=TOKEN, ssl=context) as adb:
            await asyncio.gather(*(adb.write(insert_number, worker=2, n=n) for n in range(50)))
            rows = await adb.read("SELECT count(*) AS n FROM numbers WHERE worker = 2")
            return int(rows[0]["n"])

    assert asyncio.run(pipelined()) == 50

    with pytest.raises(onewriter.Unauthorized, match="TLS"):
        onewriter.connect(url, token=TOKEN, ssl=ssl.create_default_context())  # unknown CA
    with pytest.raises(onewriter.WriterUnavailable):
        onewriter.connect(url, token=TOKEN, failover_timeout=1.0)  # plain TCP to a TLS port


def test_connections_past_the_limit_are_refused(tls_writer: tuple[str, ssl.SSLContext]) -> None:
    url, context = tls_writer
    held = [RawTcp(url, context) for _ in range(2)]
    try:
        for raw in held:
            assert raw.recv()["t"] == "challenge"
        extra = RawTcp(url, context)
        try:
            assert extra.recv()["error"]["code"] == "QUEUE_FULL"
            assert extra.closed_by_peer()
        finally:
            extra.close()
    finally:
        for raw in held:
            raw.close()


# -- failover ----------------------------------------------------------------------------------


def test_writes_in_flight_when_the_writer_dies_are_applied_exactly_once(
    children: Children, db_path: str, token_file: Path, tmp_path: Path
) -> None:
    first, url = serve(children, db_path, token_file, "--listen", "tcp://127.0.0.1:0")
    marker = tmp_path / "slow-started"

    async def run() -> None:
        async with onewriter.connect_async(url, token=TOKEN, failover_timeout=30) as adb:
            await adb.write(insert_number, worker=0, n=-1)
            slow = asyncio.ensure_future(adb.write("slow", seconds=1.0, marker=str(marker)))
            writes = [adb.write(insert_number, worker=0, n=n) for n in range(200)]
            inserts = asyncio.ensure_future(asyncio.gather(*writes))
            for _ in range(2000):  # bounded: 20 s
                if marker.exists():
                    break
                await asyncio.sleep(0.01)
            assert marker.exists(), "the slow op never started"
            first.kill9()
            serve(children, db_path, token_file, "--listen", url)
            await asyncio.wait_for(asyncio.gather(slow, inserts), 30)

    asyncio.run(run())
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT count(*), count(DISTINCT n) FROM numbers").fetchone()
        slow_runs = conn.execute("SELECT count(*) FROM posts WHERE title = 'slow'").fetchone()[0]
    finally:
        conn.close()
    assert rows == (201, 201)
    assert slow_runs == 1
