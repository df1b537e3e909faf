"""The writer under faults: disk full at COMMIT, overload, slow and vanishing clients,
and checkpoint starvation by readers that never let go all at once.

Each test runs a real writer process and asserts the outcome the issue promises: every
request answered, nothing half-applied, memory and WAL bounded, others still served.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_client import child_env, insert_key, ops, put, start_serve, stop_process, wait_for_line
from helpers import Children, create_post, socket_path_for, wait_until

import onewriter
from onewriter.wire import frames as proto


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A process's peak (``VmHWM``) or current (``VmRSS``) resident memory, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def rows(database: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(database, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@contextlib.contextmanager
def serving(database: str, tmp: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_serve(database, tmp / "serve.err", *flags)
    try:
        yield proc
    finally:
        stop_process(proc)


# -- disk full at COMMIT ------------------------------------------------------------------


@pytest.fixture
def small_filesystem() -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (needs mount rights: skipped without them)."""
    where = Path(tempfile.mkdtemp(prefix="ow-fs-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        where.rmdir()
        pytest.skip(f"cannot mount a small filesystem here: {exc}")
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        shutil.rmtree(where, ignore_errors=True)


def fill(directory: Path) -> Path:
    """Take every free block of ``directory``'s filesystem with one ballast file."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 512:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return ballast


def test_disk_full_at_commit_fails_the_batch_and_the_writer_recovers(
    small_filesystem: Path, tmp_path: Path
) -> None:
    db = str(small_filesystem / "full.db")
    blob = b"\x01" * 65536  # bigger than the WAL can have room for once the disk is full

    async def burst(client: onewriter.AsyncDatabase, n: int) -> list[Any]:
        calls = [client.write(put, key=f"b{i}", data=blob) for i in range(n)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    async def scenario() -> tuple[list[Any], list[Any], dict[str, Any]]:
        async with onewriter.connect_async(db, ops=ops, role="client") as client:
            await client.write(put, key="before", data=b"x")
            ballast = fill(small_filesystem)
            failed = await burst(client, 16)
            stats_full = await client.stats()
            ballast.unlink()
            recovered = await burst(client, 16)
            return failed, recovered, stats_full

    with serving(db, tmp_path) as writer:
        failed, recovered, stats_full = asyncio.run(scenario())
        assert writer.poll() is None, "the writer died of a full disk"
        after = asyncio.run(_one_write(db))
    assert all(isinstance(r, onewriter.CommitFailed) for r in failed), failed
    assert stats_full["commit_failures"] >= 1
    assert stats_full["errors"].get("COMMIT_FAILED", 0) >= 16
    # Once space returns the same keys go in: none of the failed batch had been applied
    # (each key is UNIQUE), and the writer that met the full disk is the one serving.
    assert all(isinstance(r, int) for r in recovered), recovered
    assert after == writer.pid
    assert rows(db, "SELECT count(*) FROM blobs")[0][0] == 1 + 16
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


async def _one_write(db: str) -> int:
    async with onewriter.connect_async(db, ops=ops, role="client") as client:
        _, pid = await client.write(insert_key, key=f"probe-{time.monotonic_ns()}")
        return int(pid)


# -- overload -----------------------------------------------------------------------------


async def flood(
    db: str, offered: int, size: int, seconds: float = 0.02
) -> tuple[list[Any], list[float]]:
    """Offer ``offered`` slow writes of ``size`` bytes at once; each outcome and latency."""
    blob = b"\x02" * size
    async with onewriter.connect_async(db, ops=ops, role="client") as client:
        latencies = [0.0] * offered

        async def one(i: int) -> Any:
            started = time.monotonic()
            try:
                return await client.write(put, key=f"{size}-{i}", data=blob, seconds=seconds)
            except onewriter.OneWriterError as exc:
                return exc
            finally:
                latencies[i] = time.monotonic() - started

        return list(await asyncio.gather(*(one(i) for i in range(offered)))), latencies


def test_overload_is_refused_quickly_with_bounded_memory(tmp_path: Path) -> None:
    """Far more than the writer can commit (it runs at most 50 of these a second):
    QUEUE_FULL at once, every request answered, memory not growing with the offer."""
    db = str(tmp_path / "overload.db")
    offered, big = 3000, 32 * 1024
    with serving(db, tmp_path, "--max-pending", "20", "--max-batch", "4") as writer:
        asyncio.run(_one_write(db))
        baseline = memory_kib(writer.pid)
        small_outcomes, small_latencies = asyncio.run(flood(db, offered, 16))
        # 96 MiB offered in one go; the ops are quicker so that the test is too.
        big_outcomes, _ = asyncio.run(flood(db, offered, big, seconds=0.001))
        peak = memory_kib(writer.pid)
        assert writer.poll() is None
    kinds = [
        Counter(
            "ok" if isinstance(o, int) else getattr(o, "code", type(o).__name__) for o in outcomes
        )
        for outcomes in (small_outcomes, big_outcomes)
    ]
    for kind in kinds:
        assert set(kind) == {"ok", "QUEUE_FULL"}, kind  # every request answered
    assert kinds[0]["ok"] * 10 <= offered, f"the writer was not overloaded 10x: {kinds[0]}"
    assert kinds[1]["ok"] * 4 <= offered, kinds[1]
    refused = sorted(
        t
        for t, o in zip(small_latencies, small_outcomes, strict=True)
        if isinstance(o, onewriter.QueueFull)
    )
    # Queued, the median refusal would have waited ~30 s behind the others.
    assert refused[len(refused) // 2] < 1.0, refused[len(refused) // 2]
    stored = {key for (key,) in rows(db, "SELECT key FROM blobs")}
    accepted = {
        f"{size}-{i}"
        for size, outcomes in ((16, small_outcomes), (big, big_outcomes))
        for i, o in enumerate(outcomes)
        if isinstance(o, int)
    }
    assert stored == accepted
    # What the writer holds is bounded by max_pending and max_frame, not by the offer.
    grown_mib = (peak - baseline) / 1024
    assert grown_mib < 48, f"the writer's peak memory grew {grown_mib:.0f} MiB for 96 MiB offered"


def test_a_write_over_the_frame_limit_fails_alone(tmp_path: Path) -> None:
    """One oversized write gets TOO_LARGE without being sent (the writer would close the
    connection on it, and every re-send likewise); the others go through."""
    db = str(tmp_path / "large.db")

    async def scenario() -> list[Any]:
        async with onewriter.connect_async(
            db, ops=ops, role="client", max_frame=256 * 1024
        ) as client:
            calls = [client.write(put, key=f"k{i}", data=b"y" * 50_000) for i in range(20)]
            calls.insert(7, client.write(put, key="huge", data=b"z" * 300_000))
            return list(await asyncio.gather(*calls, return_exceptions=True))

    with serving(db, tmp_path):
        outcomes = asyncio.run(scenario())
        sync = onewriter.connect(db, ops=ops, role="client", max_frame=256 * 1024)
        try:
            with pytest.raises(onewriter.TooLarge):
                sync.write(put, key="huge-sync", data=b"z" * 300_000)
            sync.write(put, key="after", data=b"y")
        finally:
            sync.close()
    assert isinstance(outcomes.pop(7), onewriter.TooLarge)
    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert rows(db, "SELECT count(*) FROM blobs")[0][0] == 21


def test_replies_stay_within_the_frame_limit(tmp_path: Path) -> None:
    """A batch whose replies add up past max_frame is answered in several frames; one
    result alone past it fails its op (not applied) rather than commit unanswerable."""
    db = str(tmp_path / "replies.db")
    insert_big = "INSERT INTO blobs (key, data) VALUES ('big', zeroblob(9000000)) RETURNING data"

    async def scenario() -> tuple[list[Any], BaseException | None]:
        async with onewriter.connect_async(db, ops=ops, role="client") as client:
            calls = [client.execute_write("SELECT zeroblob(100000)") for _ in range(200)]
            results = list(await asyncio.gather(*calls, return_exceptions=True))  # ~20 MB
            try:
                await client.execute_write(insert_big)
            except onewriter.OneWriterError as exc:
                return results, exc
            return results, None

    with serving(db, tmp_path):
        results, refused = asyncio.run(scenario())
    assert all(isinstance(r, onewriter.WriteResult) for r in results), {type(r) for r in results}
    assert all(len(r.rows[0][0]) == 100000 for r in results)
    assert isinstance(refused, onewriter.OpFailed), refused
    assert "frame limit" in refused.message
    assert rows(db, "SELECT count(*) FROM blobs WHERE key = 'big'")[0][0] == 0


# -- slow consumers and vanishing clients -------------------------------------------------


def raw_connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(proto.frame({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": b"raw"}))
    reader = proto.FrameReader(1 << 24)
    while True:
        data = sock.recv(65536)
        assert data, "the writer closed the connection during hello"
        for body in reader.feed(data):
            assert proto.unpack(body)["t"] == "hello"
            return sock


def flood_without_reading(sock: socket.socket, seconds: float) -> bool:
    """Send stats requests (each answered with a reply ~100x its size) and never read.
    True once the socket took nothing for half a second: the writer stopped reading."""
    requests = proto.frame([{"id": i, "t": "stats"} for i in range(1000)])
    sock.setblocking(False)
    stalled_since = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.send(requests)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.5:
                return True
            time.sleep(0.005)
    return False


def test_a_client_that_never_reads_costs_only_its_buffers(tmp_path: Path) -> None:
    db = str(tmp_path / "slow.db")
    with serving(db, tmp_path) as writer:
        good = onewriter.connect(db, ops=ops, role="client")
        try:
            good.write(insert_key, key="warm")
            baseline = memory_kib(writer.pid)
            slow = raw_connect(socket_path_for(db))
            try:
                # Were the writer to read on, it would pile up ~20 MB of replies a second.
                stalled = flood_without_reading(slow, seconds=5.0)
                started = time.monotonic()
                for i in range(100):
                    good.write(insert_key, key=f"good-{i}")
                served_in = time.monotonic() - started
                stats = good.stats()
                peak = memory_kib(writer.pid)
            finally:
                slow.close()
        finally:
            good.close()
        assert writer.poll() is None
    assert stalled, "the writer kept reading from a client that never read a reply"
    assert served_in < 20, served_in
    assert stats["clients"] == 2
    grown_mib = (peak - baseline) / 1024
    assert grown_mib < 32, f"the writer's peak memory grew {grown_mib:.0f} MiB"
    assert rows(db, "SELECT count(*) FROM chaos_keys WHERE key LIKE 'good-%'")[0][0] == 100


GHOST = """
import os, socket, struct, sys, time
sys.path.insert(0, os.environ["CHAOS_DIR"])
from onewriter.wire import frames as proto
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
sock.sendall(proto.frame({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": b"ghost"}))
whole = proto.frame({"id": 1, "op": "insert_key", "kwargs": {"key": "ghost-whole"}, "seq": 1})
half = proto.frame({"id": 2, "op": "insert_key", "kwargs": {"key": "ghost-half"}, "seq": 2})
sock.sendall(whole + half[: len(half) // 2])
sock.recv(65536)  # the hello (the reply to 'whole' may or may not be read before death)
print("READY", flush=True)
time.sleep(60)
"""


def test_a_client_vanishing_mid_frame_does_not_stop_the_writer(tmp_path: Path) -> None:
    db = str(tmp_path / "ghost.db")
    sock_path = socket_path_for(db)
    with serving(db, tmp_path) as writer:
        good = onewriter.connect(db, ops=ops, role="client")
        ghost = subprocess.Popen(
            [sys.executable, "-c", GHOST, sock_path],
            stdout=subprocess.PIPE,
            env={**child_env(), "CHAOS_DIR": str(Path(__file__).parent)},
        )
        try:
            wait_for_line(ghost, b"READY", 20)
            good.write(insert_key, key="while-ghost-is-mid-frame")
            assert good.stats()["clients"] == 2
            ghost.kill()
            ghost.wait(10)
            # A second one announces a huge frame, sends a few bytes of it and hangs up.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as liar:
                liar.connect(sock_path)
                liar.sendall(proto.HEADER.pack(1 << 20) + b"\x80" * 10)
            wait_until(lambda: good.stats()["clients"] == 1, 10, "the writer dropped both")
            good.write(insert_key, key="after-ghost")
        finally:
            stop_process(ghost)
            good.close()
        assert writer.poll() is None
    keys = {key for (key,) in rows(db, "SELECT key FROM chaos_keys")}
    assert keys == {"ghost-whole", "while-ghost-is-mid-frame", "after-ghost"}


# -- checkpoint starvation ------------------------------------------------------------------

READER = """
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
stop, hold = sys.argv[2], float(sys.argv[3])
reads = 0
while not os.path.exists(stop):
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM posts").fetchone()
    reads += 1
    if reads == 1:
        print("READY", flush=True)
    time.sleep(hold)  # hold the snapshot: the readers overlap and never all let go
    conn.execute("COMMIT")
print("READS", reads, flush=True)
"""


def test_wal_stays_bounded_under_overlapping_readers(tmp_path: Path, children: Children) -> None:
    db = str(tmp_path / "wal.db")
    limit = 256 * 1024
    writer = children.writer(db, wal_size_limit=limit)
    stop = tmp_path / "STOP"
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, db, str(stop), "0.01"], stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    wal_path = db + "-wal"
    largest = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal largest
        while not sampling.is_set():
            with contextlib.suppress(FileNotFoundError):
                largest = max(largest, os.stat(wal_path).st_size)
            time.sleep(0.001)

    async def write_all(n: int, content: str) -> dict[str, Any]:
        async with onewriter.connect_async(db, role="client") as client:
            pending: set[asyncio.Task[Any]] = set()
            for i in range(n):
                write = client.write(create_post, title=f"p{i}", content=content)
                pending.add(asyncio.ensure_future(write))
                if len(pending) >= 32:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*pending)
            return await client.stats()

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        for reader in readers:
            wait_for_line(reader, b"READY", 20)
        sampler.start()
        stats = asyncio.run(write_all(1500, "w" * 4000))  # ~6 MiB through the WAL
        stop.touch()
        reads = [int(wait_for_line(r, b"READS", 20).split()[1]) for r in readers]
    finally:
        sampling.set()
        stop.touch()
        for reader in readers:
            stop_process(reader)
    sampler.join(5)
    assert writer.proc.poll() is None
    assert min(reads) >= 5, reads  # the readers really were reading all along
    assert rows(db, "SELECT count(*) FROM posts")[0][0] == 1500
    # The limit is soft: a TRUNCATE that a reader outlasts is retried once the WAL has
    # grown by another half of it. Without TRUNCATE the WAL would hold all ~6 MiB.
    assert 0 <= stats["wal_bytes"] <= 8 * limit, stats["wal_bytes"]
    assert largest <= 8 * limit, f"the WAL reached {largest} bytes (limit {limit})"
