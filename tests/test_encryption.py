"""SQLCipher: a keyed database is unreadable without its key, refuses a wrong key without
writing anything, and works with the right key across processes, failover and the CLI.

Skipped when no SQLCipher build (the ``sqlcipher`` extra) is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import MIGRATIONS, ONEWRITER_CLI, PYTHON, Child, Children, insert_number, ops, run

import onewriter
from onewriter.sqlite import cipher as _cipher

pytest.importorskip(
    "sqlcipher3", reason="SQLCipher is not installed (pip install 'onewriter[sqlcipher]')"
)

RAW_KEY = bytes(range(32))
#: The same raw key as SQLCipher's key string, which JSON and key files can carry.
KEY_TEXT = f"x'{RAW_KEY.hex()}'"
OTHER_KEY = b"\x07" * 32


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def keyed_count(database: str, key: str | bytes, table: str = "numbers") -> int:
    """Rows in ``table``, read through SQLCipher in a child (this process stays on one
    library per file)."""
    code = (
        "import sys, json, onewriter\n"
        "db = onewriter.connect(sys.argv[1], role='standalone', key=json.loads(sys.argv[2]))\n"
        "print(db.read(f'SELECT count(*) AS n FROM {sys.argv[3]}')[0]['n'])\n"
        "db.close()\n"
    )
    text = key if isinstance(key, str) else f"x'{key.hex()}'"
    result = run([sys.executable, "-c", code, database, json.dumps(text), table])
    return int(result.stdout.strip().splitlines()[-1])


def start_main(children: Children, main: str, *args: Any) -> Child:
    """Run ``test_encryption.<main>(*args)`` in a child interpreter."""
    code = f"import sys, test_encryption; test_encryption.{main}(*sys.argv[1:])"
    return children.start([PYTHON, "-c", code, *(str(a) for a in args)])


# -- child programs (run in their own interpreter) -------------------------------------------


def main_try_open(database: str, key_json: str) -> None:
    """Try to read ``database`` with a key (or none) as a writer would; print the outcome."""
    key = json.loads(key_json)
    outcome: dict[str, Any] = {}
    for role in ("standalone", "client"):
        try:
            db = onewriter.connect(database, role=role, key=key, failover_timeout=1.0)
            try:
                outcome[role] = db.read("SELECT count(*) AS n FROM numbers")[0]["n"]
            finally:
                db.close()
        except onewriter.OneWriterError as exc:
            outcome[role] = {"error": exc.code, "message": exc.message}
    print("OUTCOME " + json.dumps(outcome), flush=True)


def main_keyed_client(database: str, key_json: str, rows: str) -> None:
    """Join the keyed database, write a row; on each GO line write ``rows`` more and
    report who the writer is and what this process reads."""
    db = onewriter.connect(database, ops=ops, migrations=MIGRATIONS, key=json.loads(key_json))
    db.write(insert_number, worker=99, n=0)
    print("JOINED " + json.dumps({"is_writer": db.is_writer}), flush=True)
    for _ in sys.stdin:
        for n in range(int(rows)):
            db.write(insert_number, worker=98, n=n)
        writer = db.stats()["pid"]  # reaches the writer, or elects this process
        report = {
            "pid": os.getpid(),
            "is_writer": db.is_writer,
            "writer_pid": writer,
            "rows": db.read("SELECT count(*) AS n FROM numbers")[0]["n"],
        }
        print("DONE " + json.dumps(report), flush=True)
    db.close()


# -- tests ---------------------------------------------------------------------------------------


def test_keyed_database_is_encrypted_and_shared_by_processes(
    db_path: str, children: Children
) -> None:
    writer = children.writer(db_path, key=KEY_TEXT)
    client = start_main(children, "main_keyed_client", db_path, json.dumps(KEY_TEXT), 50)
    assert client.wait_json("JOINED ") == {"is_writer": False}
    client.send("GO")
    report = client.wait_json("DONE ")
    assert report["writer_pid"] == writer.writer_pid
    assert report["rows"] == 51

    db = onewriter.connect(db_path, ops=ops, role="client", key=RAW_KEY)
    try:
        db.write(insert_number, worker=1, n=1)
        assert db.read("SELECT count(*) AS n FROM numbers")[0]["n"] == 52
    finally:
        db.close()

    client.stop()
    writer.stop()
    raw = Path(db_path).read_bytes()
    assert not raw.startswith(b"SQLite format 3"), "the file must not have a plain header"
    assert b"CREATE TABLE" not in raw and b"numbers" not in raw


def test_missing_or_wrong_key_fails_clearly_and_writes_nothing(
    db_path: str, children: Children
) -> None:
    writer = children.writer(db_path, key=KEY_TEXT)
    db = onewriter.connect(db_path, ops=ops, role="client", key=KEY_TEXT)
    for n in range(20):
        db.write(insert_number, worker=1, n=n)

    # While the keyed writer runs: reads without the key, or with another, are refused.
    tries = [
        start_main(children, "main_try_open", db_path, json.dumps(key))
        for key in (None, f"x'{OTHER_KEY.hex()}'", "a passphrase")
    ]
    for child in tries:
        outcome = child.wait_json("OUTCOME ", timeout=30)
        assert outcome["client"]["error"] == "BAD_KEY", outcome
        assert outcome["standalone"]["error"] in ("BAD_KEY", "WRITER_UNAVAILABLE"), outcome

    db.close()
    writer.stop()
    before = {name: file_digest(name) for name in (db_path,) if os.path.exists(name)}
    assert not os.path.exists(db_path + "-wal"), "the writer's WAL should be gone after close"

    # With no writer: a keyless or wrong-keyed process trying to become the writer fails
    # with BAD_KEY before touching the file.
    tries = [
        start_main(children, "main_try_open", db_path, json.dumps(key))
        for key in (None, f"x'{OTHER_KEY.hex()}'")
    ]
    for child in tries:
        outcome = child.wait_json("OUTCOME ", timeout=30)
        assert outcome["standalone"]["error"] == "BAD_KEY", outcome
        assert "cannot be read" in outcome["standalone"]["message"]
        assert child.wait_exit() == 0, child.describe()
    assert {name: file_digest(name) for name in before} == before
    assert not os.path.exists(db_path + "-wal")
    assert keyed_count(db_path, KEY_TEXT) == 20


def test_a_new_writer_takes_over_with_the_key_after_the_writer_is_killed(
    db_path: str, children: Children
) -> None:
    writer = children.writer(db_path, key=KEY_TEXT)
    client = start_main(children, "main_keyed_client", db_path, json.dumps(KEY_TEXT), 30)
    assert client.wait_json("JOINED ") == {"is_writer": False}

    writer.kill9()
    client.send("GO")
    report = client.wait_json("DONE ", timeout=30)
    assert report["is_writer"] is True
    assert report["writer_pid"] == client.pid
    assert report["rows"] == 31

    client.stop()
    assert keyed_count(db_path, RAW_KEY) == 31


def test_ops_catch_sqlcipher_errors_as_the_standard_sqlite3_ones(db_path: str) -> None:
    registry = onewriter.Ops()

    @registry.register
    def insert_once(conn: sqlite3.Connection, id: int) -> str:
        try:
            conn.execute("INSERT INTO posts (id, title) VALUES (?, 'x')", (id,))
        except sqlite3.IntegrityError:
            return "duplicate"
        return "inserted"

    db = onewriter.connect(
        db_path, ops=registry, migrations=MIGRATIONS, role="standalone", key=RAW_KEY
    )
    try:
        assert db.write(insert_once, id=1) == "inserted"
        assert db.write(insert_once, id=1) == "duplicate"
        with pytest.raises(onewriter.OpFailed, match="IntegrityError"):
            db.execute_write("INSERT INTO posts (id, title) VALUES (1, 'y')")
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            db.read("SELECT * FROM missing")
        assert type(db.read("SELECT 1 AS one")[0]).__module__.startswith("sqlcipher3")
        assert db.read("SELECT 1 AS one")[0]["one"] == 1
    finally:
        db.close()


def test_a_key_does_not_open_a_plain_database(db_path: str) -> None:
    plain = f"import sqlite3; sqlite3.connect({db_path!r}).execute('CREATE TABLE t (x)')"
    run([PYTHON, "-c", plain])  # in a child: this process only ever opens it through SQLCipher
    before = file_digest(db_path)
    with pytest.raises(onewriter.WrongKey, match="not encrypted"):
        onewriter.connect(db_path, role="standalone", key=RAW_KEY)
    assert file_digest(db_path) == before


def test_one_process_never_mixes_sqlite3_and_sqlcipher_on_one_file(db_path: str) -> None:
    db = onewriter.connect(db_path, role="standalone", key=RAW_KEY)
    db.close()
    with pytest.raises(ValueError, match="SQLCipher in this process"):
        onewriter.connect(db_path, role="standalone")


def test_key_is_validated_and_never_shown() -> None:
    config = onewriter.Config(key=RAW_KEY)
    assert RAW_KEY.hex() not in repr(config)
    assert not re.search(r"\bkey=", repr(config))
    with pytest.raises(ValueError, match="32 bytes"):
        onewriter.Config(key=b"short")
    with pytest.raises(ValueError, match="non-empty"):
        onewriter.Config(key="")
    assert _cipher.key_statement("it's") == "PRAGMA key = 'it''s'"
    assert _cipher.key_statement(RAW_KEY) == "PRAGMA key = 'x''" + RAW_KEY.hex() + "'''"


def test_cli_serves_stats_and_backs_up_with_a_key_file(
    db_path: str, children: Children, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("correct horse battery staple\n")
    key_file.chmod(0o600)
    serve = children.start(
        [ONEWRITER_CLI, "serve", db_path, "--key-file", str(key_file),
         "--migrations", "helpers:MIGRATIONS", "--ops", "helpers:ops"]
    )  # fmt: skip
    serve.wait_line("READY", timeout=30)
    db = onewriter.connect(db_path, ops=ops, role="client", key="correct horse battery staple")
    try:
        for n in range(10):
            db.write(insert_number, worker=1, n=n)
    finally:
        db.close()

    stats = run([ONEWRITER_CLI, "stats", db_path, "--json", "--key-file", str(key_file)])
    assert json.loads(stats.stdout)["commits"] >= 10

    dest = str(tmp_path / "copy.db")
    result = run([ONEWRITER_CLI, "backup", db_path, dest, "--key-file", str(key_file)])
    assert "integrity: ok" in result.stdout
    assert not Path(dest).read_bytes().startswith(b"SQLite format 3")
    refused = run([ONEWRITER_CLI, "backup", dest, str(tmp_path / "plain.db")], check=False)
    assert refused.returncode == 1 and "BAD_KEY" in refused.stderr
    assert keyed_count(dest, "correct horse battery staple") == 10

    wrong = tmp_path / "wrong"
    wrong.write_text("not the key\n")
    wrong.chmod(0o600)
    result = run([ONEWRITER_CLI, "backup", db_path, dest, "--key-file", str(wrong)], check=False)
    assert result.returncode == 1 and "BAD_KEY" in result.stderr
