"""The ``onewriter`` command, run for real in subprocesses."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest
from helpers import ONEWRITER_CLI, Child, Children, child_env, count, create_post, ops, run

import onewriter
from onewriter.cli.tables import figure
from onewriter.demo.launch import ServiceProcess


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


# -- conventions ------------------------------------------------------------------------------


def test_version() -> None:
    code, out, _ = onewriter_cli("--version")
    assert code == 0
    assert out.startswith(f"onewriter {onewriter.__version__} (SQLite ")


def test_jobs_alone_prints_the_jobs_help() -> None:
    code, out, _ = onewriter_cli("jobs")
    assert code == 2
    assert out.startswith("usage: onewriter jobs")
    assert "stress" in out and "backup" not in out


def _options(parser: argparse.ArgumentParser, path: str = "onewriter") -> Iterator[tuple]:
    """(command, action) of every option of every command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, f"{path} {name}")
        elif (
            action.option_strings
            and action.help != argparse.SUPPRESS
            and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
        ):
            yield path, action


def _sample(action: argparse.Action) -> tuple[str, object]:
    """A value for the action's environment variable, and what it parses to."""
    if isinstance(action, argparse._StoreTrueAction):
        return "yes", True
    if isinstance(action, argparse._AppendAction):
        return "a, b", ["a", "b"]
    if action.choices:
        choice = list(action.choices)[-1]
        return str(choice), choice
    if action.type in (int, float):
        return "7", action.type(7)
    return "somewhere", "somewhere"


def test_every_flag_falls_back_on_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onewriter.cli.flags import env_name
    from onewriter.cli.main import build_parser

    options = list(_options(build_parser()))
    assert len(options) > 60
    for command, action in options:
        flag = action.option_strings[-1]
        env = env_name(flag)
        assert f"[env {env}]" in (action.help or ""), (command, flag)
        text, expected = _sample(action)
        monkeypatch.setenv(env, text)
        [(_, fresh)] = [
            (c, a)
            for c, a in _options(build_parser())
            if c == command and a.option_strings == action.option_strings
        ]
        monkeypatch.delenv(env)
        assert fresh.default == expected, (command, flag, fresh.default)


def test_a_bad_environment_value_is_one_line(db_path: str) -> None:
    result = subprocess.run(
        [ONEWRITER_CLI, "stats", db_path],
        capture_output=True,
        text=True,
        env=child_env({"ONEWRITER_TIMEOUT": "soon"}),
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "onewriter: ONEWRITER_TIMEOUT='soon': not a valid float"


def test_defaults_are_shown_as_written() -> None:
    code, out, _ = onewriter_cli("jobs", "serve", "--help")
    assert code == 0
    assert "(default: 604800, 7 days)" in " ".join(out.split())
    assert "604800.0" not in out


@pytest.mark.parametrize(
    ("argv", "database"),
    [
        (["serve", "a.db"], "a.db"),
        (["serve", "--db", "a.db"], "a.db"),
        (["demo", "serve"], "data/demo.db"),
        (["demo", "serve", "a.db"], "a.db"),
        (["demo", "run", "--db", "a.db"], "a.db"),
        (["jobs", "serve", "--store", "postgresql://h/db"], "postgresql://h/db"),
        (["jobs", "serve", "a.db"], "a.db"),
        (["jobs", "stress"], None),
        (["jobs", "stress", "--database", "a.db"], "a.db"),
    ],
)
def test_the_database_is_positional_and_old_spellings_still_work(
    argv: list[str], database: str | None
) -> None:
    from onewriter.cli.flags import merge_database
    from onewriter.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    merge_database(parser, args)
    assert args.database == database


def test_two_different_databases_are_refused(db_path: str) -> None:
    code, _, err = onewriter_cli("serve", db_path, "--db", db_path + ".other")
    assert code == 2
    assert "two databases given" in err


# -- output -----------------------------------------------------------------------------------


def test_stats_formats_each_kind_of_figure(db_path: str, serve: Serve) -> None:
    code, out, err = onewriter_cli("stats", db_path)
    assert code == 0, err
    table = dict(line.split(None, 1) for line in out.splitlines()[2:])
    table = {name: value.strip() for name, value in table.items()}
    assert table["pid"] == str(serve.writer_pid)  # no thousands separator
    assert not any(name.startswith("transactions") for name in table)  # no such protocol
    assert figure("anything.p99", None) == "-"  # a figure not known yet
    assert table["draining"] == "no"
    assert re.fullmatch(r"\d+\.\d\d ms", table["commit_ms.p99"]), table["commit_ms.p99"]
    assert re.fullmatch(r"\d+", table["batch_size.max"]), table["batch_size.max"]
    assert re.fullmatch(r"[\d.,]+ (B|KiB|MiB)", table["wal_bytes"]), table["wal_bytes"]
    assert "\x1b" not in out  # not a terminal: plain text


def test_stats_on_a_terminal_is_a_rich_table(db_path: str, serve: Serve) -> None:
    pytest.importorskip("rich")
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [ONEWRITER_CLI, "stats", db_path],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.DEVNULL,
            env=child_env(),
        )
        os.close(terminal)
        terminal = -1
        output = b""
        with contextlib.suppress(OSError):  # EIO once the child has closed its end
            while chunk := os.read(controller, 65536):
                output += chunk
        assert proc.wait(30) == 0
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    text = output.decode()
    assert "─" in text or "━" in text, text  # rich's rule under the headers
    assert "--------" not in text
    assert str(serve.writer_pid) in text


def test_the_wal_reset_note_is_written_once_per_writer(db_path: str, tmp_path: Path) -> None:
    from onewriter.sqlite.versions import wal_reset_bug_affects

    if not wal_reset_bug_affects(sqlite3.sqlite_version_info):
        pytest.skip("this SQLite has no WAL-reset race to note")
    service = ServiceProcess(str(tmp_path / "demo.db"), workers=2, stderr=subprocess.PIPE)
    try:
        with service:
            assert service.process is not None
            service.stop()
            assert service.process.stderr is not None
            err = service.process.stderr.read()
    finally:
        # Closed here even when the service failed to start: a pipe left to the garbage
        # collector warns in whichever test runs next.
        if service.process is not None and service.process.stderr is not None:
            service.process.stderr.close()
    assert err.count("has the WAL-reset race") == 1, err
    assert "https://www.sqlite.org/wal.html#walresetbug" in err
    assert "docs/operations.md" not in err


def _drawn_on_a_terminal(draw: Callable[[TextIO], None]) -> str:
    """What ``draw(out)`` wrote on a pseudo-terminal."""
    controller, device = pty.openpty()
    out = os.fdopen(device, "w")
    try:
        draw(out)
    finally:
        out.close()
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := os.read(controller, 65536):
            chunks.append(chunk)
    os.close(controller)
    return b"".join(chunks).decode()


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_pipe(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    from onewriter.cli.progress import LiveProgress

    def draw(out: TextIO) -> None:
        shown = LiveProgress("load", 10, out=out)
        for i in range(11):
            shown.update(i, f"{i} requests")
        shown.close()

    drawn = _drawn_on_a_terminal(draw)
    assert "━" in drawn and "100%" in drawn and "10 requests" in drawn

    with open(tmp_path / "log", "w") as pipe:  # not a terminal
        shown = LiveProgress("load", 10, out=pipe, every=3600)
        for i in range(11):
            shown.update(i, f"{i} requests")
        shown.close()
    assert (tmp_path / "log").read_text() == "load: 0 requests\nload: 10 requests\n"
