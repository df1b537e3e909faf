"""Every benchmark's ``--help``: named the way it is run (``python -m benchmarks.X``), its
usage examples shown as written rather than folded into a paragraph, and ``--no-write``
to print a run without touching docs/."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = sorted(
    p.stem for p in (ROOT / "benchmarks").glob("*.py") if "_cli.parser(" in p.read_text()
)


def _example_lines(module: str) -> list[str]:
    """The module's example commands, read from its source (importing a benchmark here
    could set up Django or SQLAlchemy for the rest of the test session)."""
    source = (ROOT / "benchmarks" / f"{module}.py").read_text()
    doc = ast.get_docstring(ast.parse(source), clean=False) or ""
    return [line.strip() for line in doc.splitlines() if line.startswith("    python -m ")]


def test_the_benchmarks_are_found() -> None:
    assert {"funnel", "remote", "writes", "failover"} <= set(ENTRY_POINTS)
    assert _example_lines("remote")


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help(module: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m benchmarks.{module} ")
    assert "--no-write" in done.stdout
    shown = {line.strip() for line in done.stdout.splitlines()}
    for example in _example_lines(module):
        assert example in shown, (module, example)


SHORT_RUN = ["--rounds", "1", "--seconds", "0.1"]


def test_no_write_prints_and_leaves_the_doc_alone() -> None:
    """A short run of the one benchmark that needs no server: its table is printed and
    docs/benchmarks.md is not touched."""
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.client_path", *SHORT_RUN, "--no-write"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "best / floor" in done.stdout and "channel once" in done.stdout
    assert doc.read_bytes() == before
