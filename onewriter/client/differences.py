"""Warning a process whose ops or migrations differ from those of the writer it reached.

The writer's hello names its ops and its schema version (the migrations it ran). A
client that registers an op the writer lacks would get ``UNKNOWN_OP`` on every call to
it, and one whose migrations go past the writer's version reads a schema older than it
expects: both are a deployment mistake (a writer started from older code), said once
per process and difference rather than left to surface as errors later.
"""

from __future__ import annotations

import logging
from typing import Any

from ..ops import Ops

log = logging.getLogger("onewriter.client")

_warned: set[tuple[str, str]] = set()


def writer_differences(hello: Any, ops: Ops, migrations: int) -> list[str]:
    """What this process has that the writer answering ``hello`` lacks, in words."""
    if not isinstance(hello, dict):
        return []
    found = []
    writer_ops = hello.get("ops")
    if isinstance(writer_ops, list):
        lacking = sorted({op.name for op in ops} - {str(name) for name in writer_ops})
        if lacking:
            found.append(
                f"the writer lacks ops this process registered: {', '.join(lacking)} "
                "(calls to them get UNKNOWN_OP)"
            )
    schema = hello.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and migrations > schema:
        unrun = f"{schema + 1}" if migrations == schema + 1 else f"{schema + 1} to {migrations}"
        found.append(
            f"this process has {migrations} migrations but the writer's database is at "
            f"version {schema} (migration {unrun} has not run there)"
        )
    return found


def warn_writer_differences(hello: Any, ops: Ops, migrations: int, database: str) -> None:
    """Log each difference with the writer of ``database`` once per process."""
    pid = hello.get("pid") if isinstance(hello, dict) else None
    for difference in writer_differences(hello, ops, migrations):
        key = (database, difference)
        if key in _warned:
            continue
        _warned.add(key)
        log.warning(
            "%s: %s; start the writer from the same code as its clients",
            f"writer pid {pid} of {database}" if pid else database,
            difference,
        )
