"""The error tree. Every error has a stable ``.code`` that maps to the wire and to HTTP.

::

    OneWriterError                 (any error raised by onewriter)
    ├── WriteError                 (the codes of the write path, docs/api.md)
    │   ├── QueueFull              QUEUE_FULL          503
    │   ├── ClientTimeout          CLIENT_TIMEOUT      504
    │   ├── DeadlineExceeded       TIMEOUT             504
    │   ├── UnknownOp              UNKNOWN_OP          400
    │   ├── BadRequest             BAD_REQUEST         400
    │   ├── OpFailed               OP_FAILED           500
    │   ├── CommitFailed           COMMIT_FAILED       503
    │   ├── Unauthorized           UNAUTHORIZED        401
    │   ├── TooLarge               TOO_LARGE           413
    │   ├── SqlNotAllowed          SQL_NOT_ALLOWED     403
    │   ├── WriterUnavailable      WRITER_UNAVAILABLE  503
    │   └── ShuttingDown           SHUTTING_DOWN       503
    ├── ReadTimeout                READ_TIMEOUT        504  (a read ran past its deadline)
    ├── ReadOnly                   READ_ONLY           403  (a read tried to write or reach out)
    ├── ReadsDisabled              READS_DISABLED      403  (this transport serves no reads)
    ├── Closed                     CLOSED              500  (used after close())
    ├── UnsupportedFilesystem      UNSUPPORTED_FS      500  (WAL cannot work there)
    ├── WrongKey                   BAD_KEY             500  (the key does not open the file)
    ├── BackupFailed               BACKUP_FAILED       500  (a backup or restore refused)
    ├── MissingExtra               MISSING_EXTRA       500  (an optional extra is not installed)
    └── NoSuchFolder               NO_SUCH_FOLDER      500  (the database's folder does not exist)

The class docstring is the default message.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Characters of an error message sent in a reply (at most 4 bytes each, well within the
#: smallest ``max_frame``).
WIRE_MESSAGE_LIMIT = 1000


class OneWriterError(Exception):
    """onewriter failed."""

    code: ClassVar[str] = "ERROR"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        super().__init__(self.message)

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` member of a reply frame; a long message is cut, so that every
        reply fits the smallest frame limit (an exception's text can quote a whole
        statement)."""
        message = self.message
        if len(message) > WIRE_MESSAGE_LIMIT:
            message = message[: WIRE_MESSAGE_LIMIT - 1] + "…"
        return {"code": self.code, "message": message}


class WriteError(OneWriterError):
    """The write was not applied."""


class QueueFull(WriteError):
    """The writer's pending queue is full; try again later."""

    code = "QUEUE_FULL"
    http_status = 503


class ClientTimeout(WriteError):
    """No reply from the writer in time; the write may or may not have been applied."""

    code = "CLIENT_TIMEOUT"
    http_status = 504


class DeadlineExceeded(WriteError):
    """The request's deadline passed before the writer ran it; it was not run."""

    code = "TIMEOUT"
    http_status = 504


class UnknownOp(WriteError):
    """The operation is not in the writer's registry."""

    code = "UNKNOWN_OP"
    http_status = 400


class BadRequest(WriteError):
    """The request was malformed."""

    code = "BAD_REQUEST"
    http_status = 400


class OpFailed(WriteError):
    """The operation raised; its savepoint was rolled back."""

    code = "OP_FAILED"
    http_status = 500


class CommitFailed(WriteError):
    """The batch's COMMIT failed (disk full, I/O error); nothing in it was applied."""

    code = "COMMIT_FAILED"
    http_status = 503


class Unauthorized(WriteError):
    """Authentication is missing or wrong."""

    code = "UNAUTHORIZED"
    http_status = 401


class TooLarge(WriteError):
    """The frame or payload is over its limit."""

    code = "TOO_LARGE"
    http_status = 413


class SqlNotAllowed(WriteError):
    """Raw SQL writes are disabled on this transport."""

    code = "SQL_NOT_ALLOWED"
    http_status = 403


class WriterUnavailable(WriteError):
    """No writer could be reached or elected in time."""

    code = "WRITER_UNAVAILABLE"
    http_status = 503


class ShuttingDown(WriteError):
    """The writer is draining and accepts no new requests."""

    code = "SHUTTING_DOWN"
    http_status = 503


class ReadTimeout(OneWriterError):
    """The read ran past its deadline and was interrupted."""

    code = "READ_TIMEOUT"
    http_status = 504


class ReadOnly(OneWriterError):
    """Readers only read: the statement would write, change settings or reach files."""

    code = "READ_ONLY"
    http_status = 403


class ReadsDisabled(OneWriterError):
    """The writer serves no reads (nor stats) on this transport (``Config.remote_reads``)."""

    code = "READS_DISABLED"
    http_status = 403


class Closed(OneWriterError):
    """The database object is closed."""

    code = "CLOSED"
    http_status = 500


class UnsupportedFilesystem(OneWriterError):
    """WAL needs shared memory on one host: the database is on a network filesystem."""

    code = "UNSUPPORTED_FS"
    http_status = 500


class WrongKey(OneWriterError):
    """The database cannot be read with this key (or without one): nothing was written."""

    code = "BAD_KEY"
    http_status = 500


class BackupFailed(OneWriterError):
    """The backup or restore was refused or failed its integrity check."""

    code = "BACKUP_FAILED"
    http_status = 500


class MissingExtra(OneWriterError, ImportError):
    """This feature needs an optional extra that is not installed (also an ImportError)."""

    code = "MISSING_EXTRA"
    http_status = 500


class NoSuchFolder(OneWriterError):
    """The database's folder does not exist: onewriter creates the file, not its folder."""

    code = "NO_SUCH_FOLDER"
    http_status = 500


ERRORS_BY_CODE: dict[str, type[OneWriterError]] = {
    cls.code: cls
    for cls in (
        QueueFull,
        ClientTimeout,
        DeadlineExceeded,
        UnknownOp,
        BadRequest,
        OpFailed,
        CommitFailed,
        Unauthorized,
        TooLarge,
        SqlNotAllowed,
        WriterUnavailable,
        ShuttingDown,
        ReadTimeout,
        ReadOnly,
        ReadsDisabled,
        Closed,
        UnsupportedFilesystem,
        WrongKey,
        BackupFailed,
        MissingExtra,
        NoSuchFolder,
    )
}


def error_from_wire(error: Any) -> OneWriterError:
    """Rebuild the exception a peer sent as ``{"code", "message"}``."""
    if not isinstance(error, dict):
        return BadRequest(f"malformed error member: {error!r}")
    code = error.get("code")
    message = error.get("message")
    text = message if isinstance(message, str) else None
    cls = ERRORS_BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        return OneWriterError(f"{code}: {text}")
    return cls(text)
