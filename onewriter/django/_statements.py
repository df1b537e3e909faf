"""Which statements need the write turn when no transaction is open.

Conservative: a statement is a read only when its first keyword says so (``SELECT``,
``EXPLAIN``, ``VALUES``, a ``PRAGMA`` that sets nothing); everything else (writes,
DDL, ``BEGIN``, ``SAVEPOINT``, ``WITH`` …) takes the turn. A read taken for a write
only costs a turn; the other way round would let two writers meet in SQLite.
"""

from __future__ import annotations

import re

#: The first keyword, after whitespace, comments and opening brackets.
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)
_READ_WORDS = frozenset({"SELECT", "EXPLAIN", "VALUES"})
#: Pragmas that change the file (or checkpoint it) even without ``=``.
_WRITING_PRAGMAS = re.compile(r"\b(wal_checkpoint|optimize|incremental_vacuum)\b", re.I)
_BEGIN = re.compile(r"\s*BEGIN(\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(\s+TRANSACTION)?\s*;?\s*$", re.I)

BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"


def first_word(sql: str) -> str:
    """The statement's first keyword, upper-cased ('' when there is none)."""
    match = _FIRST_WORD.match(sql)
    return match.group(1).upper() if match else ""


def is_read(sql: str) -> bool:
    """Whether ``sql`` runs outside a transaction without writing the file."""
    word = first_word(sql)
    if word in _READ_WORDS:
        return True
    if word == "PRAGMA":
        return "=" not in sql and not _WRITING_PRAGMAS.search(sql)
    return False


def immediate_begin(sql: str) -> str:
    """``sql`` with a deferred ``BEGIN`` made ``BEGIN IMMEDIATE``: the turn is held, so
    SQLite's write lock is taken at once and a later write never needs an upgrade."""
    match = _BEGIN.match(sql)
    if match is None or (match.group(2) or "").upper() == "EXCLUSIVE":
        return sql
    return BEGIN_IMMEDIATE
