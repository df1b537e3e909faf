"""``Row``: the standard module's row factory, for rows that did not come from its cursor.

``sqlite3.Row`` only accepts the standard module's own cursor, so a connection whose
``row_factory`` is ``sqlite3.Row`` gets this class instead: columns by index, by
case-insensitive name, ``keys()``, equality and hashing as the standard row has them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

#: The standard row compares column names ignoring ASCII case only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class _Described(Protocol):
    @property
    def description(self) -> tuple[tuple[Any, ...], ...] | None: ...


class Row:
    """A result row with access by column name."""

    __slots__ = ("_description", "_values")

    def __init__(self, cursor: _Described, values: tuple[Any, ...]) -> None:
        if not isinstance(values, tuple):
            raise TypeError("Row() argument 2 must be a tuple")
        try:
            description = cursor.description
        except AttributeError:
            raise TypeError("Row() argument 1 must be a cursor") from None
        self._description = description or ()
        self._values = values

    def keys(self) -> list[str]:
        return [d[0] for d in self._description]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            folded = key.translate(_ASCII_LOWER)
            for column, value in zip(self._description, self._values, strict=False):
                if column[0].translate(_ASCII_LOWER) == folded:
                    return value
            raise IndexError("No item with that key")
        if not isinstance(key, int | slice):
            raise IndexError("Index must be int or string")
        try:
            return self._values[key]
        except OverflowError:
            raise IndexError("Row index out of range") from None

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._description == other._description and self._values == other._values

    def __hash__(self) -> int:
        return hash(self._description) ^ hash(self._values)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{k}={v!r}" for k, v in zip(self.keys(), self._values, strict=False))
        return f"<Row {pairs}>"


Sequence.register(Row)
