"""The stream layer's stage partitions without a broker (tests/stream_harness.py):
any interleaving of their messages, in any batching, with workers dying at any
point of a batch and input records read twice, gives exactly the offline audit.

This is the crash-consistency argument of pipeline/stream/store.py, checked
thousands of times: state and input position come from the same checkpoint,
so after a crash nothing is lost and nothing counts twice; outputs may repeat,
with the same ids. The real-broker fault tests (tests/test_faults.py) check
the same end to end.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.capture import read_capture
from pipeline.commands.audit import audit_files
from pipeline.settings import Settings
from stream_harness import Harness, Record
from support import SAMPLE

MESSAGES = list(read_capture([SAMPLE]))


def offline(s: Settings) -> dict:
    return audit_files([str(SAMPLE)], s).audit()


def replay(h: Harness, chunk: int, reread: float) -> None:
    """The sample into the harness in input batches over 3 input partitions; some read twice."""
    offsets: Counter = Counter()
    batches = []
    for i in range(0, len(MESSAGES), chunk):
        for topic in ("cc.incidents", "rms.crimes"):
            for p in range(3):
                part = [m for j, m in enumerate(MESSAGES[i:i + chunk]) if m.topic == topic and (i + j) % 3 == p]
                if part:
                    records = [Record(topic, p, offsets[(topic, p)] + k, m.key, m.payload) for k, m in enumerate(part)]
                    offsets[(topic, p)] += len(part)
                    batches.append((topic, p, records))
    for topic, p, records in batches:
        h.feed(topic, p, records)
        if h.rng.random() < reread:  # a new owner reads the batch again (the commit was lost)
            h.feed(topic, p, records)
        if h.rng.random() < 0.3:
            for _ in range(h.rng.randint(1, 20)):
                if not h.step(h.crash()):
                    break
    h.run()


@pytest.mark.parametrize("seed,chunk,partitions", [(1, 500, 6), (2, 97, 4), (3, 2668, 1), (4, 50, 3)])
def test_any_interleaving_gives_the_offline_audit(seed, chunk, partitions):
    s = Settings(partitions=partitions)
    h = Harness(s, seed)
    replay(h, chunk, reread=0.0)
    h.run()
    audit = h.audit()
    assert audit == offline(s)
    assert not h.errors
    # every invalid message dead-lettered exactly once; one alert per incident and kind
    assert len(h.deadletters) == audit["events"]["incidents"]["invalid"] + audit["events"]["crimes"]["invalid"]
    ids = [a.alert_id for a in h.alerts]
    assert len(ids) == len(set(ids))
    # the alerts agree with the final state (the incident stage decides at the end of each
    # stage record): every incident overdue or at risk now had that alert, a resolved
    # follows an overdue; the checks of the broker fault tests
    open_now = [(incident_id, state.status) for (stage, _p), part in h.parts.items() if stage == "incident"
                for incident_id, state in part.incidents.ledger.incidents.items()
                if state.status in ("overdue", "at_risk")]
    assert open_now and all(f"{incident_id}:{status}" in ids for incident_id, status in open_now)
    assert all(f"{i.rsplit(':', 1)[0]}:overdue" in ids for i in ids if i.endswith(":resolved"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), chunk=st.sampled_from([40, 150, 700]),
       partitions=st.sampled_from([1, 2, 5]), crash_rate=st.sampled_from([0.2, 0.4, 0.6]),
       reread=st.sampled_from([0.0, 0.2]))
def test_crashes_at_any_point_and_rereads_lose_nothing_and_count_nothing_twice(seed, chunk, partitions,
                                                                               crash_rate, reread):
    s = Settings(partitions=partitions)
    h = Harness(s, seed)
    h.crash_rate = crash_rate
    replay(h, chunk, reread)
    h.run()
    assert h.crashes > 0
    assert h.audit() == offline(s)  # statuses, counts (valid, duplicate, invalid: exact), everything
    assert not h.errors
    # outputs may repeat after a crash, always with the same ids
    by_id = {}
    for a in h.alerts:
        assert by_id.setdefault(a.alert_id, a) == a
    letters = Counter((d["source_topic"], d["partition"], d["offset"])
                      for d in (orjson.loads(v) for _k, v in h.deadletters))
    audit = h.audit()
    assert len(letters) == audit["events"]["incidents"]["invalid"] + audit["events"]["crimes"]["invalid"]


def test_a_stale_copy_the_incident_still_holds_is_a_duplicate_on_both_paths():
    """The two wirings once disagreed: when an event id had been forgotten (older
    than its retention) but its incident still held the event, the in-process
    monitor counted a resent copy as a duplicate and the stream's incident stage
    counted it valid. Both now run the same stage classes; both say duplicate."""
    from scenario import opened, payload, reclassified, Scenario

    s = Settings(state_retention=3600.0, partitions=3)  # ids kept 24 h + 2 h, incidents 1 h after their last event
    first = opened("A", at=0)
    before = [first, reclassified("A", at=26, category="burglary"),  # A lives on; its first id expires at 26 h
              opened("TICK", at=26.5 + 10 / 60, category="admin")]  # W = 26.5 h
    resend = dict(first)

    sc = Scenario(s)
    for ev in before:
        sc.feed(ev)
    offline_before = sc.audit()
    sc.feed(resend)
    offline_after = sc.audit()

    h = Harness(s, seed=7)
    offset = 0

    def feed(events):
        nonlocal offset
        records = []
        for ev in events:
            topic = "cc.incidents"
            records.append(Record(topic, 0, offset, ev["incident_id"].encode(), payload(ev)))
            offset += 1
        h.feed("cc.incidents", 0, records)
        h.run()

    for ev in before:  # one at a time: in a live feed they are 40 min apart
        feed([ev])
    assert h.audit() == offline_before
    feed([resend])
    stream_after = h.audit()

    for after, base in ((offline_after, offline_before), (stream_after, offline_before)):
        assert after["events"]["incidents"]["duplicate"] == base["events"]["incidents"]["duplicate"] + 1
        assert after["events"]["incidents"]["valid"] == base["events"]["incidents"]["valid"]
    assert stream_after == offline_after
    assert not h.errors


def test_a_worker_logs_its_assignment_in_one_line():
    """Each rebalance says which partitions of which topic the worker now reads
    (a partition nobody reads would otherwise leave no trace in any log)."""
    from aiokafka import TopicPartition

    from pipeline.stream.handover import describe as _describe

    tps = [TopicPartition("rms.crimes", 4), TopicPartition("cc.incidents", 3), TopicPartition("cc.incidents", 0)]
    assert _describe(tps) == "cc.incidents[0,3] rms.crimes[4]"
    assert _describe([]) == "nothing"


class _Outbox:
    async def send(self, *a, **k):
        return None

    async def send_records(self, *a, **k):
        return None

    async def flush(self):
        return None

    def sent(self):
        return []

    async def acknowledged(self, writes):
        return None


class _Views:
    async def send(self):
        return 0

    def take_over(self, partition, ledger):
        pass

    def owner(self, stage, partition, url, worker_id):
        pass


class _Consumer:
    def __init__(self, assigned):
        self.assigned, self.seeks, self.commits, self._paused = set(assigned), [], [], set()
        self.log_start, self.log_end = 0, 1000

    async def beginning_offsets(self, tps):
        return {tp: self.log_start for tp in tps}

    async def end_offsets(self, tps):
        return {tp: self.log_end for tp in tps}

    async def seek_to_beginning(self, *tps):
        self.seeks.extend((tp, "start") for tp in tps)

    def assignment(self):
        return set(self.assigned)

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))

    def pause(self, *tps):
        self._paused.update(tps)

    def resume(self, *tps):
        assert set(tps) <= self._paused
        self._paused.difference_update(tps)

    def paused(self):
        return set(self._paused)

    async def commit(self, offsets):
        self.commits.append(offsets)


def _runner(assigned):
    from pipeline.settings import Settings
    from pipeline.stream.metrics import Metrics
    from pipeline.stream.runner import Runner

    runner = Runner(Settings(), Metrics(), _Outbox(), _Views(), {}, "w")
    runner.consumer = _Consumer(assigned)
    return runner


def test_records_of_a_partition_assigned_but_not_yet_recovered_are_given_back():
    """aiokafka hands out a new assignment's records before the assignment
    callback has recovered the partition. Such records must not be skipped:
    the consumer goes back to the first of them, so the batch after them is
    not applied ahead of them once the partition is recovered (that lost the
    events of one stage record, now and then, in the three-worker fault tests).
    A partition that went to another worker is left to its new owner."""
    import asyncio

    from aiokafka import TopicPartition

    mine, gone = TopicPartition("cdiwatch-event-ops", 2), TopicPartition("cdiwatch-incident-ops", 5)
    runner = _runner([mine])
    consumer = runner.consumer
    batch = {mine: [Record(mine.topic, 2, o, None, b"") for o in (40, 41, 42)],
             gone: [Record(gone.topic, 5, o, None, b"") for o in (7, 8)]}
    asyncio.run(runner.process(batch))
    assert consumer.seeks == [(mine, 40)]  # given back; the partition that left is not sought
    assert consumer.commits == []          # nothing of them is marked done


def test_a_batch_is_committed_while_the_next_is_processed_in_order_and_waited_for_before_a_rebalance():
    """A batch's offsets are committed in the background (its outputs are
    durable already, its checkpoints once acknowledged): the next batch starts at once; its own
    commit goes out only after the one before is answered; a rebalance and a
    stop wait for the commit in flight."""
    import asyncio

    from aiokafka import TopicPartition

    tp = TopicPartition("cc.incidents", 0)
    runner = _runner([tp])
    log: list = []

    async def main():
        gate = asyncio.Event()

        async def slow_commit(offsets):
            log.append(("sent", offsets[tp]))
            await gate.wait()
            log.append(("answered", offsets[tp]))

        runner.consumer.commit = slow_commit
        batch = lambda offset: {tp: [Record(tp.topic, 0, offset, b"k", b"not json")]}  # noqa: E731
        await asyncio.wait_for(runner.process(batch(0)), 5)  # not held by its commit
        await asyncio.sleep(0)
        assert log == [("sent", 1)]  # in flight, and process() has returned
        second = asyncio.ensure_future(runner.process(batch(1)))
        await asyncio.sleep(0.05)
        assert not second.done() and log == [("sent", 1)]  # applied; its commit waits for the first's answer
        gate.set()
        await second
        await asyncio.sleep(0)
        assert log == [("sent", 1), ("answered", 1), ("sent", 2), ("answered", 2)]
        gate.clear()
        await runner.process(batch(2))
        revoke = asyncio.ensure_future(runner.handover.revoke([tp]))
        await asyncio.sleep(0.05)
        assert not revoke.done()  # the partition is given up only once its last commit is answered
        gate.set()
        await revoke
        assert log[-1] == ("answered", 3)
        await runner.committed()  # nothing in flight: returns at once

    asyncio.run(main())


def test_a_batch_s_checkpoints_are_acknowledged_in_the_background_and_before_its_offsets_are_committed():
    """The checkpoints a batch wrote are acknowledged while the next batch
    runs: the batch is not held by them; its offsets are committed only once
    they are; a rebalance waits for them (the partition's new owner must find
    them); a failed write reaches the loop (``committed``) and is never
    followed by a commit."""
    import asyncio

    import pytest
    from aiokafka import TopicPartition

    from pipeline.stream.outbox import OutboxError

    tp = TopicPartition("cc.incidents", 0)
    runner = _runner([tp])
    commits = runner.consumer.commits

    async def main():
        loop = asyncio.get_running_loop()
        acks: list = []

        class Outbox(_Outbox):
            def sent(self):  # what a batch wrote last: its checkpoints
                acks.append(loop.create_future())
                return [acks[-1]]

            async def acknowledged(self, writes):
                await asyncio.wait(writes)
                for fut in writes:
                    if fut.exception() is not None:
                        raise OutboxError("a write to the broker failed")

        runner.outbox = Outbox()
        batch = lambda offset: {tp: [Record(tp.topic, 0, offset, b"k", b"not json")]}  # noqa: E731
        await asyncio.wait_for(runner.process(batch(0)), 5)  # not held by its checkpoints
        await asyncio.sleep(0.05)
        assert commits == []  # not before they are acknowledged
        acks[0].set_result(None)
        await asyncio.sleep(0.05)
        assert commits == [{tp: 1}]
        await runner.process(batch(1))
        revoke = asyncio.ensure_future(runner.handover.revoke([tp]))
        await asyncio.sleep(0.05)
        assert not revoke.done() and commits == [{tp: 1}]  # given up only once they are durable
        acks[1].set_result(None)
        await revoke
        assert commits[-1] == {tp: 2}
        await runner.process(batch(2))
        acks[2].set_exception(ConnectionError("broker gone"))
        with pytest.raises(OutboxError):
            await runner.committed()
        assert commits[-1] == {tp: 2}  # the failed batch's offsets are never committed

    asyncio.run(main())


def test_a_stage_record_past_the_checkpoint_sends_the_consumer_back_to_it():
    """A record can come before the ones below it (the consumer's position ran
    ahead of an owned partition's checkpoint; the test broker served it
    early). Records past the gap are not applied and the position goes back
    to the checkpoint's ``next``, however often it happens; nothing after it
    is committed. Only when the log starts past the gap (retention removed
    those records) does the partition go on from the log's start."""
    import asyncio

    from aiokafka import TopicPartition

    from pipeline.stream.partitions import EventPartition
    from pipeline.stream.store import Recovered

    tp = TopicPartition("cdiwatch-event-ops", 2)
    runner = _runner([tp])
    consumer = runner.consumer
    part = EventPartition(2, runner.config, runner.router)
    part.load(Recovered(next_offset=40))
    runner.owned[("event", 2)] = part
    runner.store.tokens[(runner.plan.changelog("event"), 2)] = b"token"
    late = {tp: [Record(tp.topic, 2, o, None, b"") for o in (43, 44)]}
    asyncio.run(runner.process(late))
    assert consumer.seeks == [(tp, 40)] and part.next_offset == 40 and not part.dirty
    assert consumer.commits == [{tp: 40}]  # the checkpoint's position, never past what is applied
    asyncio.run(runner.process(late))  # the same gap again: still read again, never skipped
    assert consumer.seeks[-1] == (tp, 40) and part.next_offset == 40
    consumer.log_start = 43  # retention removed 40..42
    asyncio.run(runner.process(late))
    assert consumer.seeks[-1] == (tp, 43) and part.next_offset == 43 and part.dirty is False
    assert consumer.commits[-1] == {tp: 43}


def test_input_records_removed_before_they_were_read_are_counted_lost_and_reading_goes_on(caplog):
    """The worker's consumer never moves a position by itself
    (``auto_offset_reset="none"``). An input position below the log's start
    (retention removed records nobody read) is a loss: counted per topic,
    logged as an error, and reading goes on from the start. A position past the
    log's end (the topic made again) reads it again, nothing counted lost; one
    back in range by the time the log is asked is read on from. A
    group with no committed offset reads an input from its start; a stage
    partition is read from its checkpoint, or left to its recovery when it is
    not recovered yet. (The test broker never answers OFFSET_OUT_OF_RANGE,
    so this is proven here, on the runner with a stand-in consumer; the path
    with no committed offset runs in every broker test.)"""
    import asyncio
    import logging

    from aiokafka import TopicPartition
    from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError

    from pipeline.core.events import Rewind
    from pipeline.stream.partitions import EventPartition
    from pipeline.stream.store import Recovered

    cc, rms = TopicPartition("cc.incidents", 1), TopicPartition("rms.crimes", 4)
    ops, other = TopicPartition("cdiwatch-event-ops", 2), TopicPartition("cdiwatch-event-ops", 3)
    gone = TopicPartition("cc.incidents", 5)
    runner = _runner([cc, rms, ops, other])
    consumer, lost = runner.consumer, runner.metrics.input_lost
    part = EventPartition(2, runner.config, runner.router)
    part.load(Recovered(next_offset=40))
    runner.owned[("event", 2)] = part

    def run(exc):
        asyncio.run(runner.handover.reposition(exc))
        return consumer.seeks.pop() if consumer.seeks else None

    consumer.log_start = 120
    with caplog.at_level(logging.ERROR, logger="pipeline.stream.handover"):
        assert run(OffsetOutOfRangeError({cc: 100})) == (cc, 120)
    assert lost.labels("cc.incidents")._value.get() == 20  # noqa: SLF001
    assert consumer.commits == [{cc: 120}]  # gone for good: a later owner does not count it again
    assert "records 100 to 119 were removed from the log before this group read them" in caplog.text
    assert "20 input records lost" in caplog.text
    assert run(OffsetOutOfRangeError({rms: 5000})) == (rms, 120)  # past the end (1000): read again, as new
    rewinds = {key: ops for key, ops in runner.router.ops.items() if ops}
    assert rewinds == {("event", p): [Rewind("crimes", 4, 120)] for p in range(runner.settings.partitions)}
    asyncio.run(runner.handover.revoke([cc]))  # another input partition leaves: the rewind stays
    assert {key: ops for key, ops in runner.router.ops.items() if ops} == rewinds
    asyncio.run(runner.handover.revoke([rms]))  # its own leaves before it was sent: its new owner rewinds
    assert not any(runner.router.ops.values())
    assert run(OffsetOutOfRangeError({rms: 700})) == (rms, 700)    # in range by now: read on from it
    assert lost.labels("rms.crimes")._value.get() == 0  # noqa: SLF001
    assert run(NoOffsetForPartitionError(cc)) == (cc, "start")
    assert run(NoOffsetForPartitionError(ops)) == (ops, 40)  # its checkpoint, never the log's start
    assert run(NoOffsetForPartitionError(other)) is None     # recovery will seek it
    assert run(OffsetOutOfRangeError({ops: 10})) == (ops, "start")  # the gap check takes it from there
    assert run(OffsetOutOfRangeError({gone: 3})) is None and run(NoOffsetForPartitionError(gone)) is None
    assert lost.labels("cc.incidents")._value.get() == 20  # noqa: SLF001
    assert consumer.commits == [{cc: 120}]  # only a loss moves the committed offset
    assert not any(runner.router.ops.values())  # only a position past the end rewinds


def test_a_rewind_makes_the_event_stage_take_a_source_read_again_as_new_records():
    """After a :class:`Rewind` the event stage applies records of that input
    partition from its offset on, which it would otherwise take for copies
    already read (a topic made again starts its offsets at 0); other sources
    keep their positions, and a rewind past the position changes nothing."""
    from pipeline.core.events import Arrival, IncidentEvent, Rewind
    from pipeline.stream.codec import encode_batch
    from pipeline.stream.partitions import EventPartition
    from pipeline.stream.transport import KafkaRouter

    from pipeline.settings import Settings

    config = Settings().core()
    part = EventPartition(0, config, KafkaRouter(1))
    offset = iter(range(100))

    def apply(*ops):
        assert part.process(Record("cdiwatch-event-ops", 0, next(offset), None, encode_batch(None, list(ops))),
                            lambda *a: pytest.fail(f"processing error {a}"))
        return dict(part.counts()["incidents"])

    def ev(n):
        return IncidentEvent(1_700_000_000_000_000 + n, f"e{n}", "closed", f"KNT-{n}", disposition="no_crime")

    assert apply(*(Arrival(ev(n), 1, n) for n in range(3)), Arrival(ev(50), 2, 7)) == \
        {"valid": 4, "duplicate": 0, "invalid": 0}
    assert apply(Arrival(ev(10), 1, 1)) == {"valid": 4, "duplicate": 0, "invalid": 0}  # taken for a re-read
    assert apply(Rewind("incidents", 1, 0), Rewind("incidents", 2, 9)) == {"valid": 4, "duplicate": 0, "invalid": 0}
    assert apply(Arrival(ev(10), 1, 0), Arrival(ev(11), 1, 1), Arrival(ev(2), 1, 2)) == \
        {"valid": 6, "duplicate": 1, "invalid": 0}  # new records counted; a copy of e2 is a duplicate
    assert apply(Arrival(ev(51), 2, 7)) == {"valid": 6, "duplicate": 1, "invalid": 0}  # partition 2 kept its place


def test_a_stage_record_that_does_not_decode_is_dead_lettered_and_the_next_one_applied(caplog):
    """A stage topic record no worker wrote (garbage bytes) is a processing
    error of that stage: dead-lettered once, and the records after it are
    applied in the same batch, with no rewind of the consumer and no warning
    about a gap that is not there."""
    import asyncio

    from aiokafka import TopicPartition

    from pipeline.stream.codec import encode_batch
    from pipeline.stream.partitions import EventPartition
    from pipeline.stream.store import Recovered

    tp = TopicPartition("cdiwatch-event-ops", 2)
    runner = _runner([tp])
    part = EventPartition(2, runner.config, runner.router)
    part.load(Recovered(next_offset=40))
    runner.owned[("event", 2)] = part
    runner.store.tokens[(runner.plan.changelog("event"), 2)] = b"token"
    good = encode_batch(None, [])
    batch = {tp: [Record(tp.topic, 2, 40, None, b"\xc1 not a stage record"), Record(tp.topic, 2, 41, None, good)]}
    asyncio.run(runner.process(batch))
    assert runner.consumer.seeks == [] and part.next_offset == 42
    assert runner.consumer.commits == [{tp: 42}]
    assert runner.metrics.processing_errors.labels("event")._value.get() == 1  # and its dead letter sent
    assert "reading again" not in caplog.text


def test_a_checkpoint_record_no_worker_wrote_counts_as_never_written():
    """Its batch is committed by the owner's next checkpoint, or dropped at
    the next fence (the owner died): state and position still come from the
    same checkpoint. The record is counted, never raised."""
    from pipeline.stream.codec import encode_json
    from pipeline.stream.store import CHECKPOINT_PREFIX, FENCE_PREFIX, read_changelog

    def checkpoint(token, n):
        return (CHECKPOINT_PREFIX + token, encode_json({"meta": {"n": n}, "next": n}), token)

    a, b = b"a", b"b"
    epoch = [(FENCE_PREFIX + a, a, a), (b"i:1", b"one", a), checkpoint(a, 1), (b"i:2", b"two", a)]
    for garbage in (None, b"", b"\x00", b"[]", b'{"meta": {}}', b'{"meta": [], "next": 3}',
                    b'{"meta": {}, "next": -1}', b'{"meta": {}, "next": 2'):
        bad = (CHECKPOINT_PREFIX + a, garbage, a)
        rec = read_changelog(epoch + [bad, (b"i:3", b"three", a), checkpoint(a, 3)])
        assert (rec.values, rec.meta, rec.next_offset, rec.unreadable) == (
            {b"i:1": b"one", b"i:2": b"two", b"i:3": b"three"}, {"n": 3}, 3, 1), garbage
        rec = read_changelog(epoch + [bad, (FENCE_PREFIX + b, b, b)])
        assert (rec.values, rec.meta, rec.next_offset, rec.unreadable, rec.dropped) == (
            {b"i:1": b"one"}, {"n": 1}, 1, 1, 1), garbage


def test_a_state_record_no_worker_wrote_is_skipped_counted_and_logged(caplog):
    """Recovery goes on without it (one incident, crime or event id lost,
    loudly) rather than leave the partition unrecovered: the worker keeps
    monitoring everything else."""
    import asyncio

    from aiokafka import TopicPartition

    from pipeline.stream.codec import encode_incident
    from pipeline.stream.store import Recovered

    good = Harness(Settings(partitions=1))
    incidents = [m for m in MESSAGES if m.topic == "cc.incidents"][:60]
    good.feed("cc.incidents", 0, [Record("cc.incidents", 0, n, None, m.payload) for n, m in enumerate(incidents)])
    good.run()
    states = good.parts[("incident", 0)].stage.ledger.incidents
    assert len(states) > 5
    values = {b"i:" + i.encode(): encode_incident(st) for i, st in states.items()}
    values[b"i:garbled"] = b"\x93\x00"
    values[b"i:\xff"] = next(iter(values.values()))
    tp = TopicPartition("cdiwatch-incident-ops", 0)
    runner = _runner([tp])

    class Store:
        async def recover(self, tps):
            return {tps[0]: Recovered(dict(values), {"max_time": None}, 7)}

    runner.store = Store()
    asyncio.run(runner.handover.recover([tp]))
    part = runner.owned[("incident", 0)]
    assert set(part.stage.ledger.incidents) == set(states) and part.next_offset == 7
    assert runner.metrics.processing_errors.labels("incident")._value.get() == 2
    assert "2 changelog records could not be read and were skipped" in caplog.text


def test_a_recovery_that_failed_is_tried_again_until_the_partition_is_recovered(caplog):
    """aiokafka only logs an exception of the assignment callback: without a
    retry the partition would stay assigned and never recovered (its records
    given back forever, the worker not ready) until the next rebalance."""
    import asyncio

    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaConnectionError

    from pipeline.stream.store import Recovered

    tp, other = TopicPartition("cdiwatch-crime-ops", 1), TopicPartition("cdiwatch-event-ops", 0)
    runner = _runner([tp, other])
    handover = runner.handover

    class Store:
        failures = 2

        async def recover(self, tps):
            if self.failures:
                self.failures -= 1
                raise KafkaConnectionError("the broker did not answer")
            return {key: Recovered(next_offset=5) for key in tps}

    runner.store = Store()
    asyncio.run(handover.assign([tp, other]))
    assert handover.waiting == {tp, other} and not runner.owned and runner.joined is False
    assert runner.consumer.paused() == {tp, other}  # not fetched meanwhile
    assert "failed (KafkaConnectionError: the broker did not answer); trying again in 1 s" in caplog.text
    asyncio.run(handover.retry_if_due())  # not yet: its wait is not over
    assert handover.waiting == {tp, other} and runner.store.failures == 1
    handover.retry_at = 0.0
    asyncio.run(handover.retry_if_due())  # fails again: twice as long
    assert handover.waiting == {tp, other} and handover.delay == 4.0 and "trying again in 2 s" in caplog.text
    more = TopicPartition("cdiwatch-incident-ops", 3)  # a later assignment, recovered at once:
    runner.consumer.assigned.add(more)
    runner.store.failures, failing = 0, runner.store.failures
    asyncio.run(handover.assign([more]))
    assert ("incident", 3) in runner.owned and runner.joined is False  # not ready while others wait
    runner.store.failures = failing
    asyncio.run(handover.revoke([other]))  # given to another worker meanwhile: not recovered here
    handover.retry_at = 0.0
    asyncio.run(handover.retry_if_due())
    assert set(runner.owned) == {("crime", 1), ("incident", 3)} and runner.owned[("crime", 1)].next_offset == 5
    assert handover.waiting == set() and runner.joined is True and handover.delay == 1.0
    assert runner.consumer.seeks[-1] == (tp, 5) and tp not in runner.consumer.paused()  # read from its checkpoint


def test_intake_validates_a_batch_at_once_and_falls_back_to_each_record_on_a_defect():
    from pipeline.core.events import Arrival, Invalid
    from pipeline.core.validation import Validator
    from pipeline.stream.intake import Intake
    from pipeline.stream.transport import KafkaRouter

    class Defective:
        """A validator whose batch path raises; one record raises alone too.
        (It wraps one: the compiled Validator cannot be subclassed here.)"""

        def __init__(self):
            self.inner = Validator()

        def validate_many(self, side, raws, now):
            raise RuntimeError("injected batch defect")

        def validate(self, side, raw, now):
            if b"boom" in raw:
                raise RuntimeError("injected record defect")
            return self.inner.validate(side, raw, now)

    s = Settings()
    msgs = [m for m in MESSAGES if m.topic == "cc.incidents"][:50]
    records = [Record(m.topic, 0, i, m.key, m.payload) for i, m in enumerate(msgs)]
    records.insert(10, Record("cc.incidents", 0, 99, None, b'{"boom": 1}'))
    records.insert(20, Record("cc.incidents", 0, 100, None, None))
    outcomes = {}
    for name, validator in (("batch", Validator()), ("fallback", Defective())):
        router, errors = KafkaRouter(s.partitions), []
        Intake(s.core().topics, validator, router).handle("cc.incidents", records, lambda *a: errors.append(a))
        ops = [op for target in router.ops.values() for op in target]  # gathered per event-stage partition
        outcomes[name] = (sorted((type(op).__name__, op.offset) for op in ops), [e[2] for e in errors])
        assert all(type(op) in (Arrival, Invalid) for op in ops)
    batch_ops, batch_errors = outcomes["batch"]
    fallback_ops, fallback_errors = outcomes["fallback"]
    assert batch_errors == [] and fallback_errors == [99]  # only the record that itself fails
    assert fallback_ops == [op for op in batch_ops if op[1] != 99]
    assert ("Invalid", 100) in batch_ops and ("Invalid", 99) in batch_ops and len(batch_ops) == 52


def test_a_batch_freezes_what_survived_it_and_the_full_collection_frees_garbage_cycles_in_time():
    """The runner freezes the survivors of each batch for the cyclic collector
    (the ledgers' state is not walked again and again); a garbage cycle that
    was alive at a freeze is freed by the next full collection, not never."""
    import gc
    import weakref

    from pipeline.stream.metrics import Metrics
    from pipeline.stream.outbox import Outbox
    from pipeline.stream.runner import Runner
    from pipeline.stream.views import ViewPublisher

    s = Settings()
    outbox = Outbox({}, "test")
    runner = Runner(s, Metrics(), outbox, ViewPublisher("views", s.partitions, outbox), {}, "w1")

    class Node:
        pass

    gc.unfreeze()
    try:
        node = Node()
        node.me = node  # a cycle: only the cyclic collector frees it
        ref = weakref.ref(node)
        runner._freeze()  # the end of a batch, the cycle still in use
        del node
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert ref() is not None  # frozen: no collection walks it
        runner._full_collection_at = 0.0  # the full collection is due
        runner._freeze()
        assert ref() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_own_records_are_applied_from_memory_once_acknowledged_and_in_log_order():
    """Loopback: a stage record this worker sent to a partition it owns is
    applied from the messages it was encoded from (its bytes are never
    decoded), only once the broker acknowledged it, and only when its offset
    is the partition's next: a record another worker wrote before it is
    applied first, from the log; one the consumer applied first is not
    applied again; a failed write is never applied; a message that fails is
    dead-lettered under the record's topic and offset."""
    import asyncio

    from pipeline.core.events import CrimeEvent, IncidentEvent
    from pipeline.stream.codec import encode_batch
    from pipeline.stream.loopback import Loopback
    from pipeline.stream.partitions import IncidentPartition
    from pipeline.stream.transport import KafkaRouter, Outgoing

    topic = "cdiwatch-incident-ops"
    part = IncidentPartition(0, Settings().core(), KafkaRouter(1))
    owned = {("incident", 0): part}
    ledger = part.incidents.ledger
    t0 = 1_700_000_000_000_000
    errors: list = []

    def on_error(stage, record, op, exc):
        errors.append((stage, record.topic, record.offset, type(op).__name__, type(exc).__name__))

    def opened(i: int) -> IncidentEvent:
        return IncidentEvent(t0 + i, f"e{i}", "opened", f"I{i}", "burglary", None, t0 + i, "999", "Medway")

    loop = asyncio.new_event_loop()
    loopback = Loopback()

    def send(*ops) -> asyncio.Future:
        sent = loop.create_future()
        loopback.keep(sent, Outgoing("incident", 0, b"\xc1 not msgpack", t0 + 100, list(ops)))
        return sent

    def acknowledge(sent: asyncio.Future, offset: int) -> None:
        sent.set_result(type("Meta", (), {"offset": offset})())

    def deliver() -> int:
        return loopback.deliver(owned, lambda stage: f"cdiwatch-{stage}-ops", on_error)

    first, second = send(opened(1)), send(opened(2), CrimeEvent(t0, "c1", "recorded", "C1"))
    assert deliver() == 0 and part.next_offset == 0  # not acknowledged yet
    acknowledge(second, 2)
    assert deliver() == 0  # in order: the first is not acknowledged
    acknowledge(first, 1)
    assert deliver() == 0 and part.next_offset == 0  # offset 0 is another worker's: the log's turn
    assert part.process(Record(topic, 0, 0, None, encode_batch(t0, [opened(0)])), on_error)
    assert deliver() == 2 and part.next_offset == 3
    assert set(ledger.incidents) == {"I0", "I1", "I2"} and ledger.max_time == t0 + 100
    assert errors == [("incident", topic, 2, "CrimeEvent", "TypeError")]
    assert part.process(Record(topic, 0, 1, None, b"\xc1"), on_error)  # read back: before next, skipped
    assert part.next_offset == 3 and len(errors) == 1

    third = send(opened(3))
    assert part.process(Record(topic, 0, 3, None, encode_batch(t0, [opened(3)])), on_error)  # the log first
    acknowledge(third, 3)
    assert deliver() == 0 and part.next_offset == 4 and not loopback.sent
    failed = send(opened(4))
    failed.set_exception(ConnectionError("broker gone"))
    assert deliver() == 0 and part.next_offset == 4 and "I4" not in ledger.incidents and not loopback.sent
    gone = loop.create_future()
    loopback.keep(gone, Outgoing("incident", 1, b"", None, [opened(5)]))  # a partition given up since
    acknowledge(gone, 0)
    assert deliver() == 0 and not loopback.sent
    loop.close()


def test_every_stage_message_goes_to_the_partition_its_routing_key_names():
    """The router's callers that have the key at hand (intake, the stages'
    sends) route exactly as :func:`~pipeline.core.routing.key_of` says: the
    one rule of which partition owns a message."""
    from pipeline.core.events import CrimeEvent, IncidentEvent, Link, Notice
    from pipeline.core.routing import key_of, partition_for
    from pipeline.core.validation import Validator
    from pipeline.stream.intake import Intake
    from pipeline.stream.transport import KafkaRouter

    config = Settings().core()
    router = KafkaRouter(6)
    intake = Intake(config.topics, Validator(config.vocabulary, config.limits), router)
    validator = Validator(config.vocabulary, config.limits)
    now = 4_000_000_000_000_000
    for i, m in enumerate(MESSAGES):
        intake.handle(m.topic, [Record(m.topic, i % 3, i, m.key, m.payload)], lambda *a: None)
        ev = validator.validate(config.topics.side_of(m.topic), m.payload, now)
        if isinstance(ev, IncidentEvent):
            router.incident_event(ev, i % 2 == 0)
            router.link(Link(ev.incident_id, f"C{i}", None))
        elif isinstance(ev, CrimeEvent):
            router.crime_event(ev, i % 2 == 0)
            for incident_id in ev.incident_ids:
                router.notice(Notice(ev.crime_id, incident_id))
    routed = 0
    for (stage, partition), ops in router.ops.items():
        for op in ops:
            assert partition_for(key_of(op), 6) == partition, (stage, op)
            routed += 1
    assert {stage for stage, _ in router.ops} == {"event", "incident", "crime"} and routed > 2 * len(MESSAGES)


def test_messages_gathered_after_rewinds_were_forgotten_are_sent_with_the_rest_in_order():
    """Forgetting rewinds replaces a partition's list of gathered messages; a
    message added after that must still be sent, after the ones before it."""
    from pipeline.core.events import Notice, Rewind
    from pipeline.core.routing import partition_for
    from pipeline.stream.transport import KafkaRouter

    router = KafkaRouter(2)
    p = partition_for("e1", 2)
    router.rewind("incidents", 0, 5)
    router.rewind("incidents", 1, 7)
    first, second = Notice("C1", "I1"), Notice("C2", "I2")
    router.add_keyed("event", "e1", first)
    router.forget_rewinds({("incidents", 0)})
    router.add_keyed("event", "e1", second)
    sent = {(out.stage, out.partition): out.ops for out in router.drain(None)}
    assert sent[("event", p)] == [Rewind("incidents", 1, 7), first, second]
    assert sent[("event", 1 - p)] == [Rewind("incidents", 1, 7)]
    router.add_keyed("event", "e1", first)  # a new batch starts empty
    assert [out.ops for out in router.drain(None)] == [[first]]
