"""The registrar's report as text: the table ``cdiwatch audit`` prints.

Columns add up: required = on time + late + overdue + pending + exempt; "at
risk" is part of pending and "downgraded" part of exempt. The rate is
recorded / (recorded + overdue), with its 95% Wilson interval.
"""

from __future__ import annotations

__all__ = ["render_table"]

_COLUMNS = (("required", "required"), ("recorded_on_time", "on time"), ("recorded_late", "late"),
            ("overdue", "overdue"), ("pending", "pending"), ("exempt", "exempt"), ("at_risk", "(at risk)"),
            ("downgraded", "(downgr.)"))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _rate(row: dict) -> str:
    if row["rate"] is None:
        return "no decision yet"
    return f"{_pct(row['rate'])} ({_pct(row['low'])}–{_pct(row['high'])})"


def _section(title: str, rows: list[dict]) -> list[str]:
    name_w = max([len(title)] + [len(r["label"]) for r in rows])
    head = f"  {title:<{name_w}}  " + "  ".join(f"{h:>9}" for _k, h in _COLUMNS) + "  recording rate (95% interval)"
    out = [head, "  " + "-" * (len(head) - 2)]
    for r in rows:
        out.append(f"  {r['label']:<{name_w}}  " + "  ".join(f"{r[k]:>9,}" for k, _h in _COLUMNS) + f"  {_rate(r)}")
    return out


def render_table(report: dict) -> str:
    """The report (:func:`pipeline.report.data.report_data`) as a plain-text table."""
    audit = report["audit"]
    ev, cr, inc = audit["events"], audit["crimes"], audit["incidents"]
    total = report["total"]
    lines = ["cdiwatch audit", f"  event-time clock (watermark): {audit['watermark'] or 'none yet'}"]
    if report["period"]["first_day"]:
        lines.append(f"  required incidents reported from {report['period']['first_day']} "
                     f"to {report['period']['last_day']} (UTC days)")
    lines.append("")
    if total is None or total["rate"] is None:
        lines.append("  Recording rate: no incident has been recorded or gone overdue yet")
    else:
        recorded = total["recorded_on_time"] + total["recorded_late"]
        lines.append(f"  Recording rate: {_pct(total['rate'])}: {recorded:,} of {recorded + total['overdue']:,} "
                     f"crime-related incidents past their deadline or recorded were recorded; with 95% "
                     f"confidence the true rate is between {_pct(total['low'])} and {_pct(total['high'])}.")
    lines += [
        f"  Crime-related incidents: {inc['required']:,} = {inc['recorded_on_time']:,} recorded on time + "
        f"{inc['recorded_late']:,} late + {inc['overdue']:,} overdue + {inc['pending']:,} pending "
        f"(of them {inc['at_risk']:,} at risk) + {inc['exempt']:,} exempt (of them {inc['downgraded']:,} downgrades)",
        f"  Incidents seen: {inc['seen']:,} (and {inc['unopened']:,} with no 'opened' event yet)",
        f"  Crimes recorded: {cr['recorded']:,}; without an incident {cr['without_incident']:,}; "
        f"cancelled {cr['cancelled']:,} ({cr['cancelled_without_reason']:,} without a reason)",
        f"  Messages: incidents {ev['incidents']['valid']:,} valid, {ev['incidents']['duplicate']:,} duplicate, "
        f"{ev['incidents']['invalid']:,} invalid; crimes {ev['crimes']['valid']:,} valid, "
        f"{ev['crimes']['duplicate']:,} duplicate, {ev['crimes']['invalid']:,} invalid",
        "",
    ]
    lines += _section("crime type (most harmful first)", report["by_category"])
    lines.append("")
    lines += _section("channel", report["by_channel"])
    return "\n".join(lines)
