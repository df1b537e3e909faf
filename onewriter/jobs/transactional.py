"""Enqueue in the caller's own transaction, beside the application's writes: a job for
a row that was rolled back never exists, and a committed row always has its job.

On SQLite, call :func:`enqueue_in` from inside one of your registered ops with the op's
``conn`` (the op runs on the writer, in its transaction). On PostgreSQL, call it with a
psycopg connection inside your transaction (:func:`enqueue_in_async` for an
``AsyncConnection``). The queue's tables must exist (any queue object creates them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest
from .api.flows import check_parents, parents_params
from .model import DEFAULT_PAYLOAD_LIMIT, Enqueued, NewJob, check_queue_name, decode_batch
from .model import encode_batch as _encode
from .sqlite import ops as ops
from .sqlite import sql as sql

if TYPE_CHECKING:
    import psycopg


def enqueue_in(
    conn: sqlite3.Connection | psycopg.Connection[Any],
    queue: str,
    payload: Any,
    *,
    payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
    **options: Any,
) -> int:
    """Add a job in ``conn``'s transaction (options as for ``enqueue``); its id."""
    job = NewJob(payload=payload, **options)
    return enqueue_many_in(conn, queue, [job], payload_limit=payload_limit)[0].id


def enqueue_many_in(
    conn: sqlite3.Connection | psycopg.Connection[Any],
    queue: str,
    jobs: Iterable[NewJob | Any],
    *,
    payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
) -> list[Enqueued]:
    """Add many jobs in ``conn``'s transaction."""
    chosen = list(jobs)
    groups, keyed, layout = _encode(chosen, payload_limit)
    name = check_queue_name(queue)
    parents = parents_params(chosen)
    if isinstance(conn, sqlite3.Connection):
        if not conn.in_transaction:
            raise BadRequest("enqueue_in needs the conn of a running op (inside its transaction)")
        if parents is not None:
            check_parents(parents, {row[0] for row in conn.execute(sql.EXISTING, parents)})
        return decode_batch(ops.jobs_enqueue(conn, name, groups, keyed), layout)
    from .postgres import sql as pg_sql
    from .postgres.run import run_on
    from .postgres.steps import enqueue

    _check_pg_transaction(conn.info.transaction_status, conn.autocommit)
    if parents is not None:
        check_parents(parents, {row[0] for row in conn.execute(pg_sql.EXISTING, parents)})
    return decode_batch(run_on(conn, enqueue(name, groups, keyed)), layout)


async def enqueue_in_async(
    conn: psycopg.AsyncConnection[Any],
    queue: str,
    payload: Any,
    *,
    payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
    **options: Any,
) -> int:
    """Add a job in the transaction of a psycopg ``AsyncConnection``; its id."""
    from .postgres import sql as pg_sql
    from .postgres.run import run_on_async
    from .postgres.steps import enqueue

    job = NewJob(payload=payload, **options)
    groups, keyed, layout = _encode([job], payload_limit)
    _check_pg_transaction(conn.info.transaction_status, conn.autocommit)
    if (parents := parents_params([job])) is not None:
        cursor = await conn.execute(pg_sql.EXISTING, parents)
        check_parents(parents, {row[0] for row in await cursor.fetchall()})
    result = await run_on_async(conn, enqueue(check_queue_name(queue), groups, keyed))
    return decode_batch(result, layout)[0].id


def _check_pg_transaction(status: Any, autocommit: bool) -> None:
    """An autocommit connection outside ``conn.transaction()`` would commit each
    statement on its own: not the caller's transaction at all."""
    from psycopg import pq

    if autocommit and status == pq.TransactionStatus.IDLE:
        raise BadRequest("enqueue_in needs a connection inside a transaction (conn.transaction())")
