"""Stage state on Kafka: a changelog per stage, written in transactions, and
recovered without trusting the broker's end offsets.

Why not faust's tables: a faust table's changelog and the consumer's
committed offset are written independently, so after a crash a stage's
state can hold the effect of messages it will read again (counted twice), or
miss effects of messages it will not (lost). Faust's recovery also compares
offsets with the broker's end offsets (a ``GlobalTable`` crashed the
survivors when those were short), and replays the changelog record by record
through its own machinery (56 s after a simulated month).

Each stage partition's changelog partition is a sequence of **epochs**, one
per owner: an owner starts by writing a **fence** record, then writes
**transactions**: the state records a processed batch changed (key -> value,
``None`` deletes), then one **checkpoint** record with the stage's meta
(counts, watermark source) and ``next``, the offset of its next input message.
Every record carries its owner's token (a header). :func:`read_changelog`
counts a transaction only once its checkpoint is read; records of a batch
that did not finish (the owner died mid-write) are dropped at the next fence;
records of a previous owner written after a newer fence (a zombie that had not
noticed it lost the partition) are ignored. State and input position are
therefore always from the same moment: after any crash the new owner seeks to
``next`` and applies each message exactly once. A checkpoint record that does
not read as one (no worker wrote those bytes) counts as never written: its
batch is committed with the owner's next checkpoint or dropped at the next
fence, exactly as if the owner had died before writing it; such records are
counted in :attr:`Recovered.unreadable`.

**Recovery** writes the new owner's fence and takes its offset from the
broker's acknowledgement, then reads the partition up to it: an end that is
exact on any broker (the test broker under-reports end offsets after
multi-record batches). Compaction keeps what recovery needs: fences have
unique keys, checkpoints one key per epoch (the last of each epoch stays),
and a record is not compacted within an hour of being written
(``min.compaction.lag.ms``), long before its owner's successor has rewritten
whatever a dead batch had touched, as long as a successor takes over within
that hour (docs/architecture.md names the two cases where compaction can
still remove a committed state record: a zombie's late write, and no owner
for over an hour after a crash mid-transaction).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Annotated, Iterable

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from ..kafka.client import reveal
from .codec import encode_json
from .outbox import Outbox

__all__ = ["ChangelogStore", "Recovered", "read_changelog", "CHECKPOINT_PREFIX", "FENCE_PREFIX", "WRITER"]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = b"\x00checkpoint:"
FENCE_PREFIX = b"\x00fence:"
WRITER = "w"  # the header naming a record's owner


@dataclass
class Recovered:
    """What a changelog partition held: committed state, meta and input position."""

    values: dict[bytes, bytes] = field(default_factory=dict)
    meta: dict | None = None
    next_offset: int | None = None
    records: int = 0
    dropped: int = 0   # records of unfinished batches and of zombie owners
    unreadable: int = 0  # records no worker wrote: checkpoints here, states when a partition loads them
    seconds: float = 0.0


class _Checkpoint(msgspec.Struct):
    meta: dict
    next: Annotated[int, msgspec.Meta(ge=0)]


_decode_checkpoint = msgspec.json.Decoder(_Checkpoint).decode


class _Reader:
    """The recovery rules of the module doc, one record at a time."""

    def __init__(self) -> None:
        self.out = Recovered()
        self.owner: bytes | None = None
        self.pending: dict[bytes, bytes | None] = {}

    def feed(self, key: bytes | None, value: bytes | None, writer: bytes | None) -> None:
        out = self.out
        out.records += 1
        if key is None:
            return
        if key.startswith(FENCE_PREFIX):
            out.dropped += len(self.pending)
            self.pending.clear()
            self.owner = writer
            return
        if self.owner is not None and writer != self.owner:
            out.dropped += 1  # a previous owner's write after the newer fence
            return
        if key.startswith(CHECKPOINT_PREFIX):
            try:
                checkpoint = _decode_checkpoint(value)
            except (msgspec.DecodeError, TypeError):  # not a checkpoint: its batch stays unfinished
                out.unreadable += 1
                return
            values = out.values
            for k, v in self.pending.items():
                if v is None:
                    values.pop(k, None)
                else:
                    values[k] = v
            self.pending.clear()
            out.meta, out.next_offset = checkpoint.meta, checkpoint.next
        else:
            self.pending[key] = value

    def done(self) -> Recovered:
        self.out.dropped += len(self.pending)
        return self.out


def read_changelog(records: Iterable[tuple[bytes | None, bytes | None, bytes | None]]) -> Recovered:
    """The committed state of one changelog partition from its records (key, value, writer), in order."""
    reader = _Reader()
    for key, value, writer in records:
        reader.feed(key, value, writer)
    return reader.done()


def _writer(headers) -> bytes | None:
    for name, value in headers or ():
        if name == WRITER:
            return value
    return None


class ChangelogStore:
    """Writes and recovers stage changelog partitions.

    Responsibilities: fence a partition for a new owner and recover its
    committed state (:meth:`recover`); send a batch's state changes and its
    checkpoint in order, marked with the owner's token (:meth:`write`).
    """

    def __init__(self, outbox: Outbox, client_options: dict, client_id: str) -> None:
        self.outbox = outbox
        self.client_options = client_options
        self.client_id = client_id
        self.tokens: dict[tuple[str, int], bytes] = {}

    async def write(self, topic: str, partition: int, changes: list[tuple[bytes, bytes | None]], meta: dict,
                    next_offset: int) -> None:
        """Send one transaction: the changes, then the checkpoint (acknowledged on the next flush)."""
        token = self.tokens[(topic, partition)]
        records = list(changes)
        records.append((CHECKPOINT_PREFIX + token, encode_json({"meta": meta, "next": next_offset})))
        await self.outbox.send_records(topic, partition, records, headers=[(WRITER, token)])

    async def write_changes(self, topic: str, partition: int, changes: list[tuple[bytes, bytes | None]]) -> None:
        """Only the changes, no checkpoint (what a worker dying mid-write leaves; for the fault tests)."""
        await self.outbox.send_records(topic, partition, changes, headers=[(WRITER, self.tokens[(topic, partition)])])

    async def recover(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], Recovered]:
        """Fence the partitions for this owner and read their committed state, all together."""
        if not tps:
            return {}
        t0 = time.monotonic()
        fences: dict[TopicPartition, int] = {}
        futures = []
        for topic, partition in tps:
            token = os.urandom(8).hex().encode()
            self.tokens[(topic, partition)] = token
            futures.append((TopicPartition(topic, partition),
                            await self.outbox.send(topic, token, key=FENCE_PREFIX + token, partition=partition,
                                                   headers=[(WRITER, token)])))
        await self.outbox.flush()
        for tp, fut in futures:
            fences[tp] = fut.result().offset
        readers = {tp: _Reader() for tp in fences}
        consumer = AIOKafkaConsumer(**reveal(self.client_options), client_id=f"{self.client_id}-recovery",
                                    group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=50, max_partition_fetch_bytes=8 * 1024 * 1024,
                                    fetch_max_bytes=32 * 1024 * 1024)
        await consumer.start()
        try:
            left = set(fences)
            consumer.assign(list(left))
            await consumer.seek_to_beginning(*left)
            while left:
                batches = await consumer.getmany(*left, timeout_ms=500, max_records=50_000)
                for tp, records in batches.items():
                    fence, feed = fences[tp], readers[tp].feed
                    for record in records:
                        if record.offset >= fence:
                            left.discard(tp)
                            consumer.pause(tp)
                            break
                        feed(record.key, record.value, _writer(record.headers))
        finally:
            await consumer.stop()
        seconds = time.monotonic() - t0
        out = {}
        for tp, reader in readers.items():
            got = out[(tp.topic, tp.partition)] = reader.done()
            got.seconds = seconds
            if got.dropped:
                logger.info("%s[%d]: %d records of unfinished batches or previous owners ignored",
                            tp.topic, tp.partition, got.dropped)
        return out
