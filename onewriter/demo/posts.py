"""The posts schema and its write operations, run by the writer (or, naively, by each worker).

Each op is one short transaction's worth of work: it reads what it needs and writes in
the same savepoint, so it never sees a half-applied neighbour.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..ops import Ops

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE posts (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        content TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
)

COLUMNS = "id, title, content, created_at, updated_at"
LIST_POSTS = f"SELECT {COLUMNS} FROM posts ORDER BY id DESC LIMIT ? OFFSET ?"
GET_POST = f"SELECT {COLUMNS} FROM posts WHERE id = ?"

_INSERT = (
    "INSERT INTO posts (title, content, created_at, updated_at) VALUES (?, ?, ?, ?) "
    f"RETURNING {COLUMNS}"
)
_UPDATE = (
    "UPDATE posts SET title = coalesce(?, title), content = coalesce(?, content), "
    f"updated_at = ? WHERE id = ? RETURNING {COLUMNS}"
)
_DELETE = "DELETE FROM posts WHERE id = ?"

ops = Ops()


def post_dict(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """A post as the API returns it."""
    post_id, title, content, created_at, updated_at = tuple(row)
    return {
        "id": post_id,
        "title": title,
        "content": content,
        "created_at": created_at,
        "updated_at": updated_at,
    }


@ops.register
def create_post(conn: sqlite3.Connection, title: str, content: str = "") -> dict[str, Any]:
    """Insert a post; returns it with its id."""
    now = time.time()
    row = conn.execute(_INSERT, (title, content, now, now)).fetchone()
    return post_dict(row)


@ops.register
def update_post(
    conn: sqlite3.Connection,
    post_id: int,
    title: str | None = None,
    content: str | None = None,
) -> dict[str, Any] | None:
    """Change the given fields of a post; ``None`` when there is no such post."""
    row = conn.execute(_UPDATE, (title, content, time.time(), post_id)).fetchone()
    return None if row is None else post_dict(row)


@ops.register
def delete_post(conn: sqlite3.Connection, post_id: int) -> bool:
    """Remove a post; whether it existed."""
    return conn.execute(_DELETE, (post_id,)).rowcount > 0
