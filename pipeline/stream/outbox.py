"""Everything a worker writes goes through one aiokafka producer: stage
messages, changelogs, views, alerts and dead letters.

Responsibilities:
- build records and record batches, and refuse one larger than the
  producer's ``max_request_size`` before it is sent (:class:`RecordTooLarge`:
  the caller splits it or dead-letters a reference; nothing crashes);
- :meth:`Outbox.flush`: wait until everything sent so far is acknowledged,
  and raise :class:`OutboxError` if anything was lost. The runner flushes
  before it records progress, so nothing is marked done before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ..kafka.client import reveal

__all__ = ["Outbox", "OutboxError", "RecordTooLarge", "MAX_REQUEST_SIZE"]

logger = logging.getLogger(__name__)

#: Stock Kafka accepts batches up to ``message.max.bytes`` = 1,048,588 bytes.
MAX_REQUEST_SIZE = 1_000_000


class OutboxError(RuntimeError):
    """The broker refused or lost a record the monitor had to write."""


class RecordTooLarge(ValueError):
    """A record would exceed the producer's ``max_request_size``: it was not sent."""


class Outbox:
    """One producer for every record a worker writes (see the module doc)."""

    def __init__(self, client_options: dict, client_id: str, max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.max_request_size = max_request_size
        #: a record whose key, value and headers add up to less than this fits in a
        #: batch of its own (a batch's and a record's framing take under 200 bytes).
        self._surely_fits = max_request_size - 1024
        # linger 0: a worker sends a batch's records all at once and then waits
        # for them (flush), so waiting for more records to come only delays each
        # flush (2 ms twice a batch: 4% of a worker's time on the benchmark).
        self._config = dict(client_options, client_id=client_id, acks="all", linger_ms=0,
                            max_batch_size=max_request_size, max_request_size=max_request_size,
                            request_timeout_ms=30_000, enable_idempotence=False)
        self.producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future] = []
        self.last_ack = 0.0  # loop time of the last successful flush

    async def start(self) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(**reveal(self._config))
            await self.producer.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    def check(self, key: bytes | None, value: bytes | None, headers=()) -> None:
        """Raise :class:`RecordTooLarge` for a record the producer would refuse."""
        n = (len(key) if key else 0) + (len(value) if value else 0)
        for name, header in headers:
            n += len(name.encode("utf-8")) + (len(header) if header else 0)
        if n < self._surely_fits:
            return  # far below the limit whatever the framing: the exact estimate is not needed
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
        if size > self.max_request_size:
            raise RecordTooLarge(f"a record of {size:,} bytes is over the limit of {self.max_request_size:,}")

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None,
                   partition: int | None = None, headers=None) -> asyncio.Future:
        """Queue one record; its future is kept for :meth:`flush`."""
        self.check(key, value, headers or ())
        fut = await self.producer.send(topic, value=value, key=key, partition=partition, headers=headers)
        self._pending.append(fut)
        return fut

    async def send_records(self, topic: str, partition: int,
                           records: Iterable[tuple[bytes | None, bytes | None]], headers=()) -> None:
        """Records for one partition, packed into as few batches as fit, in order; each with ``headers``."""
        producer = self.producer
        headers = list(headers)
        batch = producer.create_batch()
        # the exact size check only for a record that might need it (see check)
        room = self._surely_fits - sum(len(name.encode("utf-8")) + (len(h) if h else 0) for name, h in headers)
        for key, value in records:
            if (len(key) if key else 0) + (len(value) if value else 0) >= room:
                self.check(key, value, headers)
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                self._pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        if batch.record_count():
            self._pending.append(await producer.send_batch(batch, topic, partition=partition))

    async def send_keyed(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        """Keyed records, each to the partition Kafka's default partitioner
        picks for its key (murmur2, as every Kafka client does), packed per
        partition: one batch instead of one send per record."""
        partitions = sorted(await self.producer.partitions_for(topic))
        by_partition: dict[int, list] = {}
        for key, value in records:
            p = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            by_partition.setdefault(p, []).append((key, value))
        for p, recs in by_partition.items():
            await self.send_records(topic, p, recs)

    def sent(self) -> list[asyncio.Future]:
        """The writes sent so far, to wait for with :meth:`acknowledged`."""
        return list(self._pending)

    async def acknowledged(self, writes: list[asyncio.Future]) -> None:
        """Wait until each of ``writes`` is acknowledged (they are sent already:
        the producer lingers 0 ms); raise :class:`OutboxError` if one failed.
        Lets a task wait for its own writes while others keep sending."""
        for fut in writes:
            if not fut.done():
                await asyncio.wait([fut])
        for fut in writes:
            exc = _failure(fut)
            if exc is not None:
                raise OutboxError(f"a write to the broker failed: {type(exc).__name__}: {exc}") from exc

    async def flush(self) -> None:
        """Wait until every record sent so far, by anyone, is acknowledged; raise
        if one failed.

        Several tasks share the producer (the runner, the views reader, the
        runner's background checkpoint wait): each flush waits for everything
        sent before it, not only for what no other flush has taken, so that no
        caller goes on before its records are durable. A failed write stays in
        the list: every later flush raises too."""
        if self.producer is None or not self._pending:
            return
        pending = list(self._pending)
        await self.producer.flush()
        try:
            await self.acknowledged(pending)
        finally:
            self._pending = [f for f in self._pending if not f.done() or _failure(f) is not None]
        self.last_ack = asyncio.get_running_loop().time()


def _failure(fut: asyncio.Future) -> BaseException | None:
    if fut.cancelled():
        return asyncio.CancelledError("the write was cancelled")
    return fut.exception()
