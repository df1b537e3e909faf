"""Fixtures: a fresh database path, child processes stopped at teardown, and databases
opened by a test closed at teardown (an unclosed one would warn, and warnings fail)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import MIGRATIONS, Children, ops

import onewriter


@pytest.fixture
def db_path(tmp_path: Any) -> str:
    """A database file that does not exist yet."""
    return str(tmp_path / "app.db")


@pytest.fixture
def children() -> Iterator[Children]:
    """Start child processes through this; each is stopped terminate -> wait -> kill."""
    started = Children()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def open_db(db_path: str) -> Iterator[Callable[..., onewriter.Database]]:
    """``open_db(**config)``: connect to the test database with the test ops and schema."""
    opened: list[onewriter.Database] = []

    def connect(path: str | None = None, **config: Any) -> onewriter.Database:
        config.setdefault("migrations", MIGRATIONS)
        db = onewriter.connect(path or db_path, ops=ops, **config)
        opened.append(db)
        return db

    try:
        yield connect
    finally:
        for db in reversed(opened):
            db.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory under /tmp (for socket paths that must stay short)."""
    path = tempfile.mkdtemp(prefix="ow-")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)


@pytest.fixture(autouse=True)
def _no_inherited_onewriter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith("ONEWRITER_"):
            monkeypatch.delenv(name)
