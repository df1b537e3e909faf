"""Group commit at durability=full: the writer waits a moment for every connected client's
request, so that one fsync serves them all (``commit_delay``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from helpers import RawClient, socket_path_for

import onewriter


def _insert(rid: int, worker: int) -> dict[str, Any]:
    return {
        "id": rid,
        "op": "insert_number",
        "kwargs": {"worker": worker, "n": rid},
        "seq": rid,
        "deadline": 30_000,
    }


def _no_reply_within(raw: RawClient, seconds: float) -> bool:
    raw.sock.settimeout(seconds)
    try:
        raw.recv()
    except TimeoutError:
        return True
    finally:
        raw.sock.settimeout(10.0)
    return False


def test_a_lone_request_waits_for_the_other_clients_then_all_share_one_commit(
    open_db: Callable[..., onewriter.Database], db_path: str
) -> None:
    db = open_db(role="writer", durability="full", commit_delay=5.0)
    path = socket_path_for(db_path)
    with RawClient(path) as first, RawClient(path) as second:
        first.send(_insert(1, worker=1))
        assert _no_reply_within(first, 0.3), "the writer committed without waiting"
        second.send(_insert(1, worker=2))
        assert first.recv_id(1).get("ok") is True
        assert second.recv_id(1).get("ok") is True
    stats = db.stats()
    assert stats["batch_size"]["max"] == 2
    assert stats["commits"] == 1


@pytest.mark.parametrize(
    "config",
    [
        {"durability": "full", "commit_delay": 0.0},
        {"durability": "normal", "commit_delay": 5.0},
    ],
    ids=["delay-off", "normal-durability"],
)
def test_no_wait_when_it_is_off_or_commits_cost_no_fsync(
    open_db: Callable[..., onewriter.Database], db_path: str, config: dict[str, Any]
) -> None:
    open_db(role="writer", **config)
    path = socket_path_for(db_path)
    with RawClient(path) as first, RawClient(path, timeout=2.0) as idle:
        first.send(_insert(1, worker=os.getpid()))
        assert first.recv_id(1).get("ok") is True
        assert idle.greeting.get("t") == "hello"
