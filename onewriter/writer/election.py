"""Election by an OS lock beside the database, and the writer's socket path.

The lock is an ``flock`` on ``<db>.onewriter.lock``: the kernel releases it when the
holder dies, so a stale writer can never keep the role. The winner binds the socket
(replacing any stale one); everyone else connects to it.

A lock file descriptor must not outlive a ``fork()`` in the child: the child would keep
the lock alive after the writer died. Children close every lock they inherited.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import struct
import tempfile
import weakref

_held: weakref.WeakSet[ElectionLock] = weakref.WeakSet()


class ElectionLock:
    """The writer role: held while this process is the writer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        _held.add(self)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _held.discard(self)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _forget_in_child(self) -> None:
        """Drop the inherited descriptor (closing it does not unlock the parent's hold)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _after_fork_in_child() -> None:
    for lock in list(_held):
        lock._forget_in_child()
    _held.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def lock_is_held(path: str) -> bool:
    """Whether some process holds the election lock at ``path`` right now (a probe
    that creates no file and needs no write permission)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # which also drops the probe's own hold
    return False


def bind_private_socket(path: str) -> socket.socket:
    """Bind a listening Unix socket at ``path`` that is never open to other users.

    It is bound inside a fresh 0700 directory, set to 0600 and renamed into place
    (the rename atomically replaces a stale socket left by a dead writer).
    """
    directory = os.path.dirname(path) or "."
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    tmpdir = tempfile.mkdtemp(prefix=".ow-", dir=directory)
    tmp_path = os.path.join(tmpdir, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp_path)
        os.chmod(tmp_path, 0o600)
        sock.listen(512)
        os.rename(tmp_path, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmpdir)
    sock.setblocking(False)
    return sock


def remove_socket(path: str, inode: int | None) -> None:
    """Remove the socket file if it is still the one this writer bound."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and (inode is None or st.st_ino == inode):
            os.unlink(path)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process on the other end of a Unix socket (SO_PEERCRED)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
