"""Configuration: one frozen dataclass whose defaults are safe."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any, Literal

from .errors import NoSuchFolder
from .sqlite.cipher import check_key

Role = Literal["auto", "writer", "client", "standalone"]
Durability = Literal["normal", "full"]
Checkpoint = Literal["writer", "external"]
Writes = Literal["auto", "direct", "funnel"]
WriterLoop = Literal["auto", "asyncio", "uvloop"]

#: The smallest ``max_frame``: any error reply fits in it.
MIN_FRAME = 8192
RemoteReadsMode = Literal["off", "tcp", "all"]
Migration = str | Callable[[sqlite3.Connection], Any]

#: A Unix socket path must fit in ``sockaddr_un.sun_path`` (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, kw_only=True)
class Config:
    """How onewriter opens, elects, writes and reads.

    Times are in seconds, sizes in bytes.
    """

    role: Role = "auto"
    """``auto``: join the writer or become it; ``writer``: become it or fail; ``client``:
    never write locally; ``standalone``: the writer lives in this process, no socket."""

    durability: Durability = "normal"
    """``normal``: ``synchronous=NORMAL`` (an acknowledged write survives any process crash);
    ``full``: ``synchronous=FULL`` (it also survives a power loss)."""

    writes: Writes = "auto"
    """Where this process's writes run. ``direct``: in the calling thread, on a write
    connection of this process, in a transaction of its own under the write turn (the
    asyncio face runs them on a thread); ``funnel``: sent to the elected writer, which
    commits them in group commits; ``auto``: sync writes direct at ``durability="normal"``
    and funnelled at ``"full"`` (one fsync per batch), asyncio writes funnelled (measured:
    docs/design.md). ``role="client"`` always funnels."""

    socket_path: str | None = None
    """Where the writer listens; default ``<db>.onewriter.sock`` (or a short path in a
    private directory under the temp dir when that would be too long)."""

    lock_path: str | None = None
    """The election lock file; default ``<db>.onewriter.lock``."""

    max_pending: int = 500
    """Requests queued at the writer before new ones get ``QUEUE_FULL``."""

    max_batch: int = 1000
    """Most requests committed in one transaction."""

    max_frame: int = 8 * 1024 * 1024
    """Largest wire frame accepted (``TOO_LARGE`` beyond)."""

    commit_delay: float = 0.0002
    """With ``durability="full"``: how long the writer may wait to fill a batch when fewer
    requests wait than clients are connected, so that one fsync serves more writes
    (0 turns it off; ignored at ``normal``, where a commit costs no fsync)."""

    writer_loop: WriterLoop = "asyncio"
    """The event loop on the writer's own thread: asyncio's, ``uvloop`` (the ``speed``
    extra), or ``auto`` (uvloop when installed). asyncio's is the default because it
    measured as fast or faster here (docs/benchmarks.md, "The funnel at its floor"). No
    application's loop is affected."""

    request_timeout: float = 30.0
    """A write not started within this time is not run (``TIMEOUT``): the longest a write
    waits for the write turn or in the writer's queue."""

    client_timeout: float = 60.0
    """How long a client waits for a reply (``CLIENT_TIMEOUT``)."""

    failover_timeout: float = 15.0
    """How long a client tries to reach or elect a writer (``WRITER_UNAVAILABLE``)."""

    transaction_timeout: float = 5.0
    """The longest a transaction may hold the write turn (a direct write, a group-commit
    batch, a write transaction of ``onewriter.dbapi``); past it the transaction is
    interrupted and rolled back, and its caller told (``TIMEOUT``; 0: no limit)."""

    read_pool_size: int = 4
    """Reader connections (and threads for the asyncio face) per process."""

    read_timeout: float | None = 30.0
    """A read running longer is interrupted (``READ_TIMEOUT``); ``None`` for no limit."""

    busy_timeout_ms: int = 5000
    """SQLite's busy handler, for readers meeting a checkpoint and for tools outside
    onewriter writing the file (onewriter's own writers queue on the write turn)."""

    cache_size_kib: int = 64 * 1024
    """Page cache per connection."""

    mmap_size: int = 256 * 1024 * 1024
    """Memory-mapped I/O per connection."""

    foreign_keys: bool = True
    """Enforce foreign keys (``PRAGMA foreign_keys``)."""

    allow_sql: bool = True
    """Accept raw SQL writes (``execute_write``) from local clients and, for direct
    writes, from this process."""

    migrations: Sequence[Migration] = field(default_factory=tuple)
    """Ordered SQL scripts or functions ``(conn) -> None``; those past ``PRAGMA
    user_version`` are applied under the write turn by the writer when elected, or by a
    process before its first direct write."""

    checkpoint: Checkpoint = "writer"
    """``writer``: the writer checkpoints the WAL; ``external``: a tool such as Litestream
    owns checkpoints."""

    checkpoint_every: int = 200
    """The writer runs a PASSIVE checkpoint after this many commits (or when idle); a
    direct writer looks at the WAL's size this often."""

    wal_size_limit: int = 64 * 1024 * 1024
    """When the WAL file grows past this, the writer forces a TRUNCATE checkpoint."""

    dedup_retention: float = 600.0
    """Seconds the writer keeps a client's committed request ids for exactly-once retries."""

    allowed_uids: Sequence[int] = field(default_factory=tuple)
    """Other local users allowed on the Unix socket (the writer's own uid always is)."""

    # -- producers on other machines (docs/remote.md) ------------------------------------

    listen: str | None = None
    """``tcp://HOST:PORT``: the writer also serves the protocol over TCP there (needs
    ``token``). Port 0 picks a free port."""

    token: str | None = field(default=None, repr=False)
    """The TCP transport's shared secret, on the writer and its clients. It never crosses
    the wire: each side proves it knows it with an HMAC over fresh nonces."""

    tls_cert: str | None = None
    """Writer side: a PEM certificate chain; with it, the TCP listener speaks TLS."""

    tls_key: str | None = None
    """Writer side: the PEM private key of ``tls_cert`` (when not in the same file)."""

    ssl: SSLContext | None = None
    """Client side of ``tcp://``: the TLS context to connect with (``None``: plain TCP)."""

    allow_sql_remote: bool = False
    """Accept raw SQL writes from TCP and Redis clients (named ops are always allowed)."""

    remote_reads: RemoteReadsMode = "tcp"
    """Which remote transports may send reads (and ask for stats): ``tcp`` (its peers
    proved they know the token), ``all`` (Redis too: whoever can push to the queue can
    then read every table), or ``off`` (``READS_DISABLED``). Remote reads can never write."""

    max_connections: int = 256
    """Most TCP connections open at once; more are refused with ``QUEUE_FULL``."""

    redis_url: str | None = None
    """``redis://HOST:PORT/DB``: the writer also takes requests from a Redis list there."""

    redis_queue: str = "onewriter"
    """The Redis list that carries requests (``connect(..., queue=...)``)."""

    fire_and_forget: bool = False
    """Client side of ``redis://``: writes return ``None`` once queued in Redis, without
    waiting for the writer's reply."""

    key: bytes | str | None = field(default=None, repr=False)
    """Open every connection through SQLCipher with this key (docs/encryption.md): 32
    bytes are a raw key; a str is a passphrase (or ``x'<64 hex digits>'``)."""

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        if self.role not in ("auto", "writer", "client", "standalone"):
            raise ValueError(f"role must be auto, writer, client or standalone, not {self.role!r}")
        if self.durability not in ("normal", "full"):
            raise ValueError(f"durability must be normal or full, not {self.durability!r}")
        if self.writes not in ("auto", "direct", "funnel"):
            raise ValueError(f"writes must be auto, direct or funnel, not {self.writes!r}")
        if self.writes == "direct" and self.role == "client":
            raise ValueError("role='client' never writes locally: writes='direct' needs another")
        if self.writer_loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(
                f"writer_loop must be auto, asyncio or uvloop, not {self.writer_loop!r}"
            )
        if self.checkpoint not in ("writer", "external"):
            raise ValueError(f"checkpoint must be writer or external, not {self.checkpoint!r}")
        if self.remote_reads not in ("off", "tcp", "all"):
            raise ValueError(f"remote_reads must be off, tcp or all, not {self.remote_reads!r}")
        check_key(self.key)
        for name in ("max_pending", "max_batch", "read_pool_size", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME} (room for any error reply)")
        if self.listen is not None and not self.token:
            raise ValueError("listen needs a token: the TCP transport never runs unauthenticated")
        if not self.redis_queue:
            raise ValueError("redis_queue must not be empty")


def resolve_paths(database: str, config: Config) -> tuple[str, str, str]:
    """The absolute database path and the socket and lock paths that belong to it.

    Refuses a database whose folder is missing: SQLite and the lock file would fail on
    it later, naming the lock file instead of the folder.
    """
    db = os.path.realpath(database)
    folder = os.path.dirname(db)
    if not os.path.isdir(folder):
        raise NoSuchFolder(
            f"the folder of {database} does not exist: create {folder} first "
            "(onewriter creates the database file, not its folder)"
        )
    lock = config.lock_path or db + ".onewriter.lock"
    sock = config.socket_path or db + ".onewriter.sock"
    if len(sock.encode()) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(db.encode()).hexdigest()[:24]
        sock = os.path.join(private_runtime_dir(), f"{digest}.sock")
    return db, sock, lock


def private_runtime_dir() -> str:
    """A 0700 directory of this user's for sockets whose natural path is too long."""
    path = os.path.join(tempfile.gettempdir(), f"onewriter-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory owned by this user with mode 0700")
    return path
