"""Noticing ``fork()`` cheaply: a counter that every child increments.

A database object checks it on every call; comparing a number costs nothing, where a
``getpid()`` system call per request would.
"""

from __future__ import annotations

import os

_generation = 0


def generation() -> int:
    """How many forks separate this process from the first one (0 there)."""
    return _generation


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
