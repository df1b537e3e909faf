"""Fuzz target: arbitrary frames and mixed valid/invalid requests thrown at a live writer.

Each example opens one connection to a running ``onewriter serve`` writer and sends a
hello (now and then a broken one), then a script of actions: valid ``record`` requests,
requests broken in a known way, whole frames of arbitrary bytes, arbitrary maps, and
maybe a trailing scrap of bytes (a torn frame, a huge length prefix). Then it checks:

- the writer process is alive, and the same process (no crash, no restart);
- no broken request left its token in the database, and each that was answered got an
  error with a code it may get;
- every valid request answered ``ok`` is in the database exactly once; one not answered
  (the writer closed the connection on later garbage) is there at most once;
- a well-behaved client still gets its write through.

Run standalone (hypothesis drives, or libFuzzer through atheris when it is installed)::

    .venv/bin/python fuzz/writer_fuzz.py --examples 5000
    .venv/bin/python fuzz/writer_fuzz.py --atheris -max_total_time=60

``tests/test_fuzz.py`` runs a bounded number of examples of the same property.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onewriter
from onewriter.config import Config, resolve_paths
from onewriter.wire import frames as proto

HERE = Path(__file__).resolve().parent
MIGRATIONS = ["CREATE TABLE fuzz_tokens (id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE)"]

ops = onewriter.Ops()


@ops.register
def record(conn: sqlite3.Connection, token: str) -> list[int]:
    """Store ``token`` (UNIQUE: a second apply would fail); returns its row id and pid."""
    cur = conn.execute("INSERT INTO fuzz_tokens (token) VALUES (?)", (token,))
    return [int(cur.lastrowid or 0), os.getpid()]


# -- the live writer ------------------------------------------------------------------------


class LiveWriter:
    """A writer serving this module's ops on a fresh database: ``onewriter serve`` in a
    child process, or (``in_process``) a writer thread of this process, so that a
    coverage-guided fuzzer sees the writer's code run."""

    def __init__(self, directory: str, *, in_process: bool = False) -> None:
        self.directory = directory
        self.db = os.path.join(directory, "fuzz.db")
        self.socket_path = resolve_paths(self.db, Config())[1]
        self.proc: subprocess.Popen[bytes] | None = None
        self.local: onewriter.Database | None = None
        if in_process:
            self.local = onewriter.connect(self.db, ops=ops, migrations=MIGRATIONS, role="writer")
            self.pid = os.getpid()
        else:
            self.proc = self._spawn()
            self.pid = self.proc.pid
        self.client = onewriter.connect(self.db, ops=ops, role="client")
        self._probes = itertools.count()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
        with open(os.path.join(self.directory, "serve.err"), "wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "onewriter.cli",
                    "serve",
                    self.db,
                    "--ops",
                    "writer_fuzz:ops",
                    "--migrations",
                    "writer_fuzz:MIGRATIONS",
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        assert proc.stdout is not None
        deadline = time.monotonic() + 30.0
        buf = b""
        while b"READY" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                proc.kill()
                proc.wait(10)
                proc.stdout.close()
                raise RuntimeError(f"the writer did not start: {self.stderr_tail()}")
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if ready:
                buf += os.read(proc.stdout.fileno(), 4096)
        return proc

    def stderr_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "serve.err"), "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tokens(self, prefix: str) -> dict[str, int]:
        """How often each token starting with ``prefix`` is in the database."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            found = conn.execute(
                "SELECT token, count(*) FROM fuzz_tokens WHERE substr(token, 1, ?) = ? "
                "GROUP BY token",
                (len(prefix), prefix),
            ).fetchall()
        finally:
            conn.close()
        return {token: n for token, n in found}

    def probe(self) -> None:
        """A well-behaved client's write goes through, to this very writer."""
        _, pid = self.client.write(record, token=f"probe-{next(self._probes)}")
        assert pid == self.pid, f"the write went to {pid}, not the writer {self.pid}"

    def assert_alive(self) -> None:
        if self.proc is not None:
            assert self.proc.poll() is None, f"the writer died: {self.stderr_tail()}"
        else:
            assert self.local is not None and self.local.is_writer, "the writer thread stopped"

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


@contextlib.contextmanager
def live_writer(*, in_process: bool = False) -> Iterator[LiveWriter]:
    directory = tempfile.mkdtemp(prefix="ow-fuzz-")
    try:
        writer = LiveWriter(directory, in_process=in_process)
        try:
            yield writer
        finally:
            writer.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- what is thrown at it -------------------------------------------------------------------

#: Ways to break a valid request, and the error codes each may be answered with.
BREAKAGES: dict[str, frozenset[str]] = {
    "unknown_op": frozenset({"UNKNOWN_OP"}),
    "op_not_text": frozenset({"BAD_REQUEST"}),
    "no_op": frozenset({"BAD_REQUEST"}),
    "args_not_list": frozenset({"BAD_REQUEST"}),
    "kwargs_not_map": frozenset({"BAD_REQUEST"}),
    "kwargs_key_not_text": frozenset({"BAD_REQUEST"}),
    "unexpected_argument": frozenset({"OP_FAILED"}),
    "argument_not_bindable": frozenset({"OP_FAILED"}),
    "deadline_not_number": frozenset({"BAD_REQUEST"}),
    "deadline_passed": frozenset({"TIMEOUT"}),
    "seq_not_int": frozenset({"BAD_REQUEST"}),
    "id_not_int": frozenset({"BAD_REQUEST"}),
    "params_not_list": frozenset({"BAD_REQUEST"}),
}

FIELDS = ["id", "op", "args", "kwargs", "seq", "retry", "ack", "deadline", "t", "params", "many"]

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=16)
    | st.sampled_from(["record", "stats", "ping", "hello", "token"])
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
junk_maps = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), values, max_size=6)
actions = st.lists(
    st.one_of(
        st.just(("valid", None)),
        st.sampled_from(sorted(BREAKAGES)).map(lambda kind: ("broken", kind)),
        st.binary(max_size=48).map(lambda body: ("frame", body)),
        junk_maps.map(lambda m: ("map", m)),
    ),
    max_size=16,
)
hellos = st.integers(0, 9).flatmap(lambda n: st.just(None) if n else junk_maps)
tails = st.none() | st.binary(min_size=1, max_size=24)


@dataclass
class Script:
    """One connection's worth of input."""

    hello: dict[str, Any] | None
    actions: list[tuple[str, Any]]
    one_frame: bool
    tail: bytes | None


scripts = st.builds(Script, hellos, actions, st.booleans(), tails)


def broken(kind: str, rid: int, token: str) -> dict[str, Any]:
    """A ``record`` request carrying ``token``, broken in the way ``kind`` names."""
    m: dict[str, Any] = {"id": rid, "op": "record", "kwargs": {"token": token}, "seq": rid}
    if kind == "unknown_op":
        m["op"] = "record_nothing"
    elif kind == "op_not_text":
        m["op"] = [token]
    elif kind == "no_op":
        del m["op"]
    elif kind == "args_not_list":
        m["args"] = token
    elif kind == "kwargs_not_map":
        m["kwargs"] = [token]
    elif kind == "kwargs_key_not_text":
        m["kwargs"] = {1: token}
    elif kind == "unexpected_argument":
        m["kwargs"] = {"token": token, "other": 1}
    elif kind == "argument_not_bindable":
        m["kwargs"] = {"token": [token]}
    elif kind == "deadline_not_number":
        m["deadline"] = token
    elif kind == "deadline_passed":
        m["deadline"] = 0
    elif kind == "seq_not_int":
        m["seq"] = token
    elif kind == "id_not_int":
        m["id"] = token
    elif kind == "params_not_list":
        del m["op"]
        m["sql"] = "INSERT INTO fuzz_tokens (token) VALUES (?)"
        m["params"] = token
    return m


# -- one attack ------------------------------------------------------------------------------

_run = f"{os.getpid()}-{int(time.time())}"
seen: Counter[str] = Counter()
"""Replies by code (``ok`` for successes) and ``hung up`` connections: what was reached."""
_tokens = itertools.count()
_ids = itertools.count(2**41 + 104729)  # far from the ids that arbitrary maps carry


@dataclass
class _Expect:
    barrier: int = 0
    valid: dict[int, str] = field(default_factory=dict)
    broken: dict[int, tuple[str, str]] = field(default_factory=dict)
    broken_tokens: list[str] = field(default_factory=list)


def _encode(script: Script, prefix: str) -> tuple[bytes, _Expect]:
    expect = _Expect()
    hello = script.hello or {"t": "hello", "v": proto.PROTOCOL_VERSION, "client": os.urandom(16)}
    out = [_frame_of(hello)]
    group: list[Any] = []

    def close_group() -> None:
        if group:
            out.append(_frame_of(list(group)))
            group.clear()

    for kind, arg in script.actions:
        if kind == "frame":
            close_group()
            out.append(proto.HEADER.pack(len(arg)) + arg)
            continue
        if kind == "map":
            message = arg
        else:
            rid, token = next(_ids), f"{prefix}{next(_tokens)}"
            if kind == "valid":
                message = {"id": rid, "op": "record", "kwargs": {"token": token}, "seq": rid}
                expect.valid[rid] = token
            else:
                message = broken(arg, rid, token)
                expect.broken_tokens.append(token)
                if isinstance(message["id"], int):
                    expect.broken[rid] = (arg, token)
        if script.one_frame:
            group.append(message)
        else:
            out.append(_frame_of(message))
    # A ping after everything: its reply means the writer has taken all of it in.
    expect.barrier = next(_ids)
    ping = {"id": expect.barrier, "t": "ping"}
    if script.one_frame:
        group.append(ping)
    else:
        out.append(_frame_of(ping))
    close_group()
    if script.tail:
        out.append(script.tail)
    return b"".join(out), expect


def _frame_of(message: Any) -> bytes:
    try:
        return proto.frame(message)
    except (OverflowError, ValueError, TypeError):
        return proto.frame({"unencodable": repr(message)[:64]})


def _read_replies(
    sock: socket.socket, wanted: set[int], timeout: float
) -> tuple[dict[int, Any], bool]:
    """Replies by id until every wanted id is answered; also whether the writer hung up."""
    reader = proto.FrameReader(1 << 30)
    replies: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= replies.keys():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return replies, False
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return replies, False
        except ConnectionError:
            return replies, True
        if not data:
            return replies, True
        for body in reader.feed(data):
            for message in proto.messages(proto.unpack(body)):
                if isinstance(message, dict):
                    error = message.get("error")
                    seen[str(error.get("code")) if isinstance(error, dict) else "ok"] += 1
                    if isinstance(message.get("id"), int):
                        replies[message["id"]] = message
    return replies, False


def attack(writer: LiveWriter, script: Script) -> None:
    """Send ``script`` on a fresh connection and check every promise (AssertionError)."""
    prefix = f"tok-{_run}-"
    data, expect = _encode(script, prefix)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(writer.socket_path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        wanted = {expect.barrier, *expect.valid, *expect.broken}
        replies, hung_up = _read_replies(sock, wanted, 10.0)
    seen["hung up"] += hung_up
    if not hung_up:
        unanswered = wanted - replies.keys()
        assert not unanswered, f"requests left unanswered on an open connection: {unanswered}"
    writer.assert_alive()
    writer.probe()  # queued behind every request this connection got in
    stored = writer.tokens(prefix)
    for token in expect.broken_tokens:
        assert token not in stored, f"a broken request was applied: {token}"
    for rid, (kind, _) in expect.broken.items():
        if rid in replies:
            error = replies[rid].get("error")
            assert error is not None, f"broken request {kind} answered ok: {replies[rid]}"
            assert error["code"] in BREAKAGES[kind], f"{kind} answered {error}"
    for rid, token in expect.valid.items():
        reply = replies.get(rid)
        if reply is not None:
            assert reply.get("ok") is True, f"a valid request failed: {reply}"
            assert reply["result"][1] == writer.pid
            assert stored.get(token) == 1, f"acknowledged {token} stored {stored.get(token)} times"
        else:
            assert hung_up, f"valid request {rid} unanswered"
            assert stored.get(token, 0) <= 1


# -- standalone -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples")
    parser.add_argument(
        "--atheris",
        action="store_true",
        help="let libFuzzer (atheris) drive the same target, the writer in this process "
        "(other arguments go to libFuzzer)",
    )
    args, rest = parser.parse_known_args(argv)
    with live_writer(in_process=args.atheris) as writer:

        @settings(
            max_examples=args.examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(scripts)
        def fuzz(script: Script) -> None:
            attack(writer, script)

        if args.atheris:
            import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

            atheris.instrument_all()  # the writer runs in this process: its coverage guides
            one_input = fuzz.hypothesis.fuzz_one_input  # type: ignore[attr-defined]
            atheris.Setup([sys.argv[0], *rest], one_input)
            atheris.Fuzz()
        else:
            started = time.monotonic()
            fuzz()
            elapsed = time.monotonic() - started
            print(f"{args.examples} examples in {elapsed:.1f} s: ok; replies {dict(seen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
