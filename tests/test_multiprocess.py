"""Many real processes on one database: election, joining, failover, migrations, visibility."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

import helpers
from helpers import Children, count, create_post, user_version

import onewriter

WORKERS = 8
ROWS = 2000


def test_eight_processes_started_together_write_every_row_through_one_writer(
    db_path: str, children: Children
) -> None:
    workers = [children.main("main_insert", db_path, w, ROWS) for w in range(WORKERS)]
    for worker in workers:
        worker.wait_line("WAITING")
    for worker in workers:  # all at once: they race to become the writer
        worker.send("GO")
    reports = [worker.wait_json("DONE ", timeout=120) for worker in workers]

    assert count(db_path) == WORKERS * ROWS
    assert all(report["errors"] == {} for report in reports), reports
    writers = [report["pid"] for report in reports if report["is_writer"]]
    assert len(writers) == 1, reports
    seen = {pid for report in reports for pid in report["writer_pids"]}
    assert seen == {writers[0]}, f"writer pids seen while writing: {seen}"

    for worker in workers:
        worker.send("EXIT")
    for worker in workers:
        assert worker.wait_exit() == 0, worker.describe()
    assert count(db_path) == WORKERS * ROWS


def test_processes_started_one_after_another_join_the_existing_writer(
    db_path: str, children: Children
) -> None:
    first = children.main("main_join", db_path)
    first_report = first.wait_json("JOINED ")
    assert first_report["is_writer"] is True
    assert first_report["writer_pid"] == first.pid

    for _ in range(3):
        joiner = children.main("main_join", db_path)
        report = joiner.wait_json("JOINED ")
        assert report["is_writer"] is False
        assert report["writer_pid"] == first.pid
        assert report["stats_pid"] == first.pid
        joiner.send("EXIT")
        assert joiner.wait_exit() == 0, joiner.describe()
    assert count(db_path, "posts") == 4


def test_sigkill_of_the_writer_lets_the_next_write_elect_a_new_one(
    db_path: str, children: Children, open_db: Callable[..., onewriter.Database]
) -> None:
    first = children.main("main_join", db_path)
    assert first.wait_json("JOINED ")["is_writer"] is True
    db = open_db(writes="funnel")  # the funnel elects; direct writes need no writer
    db.write(create_post, title="before the kill")
    assert db.is_writer is False
    assert db.stats()["pid"] == first.pid

    first.kill9()  # clients are idle: nothing is in flight

    post = db.write(create_post, title="after the kill")
    assert post["title"] == "after the kill"
    assert db.is_writer is True
    assert db.stats()["pid"] == os.getpid()
    titles = [row["title"] for row in db.read("SELECT title FROM posts ORDER BY id")]
    assert titles == [f"from {first.pid}", "before the kill", "after the kill"]

    late = children.main("main_join", db_path)
    report = late.wait_json("JOINED ")
    assert report["is_writer"] is False
    assert report["writer_pid"] == os.getpid()


def test_a_write_is_visible_at_once_to_reads_in_this_and_other_processes(
    db_path: str, children: Children, open_db: Callable[..., onewriter.Database]
) -> None:
    children.writer(db_path)
    db = open_db(role="client")
    reader = children.main("main_reader", db_path)
    reader.wait_line("READY")
    for i in range(20):
        title = f"ryw-{i}"
        db.write(create_post, title=title)
        assert db.read("SELECT count(*) AS n FROM posts WHERE title = ?", (title,))[0]["n"] == 1
        reader.send(title)
        assert reader.wait_line("SEEN ") == "SEEN 1", f"process {reader.pid} missed {title}"


def test_migrations_run_once_by_whoever_becomes_writer(db_path: str, children: Children) -> None:
    racers = [children.main("main_insert", db_path, w, 5) for w in range(4)]
    for racer in racers:
        racer.wait_line("WAITING")
    for racer in racers:
        racer.send("GO")
    reports = [racer.wait_json("DONE ") for racer in racers]
    (writer,) = [r["pid"] for r in reports if r["is_writer"]]
    for racer in racers:
        racer.send("EXIT")
        racer.wait_exit()

    assert user_version(db_path) == len(helpers.MIGRATIONS)
    assert migration_pids(db_path) == [writer]
    assert count(db_path, "numbers") == 20

    # The next writer finds the schema current and runs nothing again.
    late = children.main("main_join", db_path)
    assert late.wait_json("JOINED ")["is_writer"] is True
    assert migration_pids(db_path) == [writer]


def migration_pids(database: str) -> list[int]:
    conn = sqlite3.connect(database)
    try:
        return [row[0] for row in conn.execute("SELECT pid FROM migration_log")]
    finally:
        conn.close()
