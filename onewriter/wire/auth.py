"""The TCP transport's challenge-response: the token never crosses the wire.

::

    writer: {"t": "challenge", "v": 1, "nonce": <32 random bytes>}
    client: {"t": "auth", "nonce": <32 random bytes>,
             "mac": HMAC-SHA256(token, CLIENT_LABEL + writer nonce + client nonce)}
    writer: {"t": "auth", "ok": true,
             "mac": HMAC-SHA256(token, SERVER_LABEL + client nonce + writer nonce)}

and then the usual hello. The client checks the writer's proof too, so that a host that
does not know the token cannot pose as the writer. Both sides use this module.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, TypeGuard

from ..errors import Unauthorized, error_from_wire

AUTH_VERSION = 1
NONCE_BYTES = 32
#: Seconds a new connection has to authenticate.
AUTH_TIMEOUT = 10.0
#: Largest frame accepted before authentication (a challenge answer is ~100 bytes).
PRE_AUTH_MAX_FRAME = 4096
CLIENT_LABEL = b"onewriter-tcp-v1 client proof"
SERVER_LABEL = b"onewriter-tcp-v1 server proof"


def proof(token: str, label: bytes, first: bytes, second: bytes) -> bytes:
    """HMAC-SHA256 over a label and two fixed-size nonces. Whitespace around the token
    is not part of it, on either side: a token read from a file keeps its newline."""
    return hmac.new(token.strip().encode(), label + first + second, hashlib.sha256).digest()


def is_nonce(value: Any) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == NONCE_BYTES


def challenge(nonce: bytes) -> dict[str, Any]:
    return {"t": "challenge", "v": AUTH_VERSION, "nonce": nonce}


def answer_challenge(message: Any, token: str | None, nonce: bytes) -> tuple[Any, bytes]:
    """The client's auth message for the writer's challenge, and the writer's nonce.

    Raises the writer's refusal when it sent one instead (too many connections)."""
    if isinstance(message, dict) and "error" in message:
        raise error_from_wire(message["error"])
    if not (
        isinstance(message, dict)
        and message.get("t") == "challenge"
        and message.get("v") == AUTH_VERSION
        and is_nonce(message.get("nonce"))
    ):
        raise Unauthorized(f"the peer did not send an onewriter challenge: {message!r:.200}")
    server_nonce: bytes = message["nonce"]
    auth: dict[str, Any] = {"t": "auth", "nonce": nonce}
    if token:
        auth["mac"] = proof(token, CLIENT_LABEL, server_nonce, nonce)
    return auth, server_nonce


def check_auth_reply(reply: Any, token: str | None, nonce: bytes, server_nonce: bytes) -> None:
    """Raise unless the writer accepted us and proved that it knows the token too."""
    if isinstance(reply, dict) and "error" in reply:
        raise error_from_wire(reply["error"])
    mac = reply.get("mac") if isinstance(reply, dict) else None
    if not (
        token
        and isinstance(reply, dict)
        and reply.get("t") == "auth"
        and reply.get("ok") is True
        and isinstance(mac, bytes)
        and hmac.compare_digest(mac, proof(token, SERVER_LABEL, nonce, server_nonce))
    ):
        raise Unauthorized("the writer did not prove that it knows the token")
