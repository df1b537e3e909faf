"""The registry of named write operations.

An op is a plain function ``(conn, **args) -> result`` that the writer runs inside its
own transaction, in a savepoint of its own. Registering it returns an :class:`Op` that
keeps the function's signature, so a type checker rejects ``db.write(op, titel="x")``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")


class Op(Generic[P, R]):
    """A registered write operation: a name and the function the writer runs."""

    __slots__ = ("__wrapped__", "fn", "name")

    def __init__(self, name: str, fn: Callable[Concatenate[sqlite3.Connection, P], R]) -> None:
        self.name = name
        self.fn = fn
        self.__wrapped__ = fn

    def __call__(self, conn: sqlite3.Connection, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the op directly on a connection (the writer does this; so can tests)."""
        return self.fn(conn, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<Op {self.name}>"


class _Registrar(Protocol):
    """What ``ops.register(name=...)`` returns: a decorator keeping the signature."""

    def __call__(self, fn: Callable[Concatenate[sqlite3.Connection, P], R], /) -> Op[P, R]: ...


class Ops:
    """A set of ops, looked up by name on the writer's side.

    ::

        ops = Ops()

        @ops.register
        def create_post(conn, title: str) -> int: ...
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Op[..., Any]] = {}

    @overload
    def register(self, fn: Callable[Concatenate[sqlite3.Connection, P], R], /) -> Op[P, R]: ...

    @overload
    def register(self, *, name: str) -> _Registrar: ...

    def register(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register ``fn`` under its own name (or ``name=``); use bare or called."""

        def add(f: Callable[..., Any]) -> Op[..., Any]:
            op_name = name or getattr(f, "__name__", None)
            if not op_name:
                raise ValueError("an op needs a name")
            if op_name in self._by_name:
                raise ValueError(f"an op named {op_name!r} is already registered")
            op: Op[..., Any] = Op(op_name, f)
            self._by_name[op_name] = op
            return op

        return add(fn) if fn is not None else add

    def include(self, other: Ops) -> None:
        """Add every op of ``other`` (for composing registries of several modules)."""
        for op in other:
            if op.name in self._by_name and self._by_name[op.name] is not op:
                raise ValueError(f"an op named {op.name!r} is already registered")
            self._by_name[op.name] = op

    def get(self, name: str) -> Op[..., Any] | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Op[..., Any]]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)


def op_name(op: Op[..., Any] | str) -> str:
    """The wire name of an op given as an :class:`Op` or a name."""
    if isinstance(op, Op):
        return op.name
    if isinstance(op, str):
        return op
    raise TypeError(f"expected an Op or an op name, not {type(op).__name__}")
