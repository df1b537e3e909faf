"""Remote peers for the security tests: ``onewriter serve`` with its TCP listener, and a
raw TCP connection that authenticates and then sends whatever a test wants."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from helpers import ONEWRITER_CLI, Child, Children, RawClient

from onewriter.wire import frames as proto
from onewriter.wire.auth import CLIENT_LABEL, proof

TOKEN = "a peer that knows the token is still only a peer"


def token_file(directory: Path) -> Path:
    path = directory / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def serve_command(db_path: str, *extra: str) -> list[str]:
    """``onewriter serve DB`` with the test ops and schema (raw SQL off remotely)."""
    return [
        ONEWRITER_CLI,
        "serve",
        db_path,
        "--ops",
        "helpers:ops",
        "--migrations",
        "helpers:MIGRATIONS",
        *extra,
    ]


def serve_tcp(children: Children, db_path: str, directory: Path, *extra: str) -> tuple[Child, str]:
    """``onewriter serve DB --listen tcp://127.0.0.1:0``, waited on until READY; returns
    it and its tcp:// URL."""
    listen = ["--listen", "tcp://127.0.0.1:0", "--token-file", str(token_file(directory))]
    child = children.start(serve_command(db_path, *listen, *extra))
    line = child.wait_line("READY ")
    url = next(word.split("=", 1)[1] for word in line.split() if word.startswith("listen="))
    return child, url


class RawTcp(RawClient):
    """A TCP peer that sends frames by hand. By default it knows the token: it
    authenticates and says hello first; ``authenticate=False`` leaves the writer's
    challenge waiting, ``hello=False`` stops after authenticating."""

    def __init__(
        self, url: str, *, authenticate: bool = True, hello: bool = True, timeout: float = 10.0
    ) -> None:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.reader = proto.FrameReader(1 << 30)
        self.inbox: list[Any] = []
        try:
            if authenticate:
                challenge = self.recv()
                nonce = os.urandom(32)
                mac = proof(TOKEN, CLIENT_LABEL, challenge["nonce"], nonce)
                self.send({"t": "auth", "nonce": nonce, "mac": mac})
                assert self.recv()["ok"] is True
            if authenticate and hello:
                self.send({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": os.urandom(16)})
                self.greeting = self.recv()
        except BaseException:
            self.sock.close()
            raise
