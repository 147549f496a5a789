"""The decision rules of contract §3, as pure functions.

Each rule is one function named for it. They take an incident's events in
event-time order and its linked crimes' recording times and return plain
values; nothing here reads a clock, a topic or a file. ``ledger.py`` calls
them whenever an incident's inputs or the watermark change, so any arrival
order of the same events yields the same statuses (the property tests check it).

All times are integer microseconds since the Unix epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

__all__ = [
    "Params", "Entry", "Assessment", "assess", "status_at", "watermark",
    "wilson_interval", "DOWNGRADE_REASONS", "EXEMPT_DISPOSITIONS",
    "ON_TIME", "LATE", "EXEMPT", "OVERDUE", "PENDING", "AT_RISK", "NOT_REQUIRED", "UNOPENED",
]

US = 1_000_000

# Status codes. ``AT_RISK`` is a pending incident inside the at-risk window.
UNOPENED = "unopened"
NOT_REQUIRED = "not_required"
ON_TIME = "on_time"
LATE = "late"
EXEMPT = "exempt"
OVERDUE = "overdue"
PENDING = "pending"
AT_RISK = "at_risk"

EXEMPT_DISPOSITIONS = frozenset({"no_crime", "transferred", "duplicate"})
DOWNGRADE_REASONS = frozenset({"reclassified_non_crime", "no_crime"})
WILSON_Z = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Params:
    """Decision parameters (contract §3), in microseconds."""

    recording_deadline: int = 24 * 3600 * US
    allowed_lateness: int = 10 * 60 * US
    at_risk_window: int = 4 * 3600 * US
    state_retention: int = 30 * 86400 * US
    crime_categories: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, s) -> "Params":
        return cls(int(s.recording_deadline * US), int(s.allowed_lateness * US),
                   int(s.at_risk_window * US), int(s.state_retention * US),
                   frozenset(s.crime_categories))


# One incident event as the ledger stores it (a tuple: compact, JSON-friendly).
# (at, event_id, kind, category, disposition, reported_at)
Entry = tuple


class Assessment(NamedTuple):
    """What an incident's events say, independent of the watermark.

    ``deadline``/``required_since`` are None when the incident is not required.
    ``recorded_at`` is the earliest recording time of a linked crime.
    (A NamedTuple: one is made per evaluation, and tuples are the cheapest.)
    """

    required: bool
    required_since: int | None = None
    deadline: int | None = None
    category: str | None = None
    exempt_reason: str | None = None
    recorded_at: int | None = None


_NOT_REQUIRED = Assessment(required=False)


def watermark(max_event_time: int | None, params: Params) -> int | None:
    """W = greatest valid ``occurred_at`` minus ``allowed_lateness`` (§3)."""
    return None if max_event_time is None else max_event_time - params.allowed_lateness


def required_point(entries: Sequence[Entry], crime: frozenset[str]) -> tuple[int, int] | None:
    """Index of the event after which the category is first crime-related, and
    ``required_since``: ``reported_at`` for an ``opened`` event, else its time (§3)."""
    category = None
    for i, (at, _eid, kind, cat, _disp, reported_at) in enumerate(entries):
        if cat is not None:  # only opened and reclassified carry a category
            category = cat
            if category in crime:
                return i, (reported_at if kind == "opened" else at)
    return None


def exemption(entries: Sequence[Entry], upto: int, first: int, crime: frozenset[str]) -> str | None:
    """Exemption reason from the replayed events ``entries[:upto]`` (§3).

    ``first`` is the index of the event that made the incident required; a
    ``closed`` event before it does not count. Checked in order: category no
    longer crime-related, then the last closing disposition.
    """
    category = None
    last_close = None
    for i in range(upto):
        _at, _eid, kind, cat, disp, _rep = entries[i]
        if cat is not None:
            category = cat
        elif kind == "closed" and i >= first:
            last_close = disp
    if category not in crime:
        return "reclassified_non_crime"
    if last_close in EXEMPT_DISPOSITIONS:
        return last_close
    return None


def label_category(entries: Sequence[Entry], upto: int, crime: frozenset[str]) -> str | None:
    """The last crime-related category among the replayed events (§3)."""
    label = None
    for i in range(upto):
        cat = entries[i][3]
        if cat is not None and cat in crime:
            label = cat
    return label


def assess(entries: Sequence[Entry], record_times: Iterable[int | None], params: Params) -> Assessment:
    """Apply §3 to one seen incident: ``entries`` sorted by (occurred_at, event_id)."""
    crime = params.crime_categories
    point = required_point(entries, crime)
    if point is None:
        return _NOT_REQUIRED
    first, since = point
    deadline = since + params.recording_deadline
    upto = first + 1
    n = len(entries)
    while upto < n and entries[upto][0] <= deadline:
        upto += 1
    recorded = [t for t in record_times if t is not None]
    return Assessment(
        required=True,
        required_since=since,
        deadline=deadline,
        category=label_category(entries, upto, crime),
        exempt_reason=exemption(entries, upto, first, crime),
        recorded_at=min(recorded) if recorded else None,
    )


def status_at(a: Assessment, w: int | None, params: Params) -> str:
    """Status of a seen incident at watermark ``w``; first match wins (§3)."""
    if not a.required:
        return NOT_REQUIRED
    if a.recorded_at is not None:
        return ON_TIME if a.recorded_at <= a.deadline else LATE
    if a.exempt_reason is not None:
        return EXEMPT
    if w is not None and a.deadline <= w:
        return OVERDUE
    if w is not None and a.deadline - w <= params.at_risk_window:
        return AT_RISK
    return PENDING


def next_change(a: Assessment, status: str, params: Params) -> int | None:
    """The watermark at which this incident's status changes by time alone."""
    if status == PENDING:
        return a.deadline - params.at_risk_window
    if status == AT_RISK:
        return a.deadline
    return None


def wilson_interval(successes: int, total: int, z: float = WILSON_Z) -> tuple[float | None, float | None, float | None]:
    """Rate and its Wilson score interval, no continuity correction, clamped (§4)."""
    if total <= 0:
        return None, None, None
    p = successes / total
    z2 = z * z
    denom = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    # The exact interval always contains p; at p = 0 or 1 rounding would leave it just outside.
    return p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
