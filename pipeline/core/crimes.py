"""The crime ledger: crime-side state, keyed by crime id (contract §2, §4).

Responsibilities:
- keep, per crime, its event ids, its recording time (the earliest
  ``recorded`` event), the incidents it links and its cancellations;
- say which incidents must learn a crime's recording time (:class:`Link`
  messages: the incident may live in another partition);
- count ``crimes.recorded``, ``without_incident`` (needs the *seen*
  :class:`Notice` messages the incident ledger sends back), ``cancelled`` and
  ``cancelled_without_reason``;
- evict a crime ``state_retention`` after its last event; its counts stay.

Pure: no clock, no Kafka. The watermark arrives through :meth:`CrimeLedger.observe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .config import Params
from .events import CrimeEvent, Link, Notice
from .keys import CrimeKey
from .tally import Counts, shift
from .timers import Timers
from .times import watermark
from .vocabulary import MAX_EVENTS_PER_CRIME, MAX_LINKS_PER_CRIME, StateLimit

__all__ = ["CrimeLedger", "CrimeState", "CrimeChanges"]

_NOT_COUNTED: Final = CrimeKey(False, False, False, False)
#: Every CrimeKey, made once, at index recorded*8 + without_incident*4 + cancelled*2 +
#: cancelled_without_reason: a NamedTuple's __new__ is interpreted (~2,600
#: instructions), and a crime is evaluated at each of its events.
_CRIME_KEYS: Final[tuple[CrimeKey, ...]] = tuple(
    CrimeKey(bool(i & 8), bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(16))


class CrimeState:
    """One crime. Persisted: all but ``key`` and ``timer``, which are derived.
    (A plain class, as :class:`~pipeline.core.incident.IncidentState` is, for its compiled ``__init__``.)"""

    def __init__(self, event_ids: list | None = None, recorded_at: int | None = None, links: list | None = None,
                 seen: list | None = None, cancelled: bool = False, cancelled_without_reason: bool = False,
                 last_at: int = 0) -> None:
        self.event_ids: list = [] if event_ids is None else event_ids
        self.recorded_at = recorded_at
        self.links: list = [] if links is None else links  # incident ids, in the order first named
        self.seen: list = [] if seen is None else seen     # linked incident ids known to be seen
        self.cancelled = cancelled
        self.cancelled_without_reason = cancelled_without_reason
        self.last_at = last_at
        self.key: CrimeKey | None = None
        self.timer: int | None = None

    def __repr__(self) -> str:
        return f"CrimeState(event_ids={self.event_ids!r}, recorded_at={self.recorded_at!r}, links={self.links!r})"

    def persisted(self) -> tuple:
        return (self.event_ids, self.recorded_at, self.links, self.seen, self.cancelled,
                self.cancelled_without_reason, self.last_at)

    @classmethod
    def restore(cls, t: tuple) -> "CrimeState":
        ids, recorded_at, links, seen, cancelled, no_reason, last_at = t
        return cls(list(ids), recorded_at, list(links), list(seen), cancelled, no_reason, last_at)


@dataclass(slots=True)
class CrimeChanges:
    """What the crime ledger decided since the shell last drained it."""

    links: list = field(default_factory=list)          # Link, for the incident ledger
    cancellations: list = field(default_factory=list)  # reason or None, one per cancelled event
    touched: set = field(default_factory=set)
    evicted: set = field(default_factory=set)


class CrimeLedger:
    """Crime-side state and counts (see the module doc)."""

    def __init__(self, params: Params, track: bool = True) -> None:
        """``track``: collect touched and evicted crime ids (for persistence);
        the offline audit persists nothing and turns it off."""
        self.params = params
        self.track = track
        self.crimes: dict[str, CrimeState] = {}
        self.max_time: int | None = None
        self.agg = Counts()
        self.evicted = Counts()
        self.changes = CrimeChanges()
        self._timers = Timers()

    @property
    def watermark(self) -> int | None:
        return watermark(self.max_time, self.params.allowed_lateness)

    def drain(self) -> CrimeChanges:
        out, self.changes = self.changes, CrimeChanges()
        return out

    def apply(self, ev: CrimeEvent) -> bool:
        """Apply one valid crime event; False when this crime already has its ``event_id``."""
        out = self.changes
        crime_id = ev.crime_id
        st = self.crimes.get(crime_id)
        if st is None:
            st = self.crimes[crime_id] = CrimeState()
        elif ev.event_id in st.event_ids:
            return False
        new_links = [i for i in dict.fromkeys(ev.incident_ids) if i not in st.links]
        if len(st.event_ids) >= MAX_EVENTS_PER_CRIME or len(st.links) + len(new_links) > MAX_LINKS_PER_CRIME:
            raise StateLimit(f"crime {crime_id[:80]!r} would hold more than {MAX_EVENTS_PER_CRIME:,} events or "
                             f"{MAX_LINKS_PER_CRIME:,} linked incidents; event {ev.event_id[:80]!r} not applied")
        st.event_ids.append(ev.event_id)
        if ev.at > st.last_at:
            st.last_at = ev.at
        if ev.kind == "cancelled":
            st.cancelled = True
            if ev.reason is None:
                st.cancelled_without_reason = True
            out.cancellations.append(ev.reason)
        else:
            moved = ev.kind == "recorded" and (st.recorded_at is None or ev.at < st.recorded_at)
            if moved:
                st.recorded_at = ev.at
            st.links.extend(new_links)
            if st.recorded_at is not None:
                for incident_id in (st.links if moved else new_links):
                    out.links.append(Link(incident_id, crime_id, st.recorded_at))
        self.observe(ev.at)
        self._evaluate(crime_id, st)
        return True

    def notice(self, notice: Notice) -> None:
        """The incident ledger says a linked incident is seen."""
        st = self.crimes.get(notice.crime_id)
        if st is None or notice.incident_id in st.seen:
            return
        st.seen.append(notice.incident_id)
        self._evaluate(notice.crime_id, st)

    def observe(self, event_time: int | None) -> None:
        """Some valid event somewhere happened at ``event_time``: evict what is due."""
        if event_time is None or (self.max_time is not None and event_time <= self.max_time):
            return
        self.max_time = event_time
        w = self.watermark
        if w is None:
            return
        for due, crime_id in self._timers.due(w):
            st = self.crimes.get(crime_id)
            if st is not None and st.timer == due:
                self._evaluate(crime_id, st)

    def _evaluate(self, crime_id: str, st: CrimeState) -> None:
        recorded = st.recorded_at is not None
        key: CrimeKey | None = _CRIME_KEYS[(8 if recorded else 0) + (4 if recorded and not st.seen else 0)
                                           + (2 if st.cancelled else 0) + (1 if st.cancelled_without_reason else 0)]
        if key == _NOT_COUNTED:
            key = None  # links or notices alone: not a crime we count yet
        if key != st.key:
            shift(self.agg, st.key, key)
            st.key = key
        evict_at = st.last_at + self.params.state_retention
        w = self.watermark
        if w is not None and evict_at <= w:
            if key is not None:
                self.evicted[key] += 1
            del self.crimes[crime_id]
            if self.track:
                self.changes.evicted.add(crime_id)
                self.changes.touched.discard(crime_id)
            return
        if self.track:
            self.changes.touched.add(crime_id)
        if st.timer != evict_at:
            st.timer = evict_at
            self._timers.add(evict_at, crime_id)

    # ------------------------------------------------------------- persistence
    def load(self, states: dict[str, CrimeState], meta: dict | None) -> None:
        if meta:
            self.max_time = meta.get("max_time")
            for k, n in meta.get("evicted", []):
                key = CrimeKey(*k)
                self.evicted[key] += n
                self.agg[key] += n
        for crime_id, st in states.items():
            self.crimes[crime_id] = st
            st.key = None
            st.timer = None
            self._evaluate(crime_id, st)
        self.changes = CrimeChanges()

    def meta(self) -> dict:
        return {"max_time": self.max_time, "evicted": [[list(k), n] for k, n in self.evicted.items()]}
