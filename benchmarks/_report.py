"""Writing benchmark figures into docs/benchmarks.md, one marked section per benchmark."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_HEADER = """# Benchmarks

Every figure below was written by the command shown above it, on the machine named in
its section; `scripts/bench` runs them all, `scripts/bench NAME` one.
`python -m benchmarks.NAME --help` says what one measures and how to run it, and
`--no-write` prints a run's figures without changing this page. Timings on a
shared 2-core virtual machine are noisy: two runs of the same command differed by up to
40 % here. Read them as ratios between columns of one run, not as absolutes.
"""


def machine() -> str:
    """One line naming the machine, for the record."""
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def update_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n## {title}\n\n`{command}`\n\n{machine()}\n\n{body.rstrip()}\n{end}"
    text = DOC.read_text() if DOC.exists() else _HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote section {name!r} of {DOC}", file=sys.stderr)
