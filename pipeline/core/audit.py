"""The audit fold: contributions -> the counts of audit.v1 (contract §4).

One function, :func:`status_fields`, says which audit fields a required
incident's status counts in (``at_risk`` within ``pending``, ``downgraded``
within ``exempt``); :func:`fold` applies it to any grouping of the tally. The
worker's ``/audit``, its metrics, the offline audit and the registrar's
report all count through here, so they cannot disagree.

:class:`AuditParts` is what one partition contributes; parts add up, which
is how a cluster-wide audit is made from every partition's part.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Callable, Hashable, Iterable, Optional

import msgspec

from .rules import Rate, is_downgrade, wilson_interval
from .keys import Contribution, CrimeKey, DayKey
from .times import format_time, watermark
from .vocabulary import (
    AT_RISK, AUDIT_SCHEMA, EXEMPT, LATE, NOT_REQUIRED, ON_TIME, OVERDUE, PENDING, SIDES, UNOPENED,
)

__all__ = ["STATUS_FIELDS", "CRIME_FIELDS", "status_fields", "fold", "recording_rate", "AuditParts",
           "build_audit"]

#: The per-category fields of audit.v1, in the contract's order.
STATUS_FIELDS = ("required", "recorded_on_time", "recorded_late", "overdue", "pending", "at_risk",
                 "exempt", "downgraded")
CRIME_FIELDS = ("recorded", "without_incident", "cancelled", "cancelled_without_reason")
_FIELD = {ON_TIME: "recorded_on_time", LATE: "recorded_late", OVERDUE: "overdue", PENDING: "pending",
          AT_RISK: "pending", EXEMPT: "exempt"}


def status_fields(status: str, reason: str | None = None) -> tuple[str, ...]:
    """The audit fields a required incident in ``status`` counts in.

    ``required = recorded_on_time + recorded_late + overdue + pending + exempt``;
    an at-risk incident is also pending; a downgrade is also exempt.
    """
    fields: tuple[str, ...] = ("required", _FIELD[status])
    if status == AT_RISK:
        fields += ("at_risk",)
    elif status == EXEMPT and is_downgrade(reason):
        fields += ("downgraded",)
    return fields


def fold(contributions: Counter, group: Callable[[Contribution], Hashable]) -> dict[Hashable, Counter]:
    """Status field counts per group of required incidents (unopened and not
    required incidents count in no field)."""
    out: dict[Hashable, Counter] = {}
    for key, n in contributions.items():
        if not n or key.status in (UNOPENED, NOT_REQUIRED):
            continue
        g = group(key)
        counts = out.get(g)
        if counts is None:
            counts = out[g] = Counter(dict.fromkeys(STATUS_FIELDS, 0))
        for f in status_fields(key.status, key.reason):
            counts[f] += n
    return out


def recording_rate(counts: Counter) -> Rate:
    """§4: recorded / (recorded + overdue), recorded = on time + late, with its Wilson interval."""
    recorded = counts["recorded_on_time"] + counts["recorded_late"]
    return wilson_interval(recorded, recorded + counts["overdue"])


@dataclass
class AuditParts:
    """What one partition (or a whole cluster) contributes to the audit: adds up."""

    incidents: Counter = field(default_factory=Counter)   # Contribution -> n
    daily: Counter = field(default_factory=Counter)       # DayKey -> n
    delays: Counter = field(default_factory=Counter)      # delay bucket -> n
    crimes: Counter = field(default_factory=Counter)      # CrimeKey -> n
    events: dict = field(default_factory=lambda: {side: Counter() for side in SIDES})
    max_time: int | None = None

    def add(self, other: "AuditParts") -> "AuditParts":
        self.incidents.update(other.incidents)
        self.daily.update(other.daily)
        self.delays.update(other.delays)
        self.crimes.update(other.crimes)
        for side in SIDES:
            self.events[side].update(other.events[side])
        if other.max_time is not None and (self.max_time is None or other.max_time > self.max_time):
            self.max_time = other.max_time
        return self

    @classmethod
    def total(cls, parts: Iterable["AuditParts"]) -> "AuditParts":
        out = cls()
        for p in parts:
            out.add(p)
        return out

    def encode(self) -> bytes:
        """The parts as JSON (the form workers publish them in for each other)."""
        return _encode_parts(_PartsDoc([(tuple(k), n) for k, n in self.incidents.items()],
                                       [(tuple(k), n) for k, n in self.daily.items()],
                                       list(self.delays.items()),
                                       [(tuple(k), n) for k, n in self.crimes.items()],
                                       {side: dict(c) for side, c in self.events.items()}, self.max_time))

    @classmethod
    def decode(cls, data: bytes) -> "AuditParts":
        """Parts from :meth:`encode`'s JSON; ``msgspec.DecodeError`` (a
        ``ValueError``) for anything else, values of the wrong type included:
        counted as they are, they would break every audit they are added to."""
        d = _decode_parts(data)
        return cls(Counter({Contribution(*k): n for k, n in d.i}), Counter({DayKey(*k): n for k, n in d.d}),
                   Counter(dict(d.l)), Counter({CrimeKey(*k): n for k, n in d.c}),
                   {side: Counter(d.e.get(side, {})) for side in SIDES}, d.m)

    def crime_totals(self) -> dict[str, int]:
        t = dict.fromkeys(CRIME_FIELDS, 0)
        for key, n in self.crimes.items():
            for name, flag in zip(CRIME_FIELDS, key):
                t[name] += n * flag
        return t


_Count = Annotated[int, msgspec.Meta(ge=0)]
_Label = Optional[str]


class _PartsDoc(msgspec.Struct):
    """:class:`AuditParts` as JSON, typed."""

    i: list[tuple[tuple[str, _Label, _Label, _Label, _Label], _Count]]  # Contribution -> n
    d: list[tuple[tuple[int, str], _Count]]                               # DayKey -> n
    l: list[tuple[int, _Count]]                                           # delay bucket -> n  # noqa: E741
    c: list[tuple[tuple[bool, bool, bool, bool], _Count]]                 # CrimeKey -> n
    e: dict[str, dict[str, _Count]]                                       # side -> outcome -> n
    m: Optional[int]                                                      # max event time


_encode_parts = msgspec.json.Encoder().encode
_decode_parts = msgspec.json.Decoder(_PartsDoc).decode


def build_audit(parts: AuditParts, allowed_lateness: int) -> dict:
    """The ``audit.v1`` document for these parts (§4)."""
    seen = unopened = 0
    for key, n in parts.incidents.items():
        if key.status == UNOPENED:
            unopened += n
        else:
            seen += n
    total = fold(parts.incidents, lambda k: None).get(None, Counter(dict.fromkeys(STATUS_FIELDS, 0)))
    by_category = fold(parts.incidents, lambda k: k.category)
    rate = recording_rate(total)
    events = {side: {o: parts.events[side][o] for o in ("valid", "duplicate", "invalid")} for side in SIDES}
    return {
        "schema": AUDIT_SCHEMA,
        "watermark": format_time(watermark(parts.max_time, allowed_lateness)),
        "events": events,
        "incidents": {"seen": seen, "unopened": unopened, **{f: total[f] for f in STATUS_FIELDS}},
        "by_category": {c: {f: v[f] for f in STATUS_FIELDS}
                        for c, v in sorted(by_category.items()) if v["required"] > 0},
        "crimes": parts.crime_totals(),
        "recording_rate": rate._asdict(),
    }
