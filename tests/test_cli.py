"""The ``onewriter`` command, run for real in subprocesses."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator

import pytest
from helpers import ONEWRITER_CLI, Child, Children, child_env, count, create_post, ops, run

import onewriter


def onewriter_cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    result = run([ONEWRITER_CLI, *args], timeout=timeout, check=False)
    return result.returncode, result.stdout, result.stderr


class Serve(Child):
    """``onewriter serve DB --ops helpers:ops``, waited on until its READY line."""

    def __init__(self, database: str, *flags: str, env: dict[str, str] | None = None) -> None:
        cmd = [
            ONEWRITER_CLI,
            "serve",
            database,
            "--ops",
            "helpers:ops",
            "--migrations",
            "helpers:MIGRATIONS",
            *flags,
        ]
        super().__init__(cmd, env=child_env(env))
        try:
            line = self.wait_line("READY", timeout=20)
        except BaseException:
            self.stop()
            raise
        match = re.search(r"pid=(\d+)", line)
        assert match, line
        self.writer_pid = int(match.group(1))


@pytest.fixture
def serve(db_path: str, children: Children) -> Iterator[Serve]:
    server = Serve(db_path)
    children.started.append(server)
    yield server


def test_help_lists_the_commands() -> None:
    code, out, _ = onewriter_cli("--help")
    assert code == 0
    assert "serve" in out
    assert "stats" in out


def test_serve_help_names_flags_and_their_environment_fallbacks() -> None:
    code, out, _ = onewriter_cli("serve", "--help")
    assert code == 0
    for flag in ("--ops", "--migrations", "--durability", "--max-pending", "--max-batch"):
        assert flag in out
    assert "ONEWRITER_OPS" in out
    assert "ONEWRITER_MAX_PENDING" in out


def test_stats_help() -> None:
    code, out, _ = onewriter_cli("stats", "--help")
    assert code == 0
    assert "--json" in out


def test_no_command_prints_help_and_fails() -> None:
    code, out, _ = onewriter_cli()
    assert code == 2
    assert "serve" in out


def test_stats_prints_a_table_of_the_running_writer(db_path: str, serve: Serve) -> None:
    with onewriter.connect(db_path, ops=ops, role="client") as db:
        for i in range(3):
            db.write(create_post, title=f"p{i}")

    code, out, err = onewriter_cli("stats", db_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["figure", "value"]
    assert set(lines[1]) <= {"-", " "}
    table = {
        name: value.strip().replace(",", "")
        for name, value in (line.split(None, 1) for line in lines[2:] if line.strip())
    }
    assert table["pid"] == str(serve.writer_pid)
    assert table["ops.create_post"] == "3"
    assert table["max_pending"] == "500"

    code, out, err = onewriter_cli("stats", db_path, "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["pid"] == serve.writer_pid
    assert figures["ops"]["create_post"] == 3


def test_stats_without_a_writer_fails_clearly(db_path: str) -> None:
    code, _, err = onewriter_cli("stats", db_path, "--timeout", "0.3")
    assert code == 1
    assert "WRITER_UNAVAILABLE" in err


def test_serve_takes_settings_from_the_environment(db_path: str, children: Children) -> None:
    server = Serve(db_path, env={"ONEWRITER_MAX_PENDING": "7", "ONEWRITER_DURABILITY": "full"})
    children.started.append(server)
    code, out, err = onewriter_cli("stats", db_path, "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["max_pending"] == 7
    assert figures["durability"] == "full"


def test_sigusr2_prints_stats_and_sigterm_drains(db_path: str, serve: Serve) -> None:
    with onewriter.connect(db_path, ops=ops, role="client") as db:
        db.write(create_post, title="kept")
    serve.proc.send_signal(signal.SIGUSR2)
    assert serve.wait_line("figure").split() == ["figure", "value"]

    serve.proc.send_signal(signal.SIGTERM)
    serve.wait_line("stopped")
    assert serve.wait_exit() == 0
    assert count(db_path, "posts") == 1
