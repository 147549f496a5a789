"""Reading the input topics: an aiokafka consumer group, in batches.

Why not a faust agent: faust creates an event, a future and a task hop per
consumed message, which caps a stage at a few thousand messages a second on
two cores (../shared/faust-notes.md), while ``getmany`` hands over thousands
of records per call. The input stage is stateless (validate, dead-letter,
route), so it needs none of faust's table machinery; it runs inside the
faust worker as a task and feeds the faust agents through the op topics.

Delivery is at least once: offsets are committed only after the batch's
sends were acknowledged by the broker. A crash between the two replays the
batch; stage 2 drops the repeated event ids (counted as duplicates).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from ..config import Settings
from .ingest import IngestStage

__all__ = ["Intake"]

logger = logging.getLogger(__name__)


class Intake:
    """Owns the input consumer: poll, hand batches to the ingest stage, commit.

    ``flush`` must wait until everything sent so far is acknowledged.
    """

    def __init__(self, settings: Settings, stage: IngestStage, flush: Callable[[], Awaitable[None]]) -> None:
        self.settings = settings
        self.stage = stage
        self.flush = flush
        self.consumer: AIOKafkaConsumer | None = None
        self.consumed = 0
        self.joined = False

    @property
    def assigned(self) -> bool:
        """Joined the input group (a worker may legitimately own no input partition)."""
        return self.joined

    async def run(self) -> None:
        s = self.settings
        session_ms = int(s.session_timeout * 1000)
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=f"{s.app_id}-intake",
            client_id=f"{s.app_id}-intake",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(300, session_ms // 6),
            max_poll_interval_ms=max(300_000, session_ms * 10),
            rebalance_timeout_ms=max(session_ms * 2, 20_000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            max_poll_records=s.batch_size,
            # A short fetch wait bounds the delay a quiet feed adds to an alert
            # (Tansu answers a waiting fetch only at half the wait or its end).
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        consumer.subscribe([s.incidents_topic, s.crimes_topic], listener=_Listener(self))
        logger.info("intake: consuming %s and %s", s.incidents_topic, s.crimes_topic)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=s.batch_size)
                if not batches:
                    continue
                for tp, records in batches.items():
                    await self.stage.handle(tp.topic, [(r.partition, r.offset, r.key, r.value) for r in records])
                    self.consumed += len(records)
                await self.stage.broadcast(min_interval=0.05)  # a moved watermark reaches every partition now
                await self.flush()
                try:
                    await consumer.commit()
                except KafkaError as exc:  # rebalanced meanwhile: the next owner re-reads, ids dedupe
                    logger.warning("intake: commit failed (%s); the batch may be read again", exc)
        except asyncio.CancelledError:
            raise
        finally:
            await consumer.stop()


class _Listener(ConsumerRebalanceListener):
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked) -> None:
        self.intake.joined = False

    async def on_partitions_assigned(self, assigned) -> None:
        self.intake.joined = True
        logger.info("intake: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
