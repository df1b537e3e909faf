"""Reads served to peers on other hosts (TCP, Redis): who may send them, and bounds.

A remote read runs on a reader pool of the writer's host, never on the writer's thread.
Its readers refuse anything but reading (``_readonly``), so a read can neither write nor
touch a file, whatever its SQL. The answer is bounded three ways: no value may grow past
``max_frame`` (SQLite's length limit on these readers), the rows are packed as they are
fetched and the read stops with ``TOO_LARGE`` once they pass ``max_frame`` (memory stays
near one frame, however many rows the SQL could produce), and at most ``max_pending``
reads wait at once (``QUEUE_FULL`` beyond). ``read_timeout`` bounds the time.

Which transports may read is ``Config.remote_reads``: ``"tcp"`` by default, because a
TCP peer has proven it knows the token while Redis authenticates nobody on its own (a
read can return any row of any table, which an op registry never would).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from ...config import Config
from ...errors import BadRequest, OneWriterError, QueueFull, TooLarge
from ...sqlite.readpool import Collect, Params, ReadPool
from ...wire import frames as proto

if TYPE_CHECKING:
    from ..service import WriterService


#: Rows fetched from SQLite at a time while a remote read's answer is packed.
_FETCH_ROWS = 256
_SQLITE_TOOBIG = 18


def reads_allowed(config: Config, transport: str) -> bool:
    """Whether peers on ``transport`` may send reads (and ask for stats)."""
    return config.remote_reads == "all" or config.remote_reads == transport


def _read_problem(sql: Any, params: Any, timeout: Any) -> str | None:
    if not isinstance(sql, str):
        return "a read needs sql (a string)"
    if not isinstance(params, list | dict):
        return "read params must be a list or a map"
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        return "a read timeout must be a positive, finite number of seconds"
    return None


def packed_reply(rid: int, limit: int) -> Collect[bytes]:
    """A collector that packs a read's whole reply as it fetches the rows, and stops with
    ``TOO_LARGE`` as soon as they pass ``limit`` bytes."""

    def collect(cursor: sqlite3.Cursor) -> bytes:
        description = cursor.description or ()
        head = b"".join(
            [
                b"\x83",
                proto.pack("id"),
                proto.pack(rid),
                proto.pack("ok"),
                proto.pack(True),
                proto.pack("result"),
                b"\x82",
                proto.pack("columns"),
                proto.pack([column[0] for column in description]),
                proto.pack("rows"),
            ]
        )
        pack = msgpack.Packer(use_bin_type=True).pack
        parts: list[bytes] = []
        size = len(head) + 5  # the rows' array header, at most
        count = 0
        while rows := cursor.fetchmany(_FETCH_ROWS):
            for row in rows:
                part = pack(tuple(row))
                size += len(part)
                if size > limit:
                    raise TooLarge(
                        f"the read's rows take more than max_frame ({limit} bytes) after "
                        f"{count} rows: ask for fewer rows or columns"
                    )
                parts.append(part)
                count += 1
        return b"".join([head, proto.array_header(count), *parts])

    return collect


class RemoteReads:
    """The writer host's reads for remote peers; answers are handed back on the writer's
    loop, where ``start`` was called."""

    def __init__(self, service: WriterService) -> None:
        self.config = service.config
        self.pool = ReadPool(service.db_path, service.config, max_value=service.config.max_frame)
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0
        self.refused = 0

    def start(self, rid: int, message: dict[str, Any], answer: Callable[[bytes], None]) -> None:
        """Check ``message`` now, run it on a pool thread, then ``answer(reply body)``."""
        sql = message.get("sql")
        params = message.get("params", [])
        timeout = message.get("timeout")
        problem = _read_problem(sql, params, timeout)
        error: OneWriterError | None = None
        if problem is not None:
            error = BadRequest(problem)
        elif len(self._tasks) >= self.config.max_pending:
            error = QueueFull(f"{len(self._tasks)} remote reads are already waiting")
        if error is not None or not isinstance(sql, str):
            self.refused += 1
            answer(proto.pack({"id": rid, "error": (error or BadRequest()).to_wire()}))
            return
        limit = self.config.read_timeout
        if timeout is not None:
            limit = timeout if limit is None else min(limit, float(timeout))
        task = asyncio.get_running_loop().create_task(self._run(rid, sql, params, limit, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        rid: int,
        sql: str,
        params: Params,
        timeout: float | None,
        answer: Callable[[bytes], None],
    ) -> None:
        collect = packed_reply(rid, self.config.max_frame)
        try:
            body = await self.pool.run_async(sql, params, collect, timeout=timeout)
        except OneWriterError as exc:
            self.refused += 1
            body = proto.pack({"id": rid, "error": exc.to_wire()})
        except (sqlite3.Error, ValueError, TypeError, OverflowError, MemoryError) as exc:
            failed: OneWriterError = BadRequest(f"the read failed: {type(exc).__name__}: {exc}")
            if getattr(exc, "sqlite_errorcode", 0) == _SQLITE_TOOBIG:
                failed = TooLarge(f"a value of the read is over max_frame: {exc}")
            body = proto.pack({"id": rid, "error": failed.to_wire()})
        self.served += 1
        answer(body)

    def stats(self) -> dict[str, int]:
        return {"reads_served": self.served, "reads_refused": self.refused}

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.pool.close()
