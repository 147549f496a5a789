"""Stage partitions changing hands in a rebalance: given up after the batch in
progress, taken over by recovering their changelog, and a recovery that
failed retried until it succeeds.

Why the retry: aiokafka only logs an exception raised by an assignment
callback. The partitions stay assigned to this worker, so a recovery that
failed once (the broker did not answer, a write of the fence was refused)
would leave them unrecovered until the next rebalance: their records given
back on every fetch by the runner (nothing lost, nothing applied) and the
worker not ready. Instead the partitions wait here, paused, and are recovered
again after 1 s, then twice as long each time up to 30 s, as long as they
stay assigned. The worker is ready only when none waits.

Where reading starts when the group has no usable position
(:meth:`Handover.reposition`): the consumer runs with
``auto_offset_reset="none"``, so that the client never moves a position on
its own. A stage partition is read from its checkpoint (recovery seeks it
there); an input partition the group never committed is read from its start
(what ``earliest`` did); an input position that is no longer in the log is
counted, logged and read on from the log's start: records that retention
removed before anyone read them are a loss that people must see
(``cdi_input_records_lost_total``), not an INFO line of the client. An
input position past the log's end (the topic made again, or truncated) is
read again from the start, with a :class:`~pipeline.core.events.Rewind` to
the event stage first, so that the new records are not taken for copies
already read.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from .partitions import PARTITION_TYPES, IncidentPartition

__all__ = ["Handover", "describe"]

logger = logging.getLogger(__name__)

RETRY_FIRST = 1.0   # seconds before a failed recovery is tried again
RETRY_MAX = 30.0    # the longest wait between two tries


class Handover:
    """Gives up and takes over the runner's stage partitions; keeps those whose
    recovery failed, and when to try them again."""

    def __init__(self, runner) -> None:
        """``runner``: the worker's :class:`~pipeline.stream.runner.Runner`, whose
        lock, consumer, partitions and state store this works with."""
        self.runner = runner
        self.waiting: set[TopicPartition] = set()  # assigned, not recovered: their recovery failed
        self.retry_at = 0.0
        self.delay = RETRY_FIRST

    def listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    async def revoke(self, tps) -> None:
        r = self.runner
        async with r.lock:  # the batch in progress is checkpointed and committed first
            await r.committed()
            for tp in tps:
                stage = r.plan.stage_of(tp.topic)
                if stage is not None and r.owned.pop((stage, tp.partition), None) is not None:
                    r.views.give_up(stage, tp.partition)
            self.waiting.difference_update(tps)
            sides = {(r.config.topics.side_of(tp.topic), tp.partition) for tp in tps}
            r.router.forget_rewinds({(side, p) for side, p in sides if side is not None})
            r.joined = False

    async def assign(self, tps) -> None:
        logger.info("assigned %s", describe(tps))  # which worker read what, for the record
        async with self.runner.lock:
            await self._take([tp for tp in tps if self.runner.plan.stage_of(tp.topic) is not None])

    async def retry_if_due(self) -> None:
        """Recover the partitions whose recovery failed, when their wait is over
        (the runner's loop calls this under its lock)."""
        if not self.waiting or time.monotonic() < self.retry_at:
            return
        assigned = self.runner.consumer.assignment()
        tps = [tp for tp in self.waiting if tp in assigned]
        self.waiting.clear()
        await self._take(tps)

    async def _take(self, tps: list[TopicPartition]) -> None:
        r = self.runner
        r.recovering = True
        try:
            await self.recover(tps)
        except Exception as exc:  # noqa: BLE001 - retried: the partitions must not stay unrecovered
            self.waiting.update(tps)
            r.consumer.pause(*tps)  # no fetch of records that could only be given back
            self.retry_at = time.monotonic() + self.delay
            name, text = type(exc).__name__, str(exc)
            logger.error("recovering %s failed (%s); trying again in %.0f s", describe(tps),
                         text if text.startswith(name) else f"{name}: {text}", self.delay)
            self.delay = min(2 * self.delay, RETRY_MAX)
            r.joined = False
            return
        finally:
            r.recovering = False
        paused = r.consumer.paused()
        r.consumer.resume(*[tp for tp in tps if tp in paused])
        self.delay = RETRY_FIRST
        gc.freeze()  # the recovered state lives long: no collection need walk it again (0.2 s with a month)
        r.joined = not self.waiting  # partitions of an earlier assignment may still wait

    async def recover(self, tps: list[TopicPartition]) -> None:
        """Take over the stage partitions ``tps`` not owned yet: their
        changelogs read, their states loaded, the consumer sought to each
        checkpoint's ``next``."""
        r = self.runner
        plan = r.plan
        wanted = [(plan.stage_of(tp.topic), tp.partition) for tp in tps]
        wanted = [key for key in wanted if key not in r.owned]
        if not wanted:
            return
        t0 = time.monotonic()
        got = await r.store.recover([(plan.changelog(stage), p) for stage, p in wanted])
        for stage, p in wanted:
            rec = got[(plan.changelog(stage), p)]
            part = PARTITION_TYPES[stage](p, r.config, r.router)
            # Loading a large partition is seconds of CPU: in a thread, so that the
            # event loop (heartbeats: the group must not think us dead) keeps turning.
            await asyncio.to_thread(part.load, rec)
            if rec.unreadable:  # records no worker wrote: the partition is recovered without them
                logger.error("%s[%d]: %d changelog records could not be read and were skipped",
                             plan.changelog(stage), p, rec.unreadable)
                r.metrics.processing_errors.labels(stage).inc(rec.unreadable)
            r.owned[(stage, p)] = part
            # From the checkpoint, never from the group's committed offset (it may be ahead).
            r.consumer.seek(TopicPartition(plan.ops(stage), p), part.next_offset)
            if isinstance(part, IncidentPartition):
                r.views.take_over(p, part.stage.ledger)
            r.views.owner(stage, p, r.settings.advertised_url, r.worker_id)
        r.raise_max_time()
        await r.views.send()
        await r.outbox.flush()
        seconds = time.monotonic() - t0
        r.metrics.recovery.set(seconds)
        logger.info("recovered %d partitions (%d changelog records) in %.1f s", len(wanted),
                    sum(rec.records for rec in got.values()), seconds)

    async def reposition(self, exc: OffsetOutOfRangeError | NoOffsetForPartitionError) -> None:
        """The consumer has no position to read a partition from (see the
        module doc): position it. A partition no longer assigned is left
        alone; one whose offsets cannot be read now is left too, and the
        consumer raises the same error again on a later fetch."""
        r = self.runner
        consumer, plan = r.consumer, r.plan
        assigned = consumer.assignment()
        if isinstance(exc, NoOffsetForPartitionError):
            wanted = {tp: None for tp in exc.args if isinstance(tp, TopicPartition)}
        else:
            wanted = dict(exc.args[0]) if exc.args and isinstance(exc.args[0], dict) else {}
        for tp, offset in wanted.items():
            if tp not in assigned:
                continue
            stage = plan.stage_of(tp.topic)
            if stage is not None:
                part = r.owned.get((stage, tp.partition))
                if part is None:
                    continue  # not recovered yet: recovery seeks it to its checkpoint
                if offset is None:
                    consumer.seek(tp, part.next_offset)
                else:  # records the partition has not applied are gone: the runner's gap check says so
                    await consumer.seek_to_beginning(tp)
                continue
            if offset is None:
                logger.info("%s[%d]: no committed offset for group %s; reading it from the start",
                            tp.topic, tp.partition, plan.group)
                await consumer.seek_to_beginning(tp)
                continue
            try:
                start = (await consumer.beginning_offsets([tp]))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
            except (KafkaError, KeyError) as e:
                logger.warning("%s[%d]: offset %d is out of range, and the log's range could not be read (%s); "
                               "trying again", tp.topic, tp.partition, offset, type(e).__name__)
                continue
            if offset < start:
                r.metrics.input_lost.labels(tp.topic).inc(start - offset)
                logger.error("%s[%d]: records %d to %d were removed from the log before this group read them "
                             "(retention): %d input records lost, never validated or counted; reading on from %d",
                             tp.topic, tp.partition, offset, start - 1, start - offset, start)
                try:  # nothing below the log's start can be read any more: the next owner need not count it again
                    await consumer.commit({tp: start})
                except KafkaError:
                    pass  # rebalanced meanwhile: the next owner finds the same gap and counts it
            elif offset > end:  # read it all again rather than skip what a new topic holds
                logger.warning("%s[%d]: offset %d is past the log's end (%d): the topic was deleted and created "
                               "again, or truncated; reading it again from its start %d as new records (copies "
                               "of messages already applied count as duplicates)", tp.topic, tp.partition, offset,
                               end, start)
                r.router.rewind(r.config.topics.side_of(tp.topic), tp.partition, start)
            else:  # in range again (the broker's answer was transient): read on where it was
                logger.warning("%s[%d]: the broker said offset %d was out of range; it is within %d..%d now: "
                               "reading on from it", tp.topic, tp.partition, offset, start, end)
                start = offset
            consumer.seek(tp, start)


def describe(tps) -> str:
    """``topic[0,3] other[1]``: a partition assignment in one short line."""
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())) or "nothing"


class _Listener(ConsumerRebalanceListener):
    def __init__(self, handover: Handover) -> None:
        self.handover = handover

    async def on_partitions_revoked(self, revoked) -> None:
        await self.handover.revoke(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.handover.assign(assigned)
