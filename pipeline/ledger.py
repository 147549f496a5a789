"""The incident ledger: the pure core that turns incident events, crime links
and watermark moves into statuses, alerts and counts.

Responsibilities:
- keep per-incident state (events in event-time order, linked crimes'
  recording times, alerts already sent), keyed by incident id so the stream
  layer can hold one ledger per partition and persist touched states;
- keep the event-time watermark (contract §3) and a deadline index (a heap of
  the next watermark at which each incident's status changes by time alone),
  so a watermark move touches only incidents that are due, in O(log n) each;
- keep the audit aggregates incrementally: a count per *contribution key*
  (status, category, district label, channel, exemption reason);
- evict incidents ``state_retention`` after their last activity; their
  contribution stays counted (``evicted``).

It never reads a clock, a topic or a file. Calls collect what happened in a
:class:`Changes`; the shell takes it with :meth:`IncidentLedger.drain` when it
is ready to publish (once per op batch: one allocation, not one per event).

Two modes, same rules. *Eager* (the stream layer) evaluates an incident on
every change, because alerts must go out as soon as they are true.
*Deferred* (the offline audit) only records inputs and evaluates the
incidents that changed when :meth:`IncidentLedger.settle` is called: a
status depends only on the incident's events, its crimes and the watermark,
never on the path taken, so the audit is the same and each incident is
assessed once instead of once per event.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from .events import IncidentEvent
from .rules import (
    AT_RISK, DOWNGRADE_REASONS, EXEMPT, LATE, ON_TIME, OVERDUE, UNOPENED,
    Assessment, Params, assess, next_change, status_at,
)

__all__ = ["IncidentLedger", "IncidentState", "Changes", "Alert", "Transition", "REQUIRED_STATUSES"]

REQUIRED_STATUSES = frozenset({ON_TIME, LATE, EXEMPT, OVERDUE, "pending", AT_RISK})
RECORDED_STATUSES = frozenset({ON_TIME, LATE})

# Contribution key: (status, category, district label, channel, exemption reason).
Key = tuple


@dataclass(slots=True)
class IncidentState:
    """What the ledger remembers of one incident id.

    ``entries`` are ``rules.Entry`` tuples sorted by (occurred_at, event_id);
    ``opening`` is (occurred_at, event_id, channel, district) of the first
    ``opened`` event; ``crimes`` maps linked crime ids to recording times.
    ``key`` and ``timer`` are derived caches (recomputed on load).
    """

    entries: list = field(default_factory=list)
    opening: tuple | None = None
    flags: list = field(default_factory=list)
    crimes: dict = field(default_factory=dict)
    alerts: list = field(default_factory=list)
    key: Key | None = None
    timer: int | None = None
    last: int = 0  # latest event or recording time: derived, kept for eviction

    def to_json(self) -> dict:
        return {"e": self.entries, "o": self.opening, "f": self.flags, "c": self.crimes, "a": self.alerts}

    @classmethod
    def from_json(cls, d: dict) -> "IncidentState":
        st = cls([tuple(e) for e in d["e"]], tuple(d["o"]) if d["o"] else None,
                 list(d["f"]), dict(d["c"]), list(d["a"]))
        st.last = st.last_activity()
        return st

    def has_event(self, event_id: str) -> bool:
        for e in self.entries:
            if e[1] == event_id:
                return True
        return False

    def last_activity(self) -> int:
        times = [e[0] for e in self.entries]
        times.extend(t for t in self.crimes.values() if t is not None)
        return max(times) if times else 0


@dataclass(slots=True)
class Alert:
    """An ``alert.v1`` decided by the core; the shell serialises and publishes it."""

    kind: str
    incident_id: str
    category: str | None
    district: str | None
    channel: str | None
    flags: list
    required_since: int
    deadline: int
    watermark: int | None
    crime_ids: list
    timeliness: str | None = None

    @property
    def alert_id(self) -> str:
        return f"{self.incident_id}:{self.kind}"


class Transition(NamedTuple):
    """An incident's contribution moved from ``old`` to ``new`` (for metrics)."""

    incident_id: str
    old: Key | None
    new: Key | None
    delay_s: float | None = None  # report -> record, when it became recorded


@dataclass(slots=True)
class Changes:
    """Everything one ledger call changed, for the shell to act on."""

    alerts: list = field(default_factory=list)
    transitions: list = field(default_factory=list)
    notices: list = field(default_factory=list)  # (crime_id, incident_id): incident is seen
    touched: set = field(default_factory=set)
    evicted: set = field(default_factory=set)


class IncidentLedger:
    """Per-incident state, watermark, deadline index and aggregates (see module doc)."""

    def __init__(self, params: Params, districts: frozenset[str] | set[str] = frozenset(),
                 deferred: bool = False) -> None:
        self.params = params
        self.deferred = deferred
        self._dirty: set[str] = set()
        self.districts = frozenset(districts)
        self.incidents: dict[str, IncidentState] = {}
        self.max_time: int | None = None
        self.agg: Counter = Counter()
        self.evicted: Counter = Counter()
        self._heap: list[tuple[int, str]] = []
        self.changes = Changes()

    def drain(self) -> Changes:
        """What happened since the last drain; starts a new collection."""
        out, self.changes = self.changes, Changes()
        return out

    # ------------------------------------------------------------------ inputs
    @property
    def watermark(self) -> int | None:
        return None if self.max_time is None else self.max_time - self.params.allowed_lateness

    def apply(self, ev: IncidentEvent) -> bool:
        """Apply one valid incident event; False when this incident already has
        its ``event_id`` (a redelivery: duplicates are counted by ``dedupe.EventIds``)."""
        out = self.changes
        st = self._live(ev.incident_id, out)
        if st is None:
            st = self.incidents[ev.incident_id] = IncidentState()
        elif st.has_event(ev.event_id):
            return False
        was_seen = st.opening is not None
        entry = (ev.at, ev.event_id, ev.kind, ev.category, ev.disposition, ev.reported_at)
        if not st.entries or entry > st.entries[-1]:
            st.entries.append(entry)
        else:
            bisect.insort(st.entries, entry)
        if ev.at > st.last:
            st.last = ev.at
        if ev.kind == "opened":
            opening = (ev.at, ev.event_id, ev.channel, ev.district)
            if st.opening is None or opening[:2] < tuple(st.opening[:2]):
                st.opening = opening
        for flag in ev.flags:
            if flag not in st.flags:
                st.flags.append(flag)
                st.flags.sort()
        if not was_seen and st.opening is not None and st.crimes:
            out.notices.extend((crime_id, ev.incident_id) for crime_id in st.crimes)
        self._raise(ev.at, out)
        if self.deferred:
            self._dirty.add(ev.incident_id)
        else:
            self._evaluate(ev.incident_id, st, out)
        return True

    def link(self, incident_id: str, crime_id: str, recorded_at: int | None) -> None:
        """A crime links this incident (or its recording time moved earlier)."""
        out = self.changes
        st = self._live(incident_id, out)
        if st is None:
            st = self.incidents[incident_id] = IncidentState()
        known = crime_id in st.crimes
        old = st.crimes.get(crime_id)
        if known and (recorded_at is None or (old is not None and old <= recorded_at)):
            return
        st.crimes[crime_id] = recorded_at
        if recorded_at is not None and recorded_at > st.last:
            st.last = recorded_at
        if not known and st.opening is not None:
            out.notices.append((crime_id, incident_id))
        if self.deferred:
            self._dirty.add(incident_id)
        else:
            self._evaluate(incident_id, st, out)

    def _live(self, incident_id: str, out: Changes) -> IncidentState | None:
        """The incident's state, unless its retention has passed. Deferred mode
        evicts lazily, so it checks here what eager mode's timer did already."""
        st = self.incidents.get(incident_id)
        if st is not None and self.deferred:
            w = self.watermark
            if w is not None and st.last + self.params.state_retention <= w:
                self._dirty.discard(incident_id)
                self._evaluate(incident_id, st, out)
                return self.incidents.get(incident_id)
        return st

    def observe(self, event_time: int) -> None:
        """Some valid event anywhere happened at ``event_time``: move the watermark."""
        self._raise(event_time, self.changes)

    # --------------------------------------------------------------- internals
    def settle(self) -> None:
        """Deferred mode: evaluate every incident that changed, then the ones
        whose deadline timers the watermark has reached."""
        out = self.changes
        dirty, self._dirty = self._dirty, set()
        incidents = self.incidents
        for incident_id in dirty:
            st = incidents.get(incident_id)
            if st is not None:
                self._evaluate(incident_id, st, out)
        self._due(out)

    def _raise(self, event_time: int, out: Changes) -> None:
        if self.max_time is not None and event_time <= self.max_time:
            return
        self.max_time = event_time
        if not self.deferred:
            self._due(out)

    def _due(self, out: Changes) -> None:
        w = self.watermark
        if w is None:
            return
        heap = self._heap
        while heap and heap[0][0] <= w:
            due, incident_id = heapq.heappop(heap)
            st = self.incidents.get(incident_id)
            if st is not None and st.timer == due:
                st.timer = None
                self._evaluate(incident_id, st, out)

    def assessment(self, st: IncidentState) -> Assessment | None:
        if st.opening is None:
            return None
        return assess(st.entries, st.crimes.values(), self.params)

    def _evaluate(self, incident_id: str, st: IncidentState, out: Changes) -> None:
        """Recompute one incident's status; update aggregates, alerts and timer."""
        w = self.watermark
        p = self.params
        a = self.assessment(st)
        if a is None:
            status = UNOPENED if st.entries else None
            key = (UNOPENED, None, None, None, None) if status else None
        else:
            status = status_at(a, w, p)
            _at, _eid, channel, district = st.opening
            label = district if district in self.districts else "other"
            key = (status, a.category, label, channel, a.exempt_reason if status == EXEMPT else None)
        evict_at = st.last + p.state_retention
        if a is not None and a.deadline is not None:
            evict_at = max(evict_at, a.deadline + p.state_retention)
        if w is not None and evict_at <= w:
            self._evict(incident_id, st, key, out)
            return
        old = st.key
        if key != old:
            agg = self.agg
            if old is not None:
                n = agg[old] - 1
                if n:
                    agg[old] = n
                else:
                    del agg[old]
            if key is not None:
                agg[key] = agg.get(key, 0) + 1
            st.key = key
            if not self.deferred:  # an offline audit publishes neither metrics nor alerts
                delay = None
                if status in RECORDED_STATUSES and (old is None or old[0] not in RECORDED_STATUSES):
                    delay = max(0, a.recorded_at - a.required_since) / 1_000_000
                out.transitions.append(Transition(incident_id, old, key, delay))
                if a is not None:
                    self._alerts(incident_id, st, a, status, out)
        if not self.deferred:
            out.touched.add(incident_id)
        due = next_change(a, status, p) if a is not None else None
        timer = evict_at if due is None else min(due, evict_at)
        if timer != st.timer:
            st.timer = timer
            heapq.heappush(self._heap, (timer, incident_id))
            if len(self._heap) > 2 * len(self.incidents) + 1024:
                self._compact()

    def _alerts(self, incident_id: str, st: IncidentState, a: Assessment, status: str, out: Changes) -> None:
        sent = st.alerts
        kind = None
        if status == AT_RISK and "at_risk" not in sent:
            kind = "at_risk"
        elif status == OVERDUE and "overdue" not in sent:
            kind = "overdue"
        elif status in RECORDED_STATUSES and "overdue" in sent and "resolved" not in sent:
            kind = "resolved"
        elif status == EXEMPT and a.exempt_reason in DOWNGRADE_REASONS and "downgraded" not in sent:
            kind = "downgraded"
        if kind is None:
            return
        sent.append(kind)
        _at, _eid, channel, district = st.opening
        out.alerts.append(Alert(
            kind=kind, incident_id=incident_id, category=a.category, district=district,
            channel=channel, flags=list(st.flags), required_since=a.required_since,
            deadline=a.deadline, watermark=self.watermark,
            crime_ids=sorted(c for c, t in st.crimes.items() if t is not None),
            timeliness=status if kind == "resolved" else None,
        ))

    def _evict(self, incident_id: str, st: IncidentState, key: Key | None, out: Changes) -> None:
        """Forget an incident whose retention has passed; keep its contribution."""
        old = st.key
        if old is not None:
            self.agg[old] -= 1
            if not self.agg[old]:
                del self.agg[old]
        if key is not None:
            self.agg[key] += 1
            self.evicted[key] += 1
        if key != old:
            out.transitions.append(Transition(incident_id, old, key, None))
        del self.incidents[incident_id]
        out.evicted.add(incident_id)
        out.touched.discard(incident_id)

    def _compact(self) -> None:
        self._heap = [(st.timer, i) for i, st in self.incidents.items() if st.timer is not None]
        heapq.heapify(self._heap)

    # ------------------------------------------------------------- persistence
    def load(self, states: dict[str, IncidentState], meta: dict | None) -> None:
        """Rebuild from persisted states and meta.

        Alerts that were due but not yet marked sent (a crash between deciding
        and persisting) are left in :attr:`changes`; transitions are not
        metric events here, so they are dropped.
        """
        out = self.changes
        if meta:
            self.max_time = meta.get("max_time")
            for k, n in meta.get("evicted", []):
                self.evicted[tuple(k)] += n
                self.agg[tuple(k)] += n
        for incident_id, st in states.items():
            self.incidents[incident_id] = st
            st.key = None
            st.timer = None
            self._evaluate(incident_id, st, out)
        out.transitions.clear()
        out.touched.clear()

    def meta(self) -> dict:
        return {"max_time": self.max_time,
                "evicted": [[list(k), n] for k, n in self.evicted.items()]}
