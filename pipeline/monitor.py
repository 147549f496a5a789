"""The whole decision pipeline in one process: validate, event ids (duplicates),
crime ledger, incident ledger, wired by direct calls instead of topics.

The offline audit (``cdiwatch audit FILE``) and the property tests use this;
the stream layer wires the same three pieces through Kafka topics instead
(crime links and *seen* notices become messages). Keeping the wiring here
small makes it easy to check that both do the same thing.
"""

from __future__ import annotations

from collections import Counter

from .config import Settings
from .crimes import CrimeLedger
from .dedupe import EventIds
from .events import CRIME_SCHEMA, INCIDENT_SCHEMA, CrimeEvent, IncidentEvent, Rejection, Validator
from .ledger import IncidentLedger
from .rules import Params
from .summary import AuditParts, build_audit

__all__ = ["Monitor"]


class Monitor:
    """Feeds raw messages through validation, the event-id store and both
    ledgers (single process).

    Responsibilities: route by topic, count each message's outcome, forward
    crime links and seen notices between the ledgers, keep the alerts if asked.
    """

    def __init__(self, settings: Settings | None = None, keep_alerts: bool = False,
                 deferred: bool = False) -> None:
        """``deferred``: evaluate incidents only when the audit is asked for (and
        every quarter of ``state_retention`` of event time, for eviction) —
        the offline audit's speed mode; alerts are then not decided."""
        if deferred and keep_alerts:
            raise ValueError("a deferred monitor decides no alerts")
        self.settings = settings or Settings()
        self.params = Params.from_settings(self.settings)
        self.validator = Validator.from_settings(self.settings)
        self.deferred = deferred
        self.incidents = IncidentLedger(self.params, frozenset(self.settings.districts), deferred=deferred)
        self._settled_at: int | None = None
        self.crimes = CrimeLedger(self.params)
        self.event_ids = EventIds(self.params)
        self.rejections = Counter()  # (topic side, reason): for reports
        self.keep_alerts = keep_alerts
        self.alerts: list = []
        self._schema_of = {self.settings.incidents_topic: INCIDENT_SCHEMA,
                           self.settings.crimes_topic: CRIME_SCHEMA}

    def schema_for(self, topic: str) -> str | None:
        return self._schema_of.get(topic)

    def feed(self, topic: str, payload: bytes, now_us: int, parsed: object = None) -> Rejection | None:
        """One message as consumed from ``topic``; returns its rejection, if any."""
        schema = self._schema_of.get(topic)
        if schema is None:
            raise ValueError(f"not an input topic: {topic!r}")
        result = self.validator.validate(schema, payload, now_us, parsed)
        side = "incidents" if schema == INCIDENT_SCHEMA else "crimes"
        if type(result) is Rejection:
            self.event_ids.invalid(side)
            self.rejections[(side, result.reason)] += 1
            return result
        if self.event_ids.claim(side, result.event_id, result.at) and not self.apply(result):
            # the id had been forgotten, but its incident or crime still has it
            self.event_ids.recount_duplicate(side)
        return None

    def apply(self, event: IncidentEvent | CrimeEvent) -> bool:
        """Apply a valid event to the ledgers and let the consequences flow;
        False when its incident or crime already had it."""
        incidents = self.incidents
        if type(event) is IncidentEvent:
            if not incidents.apply(event):
                return False
            if not self.deferred:
                self.crimes.observe(event.at)
        else:
            if not self.crimes.apply(event):
                return False
            incidents.observe(event.at)
            for incident_id, crime_id, recorded_at in self.crimes.drain().links:
                incidents.link(incident_id, crime_id, recorded_at)
        self._after_incident()
        if self.deferred:
            last = self._settled_at
            now = self.incidents.max_time
            if last is None:
                self._settled_at = now
            elif now - last > self.params.state_retention // 4:
                self.settle()
        return True

    def settle(self) -> None:
        """Deferred mode: bring every status up to the current watermark."""
        if self.incidents.max_time is not None:
            self.crimes.observe(self.incidents.max_time)
        self.incidents.settle()
        self._after_incident()
        self._settled_at = self.incidents.max_time

    def _after_incident(self) -> None:
        """Deliver seen notices to the crime ledger; keep alerts if asked."""
        changes = self.incidents.changes
        if changes.notices:
            for crime_id, incident_id in changes.notices:
                self.crimes.notice(crime_id, incident_id)
            changes.notices.clear()
        if changes.alerts:
            if self.keep_alerts:
                self.alerts.extend(changes.alerts)
            changes.alerts.clear()
        if len(changes.transitions) > 1024 or len(changes.touched) > 1024 or len(changes.evicted) > 1024:
            self.incidents.drain()  # nobody publishes offline: don't let them pile up
        if len(self.crimes.changes.touched) > 1024:
            self.crimes.drain()

    def parts(self) -> AuditParts:
        if self.deferred:
            self.settle()
        max_time = self.incidents.max_time
        if self.crimes.max_time is not None and (max_time is None or self.crimes.max_time > max_time):
            max_time = self.crimes.max_time
        return AuditParts(
            incident_keys=Counter(self.incidents.agg),
            crimes=Counter(self.crimes.totals()),
            events={t: Counter(c) for t, c in self.event_ids.counts.items()},
            max_time=max_time,
        )

    def audit(self) -> dict:
        return build_audit(self.parts(), self.params.allowed_lateness)
