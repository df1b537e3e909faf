"""Online backup and restore: a consistent copy while the writer keeps committing, and a
restore that checks integrity and refuses to run under a live writer."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from helpers import MIGRATIONS, ONEWRITER_CLI, Children, count, insert_number, ops, run

import onewriter
from onewriter.sqlite.backup import integrity_check, restore_database

FILLER_ROWS = 64_000  # ~64 MB of incompressible blobs
WRITES_LIMIT = 200_000


def build_large_database(path: str) -> None:
    """Tens of MB in one transaction (about half a second), checkpointed into the file."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO filler (data) SELECT randomblob(1000) FROM n",
            (FILLER_ROWS,),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def test_backup_of_a_large_database_does_not_pause_the_writer(
    db_path: str, children: Children, tmp_path: Path
) -> None:
    build_large_database(db_path)
    children.writer(db_path)
    db = onewriter.connect(db_path, ops=ops, role="client")
    acked: list[float] = []
    stop = threading.Event()

    def write_steadily() -> None:
        for n in range(WRITES_LIMIT):
            if stop.is_set():
                return
            db.write(insert_number, worker=1, n=n)
            acked.append(time.monotonic())

    writer_thread = threading.Thread(target=write_steadily)
    writer_thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= 200, "the writes did not get going"
        started = time.monotonic()
        result = db.backup(str(tmp_path / "copy.db"))
        ended = time.monotonic()
        time.sleep(0.05)
    finally:
        stop.set()
        writer_thread.join(30)
        db.close()

    during = [t for t in acked if started <= t <= ended]
    marks = [started, *during, ended]
    longest_pause = max(b - a for a, b in itertools.pairwise(marks))
    figures = (
        f"backup {ended - started:.3f} s of {result.bytes / 1e6:.1f} MB, "
        f"{len(during)} writes acknowledged meanwhile, longest pause {longest_pause * 1000:.1f} ms"
    )
    print(figures)
    assert result.bytes > 60e6, figures
    assert len(during) >= 20, figures
    assert longest_pause < 0.5 * (ended - started), figures

    # The copy is one snapshot: the rows of a prefix of the sequential writes, no holes.
    copy = sqlite3.connect(result.path)
    try:
        numbers = [n for (n,) in copy.execute("SELECT n FROM numbers ORDER BY n")]
        assert copy.execute("SELECT count(*) FROM filler").fetchone()[0] == FILLER_ROWS
    finally:
        copy.close()
    assert numbers == list(range(len(numbers)))
    assert sum(t <= started for t in acked) <= len(numbers) <= sum(t <= ended for t in acked) + 1
    assert integrity_check(result.path, onewriter.Config()) == []


def test_cli_backup_and_restore_round_trip(
    db_path: str, children: Children, tmp_path: Path
) -> None:
    writer = children.writer(db_path)
    db = onewriter.connect(db_path, ops=ops, role="client")
    try:
        for n in range(100):
            db.write(insert_number, worker=1, n=n)
        backup = str(tmp_path / "nightly.db")
        result = run([ONEWRITER_CLI, "backup", db_path, backup])
        assert "integrity: ok" in result.stdout
        for n in range(100, 150):
            db.write(insert_number, worker=1, n=n)

        refused = run([ONEWRITER_CLI, "restore", backup, db_path], check=False)
        assert refused.returncode == 1
        assert "BACKUP_FAILED" in refused.stderr and "stop it" in refused.stderr
        assert db.read("SELECT count(*) AS n FROM numbers")[0]["n"] == 150

        writer.stop()
        result = run([ONEWRITER_CLI, "restore", backup, db_path])
        assert "integrity: ok" in result.stdout
        # This process's readers stayed open across the restore and see its content.
        assert db.read("SELECT count(*) AS n FROM numbers")[0]["n"] == 100
    finally:
        db.close()

    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS)
    try:
        db.write(insert_number, worker=2, n=0)
        assert db.read("SELECT count(*) AS n FROM numbers")[0]["n"] == 101
    finally:
        db.close()
    assert integrity_check(db_path, onewriter.Config()) == []
    assert count(backup) == 100


def test_restore_refuses_a_damaged_backup_and_leaves_the_database_alone(
    db_path: str, tmp_path: Path
) -> None:
    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS, role="standalone")
    try:
        for n in range(2000):
            db.write(insert_number, worker=1, n=n)
        backup = db.backup(str(tmp_path / "copy.db"))
    finally:
        db.close()
    page_size = 4096
    with open(backup.path, "r+b") as f:  # scribble over the b-tree pages of the second half
        for page in range(backup.pages // 2, backup.pages):
            f.seek(page_size * page + 64)
            f.write(b"\xff" * 512)
    before = hashlib.sha256(Path(db_path).read_bytes()).hexdigest()

    with pytest.raises(onewriter.BackupFailed, match="integrity check"):
        restore_database(backup.path, db_path, onewriter.Config())
    assert hashlib.sha256(Path(db_path).read_bytes()).hexdigest() == before
    assert count(db_path) == 2000


def test_restore_into_a_new_path_gives_a_working_database(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    db = onewriter.connect(source, ops=ops, migrations=MIGRATIONS, role="standalone")
    try:
        db.write(insert_number, worker=1, n=1)
        backup = db.backup(str(tmp_path / "copy.db"))
        with pytest.raises(onewriter.BackupFailed, match="over itself"):
            db.backup(source)
    finally:
        db.close()

    target = str(tmp_path / "restored.db")
    restore_database(backup.path, target, onewriter.Config())
    db = onewriter.connect(target, ops=ops, migrations=MIGRATIONS)
    try:
        db.write(insert_number, worker=1, n=2)
        assert db.read("SELECT count(*) AS n FROM numbers")[0]["n"] == 2
        assert db.read("PRAGMA journal_mode")[0][0] == "wal"
    finally:
        db.close()


def test_async_backup_runs_off_the_event_loop(db_path: str, tmp_path: Path) -> None:
    async def main() -> onewriter.BackupResult:
        async with onewriter.connect_async(
            db_path, ops=ops, migrations=MIGRATIONS, role="standalone"
        ) as db:
            await db.write(insert_number, worker=1, n=1)
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            ticker = asyncio.create_task(tick())
            result = await db.backup(str(tmp_path / "copy.db"))
            ticker.cancel()
            assert ticks > 0
            return result

    result = asyncio.run(main())
    assert result.pages > 0
    assert count(result.path) == 1
