"""The backend's errors: onewriter's codes, and Django's classes so Django handles them.

Each is both a :class:`~onewriter.OneWriterError` (a stable ``.code``) and the Django
exception its callers already catch: ``atomic()`` rolls back on a ``DatabaseError`` and
a view that catches ``OperationalError`` for a busy database keeps working.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db.utils import OperationalError

from ..errors import BadRequest, DeadlineExceeded
from ..turn import TurnTimeout


class WriteTurnTimeout(TurnTimeout, OperationalError):
    """The write turn stayed taken for turn_timeout seconds; nothing was run."""


class TransactionTimeout(DeadlineExceeded, OperationalError):
    """The transaction held the write turn past transaction_timeout and was stopped;
    it is rolled back and nothing in it was applied."""


class BadOptions(BadRequest, ImproperlyConfigured):
    """DATABASES[...]["OPTIONS"] has a value the onewriter backend cannot use."""
