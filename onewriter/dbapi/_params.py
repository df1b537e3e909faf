"""Parameters for the writer, prepared as the standard module would bind them.

Statements that run on a local reader get the caller's parameters untouched (the
standard module binds them). Statements sent to the writer travel as msgpack, so they
are adapted here first: registered adapters (``sqlite3.register_adapter``) and
``__conform__`` apply, subclasses of int, float and str become the base type, any
buffer becomes bytes, and anything else is refused as the standard module refuses it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ._errors import ProgrammingError

_PLAIN = frozenset({int, float, str, bytes, type(None)})


def adapt(value: Any, index: int) -> Any:
    """One parameter, as the writer can bind it."""
    if type(value) in _PLAIN:
        return value
    value = sqlite3.adapt(value, sqlite3.PrepareProtocol, value)
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ProgrammingError(
        f"Error binding parameter {index}: type '{type(value).__name__}' is not supported"
    )


def for_writer(params: Any) -> list[Any] | dict[str, Any]:
    """One statement's parameters: a list for ``?``, a map for named parameters."""
    if isinstance(params, dict):
        return {str(k): adapt(v, i) for i, (k, v) in enumerate(params.items(), 1)}
    if isinstance(params, list | tuple):
        return [adapt(v, i) for i, v in enumerate(params, 1)]
    if hasattr(type(params), "__getitem__") and hasattr(type(params), "__len__"):
        return [adapt(params[i], i + 1) for i in range(len(params))]
    raise ProgrammingError("parameters are of unsupported type")


def many_for_writer(seq_of_params: Iterable[Any]) -> list[list[Any] | dict[str, Any]]:
    """Every parameter set of an ``executemany`` (an iterator is consumed here)."""
    return [for_writer(params) for params in seq_of_params]
