"""The Redis transport: producers push requests onto a Redis list; the writer takes them in
batches, commits each batch as one group and answers on a reply key per producer.

::

    producer:  RPUSH <queue> <requests>                     a request, or a list of them
    writer:    LPOP <queue> n + RPUSH <queue>:processing     one Lua script, atomic
               ... run the batch, COMMIT ...
               MULTI  RPUSH <queue>:reply:<client> <replies>  a list per producer, EXPIRE
                      LTRIM <queue>:processing k -1  EXEC

The writer takes the next batch while it runs one, and pushes a batch's replies while it
runs the next, so that Redis round trips overlap the writer's work.
    producer:  BLPOP <queue>:reply:<client>

A request is never lost when the writer dies between taking and answering it: it stays
in the processing list until its reply is pushed, in the same MULTI that removes it. A
writer re-drives that list when it starts (or reconnects), marking each request a retry,
so that the exactly-once ids decide what had already committed.

A request is the wire protocol's (docs/protocol.md) plus ``client`` (the producer's id:
there is no connection to say hello on) and, for fire-and-forget, ``noreply``. Its
deadline counts from when the writer takes it. Producers send no ``ack``: the writer
forgets a producer's committed ids once their elements have left the processing list,
as no copy of them can come back after that. Neither side lets the Redis client re-send
a command by itself: a re-sent RPUSH could queue a request twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from ...extras import missing_extra

try:
    import redis
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None


from ...errors import BadRequest, QueueFull, ShuttingDown
from ...wire import frames as proto
from ...wire.addresses import processing_key, redacted, reply_key
from ...wire.resp import RespSocket
from ..engine import Request
from ..intake import Origin

if TYPE_CHECKING:
    from ..service import WriterService

log = logging.getLogger("onewriter.redis")

#: Seconds a reply waits in Redis for its producer.
REPLY_TTL = 300
#: Seconds the consumer blocks on an empty list before it looks at its stop flag again.
BLOCK_SECONDS = 0.2
#: Seconds the writer waits, when it stops, for the consumer to push its last replies.
JOIN_TIMEOUT = 5.0
#: Pause after a batch the writer refused (queue full), before trying again.
REFUSED_PAUSE = 0.02

#: Moves up to ARGV[1] elements from the head of KEYS[1] to the tail of KEYS[2].
POP_SCRIPT = """
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then return {} end
redis.call('RPUSH', KEYS[2], unpack(items))
return items
"""


# -- the writer's side ------------------------------------------------------------------------


class _WriterGone(Exception):
    """The writer stopped before it took the batch: leave it for the next writer."""


class _Batch:
    """Elements taken from the list, handed to the writer and answered together. An
    element holds one request or a list of them (a producer's whole flush); it is
    settled once every request in it has its outcome.

    Filled in on the writer's thread; read by the consumer's thread once ``done``.
    """

    def __init__(self, consumer: RedisConsumer, elements: list[bytes], redriven: bool) -> None:
        self.consumer = consumer
        self.elements = elements
        self.redriven = redriven
        self.open = [0] * len(elements)  # requests of each element still without outcome
        self.kept = [False] * len(elements)  # an element the writer refused for now
        self.replies: dict[str, list[bytes]] = {}
        self.seqs: list[tuple[int, bytes, int]] = []  # (element, client, seq) that ran
        self.dropped = 0
        self._remaining = 1  # the submitting pass itself, so done waits for all of it
        self.done = threading.Event()

    def submit(self) -> None:
        """Decode, check and queue every request (on the writer's thread)."""
        consumer = self.consumer
        peers: dict[bytes, _RedisPeer] = {}
        for index, raw in enumerate(self.elements):
            messages = _decode(raw)
            self.dropped += messages.count(None)
            taken = [m for m in messages if m is not None]
            self.open[index] = len(taken)
            self._remaining += len(taken)
            for message in taken:
                client: bytes = message["client"]
                peer = peers.get(client)
                if peer is None:
                    peer = peers[client] = _RedisPeer(consumer, self, client)
                peer.take(index, message)
        self._one_done()

    def answer(
        self, index: int, key: str | None, body: bytes, ran: tuple[bytes, int] | None = None
    ) -> None:
        """A request of element ``index`` has its final outcome: ``body`` goes to ``key``
        (none for fire-and-forget); ``ran`` is the (client, seq) of a write that ran."""
        self.open[index] -= 1
        if key is not None:
            self.replies.setdefault(key, []).append(body)
        if ran is not None:
            self.seqs.append((index, *ran))
        self._one_done()

    def refused(self, index: int) -> None:
        """A request the writer would not take now (draining, queue full): its element
        stays in the processing list, to be driven again."""
        self.open[index] -= 1
        self.kept[index] = True
        self._one_done()

    def _one_done(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self.done.set()

    def settled_prefix(self) -> int:
        """How many leading elements are settled: those may leave the processing list."""
        for index, kept in enumerate(self.kept):
            if kept or self.open[index]:
                return index
        return len(self.kept)

    def acks(self, prefix: int) -> dict[bytes, int]:
        """Per client, the seq below which nothing can come back once ``prefix`` is gone."""
        acks: dict[bytes, int] = {}
        for index, client, seq in self.seqs:
            if index < prefix and seq + 1 > acks.get(client, 0):
                acks[client] = seq + 1
        return acks


def _decode(raw: bytes) -> list[dict[str, Any] | None]:
    """The requests of one element (``None`` for each that is not one: dropped)."""
    try:
        decoded = proto.unpack(raw)
    except BadRequest:
        decoded = None
    out: list[dict[str, Any] | None] = []
    for message in proto.messages(decoded):
        client = message.get("client") if isinstance(message, dict) else None
        if isinstance(client, bytes) and 1 <= len(client) <= 64:
            out.append(message)
        else:
            log.warning("dropped a Redis request that is not an onewriter request: %r", raw[:200])
            out.append(None)
    return out


class _RedisPeer:
    """One producer's requests within a batch, as the intake sees them: outcomes go to
    the batch, to be pushed with the others."""

    def __init__(self, consumer: RedisConsumer, batch: _Batch, client: bytes) -> None:
        self.origin = consumer.origin
        self.intake = consumer.service.intake
        self.batch = batch
        self.client: bytes | None = client
        self.producer = client
        self.key = reply_key(consumer.queue, client)

    def take(self, index: int, m: dict[str, Any]) -> None:
        noreply = m.get("noreply") is True
        key = None if noreply else self.key
        batch = self.batch
        if batch.redriven:
            m["retry"] = True
            m.pop("deadline", None)

        def answer(body: bytes) -> None:
            if noreply:
                self._report(body)
            batch.answer(index, key, body)

        self.intake.take(self, m, answer, tag=(index, noreply))

    def deliver(self, requests: list[Request]) -> None:
        for request in requests:
            self._deliver_one(request)

    def _deliver_one(self, request: Request) -> None:
        index, noreply = request.tag
        if isinstance(request.error, ShuttingDown | QueueFull):
            self.batch.refused(index)
            return
        body = request.reply_body()
        if noreply and request.error is not None:
            self._report(body)
        ran = (self.producer, request.seq) if request.seq is not None else None
        self.batch.answer(index, None if noreply else self.key, body, ran)

    def flush(self) -> None:
        """Outcomes are pushed by the consumer, per batch."""

    def _report(self, body: bytes) -> None:
        """A fire-and-forget request failed: nobody waits for its reply, so log it."""
        reply = proto.unpack(body)
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, dict):
            log.warning(
                "fire-and-forget request %s of client %s failed: %s: %s",
                reply.get("id"),
                self.producer.hex(),
                error.get("code"),
                error.get("message"),
            )


class RedisConsumer:
    """Takes requests from the Redis list on a thread of its own and hands them to the
    writer, one batch at a time; pushes the replies and forgets the answered."""

    def __init__(self, service: WriterService, origin: Origin) -> None:
        config = service.config
        assert config.redis_url is not None
        self.service = service
        self.origin = origin
        self.url = config.redis_url
        self.redacted_url = redacted(config.redis_url)
        self.queue = config.redis_queue
        self.processing = processing_key(self.queue)
        self.batch_size = min(config.max_batch, config.max_pending)
        self.max_element = config.max_frame
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.requests = 0
        self.redriven = 0
        self.dropped = 0
        self.redis_errors = 0

    def describe(self) -> str:
        return f"{self.redacted_url} list {self.queue}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="onewriter-redis", daemon=True)
        self._thread.start()
        log.info("writer %d consuming %s", self.service.pid, self.describe())

    def stop(self) -> None:
        """Take nothing more from the list (the batch in hand is still answered)."""
        self._stop.set()

    def close(self) -> None:
        """Stop, and wait for the last replies to be pushed (writer's thread, at drain)."""
        self._closing.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
            if self._thread.is_alive():
                log.warning("the Redis consumer did not stop within %.0f s", JOIN_TIMEOUT)

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.redacted_url,
            "queue": self.queue,
            "batches": self.batches,
            "requests": self.requests,
            "redriven": self.redriven,
            "dropped": self.dropped,
            "redis_errors": self.redis_errors,
        }

    # -- the consumer's thread ------------------------------------------------------------

    def _main(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            client = RespSocket(self.url)
            try:
                client.connect()
                self._serve(client)
                delay = 0.05
            except redis.RedisError as exc:
                self.redis_errors += 1
                log.warning("Redis consumer of %s: %s; reconnecting", self.describe(), exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            except _WriterGone:
                return
            finally:
                client.close()

    def _serve(self, client: RespSocket) -> None:
        """Keep the writer busy: the next batch is taken while the writer runs one, and
        its replies are pushed while it runs the next (each Redis round trip overlaps a
        batch instead of coming between two)."""
        self._redrive(client)
        running: _Batch | None = None
        while not self._stop.is_set():
            if running is None:
                elements = self._wait_for_requests(client)
                if not elements:
                    continue
                running = self._submit(elements, redriven=False)
            following = [] if self._stop.is_set() else self._pop(client, self.batch_size)
            self._wait(running)
            settled = running.settled_prefix()
            complete = settled == len(running.elements)
            # Only after a complete batch: else the following ones are re-driven with
            # what it left, in the order of the processing list.
            after = self._submit(following, redriven=False) if following and complete else None
            self._finish(client, running, settled)
            running = after
            if not complete:
                self._redrive(client)
        if running is not None:  # stopped with a batch handed over: it is answered
            self._answer(client, running)

    def _pop(self, client: RespSocket, count: int) -> list[bytes]:
        taken: list[bytes] = client.call("EVAL", POP_SCRIPT, 2, self.queue, self.processing, count)
        return taken

    def _wait_for_requests(self, client: RespSocket) -> list[bytes]:
        """Block until the list has requests (up to BLOCK_SECONDS); take a batch."""
        first = client.call("BLMOVE", self.queue, self.processing, "LEFT", "RIGHT", BLOCK_SECONDS)
        if first is None:
            return []
        if self.batch_size == 1:
            return [first]
        return [first, *self._pop(client, self.batch_size - 1)]

    def _redrive(self, client: RespSocket) -> None:
        """Answer what was taken but not answered: on (re)connecting, and after a batch
        the writer partly refused. Each is a retry: it may have committed already."""
        while not self._stop.is_set():
            elements: list[bytes] = client.call("LRANGE", self.processing, 0, self.batch_size - 1)
            if not elements:
                return
            self.redriven += len(elements)
            if self._run(client, elements, redriven=True) == 0:
                self._stop.wait(REFUSED_PAUSE)

    def _run(self, client: RespSocket, elements: list[bytes], *, redriven: bool) -> int:
        """Hand ``elements`` to the writer and answer them; how many left the
        processing list."""
        return self._answer(client, self._submit(elements, redriven=redriven))

    def _answer(self, client: RespSocket, batch: _Batch) -> int:
        """Wait for ``batch``'s outcomes and answer them; how many left the list."""
        self._wait(batch)
        settled = batch.settled_prefix()
        self._finish(client, batch, settled)
        return settled

    def _submit(self, elements: list[bytes], *, redriven: bool) -> _Batch:
        """Hand ``elements`` to the writer (its thread decodes and queues them)."""
        batch = _Batch(self, elements, redriven)
        loop = self.service.loop
        try:
            assert loop is not None
            loop.call_soon_threadsafe(batch.submit)
        except RuntimeError:
            raise _WriterGone from None
        return batch

    def _wait(self, batch: _Batch) -> None:
        while not batch.done.wait(0.05):
            if self._closing.is_set() or self.service.wait_stopped(0):
                raise _WriterGone

    def _finish(self, client: RespSocket, batch: _Batch, settled: int) -> None:
        """In one MULTI, push ``batch``'s replies and remove its ``settled`` leading
        elements from the head of the processing list."""
        commands: list[tuple[Any, ...]] = []
        for key, bodies in batch.replies.items():
            # a few elements per producer and batch, not one per reply
            commands.append(("RPUSH", key, *proto.grouped(bodies, self.max_element)))
            commands.append(("EXPIRE", key, REPLY_TTL))
        if settled:
            commands.append(("LTRIM", self.processing, settled, -1))
        if commands:
            client.transaction(commands)
        acks = batch.acks(settled)
        loop = self.service.loop
        if acks and loop is not None:
            # When the writer has stopped, its successor forgets them by age instead.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._note_acks, acks)
        self.batches += 1
        self.requests += len(batch.elements)
        self.dropped += batch.dropped

    def _note_acks(self, acks: dict[bytes, int]) -> None:
        engine = self.service.engine
        for client, ack in acks.items():
            engine.note_ack(client, ack)
