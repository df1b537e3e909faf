"""The snippets of docs/remote.md, run as written: the shell commands start a real writer,
the Python snippets write through it. Only the addresses and paths are replaced (a free
loopback port, a scratch folder) and ``myapp.ops`` is a small module made here."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ONEWRITER_CLI, Child, Children, child_env
from redis_server import RedisServer, redis_server  # noqa: F401  (a fixture)
from test_tcp import certificate  # noqa: F401  (a fixture)

DOC = (Path(__file__).resolve().parent.parent / "docs" / "remote.md").read_text()

MYAPP_OPS = """
import onewriter

ops = onewriter.Ops()


@ops.register
def create_post(conn, title):
    conn.execute("INSERT INTO posts (title) VALUES (?)", (title,))


MIGRATIONS = ["CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)"]
"""


def snippets(section: str) -> list[tuple[str, str]]:
    """The (language, code) of each fenced block under ``## section``."""
    start = DOC.index(f"\n## {section}\n")
    end = DOC.find("\n## ", start + 1)
    text = DOC[start : end if end != -1 else len(DOC)]
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def scratch_app(tmp_path: Path) -> dict[str, str]:
    """``myapp.ops`` in ``tmp_path``, and the environment that finds it and the CLI."""
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "ops.py").write_text(MYAPP_OPS)
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env["PATH"] = os.pathsep.join([os.path.dirname(ONEWRITER_CLI), env.get("PATH", "")])
    return env


def start_writer(children: Children, command: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a documented ``onewriter serve`` command; its READY line."""
    child = Child(["bash", "-c", f"cd {cwd} && exec {command}"], env=env)
    children.started.append(child)
    return child.wait_line("READY ")


def run_python(code: str, cwd: Path, env: dict[str, str]) -> None:
    """Run a snippet, its top-level ``async with`` block inside ``asyncio.run``."""
    lines = code.splitlines()
    first_async = next((i for i, line in enumerate(lines) if line.startswith("async ")), None)
    if first_async is not None:
        lines = [
            *lines[:first_async],
            "async def _main():",
            *(f"    {line}" for line in lines[first_async:]),
            "asyncio.run(_main())",
        ]
    prelude = ["import asyncio", "import onewriter", "from myapp.ops import create_post"]
    prelude.append("titles = ['one', 'two', 'three']")
    script = "\n".join([*prelude, *lines])
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{script}\n---\n{result.stderr}"


def posts(database: Path) -> int:
    conn = sqlite3.connect(database)
    try:
        count: int = conn.execute("SELECT count(*) FROM posts").fetchone()[0]
        return count
    finally:
        conn.close()


def test_the_tcp_snippets_run_as_documented(
    tmp_path: Path,
    children: Children,
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    env = scratch_app(tmp_path)
    token = str(tmp_path / "token")
    shell = next(code for lang, code in snippets("TCP") if lang == "bash")
    make_token, serve = shell.strip().split("\n", 1)
    [client] = [code for lang, code in snippets("TCP") if lang == "python"]
    make_token = make_token.replace("/etc/onewriter/token", token)
    subprocess.run(["bash", "-c", make_token], check=True, timeout=30)
    assert Path(token).read_text().endswith("\n")  # the newline base64 wrote stays
    serve = serve.replace("/etc/onewriter/token", token).replace("0.0.0.0:7480", "127.0.0.1:0")
    ready = start_writer(children, serve.replace("\\\n", " "), tmp_path, env)
    url = next(w.split("=", 1)[1] for w in ready.split() if w.startswith("listen="))

    client = client.replace("/etc/onewriter/token", token)
    run_python(client.replace("tcp://writer.internal:7480", url), tmp_path, env)
    assert posts(tmp_path / "app.db") == 1 + 3


def test_the_redis_snippets_run_as_documented(
    tmp_path: Path,
    children: Children,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    env = scratch_app(tmp_path)
    [(_, serve), (_, client)] = snippets("Redis")[:2]
    address = f"127.0.0.1:{redis_server.port}"
    serve = serve.replace("redis.internal:6379", address).replace("\\\n", " ").strip()
    start_writer(children, serve, tmp_path, env)

    run_python(client.replace("redis.internal:6379", address), tmp_path, env)
    deadline = time.monotonic() + 20
    while posts(tmp_path / "app.db") < 2:  # the fire-and-forget write lands when it lands
        assert time.monotonic() < deadline, "the fire-and-forget write never landed"
        time.sleep(0.05)


@pytest.mark.parametrize("section", ["TCP", "Redis"])
def test_the_documented_serve_commands_name_the_migrations(section: str) -> None:
    serve = next(code for lang, code in snippets(section) if "onewriter serve" in code)
    assert "--migrations" in serve
