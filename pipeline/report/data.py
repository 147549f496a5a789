"""The registrar's report, as data: what inspectors publish, from the audit's parts.

Recording rate with its 95% interval by crime type (most harmful first) and
by channel, with columns that add up (``required = on time + late + overdue
+ pending + exempt``; ``downgraded`` within ``exempt``, ``at risk`` within
``pending``); the recording delay distribution against the 24-hour line; the
daily picture over the period; downgrades by category. The same data feeds
the text table, the HTML report and ``GET /report``, offline or live.
Counting goes through the audit fold (:func:`pipeline.core.audit.fold`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..core.audit import STATUS_FIELDS, AuditParts, build_audit, fold, recording_rate
from ..core.config import CoreConfig
from ..core.tally import DELAY_EDGES_H
from ..core.vocabulary import HIGH_HARM_CATEGORIES, LATE, ON_TIME, OVERDUE, PENDING, AT_RISK, EXEMPT, label

__all__ = ["report_data", "category_order", "REPORT_SCHEMA", "ROW_FIELDS"]

REPORT_SCHEMA = "report.v1"
#: Columns of a report row, in the order they add up.
ROW_FIELDS = ("required", "recorded_on_time", "recorded_late", "overdue", "pending", "exempt", "at_risk",
              "downgraded")
_DAY_FIELD = {ON_TIME: "recorded_on_time", LATE: "recorded_late", OVERDUE: "overdue", PENDING: "pending",
              AT_RISK: "pending", EXEMPT: "exempt"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def category_order(categories, crime_categories) -> list[str]:
    """Most harmful first (the inspectors' order), then the rest as configured."""
    known = [c for c in HIGH_HARM_CATEGORIES if c in categories]
    rest = [c for c in crime_categories if c in categories and c not in known]
    return known + rest + sorted(c for c in categories if c not in known and c not in rest)


def _row(name: str, counts) -> dict:
    rate = recording_rate(counts)
    return {"name": name, "label": label(name), **{f: counts[f] for f in ROW_FIELDS},
            "rate": rate.value, "low": rate.low, "high": rate.high}


def _delay_label(i: int) -> str:
    if i == 0:
        return f"< {DELAY_EDGES_H[0]} h"
    if i == len(DELAY_EDGES_H):
        return f"≥ {DELAY_EDGES_H[-1]} h"
    return f"{DELAY_EDGES_H[i - 1]}–{DELAY_EDGES_H[i]} h"


def report_data(parts: AuditParts, config: CoreConfig) -> dict:
    """The report of these parts (see the module doc)."""
    audit = build_audit(parts, config.params.allowed_lateness)
    by_category = fold(parts.incidents, lambda k: k.category)
    by_channel = fold(parts.incidents, lambda k: k.channel)
    total = fold(parts.incidents, lambda k: None).get(None)
    order = category_order(by_category, config.vocabulary.crime_categories)
    channels = [c for c in ("999", "101", "online", "walk_in", "public_protection", "partner_agency", "other")
                if c in by_channel] + sorted(c for c in by_channel if c not in
                                             ("999", "101", "online", "walk_in", "public_protection",
                                              "partner_agency", "other"))
    deadline_h = config.params.recording_deadline / 3.6e9
    delays = [{"bucket": _delay_label(i), "upper_hours": DELAY_EDGES_H[i] if i < len(DELAY_EDGES_H) else None,
               "count": parts.delays.get(i, 0),
               "within_deadline": i < len(DELAY_EDGES_H) and DELAY_EDGES_H[i] <= deadline_h}
              for i in range(len(DELAY_EDGES_H) + 1)]
    days: dict[int, dict] = {}
    for key, n in parts.daily.items():
        row = days.setdefault(key.day, dict.fromkeys(("recorded_on_time", "recorded_late", "overdue", "pending",
                                                       "exempt"), 0))
        row[_DAY_FIELD[key.status]] += n
    daily = [{"day": (_EPOCH + timedelta(days=d)).date().isoformat(), **row} for d, row in sorted(days.items())]
    return {
        "schema": REPORT_SCHEMA,
        "watermark": audit["watermark"],
        "period": {"first_day": daily[0]["day"] if daily else None, "last_day": daily[-1]["day"] if daily else None},
        "recording_deadline_hours": deadline_h,
        "total": _row("all", total) if total else None,
        "by_category": [_row(c, by_category[c]) for c in order],
        "by_channel": [_row(c, by_channel[c]) for c in channels],
        "delays": delays,
        "daily": daily,
        "audit": audit,
    }


assert set(ROW_FIELDS) == set(STATUS_FIELDS)
