"""A Django database backend: Django's own sqlite3 backend, its writes taken in turn.

``DATABASES = {"default": {"ENGINE": "onewriter.django", "NAME": "app.db"}}``

Every write transaction holds the database's write turn (:mod:`onewriter.turn`) from
its ``BEGIN IMMEDIATE`` to its ``COMMIT`` or ``ROLLBACK``; autocommit writes hold it for
their one statement; reads never wait for it. Workers of a gunicorn or uvicorn server
then queue for the turn in the kernel instead of sleeping in SQLite's busy handler, and
no request meets ``database is locked``. See docs/django.md.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:
    from ..extras import missing_extra

    raise missing_extra("django", "ENGINE 'onewriter.django'", exc) from None

from ._errors import BadOptions, TransactionTimeout, WriteTurnTimeout
from ._options import TurnOptions

__all__ = ["BadOptions", "TransactionTimeout", "TurnOptions", "WriteTurnTimeout"]
