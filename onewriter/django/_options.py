"""The backend's own entries in ``DATABASES[...]["OPTIONS"]``.

They are taken out before the rest goes to ``sqlite3.connect`` as in Django's sqlite3
backend (``timeout``, ``init_command``, ``transaction_mode`` and the like keep their
meaning there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from ._errors import BadOptions

Durability = Literal["normal", "full"]


@dataclass(frozen=True, kw_only=True)
class TurnOptions:
    """How the backend sets up its connections and takes the write turn.

    Times are in seconds.
    """

    durability: Durability = "normal"
    """``normal``: ``synchronous=NORMAL`` (a committed write survives any process crash);
    ``full``: ``synchronous=FULL`` (it also survives a power loss)."""

    turn_timeout: float = 10.0
    """How long a write waits for the write turn before it fails with
    :class:`WriteTurnTimeout` (below gunicorn's 30 s worker timeout)."""

    transaction_timeout: float | None = None
    """How long one transaction may hold the turn; past it its running statement is
    interrupted and every later one (COMMIT too) fails with :class:`TransactionTimeout`.
    ``None``: no limit (migrations may rebuild big tables)."""

    journal_size_limit: int = 64 * 1024 * 1024
    """Bytes the WAL file is truncated to after a checkpoint."""

    def __post_init__(self) -> None:
        if self.durability not in ("normal", "full"):
            raise BadOptions(f"durability must be 'normal' or 'full', not {self.durability!r}")
        _check_seconds("turn_timeout", self.turn_timeout)
        if self.transaction_timeout is not None:
            _check_seconds("transaction_timeout", self.transaction_timeout)
        if not isinstance(self.journal_size_limit, int) or self.journal_size_limit < 0:
            raise BadOptions(
                f"journal_size_limit must be a whole number of bytes >= 0, "
                f"not {self.journal_size_limit!r}"
            )

    @classmethod
    def pop_from(cls, params: dict[str, Any]) -> TurnOptions:
        """Take this backend's entries out of ``params`` (the connect arguments)."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: params.pop(name) for name in list(params) if name in names})


def _check_seconds(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise BadOptions(f"{name} must be a number of seconds > 0, not {value!r}")
