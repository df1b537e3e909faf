"""Every benchmark's ``--help`` shows its usage examples as written, not reflowed into a
paragraph, and names the command the way it is run (``python -m benchmarks.X``)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def _example_lines(module: str) -> list[str]:
    """The module's example commands, read from its source (importing a benchmark here
    could set up Django or SQLAlchemy for the rest of the test session)."""
    source = (ROOT / "benchmarks" / f"{module}.py").read_text()
    doc = ast.get_docstring(ast.parse(source), clean=False) or ""
    return [line.strip() for line in doc.splitlines() if line.startswith("    python -m ")]


WITH_EXAMPLES = [m for m in MODULES if _example_lines(m)]


def test_some_benchmarks_carry_examples() -> None:
    assert "remote" in WITH_EXAMPLES and "failover" in WITH_EXAMPLES


@pytest.mark.parametrize("module", WITH_EXAMPLES)
def test_help_keeps_the_examples(module: str) -> None:
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
    shown = {line.strip() for line in done.stdout.splitlines()}
    for example in _example_lines(module):
        assert example in shown, (module, example)
