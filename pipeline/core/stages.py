"""The three stages of the monitor: one wiring, whatever carries the messages.

The same stage classes run in the workers (each owned partition has one of
each; messages travel between them on Kafka topics, :mod:`pipeline.stream`)
and in the offline audit and the tests (one of each; messages are direct
calls, :mod:`~pipeline.core.monitor`). What a stage sends goes through a
:class:`Router`, the only thing the two transports implement differently.

- :class:`EventStage` (keyed by ``event_id``): claims event ids and owns the
  event counts; counts and dead-letters invalid messages; forwards each first
  copy to the stage that owns its incident or crime.
- :class:`IncidentStage` (keyed by ``incident_id``): the incident ledger;
  sends alerts and *seen* notices.
- :class:`CrimeStage` (keyed by ``crime_id``): the crime ledger; sends crime
  links to the incidents they name.

Every input is applied once per source position: a message re-read from the
same input position (after a rebalance, or a retried batch) is dropped by
:meth:`EventStage.fresh` before anything counts it.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from .config import CoreConfig
from .crimes import CrimeChanges, CrimeLedger
from .eventids import STALE, EventIds
from .events import Alert, CrimeEvent, IncidentEvent, Link, Notice
from .incidents import IncidentChanges, IncidentLedger
from .audit import AuditParts
from .vocabulary import CRIMES, INCIDENTS, SIDES

__all__ = ["Router", "EventRouter", "EventStage", "IncidentStage", "CrimeStage"]


class EventRouter(Protocol):
    """Where the event stage's messages go: valid events on, dead letters out."""

    def incident_event(self, ev: IncidentEvent, stale: bool) -> None: ...
    def crime_event(self, ev: CrimeEvent, stale: bool) -> None: ...
    def deadletter(self, key: bytes | None, record: bytes) -> None: ...


class Router(EventRouter, Protocol):
    """Where stage messages go: the transport."""

    def link(self, link: Link) -> None: ...
    def notice(self, notice: Notice) -> None: ...
    def alert(self, alert: Alert) -> None: ...


def _source(side: str, partition: int) -> str:
    """An input partition's key in :attr:`EventStage.positions` (and in its checkpoints)."""
    return f"{side}:{partition}"


class EventStage:
    """Event ids and event counts of one partition (contract §2)."""

    def __init__(self, config: CoreConfig, router: EventRouter, persist: bool = True) -> None:
        """``persist``: collect the ids to persist (a worker); the in-process monitor does not."""
        self.ids = EventIds(config.params, track=persist)
        self.router = router
        #: next unseen offset per source (side, partition), for messages routed here
        self.positions: dict[str, int] = {}

    def fresh(self, side: str, partition: int, offset: int) -> bool:
        """False for a message at or before a source position already applied here."""
        if offset < 0:  # offline: no positions, no re-reads
            return True
        pos = _source(side, partition)
        if offset < self.positions.get(pos, 0):
            return False
        self.positions[pos] = offset + 1
        return True

    def rewind(self, side: str, partition: int, offset: int) -> None:
        """The source is read again from ``offset`` as new records (:class:`~pipeline.core.events.Rewind`)."""
        pos = _source(side, partition)
        if self.positions.get(pos, 0) > offset:
            self.positions[pos] = offset

    def arrive(self, ev: IncidentEvent | CrimeEvent, partition: int = 0, offset: int = -1) -> bool:
        """A valid message: the first copy of its id goes on, later ones are
        counted duplicates. False when the source position was applied already."""
        is_incident = isinstance(ev, IncidentEvent)
        side = INCIDENTS if is_incident else CRIMES
        if offset >= 0 and not self.fresh(side, partition, offset):
            return False
        claim = self.ids.claim(side, ev.event_id, ev.at)
        if claim:
            if isinstance(ev, IncidentEvent):
                self.router.incident_event(ev, claim == STALE)
            else:
                self.router.crime_event(ev, claim == STALE)
        return True

    def reject(self, side: str, partition: int = 0, offset: int = -1, key: bytes | None = None,
               deadletter: bytes | None = None) -> bool:
        """An invalid message: counted, its dead letter published, once per source
        position. False when the source position was applied already."""
        if not self.fresh(side, partition, offset):
            return False
        self.ids.invalid(side)
        if deadletter is not None:
            self.router.deadletter(key, deadletter)
        return True

    def observe(self, t: int | None) -> None:
        self.ids.observe(t)

    def parts(self) -> AuditParts:
        ids = self.ids
        return AuditParts(events={side: Counter(ids.counts[side]) for side in SIDES}, max_time=ids.max_time)

    def meta(self) -> dict:
        return {**self.ids.meta(), "positions": self.positions}

    def load(self, ids: list, meta: dict | None) -> list[tuple[str, int]]:
        """Rebuild (see :meth:`EventIds.load`); the expired buckets it dropped."""
        self.positions = dict((meta or {}).get("positions", {}))
        return self.ids.load(ids, meta)


class IncidentStage:
    """The incident ledger of one partition, and what it sends (contract §3, §4)."""

    def __init__(self, config: CoreConfig, router: Router, deferred: bool = False,
                 outputs: bool | None = None) -> None:
        """``deferred``, ``outputs``: the ledger's modes (:class:`~pipeline.core.incidents.IncidentLedger`)."""
        self.ledger = IncidentLedger(config.params, config.vocabulary, deferred=deferred, outputs=outputs)
        self.router = router
        self.recounted = 0  # stale first copies the ledger already had: duplicates after all

    def event(self, ev: IncidentEvent, stale: bool = False) -> None:
        if not self.ledger.apply(ev) and stale:
            self.recounted += 1

    def link(self, link: Link) -> None:
        self.ledger.link(link)

    def observe(self, t: int | None) -> None:
        self.ledger.observe(t)

    def settle(self) -> None:
        """A deferred ledger evaluates what changed (an eager one has nothing waiting)."""
        self.ledger.settle()

    def flush(self) -> IncidentChanges | None:
        """Send what the ledger decided (alerts, notices); return the changes for the shell."""
        ledger = self.ledger
        ch = ledger.changes
        if not (ch.alerts or ch.notices or ch.touched or ch.evicted or ch.moves):
            return None
        ch = ledger.drain()
        router = self.router
        for alert in ch.alerts:
            router.alert(alert)
        for notice in ch.notices:
            router.notice(notice)
        return ch

    def send_notices(self) -> None:
        """Send the *seen* notices decided so far, ahead of the rest of :meth:`flush`
        (the deferred monitor: a notice must not wait for the next settle, or a
        watermark jump in between could evict its crime first)."""
        notices = self.ledger.changes.notices
        if notices:
            self.ledger.changes.notices = []
            for notice in notices:
                self.router.notice(notice)

    def parts(self) -> AuditParts:
        tally = self.ledger.tally
        events = {INCIDENTS: Counter(valid=-self.recounted, duplicate=self.recounted), CRIMES: Counter()}
        return AuditParts(incidents=Counter(tally.agg), daily=Counter(tally.daily),
                          delays=Counter(tally.delays), events=events, max_time=self.ledger.max_time)

    def meta(self) -> dict:
        return {**self.ledger.meta(), "recounted": self.recounted}

    def load(self, states: dict, meta: dict | None) -> None:
        self.ledger.load(states, meta)
        self.recounted = (meta or {}).get("recounted", 0)


class CrimeStage:
    """The crime ledger of one partition, and the links it sends (contract §2)."""

    def __init__(self, config: CoreConfig, router: Router, persist: bool = True) -> None:
        self.ledger = CrimeLedger(config.params, track=persist)
        self.router = router
        self.recounted = 0

    def event(self, ev: CrimeEvent, stale: bool = False) -> None:
        if not self.ledger.apply(ev) and stale:
            self.recounted += 1

    def notice(self, notice: Notice) -> None:
        self.ledger.notice(notice)

    def observe(self, t: int | None) -> None:
        self.ledger.observe(t)

    def flush(self) -> CrimeChanges | None:
        """Send the links the ledger decided; return the changes for the shell."""
        ch = self.ledger.changes
        if not (ch.links or ch.cancellations or ch.touched or ch.evicted):
            return None
        ch = self.ledger.drain()
        router = self.router
        for link in ch.links:
            router.link(link)
        return ch

    def parts(self) -> AuditParts:
        events = {INCIDENTS: Counter(), CRIMES: Counter(valid=-self.recounted, duplicate=self.recounted)}
        return AuditParts(crimes=Counter(self.ledger.agg), events=events, max_time=self.ledger.max_time)

    def meta(self) -> dict:
        return {**self.ledger.meta(), "recounted": self.recounted}

    def load(self, states: dict, meta: dict | None) -> None:
        self.ledger.load(states, meta)
        self.recounted = (meta or {}).get("recounted", 0)
