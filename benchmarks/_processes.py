"""Child processes of the benchmarks: ``onewriter serve``, waiting for a line, stopping, a
throwaway Redis."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

START_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent


def wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = START_TIMEOUT) -> str:
    """The first line of ``proc``'s stdout that contains ``needle``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no {needle!r} line from {proc.args!r}")
        if select.select([proc.stdout], [], [], left)[0]:
            line = proc.stdout.readline()
            if needle in line:
                return line


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def start_redis(directory: str, attempts: int = 3) -> tuple[subprocess.Popen[str], str] | None:
    """A throwaway redis-server on a free loopback port, no persistence; None if missing.
    Another port is tried when the chosen one was taken before the server bound it."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    for attempt in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", directory, "--save", ""],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_line(proc, "Ready to accept connections")
        except RuntimeError:
            stop(proc)
            if attempt == attempts - 1:
                raise
            continue
        except BaseException:
            stop(proc)
            raise
        return proc, f"redis://127.0.0.1:{port}/0"
    return None


def serve_onewriter(
    database: str, flags: Sequence[str], directory: str
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``onewriter serve database *flags``, waited on until its READY line; returns the
    process and that line's ``key=value`` words. Its log (the SQLite version warning,
    say) goes to a file in ``directory``, shown only if it fails to start, so that it
    does not come between the benchmark's own lines."""
    command = [sys.executable, "-m", "onewriter.cli", "serve", database, *flags]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    log = os.path.join(directory, "serve.log")
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        line = wait_line(proc, "READY", START_TIMEOUT)
    except BaseException:
        stop(proc)
        print(Path(log).read_text()[-2000:], file=sys.stderr)
        raise
    return proc, dict(word.split("=", 1) for word in line.split() if "=" in word)
