"""The whole monitor in one process: validation and the three stages, with
direct calls where the workers have Kafka topics.

The offline audit (``cdiwatch audit FILE``) and the tests use this. It wires
the very stage classes the workers run (:mod:`~pipeline.core.stages`); only
the transport differs: here a stage's message is a method call on the one
stage that owns everything, delivered at once, so after each :meth:`Monitor.feed`
every consequence has happened.
"""

from __future__ import annotations

from collections import Counter

from .audit import AuditParts, build_audit
from .config import CoreConfig
from .crimes import CrimeLedger
from .eventids import EventIds
from .events import Alert, CrimeEvent, IncidentEvent, Link, Notice, Rejection, Stale
from .incidents import IncidentLedger
from .stages import CrimeStage, EventStage, IncidentStage
from .validation import Validator

__all__ = ["Monitor"]


class _DirectRouter:
    """Stage messages as direct calls (one partition of everything).

    The crime ledger learns the time of an incident event when it is next
    asked something (a crime event, a notice, the audit), not at once: its
    watermark only evicts crimes, and an eviction can only show when a crime
    is next touched, so it is the same result with one call per crime event
    instead of one per incident event.
    """

    def __init__(self, monitor: "Monitor") -> None:
        self.m = monitor
        self.t: int | None = None  # the latest valid event time of either feed

    def crimes_now(self) -> CrimeStage:
        """The crime stage, caught up with every event time so far."""
        crime = self.m.crime
        crime.observe(self.t)
        return crime

    def incident_event(self, ev: IncidentEvent, stale: bool) -> None:
        m = self.m
        if self.t is None or ev.at > self.t:
            self.t = ev.at
        incident = m.incident
        incident.event(ev, stale)
        if m.eager:
            incident.flush()
        elif incident.ledger.changes.notices:  # deferred: no alerts to decide, but a notice must not wait
            incident.send_notices()            # for the next settle

    def crime_event(self, ev: CrimeEvent, stale: bool) -> None:
        m = self.m
        self.crimes_now().event(ev, stale)
        if self.t is None or ev.at > self.t:
            self.t = ev.at
        m.incident.observe(ev.at)
        m.crime.flush()
        if m.eager:
            m.incident.flush()
        else:
            m.incident.send_notices()

    def link(self, link: Link) -> None:
        self.m.incident.link(link)

    def notice(self, notice: Notice) -> None:
        self.crimes_now().notice(notice)

    def alert(self, alert: Alert) -> None:
        if self.m.keep_alerts:
            self.m.alerts.append(alert)

    def deadletter(self, key: bytes | None, record: bytes) -> None:
        pass


class Monitor:
    """Feeds raw messages through validation and the stages (single process).

    ``deferred``: the offline audit's speed mode. Incidents are evaluated when
    the audit is asked for (and every twelfth of ``state_retention`` of event
    time, for eviction) instead of after every event; alerts are then not
    decided, unless ``outputs`` (the incident ledger's modes: a worker's
    incident stage defers with outputs, to the end of each stage record).
    """

    def __init__(self, config: CoreConfig | None = None, keep_alerts: bool = False,
                 deferred: bool = False, outputs: bool | None = None) -> None:
        if deferred and keep_alerts and not outputs:
            raise ValueError("a deferred monitor decides no alerts (unless it has outputs)")
        self.config = config = config or CoreConfig()
        self.validator = Validator(config.vocabulary, config.limits)
        self.eager = not deferred
        self.keep_alerts = keep_alerts
        self.alerts: list[Alert] = []
        self.rejections: Counter = Counter()  # (side, reason)
        #: messages whose processing raised (a defect, or a state limit): dead-lettered by a worker
        self.processing_errors: list[tuple[str, str]] = []  # (event_id, detail)
        self._router = router = _DirectRouter(self)
        self.events = EventStage(config, router, persist=False)
        self.incident = IncidentStage(config, router, deferred=deferred, outputs=outputs)
        self.crime = CrimeStage(config, router, persist=False)
        self._settled_at: int | None = None
        self._settle_every = config.params.state_retention // 12

    # the ledgers, for tests and reports
    @property
    def incidents(self) -> IncidentLedger:
        return self.incident.ledger

    @property
    def crimes(self) -> CrimeLedger:
        return self._router.crimes_now().ledger

    @property
    def event_ids(self) -> EventIds:
        return self.events.ids

    def feed(self, topic: str, payload: bytes, now: int) -> Rejection | None:
        """One message as consumed from ``topic`` at wall time ``now``; its rejection, if any."""
        side = self.config.topics.side_of(topic)
        if side is None:
            raise ValueError(f"not an input topic: {topic!r}")
        return self.feed_side(side, payload, now)

    def feed_side(self, side: str, payload: bytes, now: int) -> Rejection | None:
        result = self.validator.validate(side, payload, now)
        if isinstance(result, Rejection):
            self.events.reject(side)
            self.rejections[(side, result.reason)] += 1
            return result
        self.apply(result)
        return None

    def apply(self, ev: IncidentEvent | CrimeEvent) -> None:
        """A valid event, through the stages and all its consequences.

        A failure inside is caught and remembered (:attr:`processing_errors`),
        as a worker dead-letters it with reason ``processing_error``; the event
        keeps the outcome its validation gave it in the counts.
        """
        try:
            self.events.arrive(ev)
        except Exception as exc:  # noqa: BLE001 - no message stops the monitor
            self._failed(ev, exc)
        if not self.eager:
            self.settle_if_due()

    def forward_many(self, items: list) -> list:
        """The events some other :class:`~pipeline.core.stages.EventStage`
        claimed and sent on (the offline audit's reader process runs one),
        through the incident and crime stages in order, as :meth:`apply` does
        after the claim; a :class:`~pipeline.core.events.Stale` forwards its
        event as a stale first copy. Returns the other items, in order, for the
        caller. That stage's counts come with :meth:`claimed`. A deferred
        monitor's caller calls :meth:`settle_if_due` once per batch.

        A batch, not an event, per call: one loop here instead of a call per
        event on the way in (about 5% of the ledgers' process)."""
        router = self._router
        incident_event, crime_event = router.incident_event, router.crime_event
        rest: list = []
        keep = rest.append
        for item in items:
            t = type(item)
            try:
                if t is IncidentEvent:
                    incident_event(item, False)
                elif t is CrimeEvent:
                    crime_event(item, False)
                elif t is Stale:
                    ev = item.event
                    (incident_event if type(ev) is IncidentEvent else crime_event)(ev, True)
                else:
                    keep(item)
            except Exception as exc:  # noqa: BLE001 - no message stops the monitor
                self._failed(item.event if t is Stale else item, exc)
        return rest

    def claimed(self, meta: dict) -> None:
        """The final :meth:`~pipeline.core.stages.EventStage.meta` of the event
        stage that claimed the events given to :meth:`forward_many`: its counts become ours."""
        self.events.load([], meta)

    def _failed(self, ev: IncidentEvent | CrimeEvent, exc: Exception) -> None:
        if len(self.processing_errors) < 10_000:
            self.processing_errors.append((ev.event_id, f"{type(exc).__name__}: {exc}"))

    def settle_if_due(self) -> None:
        """Deferred mode: :meth:`settle` once per twelfth of ``state_retention``
        of event time (2.5 days by default), so that what is due for eviction is
        evicted (memory stays bounded by the retention, not by the length of the
        capture). Why a twelfth: an incident is held at most that much longer
        than its retention, and the last settle, which nothing runs beside, has
        less to do; the price, incidents changed on both sides of a settle
        being evaluated twice, is small. On the 300k bench capture, against a
        quarter: peak RSS of the ledgers' process 168 -> 153 MiB, same wall time."""
        t = self._router.t
        if t is None:
            return
        if self._settled_at is None:
            self._settled_at = t
        elif t - self._settled_at > self._settle_every:
            self.settle()

    def settle(self) -> None:
        """Deferred mode: bring every status up to the current watermark."""
        incident, crime, t = self.incident, self._router.crimes_now(), self._router.t
        incident.observe(t)
        self.events.observe(t)
        incident.ledger.settle()
        incident.flush()
        crime.flush()
        self._settled_at = t

    def parts(self) -> AuditParts:
        if not self.eager:
            self.settle()
        self._router.crimes_now()
        return AuditParts.total((self.events.parts(), self.incident.parts(), self.crime.parts()))

    def audit(self) -> dict:
        return build_audit(self.parts(), self.config.params.allowed_lateness)
