"""Stage state on Kafka: a changelog per stage, written in transactions, and
recovered without trusting the broker's end offsets.

Why not faust's tables: a faust table's changelog and the consumer's
committed offset are written independently, so after a crash a stage's
state can hold the effect of messages it will read again (counted twice), or
miss effects of messages it will not (lost). Faust's recovery also compares
offsets with the broker's end offsets (a ``GlobalTable`` crashed the
survivors when those were short), and replays the whole changelog record by
record through its own machinery (56 s after a simulated month).

Here each stage partition's changelog partition holds **transactions**: the
state records a processed batch changed (key -> value, ``None`` deletes),
then one **checkpoint** record: the stage's meta (counts, watermark source)
and ``next``, the offset of the stage's next input message. A transaction
counts only once its checkpoint is written; records after the last checkpoint
belong to a batch that did not finish and are ignored. State and input
position are therefore always from the same moment: after any crash the new
owner seeks to ``next`` and applies each message exactly once.

**Recovery** first writes a *fence* record and takes its offset from the
broker's acknowledgement, then reads the partition from the start up to the
fence. That end is exact on any broker (the test broker under-reports end
offsets after multi-record batches), and any record a previous owner still
had in flight is before it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from aiokafka import AIOKafkaConsumer, TopicPartition

from ..kafka.client import reveal
from .codec import decode_json, encode_json
from .outbox import Outbox

__all__ = ["ChangelogStore", "Recovered", "CHECKPOINT_KEY"]

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = b"\x00checkpoint"
_FENCE_PREFIX = b"\x00fence:"


@dataclass
class Recovered:
    """What a changelog partition held: committed state, meta and input position."""

    values: dict[bytes, bytes] = field(default_factory=dict)
    meta: dict | None = None
    next_offset: int | None = None
    records: int = 0
    seconds: float = 0.0


class ChangelogStore:
    """Writes and recovers stage changelog partitions.

    Responsibilities: send a batch's state changes and its checkpoint in
    order (:meth:`write`); recover the committed state of partitions (:meth:`recover`).
    """

    def __init__(self, outbox: Outbox, client_options: dict, client_id: str) -> None:
        self.outbox = outbox
        self.client_options = client_options
        self.client_id = client_id

    async def write(self, topic: str, partition: int, changes: list[tuple[bytes, bytes | None]], meta: dict,
                    next_offset: int) -> None:
        """Send one transaction: the changes, then the checkpoint (acknowledged on the next flush)."""
        records = list(changes)
        records.append((CHECKPOINT_KEY, encode_json({"meta": meta, "next": next_offset})))
        await self.outbox.send_records(topic, partition, records)

    async def recover(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], Recovered]:
        """The committed state of changelog partitions (see the module doc), read together."""
        if not tps:
            return {}
        t0 = time.monotonic()
        fences: dict[TopicPartition, tuple[int, bytes]] = {}
        futures = []
        for topic, partition in tps:
            key = _FENCE_PREFIX + os.urandom(8).hex().encode()
            futures.append((TopicPartition(topic, partition), key,
                            await self.outbox.send(topic, b"fence", key=key, partition=partition)))
        await self.outbox.flush()
        for tp, key, fut in futures:
            fences[tp] = (fut.result().offset, key)
        out = {tp: Recovered() for tp in fences}
        pending: dict[TopicPartition, dict[bytes, bytes | None]] = {tp: {} for tp in fences}
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
                    fence = fences[tp][0]
                    got, buf = out[tp], pending[tp]
                    for record in records:
                        if record.offset >= fence:
                            left.discard(tp)
                            consumer.pause(tp)
                            break
                        got.records += 1
                        key = record.key
                        if key == CHECKPOINT_KEY:
                            values = got.values
                            for k, v in buf.items():
                                if v is None:
                                    values.pop(k, None)
                                else:
                                    values[k] = v
                            buf.clear()
                            checkpoint = decode_json(record.value)
                            got.meta, got.next_offset = checkpoint["meta"], checkpoint["next"]
                        elif key is not None and not key.startswith(_FENCE_PREFIX):
                            buf[key] = record.value
        finally:
            await consumer.stop()
        for tp, (_offset, key) in fences.items():  # the fences have done their job
            await self.outbox.send(tp.topic, None, key=key, partition=tp.partition)
            if pending[tp]:
                logger.info("%s[%d]: %d records of an unfinished batch ignored", tp.topic, tp.partition,
                            len(pending[tp]))
        seconds = time.monotonic() - t0
        for got in out.values():
            got.seconds = seconds
        return {(tp.topic, tp.partition): got for tp, got in out.items()}
