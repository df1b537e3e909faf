"""The wire format: length-prefixed msgpack frames.

A frame is a 4-byte big-endian length and a msgpack body. The body is one message (a
map) or a list of messages, so that a client can pipeline many requests in one write
and the writer can answer a whole batch in one frame.

Client to writer::

    {"t": "hello", "v": 1, "client": <16 bytes>}          first frame on a connection
    {"id": 7, "op": "create_post", "args": [], "kwargs": {...},
     "deadline": 30000.0, "seq": 7, "retry": false, "ack": 5}
    {"id": 8, "sql": "UPDATE ...", "params": [...], "many": false, ...}
    {"id": 9, "t": "stats"}

Writer to client::

    {"t": "hello", "v": 1, "pid": 1234, "max_frame": 8388608, "ops": [...], "schema": 3}
    {"id": 7, "ok": true, "result": ...}
    {"id": 7, "error": {"code": "OP_FAILED", "message": "..."}}

``deadline`` is the milliseconds the request may still wait, counted from when it was
sent (clocks of two hosts need not agree). ``seq`` numbers a client's writes for
exactly-once retries; ``ack`` says every seq below it has been answered.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from ..errors import BadRequest, TooLarge

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def pack(obj: Any) -> bytes:
    """Encode one msgpack body (no frame header)."""
    return _packb(obj, use_bin_type=True)


def packer() -> Callable[[Any], bytes]:
    """A reusable encoder, cheaper per call than :func:`pack`, for one thread only
    (a channel, an engine): a packer keeps state between calls."""
    return msgpack.Packer(use_bin_type=True).pack


_FIXINT = [bytes((n,)) for n in range(0x80)]
_U8 = struct.Struct(">B").pack
_U16 = struct.Struct(">H").pack
_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack


def pack_id(rid: Any) -> bytes:
    """A request id (or a row count, a rowid), encoded as :func:`pack` would, without
    building a packer for it."""
    if type(rid) is int and rid >= 0:
        if rid < 0x80:
            return _FIXINT[rid]
        if rid < 0x100:
            return b"\xcc" + _U8(rid)
        if rid < 0x10000:
            return b"\xcd" + _U16(rid)
        if rid < 0x100000000:
            return b"\xce" + _U32(rid)
        if rid < 0x10000000000000000:
            return b"\xcf" + _U64(rid)
    return pack(rid)


def frame(obj: Any) -> bytes:
    """Encode one message or list of messages as a frame."""
    body = _packb(obj, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items (encoded apart, then joined)."""
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + struct.pack(">H", n) if n < 0x10000 else b"\xdd" + struct.pack(">I", n)


def list_body(bodies: list[bytes]) -> bytes:
    """Encoded messages as one encoded list (one message stays itself)."""
    if len(bodies) == 1:
        return bodies[0]
    return array_header(len(bodies)) + b"".join(bodies)


def grouped(bodies: list[bytes], limit: int) -> list[bytes]:
    """Encoded messages as few list bodies as keep each within ``limit`` bytes."""
    if sum(map(len, bodies)) + 5 <= limit:
        return [list_body(bodies)]
    out: list[bytes] = []
    group: list[bytes] = []
    size = 5  # the list header, at most
    for body in bodies:
        if group and size + len(body) > limit:
            out.append(list_body(group))
            group, size = [], 5
        group.append(body)
        size += len(body)
    out.append(list_body(group))
    return out


def frames_packed(bodies: list[bytes], limit: int) -> bytes:
    """Already-encoded messages in as few frames as keep each body within ``limit``."""
    return b"".join(HEADER.pack(len(body)) + body for body in grouped(bodies, limit))


def unpack(body: bytes | memoryview) -> Any:
    """Decode a frame body; a body that is not valid msgpack is a ``BAD_REQUEST``."""
    try:
        return _unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise BadRequest(f"frame is not valid msgpack: {exc}") from None


def messages(body: Any) -> list[Any]:
    """The messages in a decoded body: one map or a list of them."""
    if isinstance(body, list):
        return body
    return [body]


class FrameReader:
    """Splits a byte stream into frame bodies; sans I/O, used by every transport."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add ``data``; yield each complete body. Raises ``TooLarge`` on an oversized
        length prefix (the stream cannot be resynchronised after that: close it)."""
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= HEADER_SIZE:
                (size,) = HEADER.unpack_from(buf, pos)
                if size > self.max_frame:
                    raise TooLarge(f"frame of {size} bytes is over the limit of {self.max_frame}")
                if end - pos - HEADER_SIZE < size:
                    break
                start = pos + HEADER_SIZE
                pos = start + size
                yield bytes(buf[start:pos])
        finally:
            del buf[:pos]
