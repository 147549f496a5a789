"""``python bench/batch_cycle.py [CAPTURE] [--batch N]``: the worker's batch
cycle alone, in one process, over a capture: for instruction counts.

A worker's rate on the broker moves 10-20% between runs on this machine, too
much to see a change of 5%. This runs the very code of a batch
(:meth:`pipeline.stream.runner.Runner.process`: intake, the three stages,
collect, changelog records, views, metrics, outputs) with a producer and a
consumer that keep records in lists: stage records go back in as the next
batches' input, as the broker would hand them out. What it leaves out is the
Kafka client's work and the network. Run it under callgrind for counts that
repeat to the instruction::

    PYTHONHASHSEED=0 valgrind --tool=callgrind python bench/batch_cycle.py
    PREFIX_ONLY=1 PYTHONHASHSEED=0 valgrind --tool=callgrind python bench/batch_cycle.py

The second stops before the first batch (imports, reading the capture): the
difference is the batch cycle. At the end the cluster's audit is checked
against the offline audit of the capture (an error if they differ), and the
time per message is printed (stderr). Default capture: the stream
benchmark's (100,507 messages, made if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import zlib
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import TopicPartition  # noqa: E402
from aiokafka.producer.message_accumulator import BatchBuilder  # noqa: E402

PARTITIONS = 6


class Record(NamedTuple):
    """What the runner reads of an aiokafka ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp: int


class ListProducer:
    """The producer calls the outbox makes; records kept per (topic, partition).
    Batches are built (their CRC computed) as the real producer would."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1_000_000, 0)

    async def send_batch(self, batch, topic, partition):
        batch._build()  # noqa: SLF001 - what the producer's sender does with it
        self.logs.setdefault((topic, partition), []).append((None, None))
        return _done()

    async def send(self, topic, value=None, key=None, partition=None, headers=None):
        log = self.logs.setdefault((topic, partition), [])
        log.append((key, value))
        return _done(Sent(len(log) - 1))

    async def flush(self) -> None:
        pass

    async def partitions_for(self, topic):
        return set(range(PARTITIONS))


class ListConsumer:
    async def commit(self, offsets) -> None:
        pass

    def assignment(self) -> set:
        return set()


class Sent(NamedTuple):
    """What the producer's future gives a sent record: its offset."""

    offset: int


def _done(result=None):
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(result)
    return fut


async def run(path: Path, batch_size: int) -> float:
    from pipeline.capture.reading import read_capture
    from pipeline.commands.audit import audit_files
    from pipeline.core.audit import AuditParts, build_audit
    from pipeline.kafka.topics import STAGES
    from pipeline.settings import load_settings
    from pipeline.stream.metrics import Metrics
    from pipeline.stream.outbox import Outbox
    from pipeline.stream.partitions import PARTITION_TYPES
    from pipeline.stream.runner import Runner
    from pipeline.stream.views import ViewPublisher

    settings = load_settings(partitions=PARTITIONS)
    outbox = Outbox({}, "batch-cycle")
    outbox.producer = producer = ListProducer()
    runner = Runner(settings, Metrics(), outbox, ViewPublisher("views", PARTITIONS, outbox), {}, "w1")
    runner.consumer = ListConsumer()
    for stage in STAGES:
        for p in range(PARTITIONS):
            runner.owned[(stage, p)] = PARTITION_TYPES[stage](p, runner.config, runner.router)
            runner.store.tokens[(runner.plan.changelog(stage), p)] = b"token%d" % p
    inputs: dict[tuple[str, int], list] = {}
    messages = 0
    for m in read_capture([path]):
        inputs.setdefault((m.topic, zlib.crc32(m.key or b"") % PARTITIONS), []).append(m)
        messages += 1
    gc.collect()
    gc.set_threshold(50_000, 20, 100)  # the worker's (pipeline/commands/worker.py)
    if os.environ.get("PREFIX_ONLY"):
        return 0.0
    read: dict[tuple[str, int], int] = {}

    def stage_records() -> dict:
        out = {}
        for (topic, p), log in producer.logs.items():
            if topic.endswith("-ops"):
                start = read.get((topic, p), 0)
                if start < len(log):
                    out[TopicPartition(topic, p)] = [Record(topic, p, start + i, k, v, [], 0)
                                                     for i, (k, v) in enumerate(log[start:])]
                    read[(topic, p)] = len(log)
        return out

    pending = {key: iter(ms) for key, ms in inputs.items()}
    offsets: dict[tuple[str, int], int] = {}
    t0 = time.perf_counter()
    while True:
        batch: dict = {}
        share = max(1, batch_size // (2 * len(pending))) if pending else 0  # half inputs, as a busy worker sees
        for (topic, p), it in list(pending.items()):
            records = []
            for _ in range(share):
                m = next(it, None)
                if m is None:
                    del pending[(topic, p)]
                    break
                offset = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
                records.append(Record(topic, p, offset, m.key, m.payload, [], 0))
            if records:
                batch[TopicPartition(topic, p)] = records
        batch.update(stage_records())
        if not batch:
            await runner.tick()  # the watermark broadcast: the last deadlines
            batch = stage_records()
            if not batch:
                break
        await runner.process(batch)
    seconds = time.perf_counter() - t0
    total = AuditParts.total(part.stage.parts() for part in runner.owned.values())
    got = build_audit(total, runner.config.params.allowed_lateness)
    expected = audit_files([str(path)], settings).audit()
    if got != expected:
        raise SystemExit("batch_cycle: the cluster's audit differs from the offline audit")
    print(f"batch_cycle: {messages:,} messages in {seconds:.3f} s, {1e6 * seconds / messages:.2f} us a message; "
          "audit equal to the offline audit", file=sys.stderr)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("capture", nargs="?", help="a capture (default: the stream benchmark's)")
    p.add_argument("--batch", type=int, default=5000, help="records per batch, as CDI_BATCH_SIZE (default 5000)")
    args = p.parse_args(argv)
    if args.capture:
        path = Path(args.capture)
    else:
        from common import make_capture

        path = make_capture(100_000, 1)
    asyncio.run(run(path, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
