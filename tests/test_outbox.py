"""The worker's one producer (pipeline/stream/outbox.py): a flush returns only
once everything sent before it is acknowledged, whoever else flushes too."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.stream.outbox import Outbox, OutboxError


class _Producer:
    """Acknowledges only when told to; its own flush waits for nothing."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future] = []

    async def send(self, topic, value=None, key=None, partition=None, headers=None):
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    async def flush(self):
        return None

    def ack(self, error: BaseException | None = None) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(error) if error else fut.set_result(None)


def _outbox() -> tuple[Outbox, _Producer]:
    outbox = Outbox({}, "test")
    outbox.producer = producer = _Producer()
    return outbox, producer


def test_a_flush_waits_for_records_another_flush_is_waiting_for():
    """The views reader flushes its fence while the runner flushes its
    outputs: the runner's flush must not return before the runner's records
    are acknowledged (it writes its checkpoint next)."""

    async def scenario():
        outbox, producer = _outbox()
        await outbox.send("t", b"the runner's output")
        views = asyncio.ensure_future(outbox.flush())
        await asyncio.sleep(0)
        runner = asyncio.ensure_future(outbox.flush())
        await asyncio.sleep(0.01)
        waiting = not runner.done() and not views.done()
        producer.ack()
        await asyncio.gather(runner, views)
        return waiting, outbox._pending

    waiting, left = asyncio.run(scenario())
    assert waiting
    assert left == []


def test_a_failed_write_fails_every_flush_after_it():
    async def scenario():
        outbox, producer = _outbox()
        await outbox.send("t", b"lost")
        producer.ack(RuntimeError("broker said no"))
        errors = []
        for _ in range(2):
            with pytest.raises(OutboxError, match="broker said no"):
                await outbox.flush()
            errors.append(True)
        return errors

    assert asyncio.run(scenario()) == [True, True]


@pytest.mark.parametrize("headers", [(), [("w", b"writer-token")]])
def test_a_record_is_refused_exactly_when_the_producer_would_refuse_it(headers):
    """The size check skips the exact estimate for records far below the
    limit; at the limit it decides as aiokafka's estimate does."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from pipeline.stream.outbox import RecordTooLarge

    limit = 10_000
    outbox = Outbox({}, "test", max_request_size=limit)
    for size in (0, 100, limit - 2048, limit - 1100, limit - 300, limit - 100, limit - 60, limit, limit + 1):
        value = b"x" * size
        fits = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"key", value, list(headers)) <= limit
        if fits:
            outbox.check(b"key", value, headers)
        else:
            with pytest.raises(RecordTooLarge):
                outbox.check(b"key", value, headers)


def test_keyed_records_go_where_the_default_partitioner_sends_them_in_order():
    """Alerts are sent packed per partition; each lands on the partition any
    Kafka client's default partitioner picks for its key (per-incident order holds)."""
    from aiokafka.partitioner import DefaultPartitioner

    class _Partitions:
        async def partitions_for(self, topic):
            return {5, 0, 3, 1, 4, 2}

    outbox = Outbox({}, "test")
    outbox.producer = _Partitions()
    sent: list[tuple[int, list]] = []

    async def send_records(topic, partition, records, headers=()):
        sent.append((partition, list(records)))

    outbox.send_records = send_records
    records = [(f"KNT-{i % 40:04d}".encode(), f"alert {i}".encode()) for i in range(200)]
    asyncio.run(outbox.send_keyed("cdi.alerts", records))
    partitions = list(range(6))
    assert sorted(r for _p, recs in sent for r in recs) == sorted(records)
    for p, recs in sent:
        assert all(DefaultPartitioner()(key, partitions, partitions) == p for key, _v in recs)
        assert recs == [r for r in records if r in recs]  # in the order they were given


def test_send_records_checks_the_size_of_every_record_that_might_not_fit():
    """send_records skips the size check for records far below the limit (with
    their headers counted); one that may not fit is checked and refused exactly
    as the producer would refuse it."""
    from aiokafka.producer.message_accumulator import BatchBuilder
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from pipeline.stream.outbox import RecordTooLarge

    limit = 10_000

    class _Producer:
        def __init__(self):
            self.records = 0

        def create_batch(self):
            return BatchBuilder(limit, 0)

        async def send_batch(self, batch, topic, partition):
            self.records += batch.record_count()
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    headers = [("w", b"x" * 900)]  # the headers alone take a tenth of the limit
    for size in (limit - 2200, limit - 1100, limit - 1000, limit - 900, limit):
        outbox = Outbox({}, "test", max_request_size=limit)
        outbox.producer = producer = _Producer()
        value = b"v" * size
        records = [(b"a", b"small"), (b"key", value)]
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(b"key", value, headers) <= limit:
            asyncio.run(outbox.send_records("t", 0, records, headers=headers))
            assert producer.records == 2
        else:
            with pytest.raises(RecordTooLarge):
                asyncio.run(outbox.send_records("t", 0, records, headers=headers))
