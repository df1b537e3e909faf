"""A throwaway PostgreSQL server for the tests (and the jobs benchmark): ``initdb`` in a
temporary directory, ``pg_ctl start`` on a free loopback port with its Unix socket in that
directory, stopped (fast, then immediate) and removed at teardown. Never the machine's own
server. ``initdb`` refuses to run as root, so as root the server runs as the ``postgres``
user (through ``runuser``). Tests that need it are skipped, with the reason, when the
binaries, that user or psycopg are missing.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

#: Settings for tests: nothing is worth an fsync in a database thrown away at the end.
FAST = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}
_TIMEOUT = 30
_SERVICE_USER = "postgres"


def _binaries() -> tuple[str, str] | None:
    """``initdb`` and ``pg_ctl``: on the PATH, else the newest Debian-style install."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = os.path.join(folder, "initdb"), os.path.join(folder, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _as_user() -> tuple[list[str], str | None] | None:
    """The command prefix that runs a program as a user initdb accepts, and that user's
    name (``None``: this one); ``None`` when there is no such way."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        return None
    if runuser is None:
        return None
    return [runuser, "-u", _SERVICE_USER, "--"], _SERVICE_USER


def _unavailable() -> str | None:
    if not all(importlib.util.find_spec(name) for name in ("psycopg", "psycopg_pool")):
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if _binaries() is None:
        return "PostgreSQL's initdb and pg_ctl were not found"
    if _as_user() is None:
        return f"running as root without a {_SERVICE_USER!r} user (and runuser) for initdb"
    return None


UNAVAILABLE = _unavailable()

needs_postgres = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server in its own directory, started with ``pg_ctl start -w`` (it returns once
    the server accepts connections) and reachable as ``self.url`` (trust auth)."""

    def __init__(self, settings: dict[str, str] | None = None, *, attempts: int = 3) -> None:
        found, user = _binaries(), _as_user()
        assert found is not None and user is not None, UNAVAILABLE
        (self._initdb, self._pg_ctl), (self._prefix, owner) = found, user
        self.directory = tempfile.mkdtemp(prefix="ow-pg-")
        if owner is not None:
            record = pwd.getpwnam(owner)
            os.chown(self.directory, record.pw_uid, record.pw_gid)
        self.data = os.path.join(self.directory, "data")
        self.log = os.path.join(self.directory, "server.log")
        self.settings = {**FAST, **(settings or {})}
        self.port = 0
        try:
            self._run(
                self._initdb, "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip
            self._start(attempts)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._prefix, *command],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT + 10,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command[:2])} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{self.log_tail()}"
            )
        return result

    def _start(self, attempts: int) -> None:
        """Start on a free port; another one if that port was taken in the meantime."""
        for attempt in range(attempts):
            self.port = free_port()
            options = [f"-p {self.port}", f"-k {self.directory}", "-c listen_addresses=127.0.0.1"]
            options += [f"-c {name}={value}" for name, value in self.settings.items()]
            result = self._run(
                self._pg_ctl, "-D", self.data, "-l", self.log, "-w", "-t", str(_TIMEOUT),
                "-o", " ".join(options), "start",
                check=attempt == attempts - 1,
            )  # fmt: skip
            if result.returncode == 0:
                return

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log).read_text().splitlines()[-lines:])
        return ""

    def fresh_url(self, **settings: str) -> str:
        """The URL of a new, empty schema of its own (its tables are not seen by others):
        a clean store for one test, without the cost of a new database. ``settings`` are
        set on each of its sessions (``synchronous_commit="off"``)."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        options = [f"-c search_path={schema}"] + [f"-c {k}={v}" for k, v in settings.items()]
        return f"{self.url}?options={quote(' '.join(options))}"

    def stop(self) -> None:
        """Fast shutdown (then immediate), and the directory removed."""
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                stopped = self._run(
                    self._pg_ctl, "-D", self.data, "-m", "fast", "-w", "-t", "20", "stop",
                    check=False,
                )  # fmt: skip
                if stopped.returncode != 0:
                    self._run(self._pg_ctl, "-D", self.data, "-m", "immediate", "stop", check=False)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


_shared: PostgresServer | None = None
_users = 0


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the whole session, shared by every module that imports this fixture
    (each import is a fixture of its own to pytest; the last to finish stops it)."""
    global _shared, _users
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    if _shared is None:
        _shared = PostgresServer()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.stop()
            _shared = None
