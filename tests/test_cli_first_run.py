"""What a new user meets first, run as the real commands: missing extras, a database in
a missing folder, no writer, a bad --ops, a writer started from other code than its
clients. Each ends in one line and a non-zero exit, never a traceback or a retry loop.

"Without extras" is a ``sitecustomize`` (tests/no_extras) that makes the packages of the
optional extras unimportable, as after a bare ``pip install onewriter``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ONEWRITER_CLI, TESTS_DIR, Child, Children, child_env, create_post, ops

import onewriter

NO_EXTRAS = str(TESTS_DIR / "no_extras")


def no_extras_env(block: str | None = None) -> dict[str, str]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([NO_EXTRAS, env["PYTHONPATH"]])
    if block is not None:
        env["NO_EXTRAS_BLOCK"] = block
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONEWRITER_CLI, *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The only line on stderr of a command that failed with exit 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- without extras -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["demo", "serve", "--port", "0"], "http"),
        (["demo", "run", "--duration", "1"], "http"),
        (["jobs", "serve", "{db}", "--port", "0"], "http"),
        (["jobs", "work", "--queue", "q", "--handler", "helpers:ops"], "http"),
        (["jobs", "stress", "--configs", "light"], "http"),
        (["serve", "{db}", "--redis", "redis://127.0.0.1:1/0"], "redis"),
        (["serve", "{db}", "--writer-loop", "uvloop"], "speed"),
    ],
)
def test_a_command_without_its_extra_names_the_pip_install(
    tmp_path: Path, args: list[str], extra: str
) -> None:
    db = str(tmp_path / "app.db")
    result = cli(*(a.format(db=db) for a in args), env=no_extras_env(), cwd=str(tmp_path))
    line = one_line(result)
    assert line.startswith("onewriter: MISSING_EXTRA: ")
    assert f"pip install 'onewriter[{extra}]'" in line


def test_writer_loop_auto_without_uvloop_runs_on_asyncio(tmp_path: Path) -> None:
    code = (
        "import onewriter\n"
        f"db = onewriter.connect({str(tmp_path / 'app.db')!r}, role='writer', writer_loop='auto')\n"
        "print(db.stats()['writer_loop'])\n"
        "db.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=no_extras_env(),
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "asyncio"


def test_connect_to_redis_without_the_extra_raises_missing_extra() -> None:
    code = (
        "import onewriter\n"
        "try:\n"
        "    onewriter.connect('redis://127.0.0.1:1/0')\n"
        "except onewriter.MissingExtra as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print(exc.code, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=no_extras_env(),
        timeout=30,
        check=True,
    )
    assert result.stdout.startswith("MISSING_EXTRA ")
    assert "pip install 'onewriter[redis]'" in result.stdout


def test_a_worker_failing_at_start_up_twice_stops_the_demo_service(tmp_path: Path) -> None:
    # The extras are there, but the workers cannot import the app: each start fails the
    # same way, so the primary stops after the second failure and says why.
    started = time.monotonic()
    result = cli(
        "demo",
        "serve",
        str(tmp_path / "demo.db"),
        "--port",
        "0",
        "--workers",
        "2",
        env=no_extras_env(block="onewriter.demo.app"),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "failed at start-up twice" in last
    assert "No module named 'onewriter.demo.app'" in last
    assert "READY" not in result.stdout
    starts = [ln for ln in result.stderr.splitlines() if ln.startswith("ModuleNotFoundError")]
    assert 2 <= len(starts) <= 4, result.stderr  # at most two starts per slot
    assert elapsed < 30, elapsed  # it did not wait out READY_TIMEOUT (60 s)


def test_demo_run_says_the_service_did_not_start(tmp_path: Path) -> None:
    result = cli(
        "demo",
        "run",
        str(tmp_path / "demo.db"),
        "--duration",
        "1",
        env=no_extras_env(block="onewriter.demo.app"),
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "onewriter demo run: the demo service exited with 1 before it was ready"


# -- a database in a missing folder ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "{db}"],
        ["jobs", "serve", "{db}", "--port", "0", "--workers", "0"],
        ["demo", "serve", "{db}", "--port", "0"],
        ["demo", "serve", "--db", "{db}", "--port", "0"],
        ["demo", "run", "{db}", "--duration", "1"],
        ["stats", "{db}"],
    ],
)
def test_a_database_in_a_missing_folder_is_one_line_naming_the_folder(
    tmp_path: Path, args: list[str]
) -> None:
    db = str(tmp_path / "missing" / "app.db")
    line = one_line(cli(*(a.format(db=db) for a in args)))
    assert line.startswith("onewriter: NO_SUCH_FOLDER: ")
    assert f"create {tmp_path / 'missing'} first" in line
    assert not (tmp_path / "missing").exists()


def test_connect_in_a_missing_folder_raises_no_such_folder(tmp_path: Path) -> None:
    with pytest.raises(onewriter.NoSuchFolder, match=r"create .*missing first") as caught:
        onewriter.connect(str(tmp_path / "missing" / "app.db"))
    assert caught.value.code == "NO_SUCH_FOLDER"


# -- no writer, bad --ops --------------------------------------------------------------------


def test_stats_without_a_writer_says_so_at_once(db_path: str) -> None:
    started = time.monotonic()
    line = one_line(cli("stats", db_path, "--timeout", "60"))
    assert time.monotonic() - started < 30  # not the 60 s timeout
    assert line == (
        f"onewriter: WRITER_UNAVAILABLE: no writer is running for {os.path.realpath(db_path)}: "
        f"start one with onewriter serve {db_path}"
    )
    assert not os.path.exists(db_path + ".onewriter.lock")  # the probe created nothing


def test_a_client_without_a_writer_is_told_nobody_holds_the_lock(db_path: str) -> None:
    with pytest.raises(onewriter.WriterUnavailable, match="no writer is running"):
        onewriter.connect(db_path, role="client", failover_timeout=0.2)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module:ops", "cannot import no_such_module: No module named 'no_such_module'"),
        ("helpers:no_such_ops", "helpers has no attribute no_such_ops"),
        ("helpers", "expected module:attribute"),
        ("helpers:MIGRATIONS", "is not an onewriter.Ops registry"),
    ],
)
def test_an_ops_registry_that_cannot_be_loaded_is_one_line(
    db_path: str, spec: str, says: str
) -> None:
    line = one_line(cli("serve", db_path, "--ops", spec))
    assert line.startswith(f"onewriter: --ops {spec}")
    assert says in line


def test_serve_without_ops_says_the_registry_is_empty(db_path: str, children: Children) -> None:
    server = Child([ONEWRITER_CLI, "serve", db_path])
    children.started.append(server)
    server.wait_line("READY")
    server.stop()
    assert any("no --ops given" in line for line in server.stderr_lines), server.stderr_lines


# -- a writer started from other code than its clients ----------------------------------------


def test_a_client_with_ops_and_migrations_the_writer_lacks_is_warned(
    db_path: str, children: Children, caplog: pytest.LogCaptureFixture
) -> None:
    server = Child([ONEWRITER_CLI, "serve", db_path, "--ops", "helpers:ops"])
    children.started.append(server)
    server.wait_line("READY")
    newer = onewriter.Ops()
    newer.register(name="create_post")(create_post.fn)
    newer.register(name="archive_post")(lambda conn, post_id: None)
    migrations = ["CREATE TABLE IF NOT EXISTS later (id INTEGER PRIMARY KEY)"]
    with caplog.at_level(logging.WARNING, logger="onewriter.client"):
        with onewriter.connect(db_path, ops=newer, role="client", migrations=migrations) as db:
            db.stats()
        with onewriter.connect(db_path, ops=ops, role="client") as db:
            db.stats()  # the same registry as the writer's: nothing to say
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "the writer lacks ops this process registered: archive_post" in warnings[0]
    assert "has 1 migrations but the writer's database is at version 0" in warnings[1]


def test_an_async_client_is_warned_too(db_path: str, children: Children) -> None:
    server = Child([ONEWRITER_CLI, "serve", db_path, "--ops", "helpers:ops"])
    children.started.append(server)
    server.wait_line("READY")
    code = (
        "import asyncio, logging, onewriter\n"
        "logging.basicConfig(format='%(message)s')\n"
        "ops = onewriter.Ops()\n"
        "ops.register(name='brand_new')(lambda conn: None)\n"
        "async def main():\n"
        f"    async with onewriter.connect_async({db_path!r}, ops=ops, role='client') as db:\n"
        "        await db.stats()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
        check=True,
    )
    assert "the writer lacks ops this process registered: brand_new" in result.stderr


def test_a_key_without_sqlcipher_names_the_pip_install(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("a long enough passphrase\n")
    key_file.chmod(0o600)
    result = cli(
        "serve",
        str(tmp_path / "app.db"),
        "--ops",
        "helpers:ops",
        "--key-file",
        str(key_file),
        env=no_extras_env(block="sqlcipher3"),
    )
    line = one_line(result)
    assert line.startswith("onewriter: MISSING_EXTRA: a key (SQLCipher) needs the sqlcipher")
    assert "pip install 'onewriter[sqlcipher]'" in line
