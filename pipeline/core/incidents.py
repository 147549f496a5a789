"""The incident ledger: incident events, crime links and watermark moves in;
statuses, alerts and counts out (contract §3, §4).

Responsibilities:
- keep each incident's state (:class:`~pipeline.core.incident.IncidentState`:
  its events in decision order, linked crimes' recording times, alerts
  already sent), keyed by incident id, so the stream
  layer can hold one ledger per partition and persist the states it touched;
- keep the watermark (:func:`~pipeline.core.times.watermark`) and a deadline
  index: a heap of the next watermark at which an incident's status changes
  by time alone, so a watermark move touches only the incidents that are due;
- keep the audit aggregates incrementally (:mod:`~pipeline.core.tally`);
- evict incidents ``state_retention`` after their last activity and deadline;
  their contribution stays counted.

When it evaluates, same rules either way. *Eager* evaluates an incident on
every change (the reference the property tests compare with). *Deferred* records inputs and evaluates the changed incidents
only when :meth:`IncidentLedger.settle` is called: a status depends only on
the events, the crimes and the watermark, never on the path taken
(property-tested). The workers defer to the end of each stage record (an
incident's several messages in one record are evaluated once; alerts go out
after the batch anyway); the offline audit to the end of a read batch.
What it puts out is a second choice, ``outputs``: a worker's ledger keeps
what the board, the alerts and the metrics need; the offline audit's keeps
none of it, and holds a quiet incident's events packed
(:mod:`~pipeline.core.packed`) until an input touches it again.
It never reads a clock, a topic or a file.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

from msgspec.structs import force_setattr

from .config import Params, Vocabulary
from .events import Alert, IncidentEvent, Link, Notice
from .incident import NO_CRIMES, BoardEntry, IncidentState, opening_of
from .packed import pack, unpack
from .rules import Assessment, alert_kind, assess, is_downgrade, next_change, status_at
from .tally import IncidentTally, Moves
from .timers import Timers
from .times import watermark
from .vocabulary import EXEMPT, MAX_EVENTS_PER_INCIDENT, OPEN_STATUSES, UNOPENED, StateLimit

__all__ = ["IncidentLedger", "IncidentChanges"]

_NEVER: Final = -(1 << 63)


@dataclass(slots=True)
class IncidentChanges:
    """What the ledger decided since the shell last drained it."""

    alerts: list = field(default_factory=list)       # Alert
    moves: Moves = field(default_factory=Moves)      # contribution moves, for metrics
    notices: list = field(default_factory=list)      # Notice: a linked incident is seen
    touched: set = field(default_factory=set)        # incident ids whose state changed
    evicted: set = field(default_factory=set)        # incident ids forgotten


class IncidentLedger:
    """Per-incident state, watermark, deadline index and tally (see the module doc)."""

    def __init__(self, params: Params, vocabulary: Vocabulary, deferred: bool = False,
                 outputs: bool | None = None) -> None:
        """``outputs`` (default: not ``deferred``): decide alerts, keep the board's
        ``required_since``, count moves and touched states; without them (the
        offline audit), pack quiet incidents and keep coarse timers."""
        self.params = params
        self.crime_categories = frozenset(vocabulary.crime_categories)
        self.deferred = deferred
        self.outputs = outputs = (not deferred) if outputs is None else outputs
        self.tally = IncidentTally(vocabulary.districts)
        self.incidents: dict[str, IncidentState] = {}
        self.max_time: int | None = None
        self.changes = IncidentChanges()
        self._timers = Timers(coarse=not outputs)  # the offline ledger asks only at a settle, for no alert
        self._dirty: dict[str, IncidentState] = {}  # deferred mode: changed since the last settle
        self._w: int | None = None            # the watermark, kept with max_time (read per event)
        self._retained_after = _NEVER          # deferred mode: an incident idle up to here may be evicted
        # One copy of each configured name (categories, districts): see _share.
        self._names = {name: name for name in (*vocabulary.categories, *vocabulary.districts)}

    @property
    def watermark(self) -> int | None:
        return self._w

    def _set_max_time(self, t: int | None) -> None:
        self.max_time = t
        self._w = w = watermark(t, self.params.allowed_lateness)
        if w is not None:
            self._retained_after = w - self.params.state_retention

    def drain(self) -> IncidentChanges:
        """What happened since the last drain; starts a new collection."""
        out, self.changes = self.changes, IncidentChanges()
        return out

    # ------------------------------------------------------------------ inputs
    def apply(self, ev: IncidentEvent) -> bool:
        """Apply one valid incident event; False when this incident already
        has its ``event_id`` (nothing changes then)."""
        incident_id = ev.incident_id
        st = self.incidents.get(incident_id)
        if st is not None and self.deferred:
            st = self._held(incident_id, st)
        if st is None:  # one slot: most incidents are evicted with the one event they have
            self._share(ev, None)
            st = self.incidents[incident_id] = IncidentState([ev], None, (), NO_CRIMES)
            was_seen = False
        else:
            events = st.events
            assert not isinstance(events, bytes)  # _held unpacked them
            if st.has_event(ev.event_id):
                return False
            self._share(ev, events[0].incident_id if events else None)
            if len(events) >= MAX_EVENTS_PER_INCIDENT:
                raise StateLimit(f"incident {incident_id[:80]!r} already has {len(events):,} events, the most "
                                 f"one incident may hold; event {ev.event_id[:80]!r} not applied")
            was_seen = st.opening is not None
            if not events:
                st.events = [ev]
            elif len(events) == 1:  # a list made to size: an append would leave room for 8 (72 bytes, not 120)
                st.events = [events[0], ev] if ev > events[0] else [ev, events[0]]
            elif ev > events[-1]:
                events.append(ev)
            else:
                bisect.insort(events, ev)
        at, flags = ev.at, ev.flags  # read once: compiled, each read of a msgspec field is a generic lookup
        if at > st.last:
            st.last = at
        if ev.kind == "opened" and (st.opening is None or ev < st.opening):  # (time, event id) decide
            st.opening = ev
        if flags and not set(flags).issubset(st.flags):
            st.flags = tuple(sorted({*st.flags, *flags}))
        if not was_seen and st.opening is not None and st.crimes:
            self.changes.notices.extend(Notice(c, incident_id) for c in st.crimes)
        if self.max_time is None or at > self.max_time:  # observe(ev.at), its check made here
            self._set_max_time(at)
            if not self.deferred:
                self._due()
        if self.deferred:
            self._dirty[incident_id] = st
        else:
            self._evaluate(incident_id, st)
        return True

    def _share(self, ev: IncidentEvent, incident_id: str | None) -> None:
        """Make a kept event hold the one copy of its incident id (the one its
        incident's other events hold), category and district. Decoding gives
        every event its own copies (a stage message, a changelog state, the
        offline reader's batch): a fifth of what an open incident costs. Each
        string is replaced by an equal one, so nothing the event means or
        compares changes. Only configured names are shared: a table of whatever
        districts the input brings would grow without bound."""
        if incident_id is not None and ev.incident_id is not incident_id:
            force_setattr(ev, "incident_id", incident_id)
        names = self._names
        category, district = ev.category, ev.district  # None but in opened and reclassified events
        if category is not None and names.get(category, category) is not category:
            force_setattr(ev, "category", names[category])
        if district is not None and names.get(district, district) is not district:
            force_setattr(ev, "district", names[district])

    def link(self, link: Link) -> None:
        """A crime links this incident (or its recording time moved earlier)."""
        incident_id, crime_id, recorded_at = link.incident_id, link.crime_id, link.recorded_at
        st = self.incidents.get(incident_id)
        if st is not None and self.deferred:
            st = self._held(incident_id, st)
        if st is None:
            st = self.incidents[incident_id] = IncidentState()
        known = crime_id in st.crimes
        old = st.crimes.get(crime_id)
        if known and (recorded_at is None or (old is not None and old <= recorded_at)):
            return
        if st.crimes is NO_CRIMES:
            st.crimes = {}
        st.crimes[crime_id] = recorded_at
        if recorded_at is not None and recorded_at > st.last:
            st.last = recorded_at
        if not known and st.opening is not None:
            self.changes.notices.append(Notice(crime_id, incident_id))
        if self.deferred:
            self._dirty[incident_id] = st
        else:
            self._evaluate(incident_id, st)

    def observe(self, event_time: int | None) -> None:
        """Some valid event somewhere happened at ``event_time``: the watermark may move."""
        if event_time is None or (self.max_time is not None and event_time <= self.max_time):
            return
        self._set_max_time(event_time)
        if not self.deferred:
            self._due()

    def settle(self) -> None:
        """Deferred mode: evaluate every incident that changed, then those whose
        timers the watermark has reached."""
        dirty, self._dirty = self._dirty, {}
        evaluate = self._evaluate
        for incident_id, st in dirty.items():
            evaluate(incident_id, st)
        self._due()

    # --------------------------------------------------------------- internals
    def _held(self, incident_id: str, st: IncidentState) -> IncidentState | None:
        """Deferred mode: the incident's state for an input, its events unpacked
        (:mod:`~pipeline.core.packed`), or None when its retention has passed
        (it evicts lazily: it checks here what eager mode's timers did already)."""
        if st.last <= self._retained_after:
            self._dirty.pop(incident_id, None)
            self._evaluate(incident_id, st)
            if incident_id not in self.incidents:
                return None
        if type(st.events) is bytes:
            self._unpack(st)
        return st

    def _unpack(self, st: IncidentState) -> None:
        packed = st.events
        assert isinstance(packed, bytes)
        st.events = events = unpack(packed)
        share, first = self._share, events[0].incident_id
        for ev in events:
            share(ev, first)
        st.opening = opening_of(events)

    def events_of(self, incident_id: str) -> list[IncidentEvent]:
        """The incident's events in decision order (none when it is not held)."""
        st = self.incidents.get(incident_id)
        if st is None:
            return []
        if type(st.events) is bytes:
            self._unpack(st)
        events = st.events
        assert not isinstance(events, bytes)
        return events

    def _due(self) -> None:
        w = self.watermark
        if w is None:
            return
        incidents = self.incidents
        for due, incident_id in self._timers.due(w):
            st = incidents.get(incident_id)
            if st is not None and st.timer == due:
                st.timer = None
                if st.evicts:  # nothing changed since its last evaluation, and time alone changes nothing
                    self._evict(incident_id, st)
                else:
                    self._evaluate(incident_id, st)

    def assess(self, st: IncidentState) -> Assessment | None:
        """§3 applied to a seen incident (None when its ``opened`` has not arrived)."""
        if type(st.events) is bytes:
            self._unpack(st)
        events = st.events
        if st.opening is None:
            return None
        assert not isinstance(events, bytes)  # unpacked above
        return assess(events, st.crimes.values(), self.params, self.crime_categories)

    def _evaluate(self, incident_id: str, st: IncidentState) -> None:
        """Recompute one incident: tally, alerts, timer, eviction."""
        w = self._w
        p = self.params
        a = self.assess(st)
        if self.outputs:  # the board reads it; the offline audit has no board
            st.required_since = None if a is None else a.required_since
        status: str | None  # None: nothing of the incident is seen (a link alone)
        seen: str | None = None  # the status of a seen incident (a is not None)
        if a is None:
            status = UNOPENED if st.events else None
        else:
            status = seen = status_at(a, w, p)
        evict_at = st.last + p.state_retention
        if a is not None and a.deadline is not None:
            evict_at = max(evict_at, a.deadline + p.state_retention)
        # offline, nobody counts the moves (no metrics)
        self.tally.move(st, status, a, self.changes.moves if self.outputs else None)
        if w is not None and evict_at <= w:
            self._evict(incident_id, st)
            return
        if self.outputs:
            self.changes.touched.add(incident_id)
            if a is not None and seen is not None:
                kind = alert_kind(seen, a.exempt_reason, st.alerts)
                if kind is not None:
                    self._alert(incident_id, st, a, seen, kind)
        due = next_change(a, seen, p) if a is not None and seen is not None else None
        st.evicts = evicts = due is None or due > evict_at
        events = st.events  # a list: assess unpacked them
        if evicts and not self.outputs and events and not isinstance(events, bytes):  # quiet until evicted: see packed
            st.events, st.opening = pack(events), None
        timer = due if due is not None and not evicts else evict_at
        if timer != st.timer:
            st.timer = timer
            timers = self._timers
            timers.add(timer, incident_id)
            if len(timers) > 2 * len(self.incidents) + 1024:
                timers.reset((s.timer, i) for i, s in self.incidents.items() if s.timer is not None)

    def _evict(self, incident_id: str, st: IncidentState) -> None:
        """Forget the incident; what it contributed stays counted."""
        self.tally.evict(st)
        del self.incidents[incident_id]
        if self.outputs:
            self.changes.evicted.add(incident_id)
            self.changes.touched.discard(incident_id)

    def _alert(self, incident_id: str, st: IncidentState, a: Assessment, status: str, kind: str) -> None:
        """Decide one alert: each kind once per incident (``st.alerts`` remembers)."""
        st.alerts += (kind,)
        opening = st.opening
        assert opening is not None and a.required_since is not None and a.deadline is not None  # required: seen
        self.changes.alerts.append(Alert(
            kind, incident_id, a.category, opening.district, opening.channel, st.flags,
            a.required_since, a.deadline, self.watermark,
            tuple(sorted(c for c, t in st.crimes.items() if t is not None)),
            status if kind == "resolved" else None,
        ))

    def board_entry(self, incident_id: str) -> BoardEntry | None:
        """The incident as ``/incidents`` lists it, or None when it needs no one's attention."""
        st = self.incidents.get(incident_id)
        key = None if st is None else st.key
        if st is None or key is None:
            return None
        status = key.status
        if status in OPEN_STATUSES:
            reason = None
        elif status == EXEMPT and is_downgrade(key.reason):
            status, reason = "downgraded", key.reason
        else:
            return None
        since, opening = st.required_since, st.opening
        assert since is not None and opening is not None  # open or downgraded: required, so seen
        return BoardEntry(incident_id, status, key.category, opening.district, opening.channel, st.flags,
                          since, since + self.params.recording_deadline, reason)

    # ------------------------------------------------------------- persistence
    def load(self, states: dict[str, IncidentState], meta: dict | None) -> None:
        """Rebuild from persisted states and the partition's meta (watermark
        source, evicted tallies). Statuses are recomputed, not trusted."""
        if meta:
            self._set_max_time(meta.get("max_time"))
            self.tally.restore_evicted(meta.get("evicted"))
        for incident_id, st in states.items():
            self.incidents[incident_id] = st
            st.key = None
            st.timer = None
            self._evaluate(incident_id, st)
        self.changes.moves.clear()
        self.changes.touched.clear()

    def meta(self) -> dict:
        return {"max_time": self.max_time, "evicted": self.tally.evicted_json()}
