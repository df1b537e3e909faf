"""The Redis transport: producers push requests onto a Redis list; the writer takes them in
batches, commits each batch as one group and answers on a reply key per producer.

::

    producer:  RPUSH <queue> <requests>                     a request, or a list of them
    writer:    LPOP <queue> n + RPUSH <queue>:processing     one Lua script, atomic
               ... run the batch, COMMIT ...
               MULTI  RPUSH <queue>:reply:<client> <replies>  a list per producer, EXPIRE
                      LTRIM <queue>:processing k -1  EXEC
    producer:  BLMPOP <queue>:reply:<client>                 (BLPOP before Redis 7)

The consumer is a task on the writer's own loop (no thread: a hand-over between two
threads waits for the interpreter lock). It takes the next batch while the writer runs
one and hands it over at once; a batch's replies are pushed while the writer runs the
next, so that Redis round trips overlap the writer's work.

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

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ...extras import missing_extra

try:
    import redis
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None


from ...errors import BadRequest, QueueFull, ShuttingDown
from ...wire import frames as proto
from ...wire.addresses import processing_key, redacted, reply_key
from ...wire.resp import SOCKET_TIMEOUT, RespClient
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


class _Batch:
    """Elements taken from the list, handed to the writer and answered together. An
    element holds one request or a list of them (a producer's whole flush); it is
    settled once every request in it has its outcome.

    Filled in as the writer gives outcomes; read by the consumer once ``done``.
    """

    def __init__(
        self,
        consumer: RedisConsumer,
        elements: list[bytes],
        redriven: bool,
        after: _Batch | None = None,
    ) -> None:
        self.consumer = consumer
        self.elements = elements
        self.redriven = redriven
        self.after = after  # the batch handed over just before, while it was open
        self.open = [0] * len(elements)  # requests of each element still without outcome
        self.kept = [False] * len(elements)  # an element the writer refused for now
        self.replies: dict[str, list[bytes]] = {}
        self.seqs: list[tuple[int, bytes, int]] = []  # (element, client, seq) that ran
        self.dropped = 0
        self._remaining = 1  # the submitting pass itself, so done waits for all of it
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def submit(self) -> None:
        """Decode, check and queue every request. When the batch handed over before
        had a request refused, this one is refused whole: a producer's later requests
        never run before its earlier ones, which are driven again."""
        after, self.after = self.after, None
        if after is not None and True in after.kept:
            self.kept = [True] * len(self.elements)
            self._one_done()
            return
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

    def answer(self, index: int, key: str | None, body: bytes) -> None:
        """A request of element ``index`` was answered at intake: ``body`` goes to
        ``key`` (none for fire-and-forget)."""
        self.open[index] -= 1
        if key is not None:
            self.replies.setdefault(key, []).append(body)
        self._one_done()

    def outcomes(self, peer: _RedisPeer, requests: list[Request]) -> None:
        """The writer's outcomes for ``peer``'s requests. One the writer would not take
        now (draining, queue full) keeps its element in the processing list, to be
        driven again. Written out: every Redis write's outcome passes here."""
        open_ = self.open
        seqs = self.seqs
        bodies: list[bytes] = []
        for request in requests:
            index, noreply = request.tag
            open_[index] -= 1
            error = request.error
            if error is not None and isinstance(error, ShuttingDown | QueueFull):
                self.kept[index] = True
                continue
            body = request.reply_body()
            if not noreply:
                bodies.append(body)
            elif error is not None:
                peer.report(body)
            if request.seq is not None:
                seqs.append((index, peer.producer, request.seq))
        if bodies:
            self.replies.setdefault(peer.key, []).extend(bodies)
        self._one_done(len(requests))

    def _one_done(self, count: int = 1) -> None:
        self._remaining -= count
        if self._remaining == 0:
            self.done.set_result(None)

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
                self.report(body)
            batch.answer(index, key, body)

        self.intake.take(self, m, answer, tag=(index, noreply))

    def deliver(self, requests: list[Request]) -> None:
        self.batch.outcomes(self, requests)

    def flush(self) -> None:
        """Outcomes are pushed by the consumer, per batch."""

    def report(self, body: bytes) -> None:
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
    """Takes requests from the Redis list in a task on the writer's own loop and hands
    them to the writer, one batch at a time; pushes the replies and forgets the
    answered. No thread of its own: a hand-over between two threads cost each batch
    two waits for the interpreter lock (0.4 and 0.9 ms at the median, measured)."""

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
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._client: RespClient | None = None
        self._in_hand = 0  # batches handed to the writer and not yet answered
        self._idle = asyncio.Event()  # set while no batch is in hand
        self._idle.set()
        self.batches = 0
        self.requests = 0
        self.redriven = 0
        self.dropped = 0
        self.redis_errors = 0

    def describe(self) -> str:
        return f"{self.redacted_url} list {self.queue}"

    def start(self) -> None:
        """Start consuming (on the writer's loop)."""
        self._task = asyncio.get_running_loop().create_task(self._main())
        log.info("writer %d consuming %s", self.service.pid, self.describe())

    def stop(self) -> None:
        """Take nothing more from the list (the batches in hand are still answered)."""
        self._stopping = True

    async def finish(self) -> None:
        """Wait (up to JOIN_TIMEOUT) for the replies of the batches in hand to be
        pushed, then close. What is left unanswered stays in the processing list, for
        the next writer."""
        self.stop()
        try:
            await asyncio.wait_for(self._idle.wait(), JOIN_TIMEOUT)
        except TimeoutError:
            log.warning("the Redis consumer did not answer within %.0f s", JOIN_TIMEOUT)
        self.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def close(self) -> None:
        """Stop at once; a block on an empty list is left to time out in Redis."""
        self.stop()
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            self._client.close()

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

    # -- the consumer's task --------------------------------------------------------------

    async def _main(self) -> None:
        delay = 0.05
        while not self._stopping:
            client = self._client = RespClient(self.url)
            try:
                await self._serve(client)
                delay = 0.05
            except redis.RedisError as exc:
                self.redis_errors += 1
                log.warning("Redis consumer of %s: %s; reconnecting", self.describe(), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                await client.aclose()
                self._in_hand = 0  # what was in hand is driven again by the next pass
                self._idle.set()

    async def _serve(self, client: RespClient) -> None:
        """Keep the writer busy: the next batch is taken while the writer runs one, and
        its replies are pushed while it runs the next (each Redis round trip overlaps a
        batch instead of coming between two)."""
        await self._redrive(client)
        running: _Batch | None = None
        while not self._stopping:
            if running is None:
                elements = await self._wait_for_requests(client)
                if not elements:
                    continue
                running = self._submit(elements, redriven=False)
            taken = [] if self._stopping else await self._pop(client, self.batch_size)
            settled, answers = await self._send_answers(client, running)
            # With the answers on their way, the batch taken meanwhile is handed over
            # (refused whole if the running one had a refusal).
            following = self._submit(taken, redriven=False, after=running) if taken else None
            await self._answered(running, settled, answers)
            if settled == len(running.elements):
                running = following
                continue
            # What the writer refused, and the batch after it, are driven again in the
            # order of the processing list.
            if following is not None:
                await self._answer(client, following)
            running = None
            await self._redrive(client)
        if running is not None:  # stopped with a batch handed over: it is answered
            await self._answer(client, running)

    async def _pop(self, client: RespClient, count: int) -> list[bytes]:
        taken: list[bytes] = await client.call(
            "EVAL", POP_SCRIPT, 2, self.queue, self.processing, count
        )
        return taken

    async def _wait_for_requests(self, client: RespClient) -> list[bytes]:
        """Block until the list has requests (up to BLOCK_SECONDS); take a batch."""
        first = await client.call(
            "BLMOVE",
            self.queue,
            self.processing,
            "LEFT",
            "RIGHT",
            BLOCK_SECONDS,
            timeout=BLOCK_SECONDS + SOCKET_TIMEOUT,
        )
        if first is None:
            return []
        if self.batch_size == 1:
            return [first]
        return [first, *await self._pop(client, self.batch_size - 1)]

    async def _redrive(self, client: RespClient) -> None:
        """Answer what was taken but not answered: on (re)connecting, and after a batch
        the writer partly refused. Each is a retry: it may have committed already."""
        while not self._stopping:
            elements: list[bytes] = await client.call(
                "LRANGE", self.processing, 0, self.batch_size - 1
            )
            if not elements:
                return
            self.redriven += len(elements)
            settled = await self._answer(client, self._submit(elements, redriven=True))
            if settled == 0:
                await asyncio.sleep(REFUSED_PAUSE)

    def _submit(
        self, elements: list[bytes], *, redriven: bool, after: _Batch | None = None
    ) -> _Batch:
        """Hand ``elements`` to the writer: decoded, checked and queued now."""
        batch = _Batch(self, elements, redriven, after)
        self._in_hand += 1
        self._idle.clear()
        batch.submit()
        return batch

    async def _answer(self, client: RespClient, batch: _Batch) -> int:
        """Wait for ``batch``'s outcomes and answer them; how many elements left the
        processing list."""
        settled, answers = await self._send_answers(client, batch)
        await self._answered(batch, settled, answers)
        return settled

    async def _send_answers(
        self, client: RespClient, batch: _Batch
    ) -> tuple[int, Coroutine[Any, Any, list[Any]] | None]:
        """Once ``batch`` has its outcomes, write one MULTI that pushes its replies and
        removes its settled leading elements from the head of the processing list.
        How many are settled, and the MULTI's answer to await (none if nothing to do)."""
        await batch.done
        settled = batch.settled_prefix()
        commands: list[tuple[Any, ...]] = []
        for key, bodies in batch.replies.items():
            # a few elements per producer and batch, not one per reply
            commands.append(("RPUSH", key, *proto.grouped(bodies, self.max_element)))
            commands.append(("EXPIRE", key, REPLY_TTL))
        if settled:
            commands.append(("LTRIM", self.processing, settled, -1))
        return settled, client.send_transaction(commands) if commands else None

    async def _answered(
        self, batch: _Batch, settled: int, answers: Coroutine[Any, Any, list[Any]] | None
    ) -> None:
        """Wait for Redis to confirm ``batch``'s MULTI; then its producers' records may
        be forgotten up to what left the processing list."""
        try:
            if answers is not None:
                await answers
        finally:
            self._in_hand -= 1
            if not self._in_hand:
                self._idle.set()
        engine = self.service.engine
        for producer, ack in batch.acks(settled).items():
            engine.note_ack(producer, ack)
        self.batches += 1
        self.requests += len(batch.elements)
        self.dropped += batch.dropped
