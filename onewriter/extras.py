"""Optional extras: the check that names the one to install when a feature needs it.

``pip install onewriter`` brings only msgpack; the HTTP services, the Redis transport,
SQLCipher and the terminal tables come with extras. A feature checks its extra before
it starts anything, so a missing one is one line naming the ``pip install`` to run, not
a traceback from a worker process or a retry loop.
"""

from __future__ import annotations

import importlib

from .errors import MissingExtra

#: The modules each extra provides that onewriter imports.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "http": ("uvicorn", "starlette", "httpx"),
    "redis": ("redis",),
    "postgres": ("psycopg", "psycopg_pool"),
    "sqlcipher": ("sqlcipher3",),
    "rich": ("rich",),
    "django": ("django",),
    "speed": ("uvloop",),
}


def missing_extra(extra: str, what: str, exc: ImportError) -> MissingExtra:
    """The error for ``what`` failing to import a module of ``extra``."""
    name = exc.name or str(exc)
    return MissingExtra(
        f"{what} needs the {extra} extra: pip install 'onewriter[{extra}]' "
        f"(no module named {name!r})"
    )


def require_extra(extra: str, what: str) -> None:
    """Import the modules of ``extra`` or raise :class:`MissingExtra` naming it."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise missing_extra(extra, what, exc) from None


def has_extra(extra: str) -> bool:
    """Whether every module of ``extra`` imports."""
    try:
        require_extra(extra, "")
    except MissingExtra:
        return False
    return True
