"""onewriter: one SQLite database, many processes.

Reads run in parallel in every process; every write goes to one elected writer, which
batches writes into group commits and answers only after COMMIT.
"""

from .config import Config
from .database import AsyncDatabase, Database, WriteResult, connect, connect_async
from .errors import (
    BackupFailed,
    BadRequest,
    ClientTimeout,
    Closed,
    CommitFailed,
    DeadlineExceeded,
    MissingExtra,
    NoSuchFolder,
    OneWriterError,
    OpFailed,
    QueueFull,
    ReadOnly,
    ReadsDisabled,
    ReadTimeout,
    ShuttingDown,
    SqlNotAllowed,
    TooLarge,
    Unauthorized,
    UnknownOp,
    UnsupportedFilesystem,
    WriteError,
    WriterUnavailable,
    WrongKey,
)
from .ops import Op, Ops
from .sqlite.backup import BackupResult
from .sqlite.quoting import quote

__version__ = "0.1.0"

__all__ = [
    "AsyncDatabase",
    "BackupFailed",
    "BackupResult",
    "BadRequest",
    "ClientTimeout",
    "Closed",
    "CommitFailed",
    "Config",
    "Database",
    "DeadlineExceeded",
    "MissingExtra",
    "NoSuchFolder",
    "OneWriterError",
    "Op",
    "OpFailed",
    "Ops",
    "QueueFull",
    "ReadOnly",
    "ReadTimeout",
    "ReadsDisabled",
    "ShuttingDown",
    "SqlNotAllowed",
    "TooLarge",
    "Unauthorized",
    "UnknownOp",
    "UnsupportedFilesystem",
    "WriteError",
    "WriteResult",
    "WriterUnavailable",
    "WrongKey",
    "__version__",
    "connect",
    "connect_async",
    "quote",
]
