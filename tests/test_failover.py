"""Exactly once across writer death, graceful handover, and giving up after failover_timeout.

The chaos tests run real client processes writing unique keys while the writer of the
moment is SIGKILLed again and again (tests/chaos_client.py has the client program and
the harness); the other tests drive the exactly-once record and the handover directly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from chaos_client import ChaosRun, Outcome, insert_key, ops, start_serve, stop_process
from helpers import RawClient, socket_path_for

import onewriter
from onewriter.wire import frames as proto

KILLS = 5
INTERVAL = 2.0


def assert_exactly_once(out: Outcome) -> None:
    summary = out.summary()
    print(summary)
    assert out.acknowledged > 0, summary
    assert out.lost == [], f"acknowledged but missing: {out.lost[:10]}; {summary}"
    assert out.duplicated == [], f"applied twice: {out.duplicated[:10]}; {summary}"
    assert out.wrong_result == [], f"not the original result: {out.wrong_result[:10]}"
    assert out.unacknowledged == [], f"never answered: {out.unacknowledged[:10]}; {summary}"
    assert not out.errors, summary
    assert out.rows == out.acknowledged + out.in_doubt_applied, summary


def test_clients_elect_a_new_writer_after_each_sigkill(tmp_path: Path) -> None:
    """role=auto: the writer is one of the clients; it is SIGKILLed every ~2 s."""
    run = ChaosRun(tmp_path, mode="auto", sync_clients=3, async_clients=2, tasks=8)
    try:
        run.start()
        run.kill_repeatedly(KILLS, INTERVAL)
        out = run.stop()
    finally:
        run.close()
    assert_exactly_once(out)
    assert out.kills == KILLS
    assert len(out.pauses_ms) == KILLS
    # Only a killed client's own in-flight writes are in doubt: at most one per sync
    # client and one per asyncio task of it.
    assert len(out.in_doubt) <= KILLS * 8, out.summary()


def test_dedicated_writer_sigkilled_and_restarted(tmp_path: Path) -> None:
    """role=client processes and an ``onewriter serve`` writer killed and restarted:
    no client dies, so every attempted key must be acknowledged, exactly once."""
    run = ChaosRun(tmp_path, mode="serve", sync_clients=2, async_clients=2, tasks=8)
    try:
        run.start()
        run.kill_repeatedly(KILLS, INTERVAL)
        out = run.stop()
    finally:
        run.close()
    assert_exactly_once(out)
    assert out.kills == KILLS
    assert out.in_doubt == []
    assert out.attempted == out.acknowledged


def test_sigterm_hands_over_without_a_failed_request(tmp_path: Path) -> None:
    """SIGTERM to the writer: it drains, commits, releases the role; a client takes over."""
    run = ChaosRun(
        tmp_path, mode="serve", client_role="auto", sync_clients=3, async_clients=1, tasks=8
    )
    try:
        run.start()
        assert run.wait_for_progress()
        serve_pid = run.writer_pid()
        assert run.serve is not None and serve_pid == run.serve.pid
        assert run.terminate_serve() == 0
        assert run.wait_for_progress(), "no client took the writer role over"
        successor = run.writer_pid()
        assert successor in {c.proc.pid for c in run.clients}
        out = run.stop()
    finally:
        run.close()
    assert_exactly_once(out)
    assert out.in_doubt == []


def _hello(raw: RawClient, client: bytes) -> None:
    raw.send({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": client})
    assert raw.recv()["t"] == "hello"


def _insert(raw: RawClient, rid: int, key: str, seq: int, retry: bool) -> dict[str, object]:
    message = {"id": rid, "op": "insert_key", "kwargs": {"key": key}, "seq": seq}
    if retry:
        message["retry"] = True
    raw.send(message)
    reply: dict[str, object] = raw.recv_id(rid)
    return reply


def test_retry_to_the_next_writer_gets_the_original_result(tmp_path: Path) -> None:
    """A committed request re-sent to a new writer is answered from the record, not rerun."""
    db = str(tmp_path / "retry.db")
    sock = socket_path_for(db)
    client = os.urandom(16)
    first = start_serve(db, tmp_path / "serve.err")
    try:
        with RawClient(sock, hello=False) as raw:
            _hello(raw, client)
            original = _insert(raw, 1, "k1", seq=1, retry=False)
        assert original["ok"] is True
        result = original["result"]
        assert isinstance(result, list)
        rowid, pid = result
        assert pid == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop_process(first)
    second = start_serve(db, tmp_path / "serve.err")
    try:
        with RawClient(sock, hello=False) as raw:
            _hello(raw, client)
            again = _insert(raw, 7, "k1", seq=1, retry=True)
            fresh = _insert(raw, 8, "k2", seq=2, retry=True)
        with RawClient(sock, hello=False) as other:
            _hello(other, os.urandom(16))  # same seq, another client: not a retry of k1
            stranger = _insert(other, 1, "k1", seq=1, retry=True)
    finally:
        stop_process(second)
    assert again == {"id": 7, "ok": True, "result": [rowid, first.pid]}
    assert fresh["ok"] is True and fresh["result"][1] == second.pid  # type: ignore[index]
    assert stranger["error"]["code"] == "OP_FAILED"  # type: ignore[index]
    assert "UNIQUE" in stranger["error"]["message"]  # type: ignore[index]
    conn = sqlite3.connect(db)
    try:
        keys = conn.execute("SELECT key, count(*) FROM chaos_keys GROUP BY key").fetchall()
    finally:
        conn.close()
    assert sorted(keys) == [("k1", 1), ("k2", 1)]


def test_a_retry_in_the_same_batch_as_its_original_is_not_applied_again(
    tmp_path: Path,
) -> None:
    """A retry can catch up with its original (the client lost a connection the writer
    still served): both land in one batch, before the batch's record is written."""
    db = str(tmp_path / "same.db")
    writer = start_serve(db, tmp_path / "serve.err")
    try:
        with RawClient(socket_path_for(db), hello=False) as raw:
            _hello(raw, os.urandom(16))
            original = {"id": 1, "op": "insert_key", "kwargs": {"key": "once"}, "seq": 1}
            raw.send([original, {**original, "id": 2, "retry": True}])  # one frame, one batch
            first, second = raw.recv_id(1), raw.recv_id(2)
    finally:
        stop_process(writer)
    assert first["ok"] is True, first
    assert second == {**first, "id": 2}
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM chaos_keys").fetchone()[0] == 1
    finally:
        conn.close()


def test_writer_unavailable_only_after_failover_timeout(tmp_path: Path) -> None:
    """With no writer to reach or become, a write fails with WRITER_UNAVAILABLE, after
    failover_timeout and not much later."""
    db = str(tmp_path / "gone.db")
    writer = start_serve(db, tmp_path / "serve.err")
    client = onewriter.connect(db, ops=ops, role="client", failover_timeout=1.0)
    try:
        assert client.write(insert_key, key="before")[1] == writer.pid
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        started = time.monotonic()
        with pytest.raises(onewriter.WriterUnavailable):
            client.write(insert_key, key="after")
        waited = time.monotonic() - started
    finally:
        client.close()
        stop_process(writer)
    assert 0.9 <= waited < 30, waited
    started = time.monotonic()
    with pytest.raises(onewriter.WriterUnavailable):
        onewriter.connect(db, ops=ops, role="client", failover_timeout=0.5)
    assert time.monotonic() - started < 30
