"""Everything the stages write on the hot path goes through one aiokafka producer.

Why not faust's ``topic.send`` and ``table[key] = value``: each of those
builds a faust ``FutureMessage`` and a produce call per record, the largest
cost left in a profile of the worker. Stage 2 touches about one table key
per event, so a table's changes after one op batch are written here as one
Kafka record batch per changelog partition. faust still owns the tables:
it creates the changelog topics and restores the tables from them on
assignment, exactly as if it had written the records itself (same topic,
same partition, JSON keys and values, ``None`` value = delete).

At-least-once: a stage awaits :meth:`Outbox.flush` before it returns, so
faust commits an op message only after what it caused is on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable, MutableMapping

import orjson
from aiokafka import AIOKafkaProducer

__all__ = ["Outbox", "TableWriter"]

logger = logging.getLogger(__name__)


class OutboxError(RuntimeError):
    """The broker refused or lost a record the monitor had to write."""


class Outbox:
    """One producer for op, alert, dead-letter and changelog records."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._config = dict(bootstrap_servers=bootstrap_servers, client_id=client_id, acks=1,
                            linger_ms=2, max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
        self.producer: AIOKafkaProducer | None = None  # made in start(): it needs the running loop
        self._pending: list = []
        self.started = False
        self._lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """Start once, on first use (agents may run before any startup hook)."""
        if self.started:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.started:
                self.producer = AIOKafkaProducer(**self._config)
                await self.producer.start()
                self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self.producer.stop()

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None,
                   partition: int | None = None) -> None:
        if not self.started:
            await self.start()
        self._pending.append(await self.producer.send(topic, value=value, key=key, partition=partition))

    async def send_records(self, topic: str, partition: int,
                           records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Records for one partition, packed into as few batches as fit."""
        if not self.started:
            await self.start()
        batch = self.producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                self._pending.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = self.producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise OutboxError(f"a record for {topic} is larger than the producer's batch size")
        if batch.record_count():
            self._pending.append(await self.producer.send_batch(batch, topic, partition=partition))

    async def flush(self) -> None:
        """Wait until every record sent so far (by anyone) is acknowledged; raise if one failed."""
        if not self.started:
            return
        pending, self._pending = self._pending, []
        await self.producer.flush()
        for fut in pending:
            if not fut.done():
                await fut
            elif fut.exception() is not None:
                raise OutboxError(f"write to the broker failed: {fut.exception()!r}") from fut.exception()


class TableWriter:
    """Writes a faust table's changes: local store now, changelog as batches."""

    def __init__(self, table, outbox: Outbox) -> None:
        self.table = table
        self.outbox = outbox

    @property
    def store(self) -> MutableMapping:
        return self.table.data

    async def write(self, partition: int, changes: list[tuple[str, object | None]]) -> None:
        store = self.store
        records = []
        for key, value in changes:
            if value is None:
                store.pop(key, None)
                records.append((orjson.dumps(key), None))
            else:
                store[key] = value
                records.append((orjson.dumps(key), orjson.dumps(value)))
        topic = self.table.changelog_topic.get_topic_name()
        # The last record (a stage's partition meta) goes out as a batch of its
        # own. Tansu reports a partition's end offset as the last batch's base
        # offset + 1, so faust's recovery stops after the first record of a
        # multi-record last batch: it would restore ids without the counts
        # that include them. With a one-record last batch the end is right.
        # (Apache Kafka needs none of this; it costs one small batch.)
        await self.outbox.send_records(topic, partition, records[:-1])
        await self.outbox.send_records(topic, partition, records[-1:])
