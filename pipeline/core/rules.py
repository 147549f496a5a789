"""The decision rules of contract §3, as pure functions, one per rule.

They take one incident's events in decision order (``occurred_at``, then
``event_id``: the order :class:`~pipeline.core.events.IncidentEvent` sorts in)
and its linked crimes' recording times, and return plain values. Nothing here
reads a clock, a topic or a file; :mod:`~pipeline.core.incidents` calls them
whenever an incident's inputs or the watermark change, so any arrival order
of the same events gives the same statuses (the property tests check it).

All times are integer microseconds since the Unix epoch.
"""

from __future__ import annotations

import math
from typing import Final, Iterable, NamedTuple, Sequence

from .config import Params
from .events import IncidentEvent
from .vocabulary import (
    AT_RISK, DOWNGRADE_REASONS, EXEMPT, EXEMPT_DISPOSITIONS, LATE, NOT_REQUIRED, ON_TIME, OVERDUE,
    PENDING, RECLASSIFIED_NON_CRIME,
)

__all__ = ["Assessment", "Requirement", "Rate", "assess", "required_point", "replayed_until",
           "exemption", "label_category", "recording", "status_at", "next_change", "is_at_risk",
           "is_downgrade", "alert_kind", "wilson_interval", "WILSON_Z"]

WILSON_Z: Final = 1.959963984540054


class Requirement:
    """Where an incident became required: that event's position and ``required_since``.

    This and :class:`Assessment` are plain classes, not NamedTuples: one of
    each is made per evaluation of an incident, and compiled, a plain class is
    built by a native call and its fields read natively, where a NamedTuple's
    ``__new__`` is interpreted (~2,600 instructions each)."""

    __match_args__ = ("position", "since")

    def __init__(self, position: int, since: int) -> None:
        self.position = position
        self.since = since

    def __repr__(self) -> str:
        return f"Requirement(position={self.position!r}, since={self.since!r})"


class Assessment:
    """What an incident's events and crimes say, independent of the watermark.

    ``required_since``/``deadline`` are None when it is not required;
    ``recorded_at`` is the earliest recording time of a linked crime.
    Never changed once made.
    """

    __match_args__ = ("required", "required_since", "deadline", "category", "exempt_reason", "recorded_at")

    def __init__(self, required: bool, required_since: int | None = None, deadline: int | None = None,
                 category: str | None = None, exempt_reason: str | None = None,
                 recorded_at: int | None = None) -> None:
        self.required = required
        self.required_since = required_since
        self.deadline = deadline
        self.category = category
        self.exempt_reason = exempt_reason
        self.recorded_at = recorded_at

    def __repr__(self) -> str:
        return (f"Assessment(required={self.required!r}, required_since={self.required_since!r}, "
                f"deadline={self.deadline!r}, category={self.category!r}, "
                f"exempt_reason={self.exempt_reason!r}, recorded_at={self.recorded_at!r})")


class Rate(NamedTuple):
    """A proportion and its 95% Wilson interval; all None when nothing was counted."""

    value: float | None
    low: float | None
    high: float | None


NOT_REQUIRED_ASSESSMENT: Final = Assessment(required=False)


def required_point(events: Sequence[IncidentEvent], crime_categories: frozenset[str]) -> Requirement | None:
    """§3 "required": the first event after which the category is crime-related.

    ``required_since`` is that event's ``reported_at`` when it is ``opened``,
    else its ``occurred_at``. Only ``opened`` and ``reclassified`` carry a category.
    """
    for i, ev in enumerate(events):
        category = ev.category
        if category is not None and category in crime_categories:
            reported_at = ev.reported_at  # set on opened events only
            return Requirement(i, reported_at if ev.kind == "opened" and reported_at is not None else ev.at)
    return None


def replayed_until(events: Sequence[IncidentEvent], point: Requirement, deadline: int) -> int:
    """§3 exemption replay: the events up to the one that made the incident
    required, then the later ones with ``occurred_at <= D``. Returns the end index."""
    upto = point.position + 1
    n = len(events)
    while upto < n and events[upto].at <= deadline:
        upto += 1
    return upto


def exemption(events: Sequence[IncidentEvent], upto: int, first: int,
              crime_categories: frozenset[str]) -> str | None:
    """§3 exemption reason from the replayed events ``events[:upto]``.

    Checked in order: the category is no longer crime-related
    (``reclassified_non_crime``); else the last ``closed`` event at or after
    the one that made it required (index ``first``) has an exempting disposition.
    """
    category = None
    last_close = None
    for i in range(upto):
        ev = events[i]
        if ev.category is not None:
            category = ev.category
        elif ev.kind == "closed" and i >= first:
            last_close = ev.disposition
    if category not in crime_categories:
        return RECLASSIFIED_NON_CRIME
    if last_close in EXEMPT_DISPOSITIONS:
        return last_close
    return None


def is_downgrade(reason: str | None) -> bool:
    """§3: an exemption for ``reclassified_non_crime`` or ``no_crime`` is a downgrade."""
    return reason in DOWNGRADE_REASONS


def label_category(events: Sequence[IncidentEvent], upto: int, crime_categories: frozenset[str]) -> str | None:
    """§3: the incident's category is the last crime-related one among the replayed events."""
    label = None
    for i in range(upto):
        category = events[i].category
        if category is not None and category in crime_categories:
            label = category
    return label


def recording(record_times: Iterable[int | None]) -> int | None:
    """§2: the earliest recording time among the linked crimes (None: no record yet)."""
    best = None
    for t in record_times:
        if t is not None and (best is None or t < best):
            best = t
    return best


def assess(events: Sequence[IncidentEvent], record_times: Iterable[int | None], params: Params,
           crime_categories: frozenset[str]) -> Assessment:
    """Apply §3 to one seen incident (``events`` in decision order)."""
    point = required_point(events, crime_categories)
    if point is None:
        return NOT_REQUIRED_ASSESSMENT
    deadline = point.since + params.recording_deadline
    upto = replayed_until(events, point, deadline)
    return Assessment(True, point.since, deadline, label_category(events, upto, crime_categories),
                      exemption(events, upto, point.position, crime_categories), recording(record_times))


def is_at_risk(deadline: int, w: int, params: Params) -> bool:
    """§3: a pending incident is at risk when ``D - W <= at_risk_window``."""
    return deadline - w <= params.at_risk_window


def status_at(a: Assessment, w: int | None, params: Params) -> str:
    """§3 status of a seen incident at watermark ``w``; the first match wins."""
    deadline = a.deadline
    if not a.required or deadline is None:  # a required assessment has its deadline
        return NOT_REQUIRED
    if a.recorded_at is not None:
        return ON_TIME if a.recorded_at <= deadline else LATE
    if a.exempt_reason is not None:
        return EXEMPT
    if w is not None and deadline <= w:
        return OVERDUE
    if w is not None and is_at_risk(deadline, w, params):
        return AT_RISK
    return PENDING


def next_change(a: Assessment, status: str, params: Params) -> int | None:
    """The watermark at which this status changes by the passing of time alone."""
    deadline = a.deadline
    if deadline is None:  # not required: nothing changes
        return None
    if status == PENDING:
        return deadline - params.at_risk_window
    if status == AT_RISK:
        return deadline
    return None


def alert_kind(status: str, exempt_reason: str | None, sent: tuple[str, ...]) -> str | None:
    """§4: the alert this status calls for, if not ``sent`` yet.

    ``at_risk`` on entering the window; ``overdue`` when W passes D unrecorded;
    ``resolved`` when a record arrives for an incident that was overdue;
    ``downgraded`` when exempted by a downgrade while unrecorded.
    """
    kind: str | None
    if status == AT_RISK:
        kind = "at_risk"
    elif status == OVERDUE:
        kind = "overdue"
    elif status == ON_TIME or status == LATE:
        kind = "resolved" if "overdue" in sent else None
    elif status == EXEMPT and is_downgrade(exempt_reason):
        kind = "downgraded"
    else:
        return None
    return None if kind is None or kind in sent else kind


def wilson_interval(successes: int, total: int, z: float = WILSON_Z) -> Rate:
    """§4 recording rate and its Wilson score interval (no continuity correction, clamped)."""
    if total <= 0:
        return Rate(None, None, None)
    p = successes / total
    z2 = z * z
    denom = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    # The exact interval always contains p; at p = 0 or 1 rounding would leave it just outside.
    return Rate(p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))

