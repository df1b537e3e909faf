"""Bad input, fuzzed: arbitrary frames and sequences of valid and broken requests thrown
at a live writer process, while a well-behaved client keeps writing beside them.

The strategies and the checks live in the standalone fuzz target (fuzz/writer_fuzz.py);
this runs a bounded number of its examples.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

import writer_fuzz
from writer_fuzz import LiveWriter, Script, attack, live_writer, record, scripts

import onewriter


class SteadyClient:
    """A well-behaved client writing on its own thread for as long as the attack lasts."""

    def __init__(self, database: str) -> None:
        self.db = onewriter.connect(database, ops=writer_fuzz.ops, role="client")
        self.written = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):  # a steady trickle, not a load test
            try:
                self.db.write(record, token=f"steady-{self.written}")
                self.written += 1
            except onewriter.OneWriterError as exc:
                self.errors.append(f"{exc.code}: {exc.message}")

    def halt(self) -> None:
        """Stop writing (and wait for the write in progress), so counts can be compared."""
        self._stop.set()
        self._thread.join(30)

    def stop(self) -> None:
        self.halt()
        self.db.close()


@pytest.fixture(scope="module")
def writer() -> Iterator[LiveWriter]:
    with live_writer() as live:
        yield live


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=scripts)
def _attack_examples(writer: LiveWriter, script: Script) -> None:
    attack(writer, script)


def test_the_writer_survives_arbitrary_input_beside_a_steady_client(writer: LiveWriter) -> None:
    """The attack runs while a well-behaved client writes; nothing failed beside it."""
    writer_fuzz.seen.clear()
    steady = SteadyClient(writer.db)
    try:
        _attack_examples(writer)
    finally:
        steady.stop()
    writer.assert_alive()
    assert steady.errors == []
    assert steady.written >= 10
    assert sum(1 for t in writer.tokens("steady-").values() if t == 1) >= steady.written
    seen = writer_fuzz.seen
    assert seen["ok"] > 0 and seen["BAD_REQUEST"] > 0, dict(seen)
