"""The three stream stages, as plain classes the faust app drives.

- :class:`DedupeStage` (event-ops): one :class:`~pipeline.dedupe.EventIds` per
  owned partition; drops repeated event ids, counts events, and routes each
  first copy by *its* incident or crime id (never by how the producer
  partitioned it).
- :class:`IncidentStage` (incident-ops): one :class:`~pipeline.ledger.IncidentLedger`
  per owned partition; publishes alerts and *seen* notices.
- :class:`CrimeStage` (crime-ops): one :class:`~pipeline.crimes.CrimeLedger` per
  owned partition; sends crime links to the incidents they name.

The ingest stage, before them, is ``ingest.py``. These hold no faust objects:
the app hands them a table to read (a faust ``Table``), a ``write`` callable
that persists changes to it, and async ``send`` callables. That keeps this
file readable and testable without a broker (``tests/test_stages.py``).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Awaitable, Callable, Mapping

import orjson

from ..config import Settings
from ..crimes import CrimeLedger, CrimeState
from ..dedupe import EventIds
from ..events import format_time
from ..ledger import Alert, IncidentLedger, IncidentState
from ..metrics import Metrics
from ..rules import AT_RISK, OVERDUE, PENDING, Params
from ..summary import AuditParts
from .ops import OpBatcher, decode_crime, decode_incident, loads, partition_for

__all__ = ["DedupeStage", "IncidentStage", "CrimeStage", "alert_json", "META_PREFIX", "SendOps", "SendKeyed"]

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


class _PartitionedStage:
    """Common part of the partitioned stages: one ledger per owned partition,
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
        self._pending: set[int] = set()
        self._t: int | None = None

    def new_ledger(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def partition_of(self, key: str) -> int:
        """The partition a table key belongs to (the key is the routing id)."""
        return partition_for(key, self.partitions)

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
            if key.startswith(META_PREFIX) or self.partition_of(key) != p:
                continue
            states[key] = self.state_cls.from_json(value)
        meta = self.table.get(f"{META_PREFIX}{p}")
        ledger.load(states, meta)
        logger.info("partition %d: loaded %d states from the table", p, len(states))
        self.dirty.add(p)
        return ledger

    # Two phases, so that a batch of op messages costs one changelog write per
    # touched key and partition, and one message per output partition:
    # ``apply`` each message (pure), then ``finish`` once (persist + publish).

    def apply(self, p: int, value: bytes) -> None:
        """Apply one op message for partition ``p`` to its ledger."""
        ledger = self.ledger(p)
        msg = loads(value)
        t = msg["t"]
        if t is not None:
            ledger.observe(t)
            if self._t is None or t > self._t:
                self._t = t
        self.apply_ops(ledger, msg["ops"])
        self._pending.add(p)

    async def finish(self, flush: Callable[[], Awaitable[None]] | None = None) -> None:
        """Publish what the applied messages caused, then persist what they changed.

        Outputs first, state second (with ``flush`` — wait for the broker's
        acknowledgements — in between): a crash between the two repeats
        outputs on recovery (alerts carry their id; links, notices and
        forwarded events are idempotent downstream), it never loses one.
        The caller flushes again before faust commits the input.
        """
        pending, self._pending = self._pending, set()
        changes = {p: self.collect(self.ledgers[p]) + [(f"{META_PREFIX}{p}", self.ledgers[p].meta())]
                   for p in sorted(pending)}
        await self.publish(self._t)
        if flush is not None:
            await flush()
        for p, table_changes in changes.items():
            await self.write(p, table_changes)
            self.dirty.add(p)

    async def handle(self, p: int, value: bytes) -> None:
        """One message alone: apply and finish."""
        self.apply(p, value)
        await self.finish()

    def apply_ops(self, ledger, ops: list) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def collect(self, ledger) -> list:  # pragma: no cover - abstract
        """Drain the ledger: keep its outputs, return its table changes."""
        raise NotImplementedError

    async def publish(self, t: int | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class IncidentStage(_PartitionedStage):
    """Applies incident events and crime links; publishes alerts and seen notices."""

    state_cls = IncidentState

    def __init__(self, settings: Settings, metrics: Metrics, table: Mapping, write: WriteTable,
                 send_alert: SendKeyed, send_crime_ops: SendOps) -> None:
        super().__init__(settings, metrics, table, write)
        self.send_alert = send_alert
        self.send_crime_ops = send_crime_ops
        self._alerts: list[Alert] = []
        self._notices = OpBatcher(self.partitions)

    def new_ledger(self) -> IncidentLedger:
        return IncidentLedger(self.params, frozenset(self.settings.districts))

    def apply_ops(self, ledger: IncidentLedger, ops: list) -> None:
        # (a freshly loaded ledger holds due-but-unsent alerts in its changes)
        for op in ops:
            if op[0] == "i":
                ledger.apply(decode_incident(op))
            else:  # "l"
                ledger.link(op[1], op[2], op[3])

    def collect(self, ledger: IncidentLedger) -> list:
        ch = ledger.drain()
        self.metrics.observe_transitions(ch.transitions)
        self._alerts.extend(ch.alerts)
        for crime_id, incident_id in ch.notices:
            self._notices.add(crime_id, ["s", crime_id, incident_id])
        states = ledger.incidents
        changes = [(key, states[key].to_json()) for key in ch.touched - ch.evicted if key in states]
        changes.extend((key, None) for key in ch.evicted)
        return changes

    async def publish(self, t: int | None) -> None:
        alerts, self._alerts = self._alerts, []
        await self._publish(alerts)
        for target, payload in self._notices.messages(None):
            await self.send_crime_ops(target, payload)

    async def _publish(self, alerts: list[Alert]) -> None:
        for a in alerts:
            await self.send_alert(a.incident_id.encode("utf-8"), alert_json(a))
            self.metrics.alerts.labels(a.kind).inc()

    def parts(self, p: int) -> AuditParts:
        ledger: IncidentLedger = self.ledgers[p]
        return AuditParts(incident_keys=Counter(ledger.agg), max_time=ledger.max_time)

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
        self._links = OpBatcher(self.partitions)

    def new_ledger(self) -> CrimeLedger:
        return CrimeLedger(self.params)

    def apply_ops(self, ledger: CrimeLedger, ops: list) -> None:
        for op in ops:
            if op[0] == "c":
                ledger.apply(decode_crime(op))
            else:  # "s"
                ledger.notice(op[1], op[2])

    def collect(self, ledger: CrimeLedger) -> list:
        ch = ledger.drain()
        if ch.cancellations:
            self.metrics.observe_cancellations(ch.cancellations)
        for incident_id, crime_id, recorded_at in ch.links:
            self._links.add(incident_id, ["l", incident_id, crime_id, recorded_at])
        states = ledger.crimes
        changes = [(key, states[key].to_json()) for key in ch.touched - ch.evicted if key in states]
        changes.extend((key, None) for key in ch.evicted)
        return changes

    async def publish(self, t: int | None) -> None:
        for target, payload in self._links.messages(t):
            await self.send_incident_ops(target, payload)

    def parts(self, p: int) -> AuditParts:
        ledger: CrimeLedger = self.ledgers[p]
        return AuditParts(crimes=Counter(ledger.totals()), max_time=ledger.max_time)


class DedupeStage(_PartitionedStage):
    """Keeps the event ids of its partitions; forwards first copies to the
    incident and crime stages; owns the event counts (contract §2).

    Table keys are ``"<side>:<event_id>"`` -> ``occurred_at``.
    """

    def __init__(self, settings: Settings, metrics: Metrics, table: Mapping, write: WriteTable,
                 send_incident_ops: SendOps, send_crime_ops: SendOps) -> None:
        super().__init__(settings, metrics, table, write)
        self.send_incident_ops = send_incident_ops
        self.send_crime_ops = send_crime_ops
        self.topic = {"incidents": settings.incidents_topic, "crimes": settings.crimes_topic}
        self._incidents = OpBatcher(self.partitions)
        self._crimes = OpBatcher(self.partitions)

    def new_ledger(self) -> EventIds:
        return EventIds(self.params)

    def partition_of(self, key: str) -> int:
        return partition_for(key.split(":", 1)[1], self.partitions)

    def _load(self, p: int) -> EventIds:
        ledger = self.new_ledger()
        ids = {}
        for key, value in list(self.table.items()):
            if not key.startswith(META_PREFIX) and self.partition_of(key) == p:
                side, event_id = key.split(":", 1)
                ids[(side, event_id)] = value
        ledger.load(ids, self.table.get(f"{META_PREFIX}{p}"))
        logger.info("partition %d: loaded %d event ids from the table", p, len(ids))
        self.dirty.add(p)
        return ledger

    def apply_ops(self, ledger: EventIds, ops: list) -> None:
        counts = ledger.counts
        before = {side: (c["valid"], c["duplicate"]) for side, c in counts.items()}
        for op in ops:
            tag = op[0]
            if tag == "i":
                if ledger.claim("incidents", op[1], op[4]):
                    self._incidents.add(op[3], op)
            elif tag == "c":
                if ledger.claim("crimes", op[1], op[4]):
                    self._crimes.add(op[3], op)
            else:  # ["x", side, n]
                ledger.invalid(op[1], op[2])
        for side, (valid, duplicate) in before.items():
            if counts[side]["valid"] != valid:
                self.metrics.events.labels(self.topic[side], "valid").inc(counts[side]["valid"] - valid)
            if counts[side]["duplicate"] != duplicate:
                self.metrics.events.labels(self.topic[side], "duplicate").inc(counts[side]["duplicate"] - duplicate)

    def collect(self, ledger: EventIds) -> list:
        added, removed = ledger.drain()
        changes = [(f"{side}:{event_id}", at) for side, event_id, at in added]
        changes.extend((f"{side}:{event_id}", None) for side, event_id in removed)
        return changes

    async def publish(self, t: int | None) -> None:
        for target, payload in self._incidents.messages(t):
            await self.send_incident_ops(target, payload)
        for target, payload in self._crimes.messages(t):
            await self.send_crime_ops(target, payload)

    def parts(self, p: int) -> AuditParts:
        ledger: EventIds = self.ledgers[p]
        return AuditParts(events={side: Counter(c) for side, c in ledger.counts.items()},
                          max_time=ledger.max_time)
