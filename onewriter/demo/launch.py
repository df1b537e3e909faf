"""Starting the demo service as a child process and waiting for its READY line.

Used by ``onewriter demo run``, the benchmark and the tests: every wait has a deadline
and stopping goes SIGTERM, wait, then SIGKILL.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

READY = re.compile(r"^READY port=(\d+) url=(\S+) pid=(\d+) workers=([\d,]+)")


class ServiceProcess:
    """``onewriter demo serve`` in a child process; its stdout lines kept for waiting on."""

    def __init__(
        self,
        database: str,
        *,
        workers: int = 2,
        port: int = 0,
        naive: bool = False,
        durability: str = "normal",
        extra: Sequence[str] = (),
        stderr: int | None = None,
    ) -> None:
        self.command = [
            sys.executable,
            "-m",
            "onewriter.cli",
            "demo",
            "serve",
            database,
            "--workers",
            str(workers),
            "--port",
            str(port),
            "--durability",
            durability,
            *(["--naive"] if naive else []),
            *extra,
        ]
        self.stderr = stderr
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self.port = 0
        self.url = ""
        self.pid = 0
        self.worker_pids: list[int] = []

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        """Start the service and return once it printed READY (or raise)."""
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="demo-stdout", daemon=True)
        self._reader.start()
        try:
            match = READY.match(self.wait_for(READY.pattern, timeout))
        except BaseException:
            self.stop()
            raise
        assert match is not None
        self.port = int(match[1])
        self.url = match[2]
        self.pid = int(match[3])
        self.worker_pids = [int(p) for p in match[4].split(",")]
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> str:
        """The first line from index ``start`` on matching ``pattern`` (waits for it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self.lines)
                exited = self.process is None or self.process.poll() is not None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (exited and not self._reader_alive()):
                    tail = "\n".join(self.lines[-20:])
                    state = "exited" if exited else "still running"
                    raise TimeoutError(f"no line matching {pattern!r} ({state}); output:\n{tail}")
                self._changed.wait(min(remaining, 0.5))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def __enter__(self) -> ServiceProcess:
        return self if self.process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
