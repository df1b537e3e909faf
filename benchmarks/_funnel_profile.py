"""``python -m benchmarks.funnel --profile``: where the microseconds of one funnelled write go.

Runs the floor and the onewriter funnel cells once each with py-spy (``--nonblocking``,
Python frames) attached to the writer process and to a few clients for the cell's window.
Each sampled stack is put in one category by its deepest frame that a rule names (rules
match qualified function names and files, and for a few frames the source line); the
categories' shares of the busy samples are then applied to the CPU time (user + system,
from the kernel) that the processes spent per acknowledged write over the window.
Samples waiting in epoll_wait or in other threads' waits count as idle and are left out:
on a busy 2-core machine a woken thread waits there to be scheduled.

The rules name onewriter's internal functions only here, to read a profile: nothing is
imported from them, and a stack no rule knows counts for the event loop (or, with no
Python frame at all, as unattributed).
"""

from __future__ import annotations

import argparse
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onewriter

from . import funnel

DOC = Path(__file__).resolve().parent.parent / "docs" / "funnel_profile.md"
RATE = 1500
CLIENTS = 3  # client processes sampled (each is busy only a small part of the time)
PACKAGE = Path(onewriter.__file__).resolve().parent
HERE = Path(__file__).resolve().parent

_FRAMES = r"_protocol\.py|wire/frames\.py"  # the frames module, before and after its move
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    line: int

    @property
    def python(self) -> bool:
        return self.file.endswith(".py")

    def source(self) -> str:
        """The text of this frame's line, for onewriter's and the benchmark's files."""
        if not self.file.startswith(("onewriter/", "benchmarks/")):
            return ""
        for folder in (HERE.parent, PACKAGE.parent):
            path = folder / self.file
            if path.exists():
                return linecache.getline(str(path), self.line)
        return ""


def parse(path: Path) -> Counter[tuple[Frame, ...]]:
    """py-spy's raw format: ``frame;frame;... count``, root first."""
    stacks: Counter[tuple[Frame, ...]] = Counter()
    for text in path.read_text().splitlines():
        stack, _, count = text.rpartition(" ")
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part.strip())
            if m:
                frames.append(Frame(m["func"], m["file"], int(m["line"] or 0)))
            else:
                frames.append(Frame(part.strip(), "", 0))
        stacks[tuple(frames)] += int(count)
    return stacks


# A rule: category, the frame's qualified name (regex), the frame's file (regex), and
# optionally a regex the frame's source line must match. A sample goes to the deepest
# frame that a rule matches; frames of asyncio and the standard library match no rule
# (a sample in asyncio.call_soon counts for the onewriter code that called it), and
# samples with no matching frame at all are the event loop's own.
Rule = tuple[str, str, str, str | None]

IDLE = "idle"  # waiting, not apportioned
LOOP = "asyncio loop: _run_once, handles, task steps"
SEND = "socket write (send; wakes the peer)"
RECV = "socket read (recv)"
OTHER = "unattributed (py-spy read no stack)"

_IDLE_RULES: list[Rule] = [
    (IDLE, r"select$", r"selectors\.py", None),
    (IDLE, r"Condition\.wait$|Event\.wait$|_wait_for_tstate_lock$", r"threading\.py", None),
    (IDLE, r"^_worker$", r"concurrent/futures", None),
    (IDLE, r"_Watchdog\._run$", r"onewriter/", None),
    (SEND, r"_SelectorSocketTransport\.(write|_write_ready)$", r"selector_events\.py", None),
    (RECV, r"_SelectorSocketTransport\._read_ready", r"selector_events\.py", None),
]

WRITER_RULES: list[Rule] = [
    *_IDLE_RULES,
    ("frame read: split frames", r"FrameReader\.feed$", _FRAMES, None),
    ("frame read: split frames", r"^_frames$", r"_funnel_floor\.py", r"^(?!.*unpackb)"),
    (
        "frame decode (msgpack unpack)",
        r"^(unpack|messages)$",
        _FRAMES,
        None,
    ),
    ("frame decode (msgpack unpack)", r"^_frames$", r"_funnel_floor\.py", None),
    (
        "intake: per-frame loop (data_received, _handle_body)",
        r"\.(data_received|_handle_body|_first)$|Intake\.take_body$",
        r"_server\.py|endpoints/stream\.py|intake\.py|_funnel_floor\.py",
        None,
    ),
    ("intake: Request object", r"^Request\.__init__$", r"onewriter/", None),
    (
        "intake: validation (_request, _build, ack)",
        r"\._request$|\._build$|^_is_sqlite_int$|\.note_ack$|Intake\.(take|build)$",
        r"onewriter/",
        None,
    ),
    (
        "intake: queue + schedule",
        r"WriterService\.(accept|_schedule)$|BareWriter\.take$|<genexpr>",
        r"_writer\.py|writer/service\.py|_funnel_floor\.py",
        None,
    ),
    ("engine: write turn (take + give)", r".", r"onewriter/_?turn\.py", None),
    ("engine: exactly-once record", r"^Applied\.record|^Engine\._record$", r"onewriter/", None),
    ("os.stat of the WAL (is a checkpoint due?)", r"Checkpointer\.wal_bytes$", r"onewriter/", None),
    (
        "checkpoint (PASSIVE, every 200 commits)",
        r"Checkpointer\.|Engine\.maybe_checkpoint$",
        r"onewriter/",
        None,
    ),
    (
        "engine: SQLite execute of the INSERT (+ result map)",
        r"Engine\._call$|Engine\._run_sql$",
        r"onewriter/",
        None,
    ),
    (
        "engine: SQLite execute of the INSERT (+ result map)",
        r"BareWriter\.commit$",
        r"_funnel_floor\.py",
        r"execute\(m\[",
    ),
    ("engine: BEGIN IMMEDIATE", r"Engine\._transaction$", r"onewriter/", r"BEGIN_SQL"),
    ("engine: BEGIN IMMEDIATE", r"BareWriter\.commit$", r"_funnel_floor\.py", r"BEGIN IMMEDIATE"),
    ("engine: COMMIT (WAL append)", r"Engine\._transaction$", r"onewriter/", r"COMMIT_SQL"),
    ("engine: COMMIT (WAL append)", r"BareWriter\.commit$", r"_funnel_floor\.py", r'"COMMIT"'),
    ("engine: encode result (msgpack)", r"Engine\._run_all$", r"onewriter/", r"pack\("),
    (
        "reply: encode (reply body, frame)",
        r"Request\.reply_body$|^frames?_packed$|^array_header$",
        r"onewriter/",
        None,
    ),
    ("reply: encode (reply body, frame)", r"^_frame$", r"_funnel_floor\.py", None),
    (
        "reply: encode (reply body, frame)",
        r"BareWriter\.commit$",
        r"_funnel_floor\.py",
        r"reply = \{",
    ),
    (
        "reply: deliver + flush",
        r"(ClientConnection|StreamPeer)\.(deliver|flush)$|Engine\._deliver$",
        r"onewriter/",
        None,
    ),
    ("reply: deliver + flush", r"BareWriter\.commit$", r"_funnel_floor\.py", r"replies|transport"),
    ("engine: per-request loop", r"Engine\._run_all$", r"onewriter/", None),
    ("engine: per-request loop", r"BareWriter\.commit$", r"_funnel_floor\.py", r"for transport, m"),
    (
        "engine: batch bookkeeping (deadlines, counters, stats)",
        r".",
        r"onewriter/(_engine|writer/engine)\.py",
        None,
    ),
    (
        "engine: batch bookkeeping (deadlines, counters, stats)",
        r"WriterService\._run$|BareWriter\.commit$",
        r"onewriter/|_funnel_floor\.py",
        None,
    ),
]

CLIENT_RULES: list[Rule] = [
    *_IDLE_RULES,
    (
        "API: execute_write, _channel, _sql_fields, WriteResult",
        r".",
        r"onewriter/_?database\.py",
        None,
    ),
    (
        "request: call + _send (id, seq, ack, future, pending entry)",
        r"AsyncChannel\.(call|_send)$|_Pending\.__init__$",
        r"onewriter/",
        None,
    ),
    (
        "request: call + _send (id, seq, ack, future, pending entry)",
        r"BareClient\.call$",
        r"_funnel_floor\.py",
        None,
    ),
    ("encode request (msgpack, frame)", r"^frame$|AsyncChannel\._frames$", r"onewriter/", None),
    ("encode request (msgpack, frame)", r"AsyncChannel\.call$", r"onewriter/", r"self\.pack\("),
    ("encode request (msgpack, frame)", r"^_frame$", r"_funnel_floor\.py", None),
    (
        "send: one flush per loop turn",
        r"AsyncChannel\._flush$|BareClient\.flush$",
        r"onewriter/|_funnel_floor\.py",
        None,
    ),
    ("frame read: split frames", r"FrameReader\.feed$", _FRAMES, None),
    ("frame read: split frames", r"^_frames$", r"_funnel_floor\.py", r"^(?!.*unpackb)"),
    (
        "decode reply (msgpack unpack)",
        r"^(unpack|messages)$",
        _FRAMES,
        None,
    ),
    ("decode reply (msgpack unpack)", r"^_frames$", r"_funnel_floor\.py", None),
    (
        "future resolution (match id, set_result)",
        r"AsyncChannel\.(_on_message|on_message|_resolve)$|^_settle$"
        r"|(_StreamProtocol|StreamLink)\.(data_received|_on_message)$",
        r"onewriter/",
        None,
    ),
    (
        "future resolution (match id, set_result)",
        r"BareClient\.data_received$",
        r"_funnel_floor\.py",
        None,
    ),
    ("timeout sweep", r"AsyncChannel\._sweep$", r"onewriter/", None),
    (
        "benchmark: the lane (loop, clock, counter)",
        r"lane$|<lambda>$",
        r"benchmarks/funnel\.py",
        None,
    ),
]


def classify(stack: tuple[Frame, ...], rules: Sequence[Rule]) -> str:
    compiled = _compiled(rules)
    for frame in reversed(stack):
        if not frame.python:
            continue
        for category, func, file, line in compiled:
            if (
                func.search(frame.func)
                and file.search(frame.file)
                and (line is None or line.search(frame.source()))
            ):
                return category
    if any(f.file.startswith("asyncio/") for f in stack):
        return LOOP
    return OTHER


_cache: dict[int, list[tuple[str, re.Pattern[str], re.Pattern[str], re.Pattern[str] | None]]] = {}


def _compiled(
    rules: Sequence[Rule],
) -> list[tuple[str, re.Pattern[str], re.Pattern[str], re.Pattern[str] | None]]:
    key = id(rules)
    if key not in _cache:
        _cache[key] = [
            (c, re.compile(f), re.compile(p), re.compile(s) if s else None) for c, f, p, s in rules
        ]
    return _cache[key]


@dataclass
class Side:
    """One profiled process: samples per category and CPU µs per acknowledged write."""

    samples: Counter[str]
    us_per_write: float
    unknown: Counter[str]

    @property
    def busy(self) -> int:
        return sum(self.samples.values()) - self.samples[IDLE]

    def us(self, category: str) -> float:
        total = self.busy
        return self.us_per_write * self.samples[category] / total if total else 0.0


def summarise(paths: Sequence[Path], rules: Sequence[Rule], us_per_write: float) -> Side:
    samples: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    stacks: Counter[tuple[Frame, ...]] = Counter()
    for path in paths:
        stacks.update(parse(path))
    for stack, count in stacks.items():
        category = classify(stack, rules)
        samples[category] += count
        if category == OTHER:
            py = [f for f in stack if f.python]
            unknown[" < ".join(f"{f.func} ({f.file}:{f.line})" for f in py[-3:][::-1])] += count
    return Side(samples, us_per_write, unknown)


class PySpy:
    """py-spy attached to the writer and the first client while the clients run."""

    def __init__(self, binary: str, folder: Path, name: str) -> None:
        self.binary, self.folder, self.name = binary, folder, name

    def attach(self, writer_pid: int, client_pids: list[int]) -> list[subprocess.Popen[bytes]]:
        procs = []
        targets = [("writer", writer_pid)]
        targets += [(f"client{i}", pid) for i, pid in enumerate(client_pids[:CLIENTS])]
        for role, pid in targets:
            out = self.folder / f"{self.name}-{role}.txt"
            procs.append(
                subprocess.Popen(
                    [
                        *(self.binary, "record", "--pid", str(pid), "--rate", str(RATE)),
                        *("--format", "raw", "--nonblocking", "--output", str(out)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return procs

    def detach(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _table(sides: dict[str, Side], categories: Sequence[str]) -> str:
    names = list(sides)
    head = ["where", *[f"{n}, µs/write" for n in names]]
    if len(names) == 2:
        head.append("difference")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]

    def row(label: str, values: list[float], bold: bool = False) -> str:
        cells = [f"{v:.2f}" for v in values]
        if len(values) == 2:
            cells.append(f"{values[1] - values[0]:+.2f}")
        if bold:
            label, cells = f"**{label}**", [f"**{c}**" for c in cells]
        return "| " + " | ".join([label, *cells]) + " |"

    for category in categories:
        values = [sides[n].us(category) for n in names]
        if any(v >= 0.05 for v in values):
            lines.append(row(category, values))
    lines.append(row("total CPU per write", [sides[n].us_per_write for n in names], bold=True))
    idle = ", ".join(
        f"{n} {100 * sides[n].samples[IDLE] / max(1, sum(sides[n].samples.values())):.0f} %"
        for n in names
    )
    busy = ", ".join(f"{n} {sides[n].busy:,}" for n in names)
    return "\n".join(lines) + (
        f"\n\nBusy samples: {busy}. Left out as idle (epoll_wait, other threads' waits): {idle}."
    )


def _order(rules: Sequence[Rule]) -> list[str]:
    seen: list[str] = []
    for category, *_ in rules:
        if category not in seen and category != IDLE:
            seen.append(category)
    return [*seen, LOOP, OTHER]


def render(
    cells: dict[str, funnel.Cell], writers: dict[str, Side], clients: dict[str, Side]
) -> str:
    out = []
    rates = "; ".join(
        f"{k} {c.per_second:,.0f} writes/s, batch p50 {c.batch_p50:.0f}" for k, c in cells.items()
    )
    out.append(f"Under the profiler: {rates}.\n")
    out.append("### The writer's process, per acknowledged write\n")
    out.append(_table(writers, _order(WRITER_RULES)) + "\n")
    out.append("### One client process, per acknowledged write\n")
    out.append(_table(clients, _order(CLIENT_RULES)) + "\n")
    unknown = Counter[str]()
    total = 0
    for side in [*writers.values(), *clients.values()]:
        unknown.update(side.unknown)
        total += side.busy
    if unknown:
        out.append("Largest unattributed stacks (deepest Python frames, share of busy samples):\n")
        out.append("```")
        for text, count in unknown.most_common(6):
            out.append(f"{100 * count / max(1, total):5.1f} %  {text}")
        out.append("```\n")
    return "\n".join(out)


def main(args: argparse.Namespace, command: str) -> None:
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    scratch = Path(tempfile.mkdtemp(prefix="ow-funnel-profile-"))
    keep = Path(os.environ.get("FUNNEL_PROFILE_KEEP", scratch))
    keep.mkdir(parents=True, exist_ok=True)
    cells: dict[str, funnel.Cell] = {}
    writers: dict[str, Side] = {}
    clients: dict[str, Side] = {}
    began = time.perf_counter()
    try:
        for key in ("floor", "funnel"):
            spy = PySpy(binary, keep, key)
            probe = funnel.Probe(spy.attach, spy.detach)
            cell = funnel.run_cell(
                funnel.WAYS[key],
                1,
                args.clients,
                args.in_flight,
                args.seconds,
                str(scratch),
                None,
                probe,
            )
            cells[key] = cell
            print(f"{key}: {cell.per_second:,.0f} writes/s, lost {cell.lost}", file=sys.stderr)
            label = "bare floor" if key == "floor" else "onewriter"
            writer_us = (cell.writer_cpu or 0.0) / cell.acked * 1e6
            client_us = sum(cell.client_cpu) / cell.acked * 1e6
            writers[label] = summarise([keep / f"{key}-writer.txt"], WRITER_RULES, writer_us)
            files = sorted(keep.glob(f"{key}-client*.txt"))
            clients[label] = summarise(files, CLIENT_RULES, client_us)
    finally:
        if keep == scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    body = render(cells, writers, clients)
    print(body)
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)
    if not args.no_write:
        _write_doc(command, body, args)


_PREAMBLE = """# The funnel's microseconds: where one pipelined write goes

`{command}`

{machine}

{clients} client processes with {in_flight} single-row INSERTs in flight each, against the
bare floor writer (`benchmarks/_funnel_floor.py`) and against onewriter's funnel
(`onewriter serve`, clients `connect_async(db, role="client", writes="funnel")`), as in
[benchmarks.md](benchmarks.md) ("The funnel at its floor"). py-spy ({rate} samples/s,
`--nonblocking`) was attached to each writer process and to {sampled} of the clients for
the window. Every busy sample (not waiting in epoll_wait or another thread's wait) is put
in the category of its deepest frame that a rule of `benchmarks/_funnel_profile.py`
names, and each category's share of the busy samples is applied to the CPU time (user +
system, from the kernel) that the process spent per acknowledged write. Client figures
are the average CPU per write over all clients, split by the sampled clients' shares.
Without `--native` a sample lands on the Python line that was running, so time in C
(SQLite, msgpack, a syscall) counts for the line that called it. py-spy takes CPU from
the same two cores, so these runs are slower than unprofiled ones: read the shares and
the differences between the columns rather than the absolute figures.

"""


def _write_doc(command: str, body: str, args: argparse.Namespace) -> None:
    from . import _report

    head = _PREAMBLE.format(
        command=command,
        machine=_report.machine(),
        clients=args.clients,
        in_flight=args.in_flight,
        rate=RATE,
        sampled=CLIENTS,
    )
    DOC.write_text(head + body.rstrip() + "\n")
    print(f"wrote {DOC}", file=sys.stderr)
