"""The processing loop of a worker: one consumer group for inputs and stage
topics; batches applied, published, checkpointed, committed, in that order.

Per batch (all under :attr:`Runner.lock`):

1. input records -> :class:`~pipeline.stream.intake.Intake` -> event-stage messages;
   stage records -> their :class:`~pipeline.stream.partitions.StagePartition`
   (those this worker wrote, from memory: :mod:`pipeline.stream.loopback`);
2. every output is sent: stage messages, alerts, dead letters, view updates;
3. **flush**: all of them acknowledged by the broker;
4. each changed stage partition writes its state changes and checkpoint
   (:mod:`pipeline.stream.store`);
5. in the background, while the next batch runs: the checkpoints are
   acknowledged, then the consumed offsets committed (:meth:`Runner.committed`).

Nothing is marked done before the effect it stands for is durable: a
checkpoint follows its outputs, a commit follows its checkpoint. After a
crash the new owner of a stage partition recovers its last checkpoint and
seeks to the input offset it names, so each stage message is applied exactly
once; input records read again are dropped by their source position in the
event stage. Outputs may repeat after a crash (alerts keep their ``alert_id``),
never go missing.

Rebalances (:mod:`pipeline.stream.handover`): the listener waits for the
batch in progress (the lock), so a partition is given up only after its last
batch is checkpointed and committed; a newly assigned stage partition is
recovered before its first message is applied (records the consumer hands out
before that are given back: :meth:`Runner._give_back`; a recovery that failed
is tried again), and the consumer reads it from its checkpoint's ``next``,
never from the group's committed offset. A stage partition applies
its records without a gap: a record past the next one it expects sends the
consumer back (:meth:`Runner._gap`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from ..core.tally import Moves
from ..core.validation import Validator
from ..kafka.client import reveal
from ..kafka.topics import STAGES, TopicPlan
from .codec import alert_record
from .failures import ProcessingErrors
from .faults import FaultPlan
from .handover import Handover
from .intake import Intake
from .loopback import Loopback
from .metrics import Metrics
from .outbox import Outbox
from .partitions import StagePartition
from .store import ChangelogStore
from .transport import KafkaRouter, Outgoing
from .views import ViewPublisher

__all__ = ["Runner"]

logger = logging.getLogger(__name__)

# How soon (seconds) a stage partition with no traffic of its own hears that the
# watermark moved, so that an overdue alert there is not held back by the
# slower audit tick; one broadcast is a record per stage partition.
WATERMARK_INTERVAL = 0.02

# How often (seconds) the cyclic garbage collector walks everything (see Runner._freeze).
FULL_COLLECTION_INTERVAL = 600.0


class Runner:
    """Owns the worker's consumer, its partitions and the batch cycle (see the module doc)."""

    def __init__(self, settings, metrics: Metrics, outbox: Outbox, views: ViewPublisher,
                 client_options: dict, worker_id: str) -> None:
        self.settings = settings
        self.plan = TopicPlan.from_settings(settings)
        self.config = settings.core()
        self.metrics = metrics
        self.outbox = outbox
        self.views = views
        self.client_options = client_options
        self.worker_id = worker_id
        self.router = KafkaRouter(settings.partitions)
        self.loopback = Loopback()  # stage records sent to partitions owned here, applied from memory
        self.intake = Intake(self.config.topics, Validator(self.config.vocabulary, self.config.limits), self.router)
        self.errors = ProcessingErrors(metrics, self.router, self.config.topics)  # a message that raised: skipped
        self.store = ChangelogStore(outbox, client_options, f"{settings.app_id}-{worker_id}")
        self.owned: dict[tuple[str, int], StagePartition] = {}
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.max_time: int | None = None      # greatest valid event time known (watermark source)
        self._broadcast_t: int | None = None
        self._last_tick = 0.0
        self._last_broadcast = 0.0
        self.joined = False
        self.recovering = False
        self.consumed: Counter = Counter()
        self.feeds: dict[tuple[str, int], float] = {}
        self._feeds_sent: dict[tuple[str, int], float] = {}
        self.batches = 0
        self._commit: asyncio.Task | None = None  # the last batch's offset commit, maybe in flight
        self.last_batch = 0.0
        self.stopping = False
        self.fault = FaultPlan(settings.test_fault)
        self._full_collection_at = time.monotonic() + FULL_COLLECTION_INTERVAL
        self.handover = Handover(self)  # rebalances: partitions given up, taken over, recovery retried

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        s, plan = self.settings, self.plan
        session_ms = int(s.session_timeout * 1000)
        self.consumer = consumer = AIOKafkaConsumer(
            **reveal(self.client_options), group_id=plan.group, client_id=f"{s.app_id}-{self.worker_id}",
            # No position is ever moved by the client itself (Handover.reposition).
            enable_auto_commit=False, auto_offset_reset="none", session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(300, session_ms // 6), max_poll_interval_ms=max(300_000, session_ms * 10),
            rebalance_timeout_ms=max(session_ms * 2, 20_000), max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024, max_poll_records=s.batch_size,
            # A producer's aborted transactions are not events: committed messages only.
            isolation_level="read_committed",
            # A short fetch wait bounds the delay an idle hop adds to an alert (the
            # test broker answers a waiting fetch only at half the wait or at its end).
            fetch_max_wait_ms=50)
        await consumer.start()
        topics = list(plan.inputs) + [plan.ops(stage) for stage in STAGES]
        consumer.subscribe(topics, listener=self.handover.listener())
        logger.info("consuming %s as group %s", ", ".join(topics), plan.group)
        try:
            while not self.stopping:
                try:
                    batch = await consumer.getmany(timeout_ms=100, max_records=s.batch_size)
                except (OffsetOutOfRangeError, NoOffsetForPartitionError) as exc:
                    async with self.lock:
                        await self.handover.reposition(exc)
                    continue
                async with self.lock:
                    if batch:
                        await self.process(batch)
                    await self.tick()
                    await self.handover.retry_if_due()
        finally:
            try:
                await self.committed()  # the last checkpoints acknowledged, the last offsets committed
            finally:
                await consumer.stop()

    async def stop(self) -> None:
        """Graceful stop: the batch in progress finishes (checkpointed, committed), then the group is left."""
        self.stopping = True

    # ------------------------------------------------------------------ one batch
    async def process(self, batch: dict) -> None:
        plan, owned = self.plan, self.owned
        inputs = plan.inputs
        now = time.time()
        commits = {}
        before = {key: p.counts_now() for key, p in owned.items() if key[0] == "event"}
        loopback, ops_topic = self.loopback, plan.ops
        loopback.deliver(owned, ops_topic, self.errors.stage)
        for tp, records in batch.items():
            if not records:
                continue
            topic = tp.topic
            if topic in inputs:
                self.intake.handle(topic, records, self.errors.intake)
                await asyncio.sleep(0)  # let heartbeats and HTTP in between large slices of work
                self.feeds[(topic, tp.partition)] = now
                self.metrics.last_received.labels(topic).set(now)
                commits[tp] = records[-1].offset + 1
            else:
                part = owned.get((plan.stage_of(topic), tp.partition))
                if part is None:
                    self._give_back(tp, records[0].offset)
                    continue
                process = part.process
                for i, record in enumerate(records):
                    if not process(record, self.errors.stage):
                        await self._gap(tp, part, record.offset)
                        break
                    if i & 7 == 7:  # a stage record can hold thousands of messages
                        await asyncio.sleep(0)
                loopback.deliver(owned, ops_topic, self.errors.stage, (part.stage_name, tp.partition))
                commits[tp] = part.next_offset  # never past what is applied
            self.consumed[topic] += len(records)
        dirty = [p for p in owned.values() if p.dirty]
        changes, moves = {}, Moves()  # moves: the incident partitions' together, counted once
        for part in dirty:
            changes[part] = part.collect()
            self._observe(part, before, moves)
        self.metrics.observe_moves(moves)
        self.raise_max_time()
        fault, n = self.fault, self.batches + 1
        fault.at("before_outputs", n)
        await self._send_outputs()
        await self.outbox.flush()
        fault.at("after_outputs", n)
        for part in dirty:
            if fault.point == "mid_checkpoint" and n >= fault.batch:  # the changes out, not their checkpoint
                await self.store.write_changes(plan.changelog(part.stage_name), part.partition, changes[part])
                await self.outbox.flush()
                fault.at("mid_checkpoint", n)
            await self.store.write(plan.changelog(part.stage_name), part.partition, changes[part], part.meta(),
                                   part.next_offset)
            part.dirty = False
        self.batches += 1
        self.last_batch = time.monotonic()
        await self.committed()  # the previous batch's: done by now, nearly always
        self._commit = asyncio.ensure_future(self._checkpointed(self.outbox.sent(), commits, n))
        self._freeze()

    async def _checkpointed(self, writes: list, commits: dict, n: int) -> None:
        """In the background, while the next batch runs: wait for this batch's
        checkpoints to be acknowledged, then commit its offsets. A failed write
        raises here (and in every later flush): :meth:`committed` passes it on."""
        await self.outbox.acknowledged(writes)
        self.fault.at("after_checkpoint", n)
        if not commits:
            return
        try:
            await self.consumer.commit(commits)
        except KafkaError as exc:  # rebalanced meanwhile: positions and checkpoints keep it exact
            logger.info("commit after a batch failed (%s); the next owner re-reads, nothing counts twice",
                        type(exc).__name__)

    async def committed(self) -> None:
        """Wait for the last batch's checkpoints and offset commit.

        Both run while the next batch is processed: its outputs are durable
        already, and the commit only says where a new owner of an input
        partition starts reading (input records read again are dropped by
        their source position; a stage partition starts from its
        checkpoint). Waiting for them cost two round trips a batch. The order
        stays: the next batch's output flush waits for these checkpoints too,
        and each commit waits for the one before. Waited for before the next
        commit, before partitions are given up (their new owner must find the
        last checkpoint), and before the consumer stops."""
        task, self._commit = self._commit, None
        if task is not None:
            await task

    def _freeze(self) -> None:
        """After a batch: what is alive now is the ledgers' state, which lives long, so the
        cyclic collector stops walking it (``gc.freeze``: that took 4% of a worker's time)
        and walks only what the next batches make. Garbage cycles among frozen objects
        (an asyncio future's, say) wait for the next full collection, every
        :data:`FULL_COLLECTION_INTERVAL`; 0.2 s with a month of state."""
        now = time.monotonic()
        if now >= self._full_collection_at:
            self._full_collection_at = now + FULL_COLLECTION_INTERVAL
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    def _give_back(self, tp: TopicPartition, offset: int) -> None:
        """Records of a stage partition this worker does not own: not applied, and
        not skipped either. aiokafka hands out a new assignment's records as soon
        as the group has assigned it, before the assignment callback has
        recovered the partition (it waits for this batch's lock). The consumer's
        position has moved past these records; if the partition is assigned
        here, the position goes back to the first of them, so that the records
        fetched meanwhile are dropped and none is lost. (Left alone, the next
        batch would start after them, recovery's seek would come too late for
        it, and the partition would apply it and then drop these as "before its
        checkpoint".) A partition that went to another worker needs nothing:
        its new owner reads from its checkpoint."""
        if tp in self.consumer.assignment():
            self.consumer.seek(tp, offset)

    async def _gap(self, tp: TopicPartition, part: StagePartition, offset: int) -> None:
        """A stage partition got a record past the next one it must apply. The
        consumer's position ran ahead of the partition's checkpoint, or the
        broker served a record before the one below it was readable (the test
        broker does, now and then, when several workers write one partition).
        The position goes back to the checkpoint's ``next`` and the records
        wait for the refetch; only when the log no longer starts that low
        (retention removed the records) does the partition go on from the
        log's start, with a warning, rather than wait forever."""
        expected = part.next_offset
        try:
            start = (await self.consumer.beginning_offsets([tp])).get(tp) or 0
        except KafkaError:
            start = 0  # unknown: read again, never skip
        if start > expected:
            logger.warning("%s[%d]: records %d to %d are no longer in the log; going on from %d",
                           tp.topic, tp.partition, expected, start - 1, start)
            part.skip_to(start)
            self.consumer.seek(tp, start)
            return
        logger.warning("%s[%d]: got offset %d before %d..%d were applied; reading again from %d",
                       tp.topic, tp.partition, offset, expected, offset - 1, expected)
        self.consumer.seek(tp, expected)

    def _observe(self, part: StagePartition, before: dict, moves: Moves) -> None:
        """Metrics and views for what a partition's batch changed."""
        m = self.metrics
        if part.stage_name == "event":
            old = before.get(("event", part.partition))
            for side, counts in part.counts().items():
                topic = self.config.topics.topic_of(side)
                for outcome in ("valid", "duplicate", "invalid"):
                    delta = counts[outcome] - (old[side][outcome] if old else 0)
                    if delta:
                        m.events.labels(topic, outcome).inc(delta)
            for (side, reason), n in part.deadletters.items():
                m.deadletter.labels(self.config.topics.topic_of(side), reason).inc(n)
            part.deadletters.clear()
        elif part.changes is not None:
            ch = part.changes
            if part.stage_name == "incident":
                moves.merge(ch.moves)
                self.views.board(part.partition, part.stage.ledger, list(ch.touched) + list(ch.evicted))
            else:
                m.observe_cancellations(ch.cancellations)

    async def _send_outputs(self) -> None:
        plan, outbox, router = self.plan, self.outbox, self.router
        for out in router.drain(self.max_time):
            await self._send_stage_record(out)
        alerts, router.alerts = router.alerts, []
        if alerts:
            await outbox.send_keyed(plan.alerts, [(a.incident_id.encode("utf-8"), alert_record(a)) for a in alerts])
            self.metrics.observe_alerts(alerts)
        letters, router.deadletters = router.deadletters, []
        for key, record in letters:
            await outbox.send(plan.deadletter, record, key=key)
        await self.views.send()

    def raise_max_time(self) -> None:
        for part in self.owned.values():
            t = part.max_time()
            if t is not None and (self.max_time is None or t > self.max_time):
                self.max_time = t

    # ------------------------------------------------------------------ every tick
    async def tick(self) -> None:
        """The watermark broadcast when W moved (at most every
        :data:`WATERMARK_INTERVAL`), and audit parts and feed activity (at most
        every ``tick_interval``). Nothing waits for them to be acknowledged:
        no progress is recorded on them (a lost broadcast is made again when
        W moves on; a view is replaced by the next), and a failed write still
        stops the next batch's flush."""
        now = time.monotonic()
        await self._broadcast(now)
        if now - self._last_tick >= self.settings.tick_interval:
            self._last_tick = now
            for (stage, partition), part in self.owned.items():
                self.views.parts(stage, partition, part.next_offset, part.stage.parts)
            for key, at in self.feeds.items():
                if at - self._feeds_sent.get(key, 0.0) >= 5.0:
                    self._feeds_sent[key] = at
                    self.views.feed(key[0], key[1], at)
            await self.views.send()

    async def _broadcast(self, now: float) -> None:
        """Tell every stage partition the greatest event time, when it moved: a
        partition with no traffic of its own learns from it that a deadline passed."""
        if now - self._last_broadcast < min(WATERMARK_INTERVAL, self.settings.tick_interval):
            return
        self._last_broadcast = now
        self.raise_max_time()
        if self.max_time is None or self.max_time == self._broadcast_t:
            return
        self._broadcast_t = self.max_time
        for out in self.router.broadcast(self.max_time, STAGES):
            await self._send_stage_record(out)

    async def _send_stage_record(self, out: Outgoing) -> None:
        """Send one stage record; one for a partition this worker owns is also
        kept, to be applied from memory once acknowledged (stream/loopback.py)."""
        sent = await self.outbox.send(self.plan.ops(out.stage), out.value, partition=out.partition)
        if (out.stage, out.partition) in self.owned:
            self.loopback.keep(sent, out)
