"""onewriter: one SQLite database, many processes.

Reads run in parallel in every process; every write goes to one elected writer, which
batches writes into group commits and answers only after COMMIT.
"""

from ._config import Config
from ._database import AsyncDatabase, Database, WriteResult, connect, connect_async
from ._errors import (
    BadRequest,
    ClientTimeout,
    Closed,
    CommitFailed,
    DeadlineExceeded,
    OneWriterError,
    OpFailed,
    QueueFull,
    ReadTimeout,
    ShuttingDown,
    SqlNotAllowed,
    TooLarge,
    Unauthorized,
    UnknownOp,
    UnsupportedFilesystem,
    WriteError,
    WriterUnavailable,
)
from ._ops import Op, Ops

__version__ = "0.1.0"

__all__ = [
    "AsyncDatabase",
    "BadRequest",
    "ClientTimeout",
    "Closed",
    "CommitFailed",
    "Config",
    "Database",
    "DeadlineExceeded",
    "OneWriterError",
    "Op",
    "OpFailed",
    "Ops",
    "QueueFull",
    "ReadTimeout",
    "ShuttingDown",
    "SqlNotAllowed",
    "TooLarge",
    "Unauthorized",
    "UnknownOp",
    "UnsupportedFilesystem",
    "WriteError",
    "WriteResult",
    "WriterUnavailable",
    "__version__",
    "connect",
    "connect_async",
]
