"""The write turn itself, with real processes: bounded waits, owner death, fairness, fork."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from onewriter.turn import TurnTimeout, turn_for, turn_path

HOLDER = textwrap.dedent(
    """
    import sys, time
    from onewriter.turn import turn_for
    turn = turn_for(sys.argv[1])
    turn.acquire(10)
    print("HOLDING", flush=True)
    time.sleep(60)
    """
)

COUNTER = textwrap.dedent(
    """
    import sys, time
    from onewriter.turn import turn_for
    turn = turn_for(sys.argv[1])
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    end, turns = time.monotonic() + float(sys.argv[3]), 0
    while time.monotonic() < end:
        with turn.holding(30):
            spin = time.perf_counter() + 0.0002
            while time.perf_counter() < spin:
                pass
        turns += 1
    print(turns, flush=True)
    """
)


def _db(tmp_path: Path) -> str:
    path = tmp_path / "t.db"
    path.touch()
    return str(path)


def _start_holder(db: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "HOLDING"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_reentrant_per_thread_and_release_checks(tmp_path: Path) -> None:
    turn = turn_for(_db(tmp_path))
    outer = turn.acquire(1)
    assert turn.acquire(1) is outer and outer.depth == 2
    turn.release()
    assert turn.held() is outer
    turn.release()
    assert turn.held() is None
    with pytest.raises(RuntimeError):
        turn.release()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    turn = turn_for(_db(tmp_path))
    inside, worst = [0], [0]

    def work() -> None:
        for _ in range(300):
            with turn.holding(10):
                inside[0] += 1
                worst[0] = max(worst[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert worst[0] == 1


def test_waiter_times_out_while_another_process_holds(tmp_path: Path) -> None:
    db = _db(tmp_path)
    holder = _start_holder(db)
    try:
        started = time.monotonic()
        with pytest.raises(TurnTimeout) as err:
            turn_for(db).acquire(0.3)
        assert err.value.code == "TIMEOUT"
        assert time.monotonic() - started >= 0.29
    finally:
        _stop(holder)


def test_stopped_holder_makes_waiters_time_out_then_hand_on(tmp_path: Path) -> None:
    db = _db(tmp_path)
    holder = _start_holder(db)
    try:
        os.kill(holder.pid, signal.SIGSTOP)
        with pytest.raises(TurnTimeout):
            turn_for(db).acquire(0.2)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        _stop(holder)
    with turn_for(db).holding(5) as hold:
        assert hold.depth == 1


def test_killed_holder_frees_the_turn_at_once(tmp_path: Path) -> None:
    db = _db(tmp_path)
    holder = _start_holder(db)
    turn = turn_for(db)
    waited: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        with turn.holding(20):
            waited.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    killed_at = time.monotonic()
    _stop(holder)
    waiter.join(20)
    assert waited, "the waiter never got the turn"
    assert waited[0] >= 0.15  # it was waiting when the holder died
    assert time.monotonic() - killed_at < 10  # handed on, far inside its own timeout


def test_stale_file_from_a_reboot_is_reinitialised(tmp_path: Path) -> None:
    db = _db(tmp_path)
    path = turn_path(db)
    turn_for(db)  # creates the file
    # A file as a crash before a reboot leaves it: both mutexes "owned" by a gone thread.
    data = bytearray(Path(path).read_bytes())
    for offset in (64, 192):
        data[offset : offset + 4] = struct.pack("i", 0x7FFF_FFF0)
    Path(path).write_bytes(bytes(data))
    code = "import sys; from onewriter.turn import turn_for; turn_for(sys.argv[1]).acquire(2)"
    # This process still maps the file, so only a fresh process with it alone counts:
    other = tmp_path / "copy.db"
    other.touch()
    Path(turn_path(str(other))).write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-c", code, str(other)], timeout=30)
    assert done.returncode == 0


def test_watchdog_marks_and_interrupts_an_overdue_holder(tmp_path: Path) -> None:
    turn = turn_for(_db(tmp_path))
    interrupted = threading.Event()
    with turn.holding(1, limit=0.1, interrupt=interrupted.set) as hold:
        assert interrupted.wait(5)
        assert hold.overdue
    with turn.holding(1, limit=5) as hold:
        assert not hold.overdue


def test_forked_child_does_not_inherit_the_hold(tmp_path: Path) -> None:
    turn = turn_for(_db(tmp_path))
    with turn.holding(1):
        pid = os.fork()
        if pid == 0:  # child: it holds nothing, and waits like anyone else
            code = 0 if turn.held() is None else 1
            try:
                turn.acquire(0.2)
                code = 2
            except TurnTimeout:
                pass
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_every_process_gets_a_fair_share(tmp_path: Path) -> None:
    db = _db(tmp_path)
    turn_for(db)
    n, seconds = 6, 3.0
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COUNTER, db, str(start), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    counts = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        counts.append(int(out))
    fair = sum(counts) / n
    assert min(counts) >= fair / 3, counts
