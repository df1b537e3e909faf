"""The load client: its HTTP client on real sockets, and the CLI against the real demo."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onewriter.demo.launch import ServiceProcess
from onewriter.load.client import Connection, HttpError, Target
from onewriter.load.report import latency_ms
from onewriter.load.runner import mix


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    db = tmp_path_factory.mktemp("load") / "posts.db"
    with ServiceProcess(str(db), workers=2) as running:
        yield running


def load(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onewriter.cli", "load", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_json(*args: str) -> tuple[int, dict[str, Any]]:
    done = load(*args, "--json")
    return done.returncode, json.loads(done.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- pieces -----------------------------------------------------------------------------


def test_mix_spreads_the_kinds_evenly() -> None:
    kinds = mix(3, 9)
    assert kinds.count("read") == 3 and kinds.count("write") == 9
    reads_at = [i for i, kind in enumerate(kinds) if kind == "read"]
    assert max(b - a for a, b in itertools.pairwise(reads_at)) <= 5
    assert mix(0, 4) == ["write"] * 4


def test_latency_percentiles_are_nearest_rank_in_ms() -> None:
    figures = latency_ms([i / 1000 for i in range(1, 101)])
    assert figures == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert latency_ms([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}


CHUNKED = b"3\r\nsec\r\n3;x=y\r\nond\r\n0\r\n\r\n"
REPLIES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED,
    b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast",
]


async def _answer_three_ways(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Three replies, each framed differently, the last closing the connection."""
    try:
        for reply in REPLIES:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            writer.write(reply)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass  # the client went away
    finally:
        writer.close()
        await writer.wait_closed()


def test_client_keeps_alive_decodes_chunks_and_reconnects_after_close() -> None:
    async def scenario() -> list[Any]:
        handlers: list[asyncio.Task[None]] = []

        def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.ensure_future(_answer_three_ways(reader, writer)))

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = Connection(Target(f"http://127.0.0.1:{port}"), timeout=10.0)
        try:
            first = await conn.request("GET", "/a")
            second = await conn.request("POST", "/b", b'{"x": 1}')
            third = await conn.request("GET", "/c")
            fourth = await conn.request("GET", "/d")  # on a new connection
        finally:
            conn.close()
            server.close()
            await server.wait_closed()
            await asyncio.wait_for(asyncio.gather(*handlers), 10)
        return [first, second, third, fourth, len(handlers)]

    first, second, third, fourth, opened = asyncio.run(scenario())
    assert (first.status, first.body) == (200, b"first")
    assert (second.status, second.body) == (201, b"second")
    assert (third.status, third.body) == (503, b"last")
    assert (fourth.status, fourth.body) == (200, b"first")
    assert opened == 2


def test_client_reports_a_refused_connection() -> None:
    async def attempt() -> None:
        conn = Connection(Target(f"http://127.0.0.1:{free_port()}"), timeout=5.0)
        try:
            await conn.request("GET", "/posts")
        finally:
            conn.close()

    with pytest.raises(HttpError) as caught:
        asyncio.run(attempt())
    assert caught.value.code == "CONNECT_FAILED"


# -- the command against the real service ---------------------------------------------


def test_one_batch_reports_every_request(service: ServiceProcess) -> None:
    code, summary = load_json("--url", service.url, "--reads", "10", "--writes", "30")
    assert code == 0
    assert summary["mode"] == "batch"
    assert summary["reads"]["requests"] == 10 and summary["reads"]["ok"] == 10
    assert summary["writes"]["requests"] == 30 and summary["acknowledged_writes"] == 30
    assert summary["errors"] == []
    assert sum(summary["workers"].values()) == 40
    assert set(summary["workers"]) <= {str(pid) for pid in service.worker_pids}
    for kind in ("reads", "writes", "total"):
        lat = summary[kind]["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_the_table_shows_latency_errors_and_workers(service: ServiceProcess) -> None:
    done = load("--url", service.url, "--reads", "5", "--writes", "5")
    assert done.returncode == 0, done.stderr
    for heading in ("p50 ms", "p95 ms", "p99 ms", "max ms", "req/s", "worker pid", "errors: none"):
        assert heading in done.stdout


def test_sustained_load_keeps_to_the_rate(service: ServiceProcess) -> None:
    code, summary = load_json(
        "--url", service.url, "--reads", "1", "--writes", "1", "--rate", "100", "--duration", "2"
    )
    assert code == 0
    assert summary["mode"] == "sustained" and summary["interrupted"] is False
    requests = summary["total"]["requests"]
    assert 100 <= requests <= 201  # 200 are due within 2 s; a loaded machine may lag
    assert summary["reads"]["requests"] - summary["writes"]["requests"] in (-1, 0, 1)


def test_errors_are_counted_by_status_and_code(service: ServiceProcess) -> None:
    code, summary = load_json("--url", service.url + "/elsewhere", "--reads", "3", "--writes", "2")
    assert code == 1
    assert summary["total"]["ok"] == 0
    assert {(e["kind"], e["status"], e["code"], e["count"]) for e in summary["errors"]} == {
        ("read", 404, "NOT_FOUND", 3),
        ("write", 404, "NOT_FOUND", 2),
    }


def test_an_unreachable_service_is_reported_not_raised(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, summary = load_json("--url", url, "--reads", "2", "--writes", "2")
    assert code == 1
    assert summary["errors"] == [
        {"kind": "read", "status": 0, "code": "CONNECT_FAILED", "count": 2},
        {"kind": "write", "status": 0, "code": "CONNECT_FAILED", "count": 2},
    ]
    assert summary["workers"] == {}
