"""The producers' lean Redis connection (``onewriter/wire/resp.py``) against a real
redis-server of this module's own: replies of each type, error replies, a password and a
database from the URL, a connection killed by the server, a reply that never comes."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import REDIS_SERVER as REDIS_BINARY
from redis_server import RedisServer, free_port, needs_redis
from redis_server import redis_server as redis_server  # the fixture, for pytest

pytestmark = needs_redis

PASSWORD = "resp-test-password"


@pytest.fixture
def key() -> str:
    return f"resp-{os.urandom(4).hex()}"


@pytest.fixture
def plain(redis_server: RedisServer) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


def call(url: str, *commands: tuple[Any, ...]) -> list[Any]:
    """Run ``commands`` on one RespClient in a fresh loop; each outcome or exception."""
    from onewriter.wire.resp import RespClient

    async def main() -> list[Any]:
        client = RespClient(url)
        out: list[Any] = []
        try:
            for command in commands:
                try:
                    out.append(await client.call(*command))
                except Exception as exc:
                    out.append(exc)
        finally:
            await client.aclose()
        return out

    return asyncio.run(main())


def test_replies_of_each_type_and_an_error_reply(redis_server: RedisServer, key: str) -> None:
    import redis

    pong, pushed, items, popped, nothing, counted, wrong_type = call(
        redis_server.url,
        ("PING",),
        ("RPUSH", key, b"\x00\xffbinary", "text", 42),
        ("LRANGE", key, 0, -1),
        ("BLMPOP", 1, 1, key, "LEFT", "COUNT", 10),
        ("BLMPOP", 0.1, 1, key, "LEFT", "COUNT", 10),  # empty: nil after the block
        ("INCR", key + "-counter"),  # a string key
        ("LPUSH", key + "-counter", "x"),  # not a list: an error reply
    )
    assert pong == b"PONG"
    assert pushed == 3
    assert items == [b"\x00\xffbinary", b"text", b"42"]
    assert popped == [key.encode(), [b"\x00\xffbinary", b"text", b"42"]]
    assert nothing is None
    assert counted == 1
    assert isinstance(wrong_type, redis.ResponseError) and "WRONGTYPE" in str(wrong_type)


def test_the_connection_goes_on_after_an_error_reply(redis_server: RedisServer, key: str) -> None:
    import redis

    refused, pushed = call(redis_server.url, ("NO-SUCH-COMMAND",), ("RPUSH", key, "a"))
    assert isinstance(refused, redis.ResponseError)
    assert pushed == 1


def test_password_and_database_come_from_the_url(tmp_path: Any, key: str) -> None:
    import redis

    from onewriter.wire.resp import RespSocket

    server = RedisServer(str(tmp_path))
    try:
        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        base = f"redis://:{PASSWORD}@127.0.0.1:{server.port}"
        (pushed,) = call(f"{base}/3", ("RPUSH", key, "in three"))
        assert pushed == 1
        check = redis.Redis(port=server.port, password=PASSWORD, db=3)
        assert check.lrange(key, 0, -1) == [b"in three"]
        check.close()
        other = redis.Redis(port=server.port, password=PASSWORD, db=0)
        assert other.exists(key) == 0
        other.close()
        (refused,) = call(f"redis://:wrong@127.0.0.1:{server.port}/0", ("PING",))
        assert isinstance(refused, redis.ResponseError)
        (anonymous,) = call(f"redis://127.0.0.1:{server.port}/0", ("RPUSH", key, "x"))
        assert isinstance(anonymous, redis.ResponseError) and "NOAUTH" in str(anonymous)
        blocking = RespSocket(f"redis://:wrong@127.0.0.1:{server.port}/0")
        for _ in range(2):  # a refused handshake leaves no connection behind to reuse
            with pytest.raises(redis.ResponseError, match=r"WRONGPASS|invalid"):
                blocking.call("PING")
        assert blocking.sock is None
    finally:
        server.stop()


def test_a_killed_connection_fails_its_command_and_the_next_one_reconnects(
    redis_server: RedisServer, plain: Any, key: str
) -> None:
    import redis

    from onewriter.wire.resp import RespClient

    async def main() -> list[Any]:
        client = RespClient(redis_server.url)
        await client.call("CLIENT", "SETNAME", "resp-victim")
        waiting = asyncio.ensure_future(client.call("BLPOP", key, 5))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(plain.client_kill_filter, _type="normal", skipme=True)
        out: list[Any] = []
        try:
            await waiting
        except Exception as exc:
            out.append(exc)
        out.append(await client.call("RPUSH", key, "after"))
        await client.aclose()
        return out

    lost, pushed = asyncio.run(main())
    assert isinstance(lost, redis.ConnectionError)
    assert pushed == 1


def test_a_reply_that_does_not_come_in_time_is_a_timeout_and_nothing_is_resent(
    redis_server: RedisServer, plain: Any, key: str
) -> None:
    import redis

    from onewriter.wire.resp import RespClient

    async def main() -> list[Any]:
        client = RespClient(redis_server.url)
        out: list[Any] = []
        try:
            await client.call("BLPOP", key, 0, timeout=0.3)
        except Exception as exc:
            out.append(exc)
        out.append(await client.call("RPUSH", key + "-next", "n"))
        await client.aclose()
        return out

    late, pushed = asyncio.run(main())
    assert isinstance(late, redis.TimeoutError)
    assert pushed == 1
    plain.rpush(key, "late")  # the abandoned BLPOP's connection is closed: nobody takes it
    assert plain.lrange(key, 0, -1) == [b"late"]


def test_nobody_listening_is_a_connection_error() -> None:
    import redis

    (refused,) = call(f"redis://127.0.0.1:{free_port()}/0", ("PING",))
    assert isinstance(refused, redis.ConnectionError)


def test_a_transaction_is_written_at_once_and_its_replies_come_back(
    redis_server: RedisServer, plain: Any, key: str
) -> None:
    """The writer's consumer side: a MULTI's replies, an error reply inside a MULTI and
    a command refused while queueing are raised, and the connection goes on."""
    import redis

    from onewriter.wire.resp import RespClient

    plain.set(key + "-string", "x")

    async def main() -> list[Any]:
        client = RespClient(redis_server.url)
        transaction = client.send_transaction
        out: list[Any] = []
        try:
            await client.call("PING")  # the consumer sends on a connection it has used
            out.append(await transaction([("RPUSH", key, "a", "b", "c")]))
            out.append(await transaction([("LTRIM", key, 1, -1), ("LLEN", key)]))
            for commands in ([("RPUSH", key + "-string", "y")], [("NO-SUCH-COMMAND",)]):
                try:
                    await transaction(commands)
                except redis.ResponseError as exc:
                    out.append(exc)
            out.append(await client.call("LRANGE", key, 0, -1))
        finally:
            await client.aclose()
        return out

    pushed, trimmed, wrong_type, unknown, items = asyncio.run(main())
    assert pushed == [3]
    assert trimmed == [b"OK", 2]
    assert isinstance(wrong_type, redis.ResponseError) and "WRONGTYPE" in str(wrong_type)
    assert isinstance(unknown, redis.ResponseError) and "unknown command" in str(unknown)
    assert items == [b"b", b"c"]  # the connection went on after both refusals
    assert plain.get(key + "-string") == b"x"  # neither refused transaction ran


def test_the_blocking_connection_runs_commands_in_order(
    redis_server: RedisServer, plain: Any, key: str
) -> None:
    """The sync producers' side: replies in order, and a connection the server killed
    is a connection error; the next call connects again."""
    import redis

    from onewriter.wire.resp import RespSocket

    client = RespSocket(redis_server.url)
    client.connect()
    try:
        assert client.call("RPUSH", key, "a", "b") == 2
        assert client.pipeline([("LLEN", key), ("LRANGE", key, 0, -1)]) == [2, [b"a", b"b"]]
        client.call("CLIENT", "SETNAME", "resp-blocking")
        plain.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(redis.ConnectionError):
            client.call("PING")
        assert client.call("PING") == b"PONG"  # the next call opens a new connection
    finally:
        client.close()
    again = RespSocket(f"redis://127.0.0.1:{redis_server.port}/5")
    again.connect()
    try:
        assert again.call("RPUSH", key, "in five") == 1
    finally:
        again.close()
    check = redis.Redis(port=redis_server.port, db=5)
    assert check.lrange(key, 0, -1) == [b"in five"]
    check.close()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl's command line)."""
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt")
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=onewriter test CA", "-keyout", str(ca_key), "-out", str(ca),
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl's command line")
def test_rediss_urls_speak_tls_and_check_the_certificate(tmp_path: Path) -> None:
    """A redis-server that speaks only TLS: both connections reach it with the CA from
    the URL, refuse it against the system's CAs, and reach it when told not to check."""
    import redis

    from onewriter.wire.resp import RespClient, RespSocket

    ca, cert, key = _tls_files(tmp_path)
    port = free_port()
    assert REDIS_BINARY is not None
    server = subprocess.Popen(
        [
            *(REDIS_BINARY, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"),
            *("--dir", str(tmp_path), "--save", ""),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"rediss://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the TLS redis-server did not start"
                time.sleep(0.05)

        async def ping(url: str) -> Any:
            client = RespClient(url)
            try:
                return await client.call("PING")
            except Exception as exc:
                return exc
            finally:
                await client.aclose()

        assert asyncio.run(ping(f"{base}?ssl_ca_certs={ca}")) == b"PONG"
        assert asyncio.run(ping(f"{base}?ssl_cert_reqs=none")) == b"PONG"
        assert isinstance(asyncio.run(ping(base)), redis.ConnectionError)  # unknown CA

        blocking = RespSocket(f"{base}?ssl_ca_certs={ca}")
        try:
            assert blocking.call("PING") == b"PONG"
        finally:
            blocking.close()
        with pytest.raises(redis.ConnectionError):
            RespSocket(base).call("PING")
    finally:
        server.terminate()
        server.wait(10)
