"""``cdiwatch capture --broker URL --from T1 --to T2 [-o FILE]``: the input
topics' messages whose broker timestamp lies in [T1, T2), as a capture.

The way back from a cluster to a file, for data engineers: audit a day
offline, replay it elsewhere, keep it as evidence. Each input partition is
read from the first offset at or after T1 (the client's offsets-for-times,
never a scan from the start) and up to the first offset at or after T2 (or
its end). Lines are kcat ``-J`` envelopes with ``topic``, ``partition``,
``offset``, ``key``, ``payload`` and ``ts``; a payload that is not UTF-8 is
kept exactly, base64-encoded with ``payload_encoding`` (and the key likewise).
Progress goes to stderr. Messages come out per partition, in offset order.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any, Iterator

from ..capture import write_capture
from ..core.times import parse_time
from ..kafka.admin import BrokerUnreachable, wait_for_broker
from ..kafka.client import KafkaSetupError, kafka_python_options, reveal
from .errors import ConfigError, RunFailed

__all__ = ["run", "capture"]

#: With no message at or after T2, a partition is read until it stays quiet this long.
QUIET_SECONDS = 3.0


def _instant_ms(name: str, text: str) -> int:
    us = parse_time(text)
    if us is None:
        raise ConfigError(f"{name} {text!r} is not an RFC 3339 date-time with seconds and an offset "
                          "(e.g. 2026-11-25T00:00:00Z)")
    return us // 1000


def capture(settings, start_ms: int, end_ms: int, progress=None) -> Iterator[tuple]:
    """(topic, key, payload, ts_ms, partition, offset) of every input message in [start, end).

    All input partitions are read together, each from its offset for T1 to its
    offset for T2; a partition with no message at or after T2 is read until
    it has stayed quiet for :data:`QUIET_SECONDS`.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(client_id="cdiwatch-capture", group_id=None, enable_auto_commit=False,
                             max_poll_records=5000, isolation_level="read_committed",  # as the workers read
                             **reveal(kafka_python_options(settings)))
    try:
        tps = [TopicPartition(topic, p) for topic in (settings.incidents_topic, settings.crimes_topic)
               for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return
        starts = consumer.offsets_for_times({tp: start_ms for tp in tps})
        ends = consumer.offsets_for_times({tp: end_ms for tp in tps})
        stops: dict = {}
        for tp in tps:
            first, stop = _found(starts.get(tp)), _found(ends.get(tp))
            if first is None:
                continue  # nothing at or after T1 in this partition
            stops[tp] = (first, stop)
        if not stops:
            return
        consumer.assign(list(stops))
        for tp, (first, _stop) in stops.items():
            consumer.seek(tp, first)
        left, quiet_since = set(stops), time.monotonic()
        while left and time.monotonic() - quiet_since < QUIET_SECONDS:
            batch = consumer.poll(timeout_ms=300)
            if batch:
                quiet_since = time.monotonic()
            for tp, records in batch.items():
                stop = stops[tp][1]
                for record in records:
                    # From T2's offset on, the first record at or after T2 ends the
                    # partition (a broker may answer offsets-for-times per batch).
                    if stop is not None and record.offset >= stop and record.timestamp >= end_ms:
                        left.discard(tp)
                        consumer.pause(tp)
                        break
                    if start_ms <= record.timestamp < end_ms:
                        if progress:
                            progress(tp.topic)
                        yield (tp.topic, record.key, record.value or b"", record.timestamp, tp.partition,
                               record.offset)
    finally:
        consumer.close()


def _found(answer) -> int | None:
    """The offset of an offsets-for-times answer, or None for "no such message"
    (Kafka says null; the test broker says offset 0 with timestamp -1)."""
    if answer is None or answer.timestamp is None or answer.timestamp < 0:
        return None
    return answer.offset


class _Progress:
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.last = time.monotonic()

    def __call__(self, topic: str) -> None:
        self.counts[topic] += 1
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            print("capture: " + ", ".join(f"{t} {n:,}" for t, n in sorted(self.counts.items())), file=sys.stderr)


def run(args: Any, settings: Any) -> int:
    start_ms = _instant_ms("--from", args.start)
    end_ms = _instant_ms("--to", args.end)
    if end_ms <= start_ms:
        raise ConfigError("--to must be after --from")
    out = args.output or "-"
    if out != "-":
        parent = os.path.dirname(os.path.abspath(out))
        if os.path.isdir(out) or not os.path.isdir(parent):
            raise ConfigError(f"cannot write {out}: give a file in an existing directory with -o")
    try:
        wait_for_broker(settings, timeout=10)
    except KafkaSetupError as exc:
        raise ConfigError(str(exc)) from None
    except BrokerUnreachable as exc:
        raise RunFailed(str(exc)) from None
    progress = None if args.no_progress else _Progress()
    t0 = time.monotonic()
    try:
        counts = write_capture(capture(settings, start_ms, end_ms, progress), out)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    where = "standard output" if out == "-" else out
    total = sum(counts.values())
    detail = ", ".join(f"{t} {n:,}" for t, n in sorted(counts.items())) or "no message in that range"
    print(f"capture: {total:,} messages to {where} in {time.monotonic() - t0:.1f} s ({detail})", file=sys.stderr)
    return 0
