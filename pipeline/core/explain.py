"""Why an incident has its status: its events in decision order, what each
changed, and the rule of §3 that decided (for ``GET /incidents/{id}``).

The answer is data (codes, instants in microseconds) plus one plain sentence
per step; the board turns the instants into local times.
"""

from __future__ import annotations

from typing import NamedTuple

from .config import Params
from .incident import IncidentState
from .incidents import IncidentLedger
from .rules import Assessment, is_downgrade, required_point, status_at
from .times import HOUR, format_time
from .vocabulary import AT_RISK, EXEMPT, LATE, NOT_REQUIRED, ON_TIME, OVERDUE, UNOPENED, label

__all__ = ["Step", "explain", "detail"]


class Step(NamedTuple):
    """One event and what it changed."""

    at: int
    event_id: str
    kind: str
    change: str


def explain(st: IncidentState, a: Assessment | None, params: Params, crime_categories: frozenset[str]) -> list[Step]:
    """Each event in decision order with the change it made (§3)."""
    events = st.events
    assert not isinstance(events, bytes)  # the ledger's assess unpacked them
    point = required_point(events, crime_categories) if a is not None else None
    deadline = a.deadline if a is not None and a.required else None
    steps, category = [], None
    for i, ev in enumerate(events):
        after = deadline is not None and point is not None and i > point.position and ev.at > deadline
        if ev.kind in ("opened", "reclassified"):
            category = ev.category
            crime = category in crime_categories
            what = (f"opened as {label(category)}" if ev.kind == "opened" else f"reclassified to {label(category)}")
            what += " (crime-related)" if crime else " (not crime-related)"
            if point is not None and i == point.position:
                since = "the report" if ev.kind == "opened" else "this reclassification"
                what += f"; a crime record is required from {since} at {format_time(point.since)}"
            elif after:
                what += "; after the deadline, so it does not change the outcome"
        else:
            what = f"closed: {label(ev.disposition)}"
            if point is None or i < point.position:
                what += "; before a record was required, so it exempts nothing"
            elif after:
                what += "; after the deadline, so it exempts nothing"
        steps.append(Step(ev.at, ev.event_id, ev.kind, what))
    return steps


def _rule(status: str, a: Assessment | None, w: int | None, params: Params) -> str:
    if status == UNOPENED:
        return "its 'opened' event has not arrived: the incident is not seen yet"
    if status == NOT_REQUIRED:
        return "never crime-related: no crime record is required"
    assert a is not None and a.deadline is not None  # any other status is of a required incident
    d = format_time(a.deadline)
    since = format_time(a.required_since)
    if status in (ON_TIME, LATE):
        when = "by" if status == ON_TIME else "after"
        return (f"required since {since}; the first linked crime was recorded at {format_time(a.recorded_at)}, "
                f"{when} the deadline {d}")
    if status == EXEMPT:
        kind = "a downgrade" if is_downgrade(a.exempt_reason) else "an exemption"
        return f"required since {since}; exempt ({label(a.exempt_reason)}) by the deadline {d}: {kind}"
    if status == OVERDUE:
        return f"required since {since}; no record by the deadline {d}: overdue since {d}"
    left = (a.deadline - w) / HOUR if w is not None else None
    window = f"within {params.at_risk_window / HOUR:g} h of" if status == AT_RISK else "before"
    tail = f" ({left:.1f} h left on the event-time clock)" if left is not None else ""
    return f"required since {since}; no record yet, {window} the deadline {d}{tail}"


def detail(ledger: IncidentLedger, incident_id: str) -> dict | None:
    """The detail of one incident the ledger holds (None when unknown or evicted)."""
    st = ledger.incidents.get(incident_id)
    if st is None:
        return None
    a = ledger.assess(st)
    w = ledger.watermark
    status = UNOPENED if a is None else status_at(a, w, ledger.params)
    steps = explain(st, a, ledger.params, ledger.crime_categories)
    opening = st.opening
    req = a if a is not None and a.required else None  # the assessment of a required incident
    return {
        "incident_id": incident_id,
        "status": status,
        "rule": _rule(status, a, w, ledger.params),
        "required_since": format_time(req.required_since) if req is not None else None,
        "deadline": format_time(req.deadline) if req is not None else None,
        "category": req.category if req is not None else None,
        "district": opening.district if opening else None,
        "channel": opening.channel if opening else None,
        "flags": list(st.flags),
        "exemption_reason": req.exempt_reason if req is not None and status == EXEMPT else None,
        "downgrade": req is not None and status == EXEMPT and is_downgrade(req.exempt_reason),
        "watermark": format_time(w),
        "crimes": [{"crime_id": c, "recorded_at": format_time(t)} for c, t in sorted(st.crimes.items())],
        "alerts": list(st.alerts),
        "events": [{"occurred_at": format_time(s.at), "event_id": s.event_id, "event_type": s.kind,
                    "change": s.change} for s in steps],
    }

