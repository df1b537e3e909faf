"""onewriter.django in this process: the write turn around Django's transactions.

Django is configured once here with three aliases on one file (plain, a short turn
timeout, a transaction limit), one at FULL durability and one in memory. Another
thread stands in for another worker: the turn is a per-thread hold, so a thread that
is not the holder waits for it exactly as another process would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections, transaction

from onewriter.django import BadOptions, TransactionTimeout, WriteTurnTimeout
from onewriter.django._statements import immediate_begin, is_read
from onewriter.turn import TurnTimeout, turn_for

CREATE = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("django") / "app.sqlite3")
    if settings.configured:
        pytest.skip("Django was configured by another test module in this process")

    def alias(**options: Any) -> dict[str, Any]:
        return {"ENGINE": "onewriter.django", "NAME": path, "OPTIONS": options}

    settings.configure(
        DATABASES={
            "default": alias(),
            "short": alias(turn_timeout=0.3),
            "limited": alias(transaction_timeout=0.3),
            "full": alias(durability="full"),
            "memory": {"ENGINE": "onewriter.django", "NAME": ":memory:"},
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    with connections["default"].cursor() as cursor:
        cursor.execute(CREATE)
    yield path
    connections.close_all()


@pytest.fixture(autouse=True)
def _clean(db_file: str) -> Iterator[None]:
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM t")
    yield
    for name in ("default", "short", "limited", "full"):
        assert connections[name]._hold is None, f"{name} still holds the turn"


def turn_free(path: str) -> bool:
    """Whether another thread (as another worker would) gets the turn within 50 ms."""
    got: list[bool] = []

    def probe() -> None:
        turn = turn_for(str(Path(path).resolve()))
        try:
            turn.acquire(0.05)
        except TurnTimeout:
            got.append(False)
        else:
            turn.release()
            got.append(True)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(5)
    return got == [True]


class Holder:
    """Another thread that holds the turn until released."""

    def __init__(self, path: str) -> None:
        self.turn = turn_for(str(Path(path).resolve()))
        self.taken, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with self.turn.holding(5):
            self.taken.set()
            self.done.wait(10)

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.taken.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)


def rows(alias: str = "default") -> list[int]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM t ORDER BY n")
        return [n for (n,) in cursor.fetchall()]


def test_atomic_holds_the_turn_from_begin_to_commit(db_file: str) -> None:
    conn = connections["default"]
    assert turn_free(db_file)
    with transaction.atomic():
        assert not turn_free(db_file)  # taken at BEGIN, before any statement
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
        assert not turn_free(db_file)
    assert turn_free(db_file)
    assert rows() == [1]


def test_an_error_rolls_back_and_frees_the_turn(db_file: str) -> None:
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
        _ = 1 / 0
    assert turn_free(db_file)
    assert rows() == []


def test_savepoints_behave_as_in_the_stock_backend(db_file: str) -> None:
    with transaction.atomic(), connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
        with pytest.raises(ValueError), transaction.atomic():
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [2])
            raise ValueError
        with transaction.atomic():
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [3])
        assert not turn_free(db_file)
    assert rows() == [1, 3]
    assert turn_free(db_file)


def test_autocommit_writes_take_the_turn_per_statement(db_file: str) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO t(n) VALUES (%s), (%s) RETURNING n", [5, 6])
        assert turn_free(db_file)  # the statement finished before its rows are read
        assert sorted(cursor.fetchall()) == [(5,), (6,)]
        cursor.execute("UPDATE t SET n = n + 1 RETURNING n")
        assert cursor.fetchone() in ((6,), (7,))
        assert cursor.fetchmany(5) in ([(6,)], [(7,)])
        assert cursor.fetchone() is None
        cursor.executemany("INSERT INTO t(n) VALUES (%s)", [[1], [2]])
        cursor.executescript("INSERT INTO t(n) VALUES (8); INSERT INTO t(n) VALUES (9);")
    assert turn_free(db_file)
    assert rows() == [1, 2, 6, 7, 8, 9]


def test_reads_do_not_wait_for_the_turn_and_writes_time_out(db_file: str) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
    with Holder(db_file):
        started = time.monotonic()
        assert rows("short") == [1]
        assert time.monotonic() - started < 5  # it would have failed at 0.3 s had it waited
        with pytest.raises(WriteTurnTimeout) as caught, connections["short"].cursor() as cursor:
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [2])
        assert caught.value.code == "TIMEOUT"
        assert isinstance(caught.value, OperationalError)
        with pytest.raises(OperationalError), transaction.atomic(using="short"):
            pass
    assert rows() == [1]


def test_a_transaction_past_its_limit_is_stopped(db_file: str) -> None:
    limited = connections["limited"]
    with (
        pytest.raises(TransactionTimeout) as caught,
        transaction.atomic(using="limited"),
        limited.cursor() as cursor,
    ):
        cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
        time.sleep(0.5)
        cursor.execute("INSERT INTO t(n) VALUES (%s)", [2])
    assert caught.value.code == "TIMEOUT"
    assert turn_free(db_file)
    assert rows() == []
    with transaction.atomic(using="limited"), connections["limited"].cursor() as cursor:
        cursor.execute("INSERT INTO t(n) VALUES (%s)", [3])  # a new one starts afresh
    assert rows() == [3]


def test_a_long_statement_past_the_limit_is_interrupted(db_file: str) -> None:
    long_query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) FROM c WHERE x < 0"
    )
    started = time.monotonic()
    with (
        pytest.raises(TransactionTimeout),
        transaction.atomic(using="limited"),
        connections["limited"].cursor() as cursor,
    ):
        cursor.execute(long_query)
    assert time.monotonic() - started < 5
    assert turn_free(db_file)


def test_closing_the_connection_inside_atomic_frees_the_turn(db_file: str) -> None:
    conn = connections["default"]
    with transaction.atomic():
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
        conn.close()  # what Django does to a connection it drops
        assert turn_free(db_file)
    assert rows() == []


def test_manual_commit_mode_takes_the_turn_at_the_first_write(db_file: str) -> None:
    conn = connections["default"]
    transaction.set_autocommit(False)
    try:
        assert rows() == []
        assert turn_free(db_file)  # reads began nothing
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO t(n) VALUES (%s)", [1])
        assert not turn_free(db_file)
        transaction.commit()
        assert turn_free(db_file)
    finally:
        transaction.set_autocommit(True)
    assert rows() == [1]


def test_connections_are_wal_with_the_chosen_durability(db_file: str) -> None:
    def pragma(alias: str, name: str) -> Any:
        with connections[alias].cursor() as cursor:
            cursor.execute(f"PRAGMA {name}")
            return cursor.fetchone()[0]

    assert pragma("default", "journal_mode") == "wal"
    assert pragma("default", "synchronous") == 1  # NORMAL
    assert pragma("full", "synchronous") == 2  # FULL
    assert pragma("default", "busy_timeout") == 5000  # SQLite's own stays on
    assert pragma("memory", "journal_mode") == "memory"


def test_the_connection_is_djangos_own(db_file: str) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT '2024-01-02 03:04:05' AS \"d [timestamp]\", %s REGEXP %s", ["abc", "b"]
        )
        stamp, matched = cursor.fetchone()
    assert stamp.year == 2024 and stamp.hour == 3
    assert matched == 1


def test_bad_options_fail_clearly(db_file: str) -> None:
    for options, word in (
        ({"durability": "fast"}, "durability"),
        ({"turn_timeout": -1}, "turn_timeout"),
        ({"transaction_timeout": "soon"}, "transaction_timeout"),
    ):
        conn = connections["default"].copy()
        conn.settings_dict["OPTIONS"] = options
        with pytest.raises(BadOptions, match=word) as caught:
            conn.ensure_connection()
        assert caught.value.code == "BAD_REQUEST"
        assert isinstance(caught.value, ImproperlyConfigured)


def test_init_command_runs_after_the_backends_pragmas(db_file: str) -> None:
    conn = connections["default"].copy()
    conn.settings_dict["OPTIONS"] = {"init_command": "PRAGMA synchronous = OFF"}
    for _ in range(2):  # and again on a reconnect
        conn.ensure_connection()
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 0
        conn.close()


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT 1", True),
        ("  -- a comment\n/* another */ (SELECT 1)", True),
        ("explain query plan select 1", True),
        ("VALUES (1)", True),
        ("PRAGMA table_info(t)", True),
        ("PRAGMA foreign_keys = OFF", False),
        ("PRAGMA wal_checkpoint(TRUNCATE)", False),
        ("WITH x AS (SELECT 1) INSERT INTO t(n) SELECT * FROM x", False),
        ("INSERT INTO t(n) VALUES (1)", False),
        ("SAVEPOINT s", False),
        ("", False),
    ],
)
def test_which_statements_take_the_turn(sql: str, read: bool) -> None:
    assert is_read(sql) is read


def test_a_deferred_begin_becomes_immediate() -> None:
    assert immediate_begin("BEGIN") == "BEGIN IMMEDIATE"
    assert immediate_begin("begin deferred transaction;") == "BEGIN IMMEDIATE"
    assert immediate_begin("BEGIN EXCLUSIVE") == "BEGIN EXCLUSIVE"
    assert immediate_begin("INSERT INTO t(n) VALUES (1)") == "INSERT INTO t(n) VALUES (1)"
