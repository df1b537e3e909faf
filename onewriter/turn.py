"""The write turn: one fair cross-process lock per database file.

Every connection that writes the file or checkpoints it holds the turn around
``BEGIN IMMEDIATE … COMMIT``: local transactions on their own connection, and the
elected writer once per group-commit batch. SQLite then never sees two writers at once,
so nobody meets ``database is locked`` and the WAL-reset race cannot happen.

The turn is a pair of process-shared *robust* mutexes in a small file beside the
database (``<db>.onewriter.turn``), mapped by every process that writes:

- **handed on by the kernel**: a waiter sleeps on a futex and is woken by the release;
  nothing polls;
- **released when the holder dies**: the kernel marks a robust mutex whose owner
  died, and the next locker takes it over (``EOWNERDEAD``); SQLite has already thrown
  away the dead holder's uncommitted frames;
- **bounded**: waiters give up at their deadline (``pthread_mutex_clocklock``);
- **fair**: a *gate* mutex stands in front of the turn. At most one process waits on
  the turn itself, the rest wait at the gate, so a holder that releases and comes
  straight back queues behind the waiter already at the turn. It may first take the
  free turn a few times in a row (``_BARGE_LIMIT``) while the waiter is still being
  woken: handing on at every transaction costs a context switch each, which on a busy
  machine left the turn idle more than held.

The file is (re)initialised only by a process that can take an exclusive ``flock`` on
it, which no one can while another process has it mapped (each user keeps a shared
``flock``): a file left behind by a crash or a reboot never carries a stale owner.

Without robust mutexes in the C library (not glibc), the turn falls back to ``flock``
with short sleeps between tries: correct, bounded, but neither fair nor poll-free.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import DeadlineExceeded

log = logging.getLogger("onewriter.turn")

_MAGIC = b"onewriter-turn-1"
_FILE_SIZE = 4096
_GATE_OFFSET = 64
_TURN_OFFSET = 192
_MUTEX_BYTES = 128  # pthread_mutex_t is 40 bytes on x86-64 glibc, 48 on arm64
_CLOCK_MONOTONIC = 1
#: How often the watchdog looks for holders past their limit.
_WATCH_INTERVAL = 0.05
#: How many turns in a row a process may take while another waits, before it queues.
_BARGE_LIMIT = 8


class TurnTimeout(DeadlineExceeded):
    """The write turn was not free within the timeout; nothing was run."""


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def _load_libc() -> Any | None:
    """The C library's robust-mutex functions, or ``None`` where they are missing."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        needed = (
            "pthread_mutexattr_setrobust",
            "pthread_mutexattr_setpshared",
            "pthread_mutex_consistent",
            "pthread_mutex_timedlock",
        )
        for fn in needed:
            getattr(libc, fn)
    except (OSError, AttributeError):
        return None
    for fn in (
        "pthread_mutex_timedlock",
        "pthread_mutex_trylock",
        "pthread_mutex_unlock",
        "pthread_mutex_consistent",
    ):
        getattr(libc, fn).restype = ctypes.c_int
    libc.pthread_mutex_unlock.argtypes = (ctypes.c_void_p,)
    libc.pthread_mutex_trylock.argtypes = (ctypes.c_void_p,)
    libc.pthread_mutex_consistent.argtypes = (ctypes.c_void_p,)
    libc.pthread_mutex_timedlock.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    if hasattr(libc, "pthread_mutex_clocklock"):  # glibc >= 2.30: a monotonic deadline
        libc.pthread_mutex_clocklock.restype = ctypes.c_int
        libc.pthread_mutex_clocklock.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
    return libc


_libc = _load_libc() if os.name == "posix" else None


class Hold:
    """One thread's hold of the turn; ``overdue`` once it outlived its limit."""

    __slots__ = ("depth", "interrupt", "limit_at", "overdue", "waited_ms")

    def __init__(self) -> None:
        self.depth = 1
        #: How long this hold waited for the turn (0 where it was free).
        self.waited_ms = 0.0
        self.limit_at = 0.0
        self.interrupt: Callable[[], object] | None = None
        self.overdue = False


class _ThreadHolds(threading.local):
    """Per thread: its hold of the turn, and a spare one to reuse."""

    def __init__(self) -> None:
        self.hold: Hold | None = None
        self.spare: Hold | None = None


class _Watchdog:
    """One thread per process that interrupts holders past their limit.

    Only one thread of a process holds a given turn at a time, so each turn carries its
    current hold and the watchdog looks at the turns it was shown; taking and giving the
    turn cost two attribute stores, with no wake-up on the hot path.
    """

    def __init__(self) -> None:
        self.turns: list[WriteTurn] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, turn: WriteTurn) -> None:
        with self._lock:
            if turn not in self.turns:
                self.turns.append(turn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="onewriter-turn-watchdog", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(_WATCH_INTERVAL)
            now = time.monotonic()
            for turn in list(self.turns):
                hold = turn.current
                if hold is not None and not hold.overdue and now >= hold.limit_at:
                    hold.overdue = True
                    if hold.interrupt is not None:
                        try:
                            hold.interrupt()
                        except Exception:
                            log.exception("interrupting an overdue write turn failed")

    def reset_in_child(self) -> None:
        self.turns = []
        self._thread = None
        self._lock = threading.Lock()


_watchdog = _Watchdog()


class WriteTurn:
    """The write turn of one database file, as this process sees it.

    Re-entrant per thread: a thread that holds the turn and asks again gets the same
    hold (a second connection of that thread then meets SQLite's own lock, exactly as
    with plain sqlite3). Obtain it with :func:`turn_for`, one per file per process.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = _ThreadHolds()
        self._fd = _open_shared(path)
        self._mmap: mmap.mmap | None = None
        #: The hold of whichever thread of this process has the turn (for the watchdog).
        self.current: Hold | None = None
        self._watched = False
        self._barged = 0
        if _libc is not None:
            self._trylock = _libc.pthread_mutex_trylock
            self._unlock = _libc.pthread_mutex_unlock
            self._mmap = _map_mutexes(self._fd)
            self._anchor = ctypes.c_char.from_buffer(self._mmap)  # keeps the map open
            base = ctypes.addressof(self._anchor)
            self._gate = ctypes.c_void_p(base + _GATE_OFFSET)
            self._turn = ctypes.c_void_p(base + _TURN_OFFSET)
            # The gate's lock word, read as a hint: non-zero while someone queues.
            self._gate_word = ctypes.c_int.from_address(base + _GATE_OFFSET)
            self._clocklock = getattr(_libc, "pthread_mutex_clocklock", None)

    # -- holding ---------------------------------------------------------------------

    def held(self) -> Hold | None:
        """This thread's hold, if it has one."""
        hold: Hold | None = self._local.hold
        return hold

    def acquire(
        self,
        timeout: float | None,
        *,
        limit: float | None = None,
        interrupt: Callable[[], object] | None = None,
    ) -> Hold:
        """Wait for the turn (at most ``timeout`` seconds; ``None`` waits as long as it
        takes) and hold it. Past ``limit`` seconds of holding, ``interrupt`` is called
        from the watchdog thread and the hold is marked ``overdue``.

        Raises :class:`TurnTimeout` when the turn stayed taken.
        """
        local = self._local
        hold: Hold | None = local.hold
        if hold is not None:
            hold.depth += 1
            return hold
        waited_ms = 0.0
        if _libc is None:
            waited_ms = self._acquire_flock(timeout)
        elif (queued := self._gate_word.value) and self._barged >= _BARGE_LIMIT:
            self._barged = 0
            waited_ms = self._acquire_mutexes(timeout)  # barged enough: line up behind
        else:
            rc = self._trylock(self._turn)
            if rc == errno.EOWNERDEAD:
                self._take_over(self._turn)
            elif rc:
                self._barged = 0
                waited_ms = self._acquire_mutexes(timeout)
            else:
                self._barged = self._barged + 1 if queued else 0
        hold = local.spare
        if hold is None:
            hold = Hold()
        else:
            local.spare = None
        hold.depth = 1
        hold.waited_ms = waited_ms
        hold.interrupt = interrupt
        hold.overdue = False
        if limit:
            hold.limit_at = time.monotonic() + limit
            local.hold = hold
            if not self._watched:
                self._watched = True
                _watchdog.watch(self)
            self.current = hold
        else:
            hold.limit_at = 0.0
            local.hold = hold
        return hold

    def release(self) -> None:
        """Give the turn on (the outermost release of this thread's hold does)."""
        local = self._local
        hold: Hold | None = local.hold
        if hold is None:
            raise RuntimeError("this thread does not hold the write turn")
        hold.depth -= 1
        if hold.depth:
            return
        local.hold = None
        self.current = None
        local.spare = hold  # reused by this thread's next hold: no object per transaction
        if _libc is None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        else:
            self._unlock(self._turn)

    @contextlib.contextmanager
    def holding(
        self,
        timeout: float | None,
        *,
        limit: float | None = None,
        interrupt: Callable[[], object] | None = None,
    ) -> Iterator[Hold]:
        """``acquire`` … ``release`` as a ``with`` block."""
        hold = self.acquire(timeout, limit=limit, interrupt=interrupt)
        try:
            yield hold
        finally:
            self.release()

    # -- the two implementations ------------------------------------------------------

    def _take_over(self, mutex: ctypes.c_void_p) -> None:
        assert _libc is not None
        _libc.pthread_mutex_consistent(mutex)
        log.warning(
            "a process died holding the write turn of %s; its transaction was not applied",
            self.path,
        )

    def _acquire_mutexes(self, timeout: float | None) -> float:
        """Queue at the gate, then wait for the turn itself (the contended path); the
        milliseconds waited."""
        began = time.monotonic()
        deadline = None if timeout is None else began + timeout
        self._lock_mutex(self._gate, deadline, timeout)
        try:
            self._lock_mutex(self._turn, deadline, timeout)
        finally:
            assert _libc is not None
            _libc.pthread_mutex_unlock(self._gate)
        return 1000 * (time.monotonic() - began)

    def _lock_mutex(
        self, mutex: ctypes.c_void_p, deadline: float | None, timeout: float | None
    ) -> None:
        assert _libc is not None
        while True:
            if self._clocklock is not None:
                at = _timespec(deadline if deadline is not None else time.monotonic() + 86400)
                rc = self._clocklock(mutex, _CLOCK_MONOTONIC, ctypes.byref(at))
            else:
                left = (deadline - time.monotonic()) if deadline is not None else 86400.0
                at = _timespec(time.time() + max(left, 0.0))
                rc = _libc.pthread_mutex_timedlock(mutex, ctypes.byref(at))
            if rc == 0:
                return
            if rc == errno.EOWNERDEAD:
                self._take_over(mutex)
                return
            if rc == errno.ETIMEDOUT:
                if deadline is None:
                    continue
                raise TurnTimeout(f"the write turn stayed taken for {timeout:.3f} s")
            if rc == errno.EINTR:
                continue
            raise OSError(rc, f"the write turn of {self.path}: {os.strerror(rc)}")

    def _acquire_flock(self, timeout: float | None) -> float:
        began = time.monotonic()
        deadline = None if timeout is None else began + timeout
        delay = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return 1000 * (time.monotonic() - began)
            except BlockingIOError:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise TurnTimeout(f"the write turn stayed taken for {timeout:.3f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def _reset_in_child(self) -> None:
        self._local = _ThreadHolds()
        self.current = None
        self._watched = False


def _timespec(at_monotonic_or_epoch: float) -> _Timespec:
    whole = int(at_monotonic_or_epoch)
    return _Timespec(whole, int((at_monotonic_or_epoch - whole) * 1e9))


def _open_shared(path: str) -> int:
    """Open the turn file and hold a shared ``flock`` on it (an exclusive one while
    initialising it, which only succeeds when nobody else has it open)."""
    mode = 0o644
    with contextlib.suppress(OSError):
        mode = os.stat(path.removesuffix(".onewriter.turn")).st_mode & 0o666
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        if _libc is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(fd, fcntl.LOCK_SH)  # someone uses it (or initialises it now)
            else:
                _initialise(fd)
                fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _initialise(fd: int) -> None:
    """Write two fresh robust, process-shared mutexes (nobody has the file mapped)."""
    assert _libc is not None
    os.ftruncate(fd, _FILE_SIZE)
    region = mmap.mmap(fd, _FILE_SIZE)
    try:
        region[:] = bytes(_FILE_SIZE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        attr = ctypes.create_string_buffer(64)
        checks = (
            _libc.pthread_mutexattr_init(attr),
            _libc.pthread_mutexattr_setpshared(attr, 1),  # PTHREAD_PROCESS_SHARED
            _libc.pthread_mutexattr_setrobust(attr, 1),  # PTHREAD_MUTEX_ROBUST
            _libc.pthread_mutex_init(ctypes.c_void_p(base + _GATE_OFFSET), attr),
            _libc.pthread_mutex_init(ctypes.c_void_p(base + _TURN_OFFSET), attr),
        )
        _libc.pthread_mutexattr_destroy(attr)
        if any(checks):
            raise OSError(f"could not initialise the write turn (pthread codes {checks})")
        region[: len(_MAGIC)] = _MAGIC
        region.flush()
    finally:
        region.close()


def _map_mutexes(fd: int) -> mmap.mmap:
    region = mmap.mmap(fd, _FILE_SIZE)
    if region[: len(_MAGIC)] != _MAGIC:
        region.close()
        raise OSError("the write turn file is not one this version of onewriter made")
    return region


_turns: dict[str, WriteTurn] = {}
_turns_lock = threading.Lock()


def turn_path(db_path: str) -> str:
    """Where the turn of the database at ``db_path`` (absolute) lives."""
    return db_path + ".onewriter.turn"


def turn_for(db_path: str) -> WriteTurn:
    """This process's :class:`WriteTurn` of the database at ``db_path`` (absolute).

    One per file per process, kept for the life of the process: a thread may be
    waiting on its mapping at any time, so it is never unmapped.
    """
    turn = _turns.get(db_path)
    if turn is None:
        with _turns_lock:
            turn = _turns.get(db_path)
            if turn is None:
                turn = _turns[db_path] = WriteTurn(turn_path(db_path))
    return turn


def _after_fork_in_child() -> None:
    """A child holds nothing its parent held, and has no watchdog thread yet."""
    global _turns_lock
    _turns_lock = threading.Lock()
    for turn in _turns.values():
        turn._reset_in_child()
    _watchdog.reset_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
