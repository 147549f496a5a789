"""One incident as the incident ledger holds it (:class:`IncidentState`), and
as a control room sees it (:class:`BoardEntry`). The rules that decide its
status are in :mod:`~pipeline.core.rules`; the ledger that keeps many is
:mod:`~pipeline.core.incidents`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from .events import IncidentEvent
from .keys import Contribution, DayKey

__all__ = ["IncidentState", "BoardEntry", "opening_of", "NO_CRIMES"]

NO_CRIMES: Final[dict[str, int | None]] = {}  # shared by every incident no crime links yet; replaced, never written to


def opening_of(events: list[IncidentEvent]) -> IncidentEvent | None:
    """An incident's opening: its first ``opened`` event, by time then event id (§3)."""
    opened = [ev for ev in events if ev.kind == "opened"]
    return min(opened) if opened else None


class BoardEntry(NamedTuple):
    """An incident a control room must see: open (overdue, at risk, pending) or
    downgraded while unrecorded. What ``/incidents`` lists."""

    incident_id: str
    status: str  # overdue | at_risk | pending | downgraded
    category: str | None
    district: str | None
    channel: str | None
    flags: tuple[str, ...]
    required_since: int
    deadline: int
    reason: str | None  # the exemption reason of a downgrade


class IncidentState:
    """What the ledger remembers of one incident id.

    Persisted: ``events`` (sorted, decision order), ``flags`` (sorted,
    unique), ``crimes`` (crime id -> recording time or None) and ``alerts``
    (kinds sent). The rest is derived and rebuilt on load: ``opening`` is the
    first ``opened`` event (by time, then event id), one of ``events``.

    A worker holds one of these per open incident (hundreds of thousands), so
    what most incidents never fill stays shared until it is: ``flags`` and
    ``alerts`` are tuples (usually the empty one), ``crimes`` the shared empty
    dict until a crime links the incident.

    The offline audit's deferred ledger holds a quiet incident's ``events``
    packed, as ``bytes``, with ``opening`` None, until it unpacks them
    (:mod:`~pipeline.core.packed`); workers never see that form.
    """

    # A plain class with its own __init__, not a dataclass: compiled, a
    # dataclass's generated __init__ stays interpreted (3,000 instructions per
    # new incident, 2% of a worker's work).
    def __init__(self, events: list[IncidentEvent] | bytes | None = None, opening: IncidentEvent | None = None,
                 flags: tuple[str, ...] = (), crimes: dict[str, int | None] | None = None,
                 alerts: tuple[str, ...] = ()) -> None:
        self.events: list[IncidentEvent] | bytes = [] if events is None else events
        self.opening = opening
        self.flags = flags
        self.crimes: dict[str, int | None] = NO_CRIMES if crimes is None else crimes
        self.alerts = alerts
        # derived
        self.key: Contribution | None = None
        self.day: DayKey | None = None
        self.delay: int | None = None           # tally delay bucket
        self.required_since: int | None = None  # eager mode: the board's and the alerts' §3 point (deadline = it + 24 h)
        self.timer: int | None = None
        self.evicts = False  # the timer is the eviction: no status change by time comes before it
        self.last = 0  # latest event or recording time, for eviction

    def __repr__(self) -> str:
        return f"IncidentState(events={self.events!r}, crimes={self.crimes!r}, alerts={self.alerts!r})"

    def persisted(self) -> tuple:
        return (self.events, self.flags, self.crimes, self.alerts)

    @classmethod
    def restore(cls, t: tuple) -> "IncidentState":
        events, flags, crimes, alerts = t
        st = cls(list(events), opening_of(events), tuple(flags), dict(crimes) if crimes else NO_CRIMES, tuple(alerts))
        st.last = st.last_activity()
        return st

    def has_event(self, event_id: str) -> bool:
        events = self.events
        assert not isinstance(events, bytes)  # the ledger unpacks before it applies
        for ev in events:
            if ev.event_id == event_id:
                return True
        return False

    def last_activity(self) -> int:
        events = self.events
        assert not isinstance(events, bytes)  # restored states are never packed
        last = max((ev.at for ev in events), default=0)
        return max([last] + [t for t in self.crimes.values() if t is not None])

    @property
    def status(self) -> str | None:
        return None if self.key is None else self.key.status
