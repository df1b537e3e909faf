"""What only the SQLite job store has to show: its claim plan, the hint when the writer
lacks the queue's ops, the package's exports. The contract every store meets is in
test_jobs_stores.py."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import onewriter
from onewriter.jobs import JobQueue, jobs_ops
from onewriter.jobs.sqlite import sql


def _ops() -> onewriter.Ops:
    ops = onewriter.Ops()
    ops.include(jobs_ops)
    return ops


@pytest.fixture
def db(tmp_path: Path) -> Iterator[onewriter.Database]:
    database = onewriter.connect(str(tmp_path / "jobs.db"), ops=_ops(), role="standalone")
    yield database
    database.close()


@pytest.fixture
def queue(db: onewriter.Database) -> JobQueue:
    return JobQueue(db)


def test_claim_uses_the_ready_index_without_sorting(
    queue: JobQueue, db: onewriter.Database
) -> None:
    queue.enqueue_many("q", range(10))
    conn = sqlite3.connect(db.path)
    try:
        params = {"queue": "q", "caps": "[]", "now": time.time(), "limit": 5}
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql.CLAIMABLE, params)]
        params |= {"worker": "w", "lease": 1.0, "slack": 2.0}
        plan += [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql.CLAIM, params)]
    finally:
        conn.close()
    assert any("USING INDEX onewriter_jobs_ready (queue=?)" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN j ") for step in plan), plan


def test_missing_ops_give_a_clear_hint(tmp_path: Path) -> None:
    db = onewriter.connect(str(tmp_path / "bare.db"), role="standalone")
    try:
        with pytest.raises(onewriter.UnknownOp, match=r"ops.include\(onewriter.jobs.jobs_ops\)"):
            JobQueue(db)
    finally:
        db.close()


def test_public_names_are_exported_and_sorted() -> None:
    import onewriter.jobs as jobs

    assert jobs.__all__ == sorted(jobs.__all__, key=lambda n: (not n.isupper(), n))
    for name in jobs.__all__:
        assert getattr(jobs, name) is not None
    with pytest.raises(AttributeError):
        jobs.NoSuchThing  # noqa: B018
