"""audit.v1 from ledger aggregates (contract §4).

The offline audit and the worker's ``/audit`` both build their answer here,
from the same inputs: incident contribution counts, crime totals, event
counts and the watermark. Summing per-partition parts is how a cluster-wide
audit is made, so :class:`AuditParts` adds up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .events import format_time
from .rules import AT_RISK, DOWNGRADE_REASONS, EXEMPT, LATE, NOT_REQUIRED, ON_TIME, OVERDUE, PENDING, UNOPENED, wilson_interval

__all__ = ["AuditParts", "build_audit", "STATUS_FIELDS"]

STATUS_FIELDS = ("required", "recorded_on_time", "recorded_late", "overdue", "pending",
                 "at_risk", "exempt", "downgraded")
_FIELD = {ON_TIME: "recorded_on_time", LATE: "recorded_late", OVERDUE: "overdue",
          PENDING: "pending", AT_RISK: "pending", EXEMPT: "exempt"}


@dataclass
class AuditParts:
    """Additive pieces of an audit: one per partition, summed for the cluster."""

    incident_keys: Counter = field(default_factory=Counter)
    crimes: Counter = field(default_factory=Counter)
    events: dict = field(default_factory=lambda: {"incidents": Counter(), "crimes": Counter()})
    max_time: int | None = None

    def add(self, other: "AuditParts") -> "AuditParts":
        self.incident_keys.update(other.incident_keys)
        self.crimes.update(other.crimes)
        for topic in ("incidents", "crimes"):
            self.events[topic].update(other.events[topic])
        if other.max_time is not None and (self.max_time is None or other.max_time > self.max_time):
            self.max_time = other.max_time
        return self

    def to_json(self) -> dict:
        return {"k": [[list(k), n] for k, n in self.incident_keys.items()],
                "c": dict(self.crimes), "e": {t: dict(c) for t, c in self.events.items()},
                "m": self.max_time}

    @classmethod
    def from_json(cls, d: dict) -> "AuditParts":
        return cls(Counter({tuple(k): n for k, n in d["k"]}), Counter(d["c"]),
                   {t: Counter(c) for t, c in d["e"].items()}, d["m"])


def _status_counts(counter: Counter, status: str, reason: str | None, n: int) -> None:
    counter["required"] += n
    counter[_FIELD[status]] += n
    if status == AT_RISK:
        counter["at_risk"] += n
    if status == EXEMPT and reason in DOWNGRADE_REASONS:
        counter["downgraded"] += n


def build_audit(parts: AuditParts, allowed_lateness_us: int) -> dict:
    """The ``audit.v1`` document for these parts."""
    incidents = Counter({f: 0 for f in ("seen", "unopened") + STATUS_FIELDS})
    by_category: dict[str, Counter] = {}
    for (status, category, _district, _channel, reason), n in parts.incident_keys.items():
        if n == 0:
            continue
        if status == UNOPENED:
            incidents["unopened"] += n
            continue
        incidents["seen"] += n
        if status == NOT_REQUIRED:
            continue
        _status_counts(incidents, status, reason, n)
        cat = by_category.setdefault(category, Counter({f: 0 for f in STATUS_FIELDS}))
        _status_counts(cat, status, reason, n)
    recorded = incidents["recorded_on_time"] + incidents["recorded_late"]
    value, low, high = wilson_interval(recorded, recorded + incidents["overdue"])
    w = None if parts.max_time is None else parts.max_time - allowed_lateness_us
    events = {}
    for topic in ("incidents", "crimes"):
        c = parts.events[topic]
        events[topic] = {"valid": c["valid"], "duplicate": c["duplicate"], "invalid": c["invalid"]}
    return {
        "schema": "audit.v1",
        "watermark": format_time(w),
        "events": events,
        "incidents": {k: incidents[k] for k in ("seen", "unopened") + STATUS_FIELDS},
        "by_category": {c: {k: v[k] for k in STATUS_FIELDS}
                        for c, v in sorted(by_category.items()) if v["required"] > 0},
        "crimes": {k: parts.crimes[k] for k in ("recorded", "without_incident", "cancelled",
                                                "cancelled_without_reason")},
        "recording_rate": {"value": value, "low": low, "high": high},
    }
