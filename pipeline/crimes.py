"""The crime ledger: crime-side state, keyed by crime id (contract §2, §4).

Responsibilities:
- deduplicate crime events by ``event_id`` and keep, per crime, its recording
  time (earliest ``recorded`` event), the incidents it links and cancellations;
- say which incidents must learn a crime's recording time (``links``): the
  incident ledger may live in another partition, so links travel as messages;
- count ``crimes.recorded``, ``without_incident`` (needs *seen* notices sent back
  by the incident ledger), ``cancelled`` and ``cancelled_without_reason``.

Pure: no clock, no Kafka. The watermark arrives through ``observe`` and only
drives eviction after ``state_retention``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from .events import CrimeEvent
from .rules import Params

__all__ = ["CrimeLedger", "CrimeState", "CrimeChanges"]

# Contribution key: (recorded, without_incident, cancelled, cancelled_without_reason)
CrimeKey = tuple


@dataclass(slots=True)
class CrimeState:
    """One crime: event ids seen, recording time, links, seen incidents, cancellations."""

    event_ids: list = field(default_factory=list)
    recorded_at: int | None = None
    links: list = field(default_factory=list)
    seen: list = field(default_factory=list)
    cancelled: bool = False
    cancelled_without_reason: bool = False
    last_at: int = 0
    key: CrimeKey | None = None
    timer: int | None = None

    def to_json(self) -> dict:
        return {"i": self.event_ids, "r": self.recorded_at, "l": self.links, "s": self.seen,
                "c": self.cancelled, "n": self.cancelled_without_reason, "t": self.last_at}

    @classmethod
    def from_json(cls, d: dict) -> "CrimeState":
        return cls(list(d["i"]), d["r"], list(d["l"]), list(d["s"]), d["c"], d["n"], d["t"])


@dataclass(slots=True)
class CrimeChanges:
    """What one crime-ledger call changed."""

    links: list = field(default_factory=list)  # (incident_id, crime_id, recorded_at)
    cancellations: list = field(default_factory=list)  # reason or None, one per cancelled event
    touched: set = field(default_factory=set)
    evicted: set = field(default_factory=set)


class CrimeLedger:
    """Crime-side state and counts (see module doc)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.crimes: dict[str, CrimeState] = {}
        self.max_time: int | None = None
        self.agg: Counter = Counter()
        self.evicted: Counter = Counter()
        self._heap: list[tuple[int, str]] = []
        self.changes = CrimeChanges()

    def drain(self) -> CrimeChanges:
        """What happened since the last drain; starts a new collection."""
        out, self.changes = self.changes, CrimeChanges()
        return out

    def apply(self, ev: CrimeEvent) -> bool:
        """Apply one valid crime event; False when this crime already has its
        ``event_id`` (a redelivery: duplicates are counted by ``dedupe.EventIds``)."""
        out = self.changes
        st = self.crimes.get(ev.crime_id)
        if st is None:
            st = self.crimes[ev.crime_id] = CrimeState()
        elif ev.event_id in st.event_ids:
            return False
        st.event_ids.append(ev.event_id)
        st.last_at = max(st.last_at, ev.at)
        if ev.kind == "cancelled":
            st.cancelled = True
            if ev.reason is None:
                st.cancelled_without_reason = True
            out.cancellations.append(ev.reason)
        else:
            moved = ev.kind == "recorded" and (st.recorded_at is None or ev.at < st.recorded_at)
            if moved:
                st.recorded_at = ev.at
            new_links = [i for i in dict.fromkeys(ev.incident_ids) if i not in st.links]
            st.links.extend(new_links)
            if st.recorded_at is not None:
                targets = st.links if moved else new_links
                out.links.extend((i, ev.crime_id, st.recorded_at) for i in targets)
        self._raise(ev.at, out)
        self._evaluate(ev.crime_id, st, out)
        return True

    def notice(self, crime_id: str, incident_id: str) -> None:
        """The incident ledger says ``incident_id`` (linked to this crime) is seen."""
        st = self.crimes.get(crime_id)
        if st is None or incident_id in st.seen:
            return
        st.seen.append(incident_id)
        self._evaluate(crime_id, st, self.changes)

    def observe(self, event_time: int) -> None:
        self._raise(event_time, self.changes)

    def _raise(self, event_time: int, out: CrimeChanges) -> None:
        if self.max_time is not None and event_time <= self.max_time:
            return
        self.max_time = event_time
        w = event_time - self.params.allowed_lateness
        while self._heap and self._heap[0][0] <= w:
            due, crime_id = heapq.heappop(self._heap)
            st = self.crimes.get(crime_id)
            if st is not None and st.timer == due:
                self._evaluate(crime_id, st, out)

    def _evaluate(self, crime_id: str, st: CrimeState, out: CrimeChanges) -> None:
        recorded = st.recorded_at is not None
        key = (recorded, recorded and not st.seen, st.cancelled, st.cancelled_without_reason)
        if key == (False, False, False, False):
            key = None  # links or notices alone: not a crime we count yet
        if key != st.key:
            if st.key is not None:
                self.agg[st.key] -= 1
                if not self.agg[st.key]:
                    del self.agg[st.key]
            if key is not None:
                self.agg[key] += 1
            st.key = key
        evict_at = st.last_at + self.params.state_retention
        if self.max_time is not None and evict_at <= self.max_time - self.params.allowed_lateness:
            if key is not None:
                self.evicted[key] += 1
            del self.crimes[crime_id]
            out.evicted.add(crime_id)
            out.touched.discard(crime_id)
            return
        out.touched.add(crime_id)
        if st.timer != evict_at:
            st.timer = evict_at
            heapq.heappush(self._heap, (evict_at, crime_id))

    # ------------------------------------------------------------- persistence
    def load(self, states: dict[str, CrimeState], meta: dict | None) -> None:
        if meta:
            self.max_time = meta.get("max_time")
            for k, n in meta.get("evicted", []):
                self.evicted[tuple(k)] += n
                self.agg[tuple(k)] += n
        for crime_id, st in states.items():
            self.crimes[crime_id] = st
            st.key = None
            st.timer = None
            self._evaluate(crime_id, st, self.changes)
        self.changes = CrimeChanges()

    def meta(self) -> dict:
        return {"max_time": self.max_time,
                "evicted": [[list(k), n] for k, n in self.evicted.items()]}

    def totals(self) -> dict[str, int]:
        """The ``crimes`` block of audit.v1 for this ledger."""
        t = {"recorded": 0, "without_incident": 0, "cancelled": 0, "cancelled_without_reason": 0}
        for (recorded, without, cancelled, no_reason), n in self.agg.items():
            t["recorded"] += n * recorded
            t["without_incident"] += n * without
            t["cancelled"] += n * cancelled
            t["cancelled_without_reason"] += n * no_reason
        return t
