"""Fork safety: a Database created before ``fork()`` opens its own connections and
sockets in the child and never touches the parent's; the parent keeps working."""

from __future__ import annotations

import json
from typing import Any

from helpers import Children, count, main_command, run


def fork_report(db_path: str, mode: str, writes: str = "funnel") -> dict[str, Any]:
    result = run(main_command("main_fork", db_path, mode, writes), timeout=60)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FORK ")]
    report: dict[str, Any] = json.loads(line[len("FORK ") :])
    return report


def test_a_forked_child_of_the_writer_writes_through_it(db_path: str) -> None:
    report = fork_report(db_path, "writer")
    child = report["child"]
    assert report["child_exit"] == 0
    assert child["own_core"] is True
    assert child["is_writer"] is False
    assert child["writer_pid"] == report["parent_pid"]  # the parent stayed the writer
    assert child["post"]["title"] == "from child"
    assert child["seen"] == 2
    assert report["parent_is_writer"] is True
    assert report["parent_post"]["id"] == 3
    assert report["posts"] == 3


def test_a_forked_child_of_a_client_opens_its_own_line(db_path: str, children: Children) -> None:
    writer = children.writer(db_path)
    report = fork_report(db_path, "client")
    child = report["child"]
    assert report["child_exit"] == 0
    assert child["own_core"] is True
    assert child["writer_pid"] == writer.writer_pid
    assert report["parent_is_writer"] is False
    assert report["posts"] == 3
    assert count(db_path, "posts") == 3


def test_a_fork_pool_writes_through_the_parent_writer(db_path: str) -> None:
    result = run(main_command("main_fork_pool", db_path, 4, 200), timeout=60)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("POOL ")]
    report = json.loads(line[len("POOL ") :])
    assert report["total"] == 800
    assert set(report["child_writer_pids"]) == {report["parent"]}
    assert count(db_path) == 800


def test_a_forked_child_writes_directly_on_connections_of_its_own(db_path: str) -> None:
    report = fork_report(db_path, "writer", "direct")
    child = report["child"]
    assert report["child_exit"] == 0
    assert child["own_core"] is True
    assert child["writer_pid"] not in (None, report["parent_pid"])  # ran in the child
    assert child["post"]["title"] == "from child"
    assert child["seen"] == 2
    assert report["parent_post"]["id"] == 3
    assert report["posts"] == 3


def test_a_fork_pool_writes_directly_under_the_turn(db_path: str) -> None:
    result = run(main_command("main_fork_pool", db_path, 4, 200, "direct"), timeout=60)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("POOL ")]
    report = json.loads(line[len("POOL ") :])
    assert report["total"] == 800
    assert report["parent"] not in report["child_writer_pids"]
    assert len(set(report["child_writer_pids"])) == 4
    assert count(db_path) == 800
