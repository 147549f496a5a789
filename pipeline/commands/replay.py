"""``cdiwatch replay``: publish captured messages to the broker (contract §5).

Why replay exists: the same capture must give the same audit offline
(``cdiwatch audit FILE``) and through a running cluster, so replay sends
exactly what the file holds. Envelope payloads go out byte for byte, even when
they are invalid (the monitor's dead-letter path must see them as the
producer sent them); keys are preserved; bare events are routed by ``schema``.

Only ``topic``, ``key`` and ``payload`` of an envelope are honoured. Its
``partition`` is deliberately *not* forced: the capture's partition count is
not ours, and producers in the wild use different partitioners (contract §1),
so the monitor must be correct whatever partition a message lands in. Letting
the client partition by key here is one more way of proving that.

Delivery is counted, not assumed: every send has a callback and an errback,
the producer is flushed, and any message not acknowledged makes the exit
status 1. An unreachable broker is a clear error with exit status 1, after
bounded timeouts, never a hang.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

import orjson

from ..capture import CaptureError, CaptureMessage, check_capture_files, count_lines, max_line_bytes, read_capture
from ..core.times import parse_time
from ..kafka.admin import BrokerUnreachable, TopicError, ensure_topics, wait_for_broker
from ..kafka.client import KafkaSetupError, kafka_python_options, reveal
from .errors import ConfigError, RunFailed

__all__ = ["replay", "ReplayReport", "BrokerUnreachable", "PRODUCER_CONFIG", "CONNECT_TIMEOUT", "run"]


logger = logging.getLogger(__name__)

PRODUCER_CONFIG: dict[str, Any] = {
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "acks": "all",
    "max_request_size": 4 * 1024 * 1024,  # > 1 MiB, so "too_large" test messages reach the monitor
    "max_block_ms": 15_000,
    "request_timeout_ms": 15_000,
    "delivery_timeout_ms": 60_000,
}


CONNECT_TIMEOUT = 10.0  # seconds to wait for the broker: long enough for `cdiwatch broker &` to start


@dataclass
class ReplayReport:
    """What a replay did: per-topic delivered and failed counts, skipped lines, errors."""

    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C: the counts cover what was read until then

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def ok(self) -> bool:
        return self.total_failed == 0

    def render(self) -> str:
        """The end-of-run table: one row per topic, then totals, skipped lines and errors."""
        topics = sorted(set(self.sent) | set(self.failed))
        width = max([len(t) for t in topics] + [5])
        rows = [f"{'topic':<{width}}  {'sent':>10}  {'failed':>8}"]
        rows += [f"{t:<{width}}  {self.sent[t]:>10,}  {self.failed[t]:>8,}" for t in topics]
        rate = self.total_sent / self.elapsed if self.elapsed > 0 else 0.0
        rows.append(f"{'total':<{width}}  {self.total_sent:>10,}  {self.total_failed:>8,}"
                    f"  in {self.elapsed:.1f} s ({rate:,.0f} msg/s)")
        if self.skipped:
            rows.append(f"{len(self.skipped):,} line(s) skipped, not sent (reported above)")
        rows += [f"error x{n:,}: {text}" for text, n in self.errors.most_common(5)]
        return "\n".join(rows)


class _Delivery:
    """Counts acknowledgements; callbacks run on the producer's I/O thread."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report
        self.lock = threading.Lock()

    def ok(self, topic: str, _metadata: Any) -> None:
        with self.lock:
            self.report.sent[topic] += 1

    def fail(self, topic: str, exc: BaseException) -> None:
        with self.lock:
            self.report.failed[topic] += 1
            self.report.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1


class _Progress:
    """Messages sent, msg/s and ETA on stderr: a redrawn bar on a TTY, a line a second otherwise."""

    def __init__(self, total: int, stream: IO[str], enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, n: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 1.0):
            return
        self.last = now
        rate = n / max(now - self.start, 1e-9)
        eta = f"{(self.total - n) / rate:,.0f} s" if rate > 0 and self.total > n else "-"
        if self.tty:
            done = min(n / self.total, 1.0) if self.total else 1.0
            bar = "#" * int(done * 30)
            self.stream.write(f"\r[{bar:<30}] {n:,}/{self.total:,} {100 * done:3.0f}%  {rate:,.0f} msg/s  ETA {eta} ")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(f"replay: {n:,}/{self.total:,} messages, {rate:,.0f} msg/s, ETA {eta}\n")
        self.stream.flush()


def _event_time_ms(msg: CaptureMessage) -> int | None:
    """Envelope ``ts`` when present, else the payload's ``occurred_at`` (ms), else None."""
    if msg.ts_ms is not None:
        return msg.ts_ms
    try:
        obj = orjson.loads(msg.payload)
    except orjson.JSONDecodeError:
        return None
    us = parse_time(obj.get("occurred_at")) if isinstance(obj, dict) else None
    return None if us is None else us // 1000


def replay(paths: str | Iterable[str], settings: Any, speed: float | None = None, progress: bool = False,
           *, connect_timeout: float | None = None, producer_config: dict[str, Any] | None = None,
           stream: IO[str] | None = None) -> ReplayReport:
    """Publish every message of the capture files; return what was delivered.

    ``speed`` None sends as fast as possible; N paces by event time, N times
    real time (envelope ``ts``, else the payload's ``occurred_at``). Skipped
    lines are reported on ``stream`` (default stderr) with ``file:line``.
    Raises :class:`BrokerUnreachable` when no broker answers within ``connect_timeout``.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    paths = check_capture_files(paths)
    connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
    out = stream or sys.stderr
    report = ReplayReport()
    wait_for_broker(settings, connect_timeout)
    known: set[str] = set()

    def ensure(topics: list[str]) -> None:
        try:
            ensure_topics(settings, topics, settings.partitions, settings.replication_factor, timeout=connect_timeout)
        except TopicError as exc:
            raise BrokerUnreachable(str(exc)) from exc
        known.update(topics)

    ensure([settings.incidents_topic, settings.crimes_topic])

    def skipped(path: str, line_no: int, reason: str) -> None:
        report.skipped.append((path, line_no, reason))
        print(f"{path}:{line_no}: not sent: {reason}", file=out)

    bar = _Progress(count_lines(paths) if progress else 0, out, progress)
    delivery = _Delivery(report)
    config = {**PRODUCER_CONFIG, **(producer_config or {})}
    producer = KafkaProducer(client_id="cdiwatch-replay", **reveal(kafka_python_options(settings)), **config)
    flush_timeout = config["delivery_timeout_ms"] / 1000
    attempted: Counter[str] = Counter()
    t0 = time.monotonic()
    first_ev: int | None = None
    last_ev = 0
    n = 0
    try:
        for msg in read_capture(paths, settings.incidents_topic, settings.crimes_topic, on_error=skipped,
                                max_line=max_line_bytes(settings.max_message_bytes)):
            topic = msg.topic
            if topic not in known:
                ensure([topic])
            if speed is not None:
                ev = _event_time_ms(msg)
                if ev is not None:
                    if first_ev is None:
                        first_ev = last_ev = ev
                    elif ev > last_ev:  # arrival order is not event order: never wait backwards
                        last_ev = ev
                        delay = t0 + (ev - first_ev) / 1000 / speed - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
            attempted[topic] += 1
            try:
                future = producer.send(topic, value=msg.payload, key=msg.key)
            except KafkaError as exc:
                delivery.fail(topic, exc)
                if "Timeout" in type(exc).__name__:  # metadata or buffer wait expired: broker gone
                    print(f"replay: broker stopped answering ({exc}); giving up", file=out)
                    break
                continue
            future.add_callback(delivery.ok, topic)
            future.add_errback(delivery.fail, topic)
            n += 1
            if not n & 0xFF:
                bar.update(n)
    except KeyboardInterrupt:
        report.interrupted, flush_timeout = True, 5.0  # deliver what is buffered, briefly
    finally:
        try:
            producer.flush(timeout=flush_timeout)
        except KafkaError as exc:
            report.errors[f"flush: {type(exc).__name__}: {exc}"[:200]] += 1
        producer.close(timeout=5)
        report.elapsed = time.monotonic() - t0
    with delivery.lock:  # anything not acknowledged by now (failed or still pending) was not delivered
        for topic, count in attempted.items():
            report.failed[topic] = count - report.sent[topic]
    bar.update(n, final=True)
    return report


def run(args: Any, settings: Any) -> int:
    """``cdiwatch replay FILE... --broker kafka://HOST:PORT [--speed max|N] [--no-progress]``."""
    try:
        report = replay(args.files, settings, speed=args.speed, progress=not args.no_progress)
    except CaptureError as exc:
        raise ConfigError(str(exc)) from None
    except KafkaSetupError as exc:
        raise ConfigError(str(exc)) from None
    except BrokerUnreachable as exc:
        if getattr(exc, "reason", None):  # the diagnosis already says what to fix
            raise RunFailed(str(exc)) from None
        raise RunFailed(f"{exc}; is the broker running? (cdiwatch broker, or --broker / CDI_BROKER "
                        "kafka://HOST:PORT)") from None
    print(report.render(), file=sys.stderr)
    if report.interrupted:
        print("replay interrupted", file=sys.stderr)
        return 130
    return 0 if report.ok else 1
