"""Litestream beside onewriter, for real: several processes write (with a failover on the
way) while Litestream replicates to a file replica; the replica restored elsewhere holds
every row. The writers run with ``checkpoint="external"`` and never checkpoint.

Skipped when the Litestream binary (the ``litestream`` extra) is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from helpers import MIGRATIONS, PYTHON, Child, Children, create_post, ops, run

import onewriter
from onewriter.sqlite.backup import integrity_check


def litestream_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "litestream"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("litestream")


LITESTREAM = litestream_binary()
pytestmark = pytest.mark.skipif(
    LITESTREAM is None, reason="Litestream is not installed (pip install 'onewriter[litestream]')"
)

WORKERS = 3
ROWS = 200  # per worker, in two halves around the writer's death

CONFIG = """\
socket:
  enabled: true
  path: {socket}
dbs:
  - path: {database}
    monitor-interval: 50ms
    replica:
      type: file
      path: {replica}
      sync-interval: 100ms
"""


def main_replicated_writer(database: str, worker: str, rows: str) -> None:
    """Write half the posts, say HALF, wait for a line, write the rest, report."""
    db = onewriter.connect(database, ops=ops, migrations=MIGRATIONS, checkpoint="external")
    half = int(rows) // 2
    for n in range(int(rows)):
        if n == half:
            print("HALF", flush=True)
            sys.stdin.readline()
        db.write(create_post, title=f"worker {worker} post {n}", content=os.urandom(8).hex())
    stats = db.stats()
    report = {"pid": os.getpid(), "writer_pid": stats["pid"], "checkpoints": stats["checkpoints"]}
    print("DONE " + json.dumps(report), flush=True)
    sys.stdin.readline()
    db.close()


def start_writer(children: Children, database: str, worker: int) -> Child:
    code = "import sys, test_litestream; test_litestream.main_replicated_writer(*sys.argv[1:])"
    return children.start([PYTHON, "-c", code, database, str(worker), str(ROWS)])


def all_posts(path: str) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT id, title, content FROM posts ORDER BY id"))
    finally:
        conn.close()


def test_replica_restored_elsewhere_has_every_row_written_by_many_processes(
    db_path: str, children: Children, short_dir: str, tmp_path: Path
) -> None:
    assert LITESTREAM is not None
    first_writer = children.writer(db_path, checkpoint="external")
    replica = tmp_path / "replica"
    config = tmp_path / "litestream.yml"
    control = os.path.join(short_dir, "ls.sock")
    config.write_text(CONFIG.format(socket=control, database=db_path, replica=replica))
    litestream = children.start([LITESTREAM, "replicate", "-config", str(config)])
    wait_for_log(litestream, "replicating to")

    workers = [start_writer(children, db_path, w) for w in range(WORKERS)]
    for worker in workers:
        worker.wait_line("HALF", timeout=60)
    first_writer.kill9()  # one of the workers takes over, still leaving checkpoints alone
    for worker in workers:
        worker.send("GO")
    reports = [worker.wait_json("DONE ", timeout=60) for worker in workers]
    assert {r["writer_pid"] for r in reports} <= {w.pid for w in workers}, reports
    assert all(r["checkpoints"] == 0 for r in reports), reports
    for worker in workers:
        worker.send("EXIT")
        assert worker.wait_exit() == 0, worker.describe()

    synced = run([LITESTREAM, "sync", "-wait", "-timeout", "30", "-socket", control, db_path])
    assert "replica_txid" in synced.stdout, synced.stdout
    restored = str(tmp_path / "elsewhere" / "restored.db")
    os.makedirs(os.path.dirname(restored))
    run([LITESTREAM, "restore", "-o", restored, f"file://{replica}"], timeout=60)

    source_rows = all_posts(db_path)
    assert len(source_rows) == WORKERS * ROWS
    assert all_posts(restored) == source_rows
    assert integrity_check(restored, onewriter.Config()) == []


def wait_for_log(child: Child, text: str, timeout: float = 20.0) -> None:
    """Skip Litestream's log lines (on its stdout) until one containing ``text``."""
    deadline = time.monotonic() + timeout
    while text not in child.wait_line("", max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            raise AssertionError(f"Litestream never logged {text!r}: {child.describe()}")
