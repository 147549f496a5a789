"""The ingest stage: raw input messages in, op batches by event id out.

Validation (contract §2) happens here, once per message; invalid messages go
to the dead-letter topic with the reason and the original bytes, and are
counted with the event counts downstream (an ``["x", side, n]`` op).
"""

from __future__ import annotations

import base64
import time
from collections import Counter

import orjson

from ..config import Settings
from ..events import CRIME_SCHEMA, INCIDENT_SCHEMA, Rejection, Validator, format_time
from ..metrics import Metrics
from .ops import OpBatcher, encode_crime, encode_incident
from .stages import SendKeyed, SendOps

__all__ = ["IngestStage"]


class IngestStage:
    """Validates input messages, dead-letters the invalid ones and routes the
    valid ones by their ``event_id`` to the dedupe stage.

    Also remembers the greatest valid ``occurred_at`` it has seen: the
    watermark source that ticks carry to every stage partition.
    """

    def __init__(self, settings: Settings, metrics: Metrics, send_event_ops: SendOps,
                 send_incident_ops: SendOps, send_crime_ops: SendOps, send_deadletter: SendKeyed) -> None:
        self.settings = settings
        self.metrics = metrics
        self.validator = Validator.from_settings(settings)
        self.partitions = settings.partitions
        self.send_event_ops = send_event_ops
        self.send_incident_ops = send_incident_ops
        self.send_crime_ops = send_crime_ops
        self.send_deadletter = send_deadletter
        self.max_time: int | None = None
        self._broadcast_time: int | None = None
        self._broadcast_at = 0.0
        self.schema = {settings.incidents_topic: INCIDENT_SCHEMA, settings.crimes_topic: CRIME_SCHEMA}

    async def handle(self, topic: str, messages: list[tuple[int, int, bytes | None, bytes | None]]) -> None:
        """``messages``: (partition, offset, key, value) read from ``topic``."""
        now = time.time_ns() // 1000
        schema = self.schema[topic]
        is_incident = schema == INCIDENT_SCHEMA
        side = "incidents" if is_incident else "crimes"
        batcher = OpBatcher(self.partitions)
        invalid: Counter = Counter()
        valid = 0
        validate = self.validator.validate
        max_time = self.max_time
        for partition, offset, key, value in messages:
            result = validate(schema, value or b"", now)
            if type(result) is Rejection:
                invalid[partition % self.partitions] += 1
                self.metrics.deadletter.labels(topic, result.reason).inc()
                await self.send_deadletter(key, self._deadletter(topic, partition, offset, key, value or b"", result, now))
                continue
            valid += 1
            if max_time is None or result.at > max_time:
                max_time = result.at
            batcher.add(result.event_id, encode_incident(result) if is_incident else encode_crime(result))
        self.max_time = max_time
        for p, n in invalid.items():
            batcher.add_to(p, ["x", side, n])
        self.metrics.last_received.labels(topic).set(now / 1_000_000)
        self.metrics.events.labels(topic, "invalid").inc(sum(invalid.values()))
        for p, value in batcher.messages(self.max_time):
            await self.send_event_ops(p, value)

    async def broadcast(self, min_interval: float = 0.0) -> None:
        """Tick: give every stage partition the watermark source, if it moved
        (and at most every ``min_interval`` seconds)."""
        if self.max_time is None or self.max_time == self._broadcast_time:
            return
        now = time.monotonic()
        if now - self._broadcast_at < min_interval:
            return
        self._broadcast_at = now
        self._broadcast_time = self.max_time
        tick = orjson.dumps({"t": self.max_time, "ops": []})
        for p in range(self.partitions):
            await self.send_event_ops(p, tick)
            await self.send_incident_ops(p, tick)
            await self.send_crime_ops(p, tick)

    @staticmethod
    def _deadletter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
                    rejection: Rejection, now_us: int) -> bytes:
        doc = {"schema": "deadletter.v1", "source_topic": topic, "partition": partition, "offset": offset,
               "key": None if key is None else key.decode("utf-8", "replace"),
               "reason": rejection.reason, "detail": rejection.detail, "received_at": format_time(now_us)}
        try:
            doc["payload"] = value.decode("utf-8")
        except UnicodeDecodeError:
            doc["payload"] = base64.b64encode(value).decode("ascii")
            doc["payload_encoding"] = "base64"
        return orjson.dumps(doc)
