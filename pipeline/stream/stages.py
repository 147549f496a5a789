"""The three stream stages, as plain classes the faust app drives.

- :class:`IngestStage` (input topics): validate raw messages, dead-letter the
  invalid ones, route valid events by *their* id (never by how the producer
  partitioned them) into per-partition op batches.
- :class:`IncidentStage` (incident-ops): one :class:`~pipeline.ledger.IncidentLedger`
  per owned partition; publishes alerts and *seen* notices.
- :class:`CrimeStage` (crime-ops): one :class:`~pipeline.crimes.CrimeLedger` per
  owned partition; sends crime links to the incidents they name.

They hold no faust objects: the app hands them a table (any mutable mapping
whose writes are persisted, i.e. a faust ``Table``) and async ``send``
callables. That keeps this file readable and testable without a broker.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter
from typing import Awaitable, Callable, Mapping

import orjson

from ..config import Settings
from ..crimes import CrimeLedger, CrimeState
from ..events import CRIME_SCHEMA, INCIDENT_SCHEMA, Rejection, Validator, format_time
from ..ledger import Alert, IncidentLedger, IncidentState
from ..metrics import Metrics
from ..rules import AT_RISK, OVERDUE, PENDING, Params
from ..summary import AuditParts
from .ops import OpBatcher, decode_crime, decode_incident, encode_crime, encode_incident, loads, partition_for

__all__ = ["IngestStage", "IncidentStage", "CrimeStage", "alert_json", "META_PREFIX"]

logger = logging.getLogger(__name__)

META_PREFIX = "__meta__:"
OPEN_STATUSES = (OVERDUE, AT_RISK, PENDING)
# send(partition, value) for ops; send(key, value) for alerts and dead letters
SendOps = Callable[[int, bytes], Awaitable[None]]
SendKeyed = Callable[[bytes | None, bytes], Awaitable[None]]
# write(partition, [(key, value or None to delete)]): persist a table's changes
WriteTable = Callable[[int, list], Awaitable[None]]


def alert_json(a: Alert) -> bytes:
    doc = {"schema": "alert.v1", "alert_id": a.alert_id, "kind": a.kind, "incident_id": a.incident_id,
           "category": a.category, "district": a.district, "channel": a.channel, "flags": a.flags,
           "required_since": format_time(a.required_since), "deadline": format_time(a.deadline),
           "watermark": format_time(a.watermark), "crime_ids": a.crime_ids}
    if a.timeliness is not None:
        doc["timeliness"] = a.timeliness
    return orjson.dumps(doc)


class IngestStage:
    """Validates one input topic's messages and routes them to stage 2.

    Also remembers the greatest valid ``occurred_at`` it has seen: the
    watermark source that ticks carry to every stage-2 partition.
    """

    def __init__(self, settings: Settings, metrics: Metrics, send_incident_ops: SendOps,
                 send_crime_ops: SendOps, send_deadletter: SendKeyed) -> None:
        self.settings = settings
        self.metrics = metrics
        self.validator = Validator.from_settings(settings)
        self.partitions = settings.partitions
        self.send_incident_ops = send_incident_ops
        self.send_crime_ops = send_crime_ops
        self.send_deadletter = send_deadletter
        self.max_time: int | None = None
        self._broadcast_time: int | None = None
        self.schema = {settings.incidents_topic: INCIDENT_SCHEMA, settings.crimes_topic: CRIME_SCHEMA}

    async def handle(self, topic: str, messages: list[tuple[int, int, bytes | None, bytes | None]]) -> None:
        """``messages``: (partition, offset, key, value) read from ``topic``."""
        now = time.time_ns() // 1000
        schema = self.schema[topic]
        is_incident = schema == INCIDENT_SCHEMA
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
            if is_incident:
                batcher.add(result.incident_id, encode_incident(result))
            else:
                batcher.add(result.crime_id, encode_crime(result))
        self.max_time = max_time
        for p, n in invalid.items():
            batcher.add_to(p, ["x", n])
        self.metrics.last_received.labels(topic).set(now / 1_000_000)
        self.metrics.events.labels(topic, "invalid").inc(sum(invalid.values()))
        send = self.send_incident_ops if is_incident else self.send_crime_ops
        for p, value in batcher.messages(self.max_time):
            await send(p, value)

    async def broadcast(self) -> None:
        """Tick: give every stage-2 partition the watermark source, if it moved."""
        if self.max_time is None or self.max_time == self._broadcast_time:
            return
        self._broadcast_time = self.max_time
        tick = orjson.dumps({"t": self.max_time, "ops": []})
        for p in range(self.partitions):
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


class _PartitionedStage:
    """Common part of the two stage-2 stages: one ledger per owned partition,
    rebuilt from the table after a (re)assignment, persisted after each batch."""

    state_cls: type = IncidentState

    def __init__(self, settings: Settings, metrics: Metrics, table: Mapping, write: WriteTable) -> None:
        self.settings = settings
        self.params = Params.from_settings(settings)
        self.metrics = metrics
        self.table = table
        self.write = write
        self.partitions = settings.partitions
        self.ledgers: dict[int, object] = {}
        self.dirty: set[int] = set()

    def new_ledger(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            self.ledgers.pop(p, None)

    def ledger(self, p: int):
        ledger = self.ledgers.get(p)
        if ledger is None:
            ledger = self.ledgers[p] = self._load(p)
        return ledger

    def _load(self, p: int):
        ledger = self.new_ledger()
        states = {}
        for key, value in list(self.table.items()):
            if key.startswith(META_PREFIX) or partition_for(key, self.partitions) != p:
                continue
            states[key] = self.state_cls.from_json(value)
        meta = self.table.get(f"{META_PREFIX}{p}")
        ledger.load(states, meta)
        logger.info("partition %d: loaded %d states from the table", p, len(states))
        self.dirty.add(p)
        return ledger

    async def persist(self, p: int, ledger, touched: set, evicted: set, states: dict) -> None:
        changes = [(key, states[key].to_json()) for key in touched if key in states]
        changes.extend((key, None) for key in evicted)
        changes.append((f"{META_PREFIX}{p}", ledger.meta()))
        await self.write(p, changes)
        self.dirty.add(p)


class IncidentStage(_PartitionedStage):
    """Applies incident events and crime links; publishes alerts and seen notices."""

    state_cls = IncidentState

    def __init__(self, settings: Settings, metrics: Metrics, table: Mapping, write: WriteTable,
                 send_alert: SendKeyed, send_crime_ops: SendOps) -> None:
        super().__init__(settings, metrics, table, write)
        self.send_alert = send_alert
        self.send_crime_ops = send_crime_ops
        self.topic = settings.incidents_topic

    def new_ledger(self) -> IncidentLedger:
        return IncidentLedger(self.params, frozenset(self.settings.districts))

    async def handle(self, p: int, value: bytes) -> None:
        """Apply one op batch for partition ``p``; persist, then publish what it caused."""
        ledger: IncidentLedger = self.ledger(p)  # a fresh load leaves due-but-unsent alerts in changes
        msg = loads(value)
        valid = duplicate = 0
        if msg["t"] is not None:
            ledger.observe(msg["t"])
        for op in msg["ops"]:
            tag = op[0]
            if tag == "i":
                if ledger.apply(decode_incident(op)):
                    valid += 1
                else:
                    duplicate += 1
            elif tag == "l":
                ledger.link(op[1], op[2], op[3])
            elif tag == "x":
                ledger.counts["invalid"] += op[1]
        ch = ledger.drain()
        if valid:
            self.metrics.events.labels(self.topic, "valid").inc(valid)
        if duplicate:
            self.metrics.events.labels(self.topic, "duplicate").inc(duplicate)
        self.metrics.observe_transitions(ch.transitions)
        await self.persist(p, ledger, ch.touched - ch.evicted, ch.evicted, ledger.incidents)
        await self._publish(ch.alerts)
        notices = OpBatcher(self.partitions)
        for crime_id, incident_id in ch.notices:
            notices.add(crime_id, ["s", crime_id, incident_id])
        for target, payload in notices.messages(None):
            await self.send_crime_ops(target, payload)

    async def _publish(self, alerts: list[Alert]) -> None:
        for a in alerts:
            await self.send_alert(a.incident_id.encode("utf-8"), alert_json(a))
            self.metrics.alerts.labels(a.kind).inc()

    def parts(self, p: int) -> AuditParts:
        ledger: IncidentLedger = self.ledgers[p]
        return AuditParts(incident_keys=Counter(ledger.agg),
                          events={"incidents": Counter(ledger.counts), "crimes": Counter()},
                          max_time=ledger.max_time)

    def open_incidents(self, p: int) -> list[dict]:
        """Overdue, at-risk and pending incidents of one partition, for ``/incidents``."""
        ledger: IncidentLedger = self.ledgers[p]
        out = []
        for incident_id, st in ledger.incidents.items():
            if st.key is None or st.key[0] not in OPEN_STATUSES:
                continue
            a = ledger.assessment(st)
            status, category, _label, channel, _reason = st.key
            out.append({"incident_id": incident_id, "status": status, "category": category,
                        "district": st.opening[3], "channel": channel, "flags": list(st.flags),
                        "required_since": format_time(a.required_since), "deadline": format_time(a.deadline)})
        return out


class CrimeStage(_PartitionedStage):
    """Applies crime events and seen notices; sends crime links to incidents."""

    state_cls = CrimeState

    def __init__(self, settings: Settings, metrics: Metrics, table: Mapping, write: WriteTable,
                 send_incident_ops: SendOps) -> None:
        super().__init__(settings, metrics, table, write)
        self.send_incident_ops = send_incident_ops
        self.topic = settings.crimes_topic

    def new_ledger(self) -> CrimeLedger:
        return CrimeLedger(self.params)

    async def handle(self, p: int, value: bytes) -> None:
        """Apply one op batch for partition ``p``; persist, then send the links it caused."""
        ledger: CrimeLedger = self.ledger(p)
        msg = loads(value)
        valid = duplicate = 0
        if msg["t"] is not None:
            ledger.observe(msg["t"])
        for op in msg["ops"]:
            tag = op[0]
            if tag == "c":
                if ledger.apply(decode_crime(op)):
                    valid += 1
                else:
                    duplicate += 1
            elif tag == "s":
                ledger.notice(op[1], op[2])
            elif tag == "x":
                ledger.counts["invalid"] += op[1]
        ch = ledger.drain()
        if valid:
            self.metrics.events.labels(self.topic, "valid").inc(valid)
        if duplicate:
            self.metrics.events.labels(self.topic, "duplicate").inc(duplicate)
        if ch.cancellations:
            self.metrics.observe_cancellations(ch.cancellations)
        await self.persist(p, ledger, ch.touched - ch.evicted, ch.evicted, ledger.crimes)
        links = OpBatcher(self.partitions)
        for incident_id, crime_id, recorded_at in ch.links:
            links.add(incident_id, ["l", incident_id, crime_id, recorded_at])
        for target, payload in links.messages(msg["t"]):
            await self.send_incident_ops(target, payload)

    def parts(self, p: int) -> AuditParts:
        ledger: CrimeLedger = self.ledgers[p]
        return AuditParts(crimes=Counter(ledger.totals()),
                          events={"incidents": Counter(), "crimes": Counter(ledger.counts)},
                          max_time=ledger.max_time)
