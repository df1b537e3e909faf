"""A type checker catches a wrong op argument at the call site (ParamSpec on ``Op``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import TESTS_DIR

SNIPPET = """\
import sqlite3

import onewriter

ops = onewriter.Ops()


@ops.register
def create_post(conn: sqlite3.Connection, title: str, content: str | None = None) -> dict[str, int]:
    return {"id": 1}


def sync_use(db: onewriter.Database) -> None:
    post: dict[str, int] = db.write(create_post, title="x")
    db.write(create_post, title="x", content=None)
    db.write(create_post, "positional title")
    db.write("create_post", anything=1)
    db.write(create_post, titel="x")  # expect-error
    db.write(create_post, title=1)  # expect-error
    db.write(create_post)  # expect-error
    db.write(create_post, title="x", extra=True)  # expect-error
    wrong: str = db.write(create_post, title="x")  # expect-error


async def async_use(adb: onewriter.AsyncDatabase) -> None:
    post: dict[str, int] = await adb.write(create_post, title="x")
    await adb.write(create_post, titel="x")  # expect-error
"""


def test_mypy_rejects_wrong_op_arguments_and_accepts_right_ones(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    env = dict(os.environ, MYPYPATH=str(TESTS_DIR.parent))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--config-file=",
            f"--cache-dir={tmp_path / 'cache'}",
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    flagged = {int(m.group(1)) for m in re.finditer(r"snippet\.py:(\d+): error", result.stdout)}
    expected = {
        number
        for number, line in enumerate(SNIPPET.splitlines(), start=1)
        if line.endswith("# expect-error")
    }
    assert flagged == expected, result.stdout + result.stderr
    assert "titel" in result.stdout or "call-overload" in result.stdout
