"""The registrar's report as one self-contained HTML page with charts.

``cdiwatch audit FILE --html REPORT.html`` (or ``--url URL --html``) writes it.
Why one file: registrars mail, archive and print audit reports; inline CSS and
inline SVG (:mod:`.charts`) make a page that needs no server, no script and no
network. Every chart has a table twin with a caption, so a screen reader gets
the same content: visible where a registrar wants the exact figures (rates,
days), visually hidden where the chart already labels every figure (delays,
downgrades). Columns add up as
in the text table: required = on time + late + overdue + pending + exempt;
"at risk" is part of pending, "downgraded" part of exempt.
"""

from __future__ import annotations

from html import escape

from .. import __version__
from .charts import DAILY_NAMES, DAILY_PARTS, daily_bars, delay_histogram, downgrade_bars, forest_plot, pct

__all__ = ["render_html"]

#: Rate-table columns: (report field, header, a part of the previous column?)
RATE_COLUMNS = (("required", "Required", False), ("recorded_on_time", "On time", False),
                ("recorded_late", "Late", False), ("overdue", "Overdue", False), ("pending", "Pending", False),
                ("at_risk", "at risk", True), ("exempt", "Exempt", False), ("downgraded", "downgraded", True))

_PART = ' class="part"'
STYLE = """
:root { --ink: #1b1b1b; --muted: #4a4a4a; --line: #d6d6d6; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0;
       background: #fff; }
main { max-width: 72rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .4rem; border-bottom: 2px solid #14213d; padding-bottom: .2rem; }
.meta { color: var(--muted); margin: 0; }
.meta code { font-size: .9em; }
.headline { background: #f3f5f9; border-left: 6px solid #0b4f9c; padding: .2rem 1.2rem .6rem; margin-top: 1.2rem; }
.headline h2 { border: 0; margin-top: .6rem; }
.headline .big { font-size: 2.4rem; font-weight: 700; margin: 0; color: #0b4f9c; }
.headline p { margin: .3rem 0; }
.chart { display: block; max-width: 100%; height: auto; margin: .6rem 0; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 .3rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { padding: .25rem .45rem; border-bottom: 1px solid var(--line); text-align: right;
         font-variant-numeric: tabular-nums; }
td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eceae4; vertical-align: bottom; }
tbody th { font-weight: 400; white-space: nowrap; }
tfoot th, tfoot td { font-weight: 700; border-top: 2px solid var(--ink); }
.part { font-style: italic; color: var(--muted); }
.below { color: #a4001d; font-weight: 700; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
           clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
.note { color: var(--muted); font-size: .9rem; }
dl.how dt { font-weight: 700; margin-top: .5rem; }
dl.how dd { margin: 0 0 0 1rem; }
@media print { main { max-width: none; padding: 0; } h2 { break-after: avoid; } .chart, table { break-inside: avoid; } }
"""


def _n(x: int) -> str:
    return f"{x:,}"


def _rate_sentence(row: dict, what: str) -> str:
    """The rate and its interval in plain words."""
    if row is None or row["rate"] is None:
        return "No crime-related incident has been recorded or passed its deadline yet."
    recorded = row["recorded_on_time"] + row["recorded_late"]
    decided = recorded + row["overdue"]
    return (f"{pct(row['rate'])} of the crime-related incidents {what} that were recorded or passed their deadline "
            f"were recorded: {_n(recorded)} of {_n(decided)}. With 95% confidence the true recording rate is "
            f"between {pct(row['low'])} and {pct(row['high'])}.")


def _sum_sentence(inc: dict) -> str:
    return (f"{_n(inc['required'])} crime-related incidents = {_n(inc['recorded_on_time'])} recorded on time + "
            f"{_n(inc['recorded_late'])} late + {_n(inc['overdue'])} overdue + {_n(inc['pending'])} pending "
            f"(of them {_n(inc['at_risk'])} at risk) + {_n(inc['exempt'])} exempt "
            f"(of them {_n(inc['downgraded'])} downgrades).")


def _rate_cells(row: dict, below: bool) -> str:
    cells = "".join(f'<td{_PART if part else ""}>{_n(row[key])}</td>' for key, _h, part in RATE_COLUMNS)
    if row["rate"] is None:
        return cells + '<td>no decision yet</td><td>–</td>'
    mark = ' class="below"' if below else ""
    return cells + f"<td{mark}>{pct(row['rate'])}</td><td>{pct(row['low'])} – {pct(row['high'])}</td>"


def _rate_table(rows: list[dict], total: dict | None, table_id: str, what: str, caption: str) -> str:
    head = "".join(f'<th scope="col"{_PART}><span class="sr-only">of which </span>({h})</th>' if part else
                   f'<th scope="col">{h}</th>' for _k, h, part in RATE_COLUMNS)
    overall = total["rate"] if total else None
    body = []
    for r in rows:
        below = overall is not None and r["rate"] is not None and r["high"] < overall
        body.append(f'<tr data-name="{escape(r["name"])}"><th scope="row" title="{escape(r["name"])}">'
                    f'{escape(r["label"])}</th>{_rate_cells(r, below)}</tr>')
    foot = (f'<tfoot><tr data-name="all"><th scope="row">All</th>{_rate_cells(total, False)}</tr></tfoot>'
            if total else "")
    return (f'<table id="{table_id}"><caption>{escape(caption)}</caption><thead><tr><th scope="col">{what}</th>'
            f'{head}<th scope="col">Recording rate</th><th scope="col">95% interval</th></tr></thead>'
            f'<tbody>{"".join(body)}</tbody>{foot}</table><p class="note">Columns add up: required = on time + '
            'late + overdue + pending + exempt; (at risk) is part of pending, (downgraded) part of exempt.</p>')


def _section(section_id: str, title: str, *parts: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return (f'<section id="{section_id}"{cls} aria-labelledby="{section_id}-h"><h2 id="{section_id}-h">{title}</h2>'
            + "".join(parts) + "</section>")


def _rates(report: dict, key: str, what: str, plural: str) -> str:
    rows, total = report[key], report["total"]
    if not rows:
        return _section(key.replace("_", "-"), f"Recording rate by {what}", "<p>No crime-related incident yet.</p>")
    below = [r["label"] for r in rows if total and total["rate"] is not None and r["rate"] is not None
             and r["high"] < total["rate"]]
    note = (f"<p>Below the force's rate with 95% confidence (the whole interval lower): "
            f"<strong>{escape(', '.join(below))}</strong>.</p>" if below else
            f"<p>No {what} is below the force's rate with 95% confidence.</p>")
    order = " (most harmful first)" if key == "by_category" else ""
    return _section(
        key.replace("_", "-"), f"Recording rate by {what}",
        f"<p>Recording rate = recorded / (recorded + overdue), per {what}{order}. The interval is the 95% Wilson "
        "interval: small numbers give wide intervals.</p>", note,
        forest_plot(rows, total, f"chart-{key.replace('_', '-')}", what),
        _rate_table(rows, total, f"table-{key.replace('_', '-')}", what.capitalize(),
                    f"Crime-related incidents and recording rate by {what}"))


def _delays(report: dict) -> str:
    delays, hours = report["delays"], report["recording_deadline_hours"]
    within = sum(d["count"] for d in delays if d["within_deadline"])
    total = sum(d["count"] for d in delays)
    rows = "".join(f'<tr><th scope="row">{escape(d["bucket"])}</th><td>{_n(d["count"])}</td>'
                   f'<td>{"yes" if d["within_deadline"] else "no"}</td></tr>' for d in delays)
    share = f" ({pct(within / total)})" if total else ""
    table = (f'<table id="table-delays" class="sr-only"><caption>Records by time from report to record</caption><thead><tr>'
             f'<th scope="col">Time from report to record</th><th scope="col">Records</th>'
             f'<th scope="col">Within {hours:g} hours</th></tr></thead><tbody>{rows}</tbody>'
             f'<tfoot><tr><th scope="row">All</th><td>{_n(total)}</td><td>{_n(within)} within</td></tr></tfoot>'
             "</table>")
    return _section("delays", "Recording delay",
                    f"<p>{_n(within)} of {_n(total)} records{share} were made within {hours:g} hours of the report "
                    "(the Home Office rule); the rest were late.</p>",
                    delay_histogram(delays, hours) if total else "<p>No record yet.</p>", table)


def _daily(report: dict) -> str:
    daily = report["daily"]
    if not daily:
        return _section("daily", "By day of report", "<p>No crime-related incident yet.</p>")
    head = "".join(f'<th scope="col">{DAILY_NAMES[p].capitalize()}</th>' for p in DAILY_PARTS)
    rows = "".join(f'<tr><th scope="row">{escape(d["day"])}</th><td>{_n(sum(d[p] for p in DAILY_PARTS))}</td>'
                   + "".join(f"<td>{_n(d[p])}</td>" for p in DAILY_PARTS) + "</tr>" for d in daily)
    table = (f'<table id="table-daily"><caption>Crime-related incidents by day of report (UTC)</caption><thead><tr>'
             f'<th scope="col">Day</th><th scope="col">Required</th>{head}</tr></thead><tbody>{rows}</tbody></table>')
    return _section("daily", "By day of report",
                    f"<p>What became of the crime-related incidents reported each day, from "
                    f"{escape(report['period']['first_day'])} to {escape(report['period']['last_day'])} (UTC days). "
                    "Recent days still have pending incidents: their deadlines have not passed.</p>",
                    daily_bars(daily), table)


def _downgrades(report: dict) -> str:
    rows = report["by_category"]
    total = sum(r["downgraded"] for r in rows)
    body = "".join(f'<tr data-name="{escape(r["name"])}"><th scope="row" title="{escape(r["name"])}">'
                   f'{escape(r["label"])}</th><td>{_n(r["required"])}</td><td>{_n(r["downgraded"])}</td>'
                   f'<td>{pct(r["downgraded"] / r["required"]) if r["required"] else "–"}</td></tr>' for r in rows)
    required = sum(r["required"] for r in rows)
    table = (f'<table id="table-downgrades" class="sr-only"><caption>Downgrades by crime type</caption><thead><tr>'
             f'<th scope="col">Crime type</th><th scope="col">Required</th><th scope="col">Downgraded</th>'
             f'<th scope="col">Share</th></tr></thead><tbody>{body}</tbody><tfoot><tr><th scope="row">All</th>'
             f'<td>{_n(required)}</td><td>{_n(total)}</td><td>{pct(total / required) if required else "–"}</td>'
             "</tr></tfoot></table>")
    return _section("downgrades", "Downgrades by crime type",
                    f"<p>{_n(total)} crime-related reports were closed as no crime or reclassified as non-crime "
                    "before a record was made: downgrades, the way under-recording hides. Each needs a documented "
                    "reason.</p>", downgrade_bars(rows) if rows else "", table)


def _how() -> str:
    return _section("how", "How to read this report", """<dl class="how">
<dt>Required</dt><dd>An incident that was crime-related at some point: a crime record is due within 24 hours of
the report (or of the reclassification that made it crime-related).</dd>
<dt>On time, late</dt><dd>The first linked crime was recorded by the deadline, or after it.</dd>
<dt>Overdue</dt><dd>No record and the deadline has passed on the event-time clock.</dd>
<dt>Pending, at risk</dt><dd>No record yet, deadline not reached; at risk when it is close.</dd>
<dt>Exempt, downgraded</dt><dd>Closed as no crime, transferred or duplicate, or reclassified as non-crime, before
the deadline. Closing as no crime and reclassifying as non-crime are downgrades.</dd>
<dt>Recording rate</dt><dd>Recorded (on time or late) / (recorded + overdue): of the incidents whose outcome is
decided, the share that were recorded. Pending and exempt incidents are not in it.</dd>
</dl>""")


def _source_facts(report: dict) -> str:
    audit = report["audit"]
    ev, cr, inc = audit["events"], audit["crimes"], audit["incidents"]
    return _section(
        "data", "The data",
        f"<p>Incidents seen: {_n(inc['seen'])} (and {_n(inc['unopened'])} with no 'opened' event yet). "
        f"Crimes recorded: {_n(cr['recorded'])}; without an incident {_n(cr['without_incident'])}; cancelled "
        f"{_n(cr['cancelled'])} ({_n(cr['cancelled_without_reason'])} without a reason).</p>"
        f"<p>Messages: incidents {_n(ev['incidents']['valid'])} valid, {_n(ev['incidents']['duplicate'])} duplicate, "
        f"{_n(ev['incidents']['invalid'])} invalid; crimes {_n(ev['crimes']['valid'])} valid, "
        f"{_n(ev['crimes']['duplicate'])} duplicate, {_n(ev['crimes']['invalid'])} invalid.</p>")


def render_html(report: dict, source: str) -> str:
    """The report (``report.v1``, :func:`pipeline.report.data.report_data`) as a self-contained page."""
    audit = report["audit"]
    inc = audit["incidents"]
    total = report["total"]
    period = report["period"]
    span = (f" Crime-related incidents reported from {escape(period['first_day'])} to "
            f"{escape(period['last_day'])} (UTC days)." if period["first_day"] else "")
    big = pct(total["rate"]) if total and total["rate"] is not None else "–"
    headline = _section(
        "rate", "Recording rate",
        f'<p class="big">{big}</p><p id="rate-words">{escape(_rate_sentence(total, "in this period"))}</p>'
        f'<p id="sum-words">{escape(_sum_sentence(inc))}</p>', css="headline")
    sections = [headline, _rates(report, "by_category", "crime type", "crime types"),
                _rates(report, "by_channel", "channel", "channels"), _delays(report), _daily(report),
                _downgrades(report), _source_facts(report), _how()]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Crime recording audit — cdiwatch</title><style>{STYLE}</style></head><body><main>"
        "<h1>Crime recording audit</h1>"
        f'<p class="meta">Source: <code>{escape(source)}</code>. Event-time clock (watermark): '
        f"{escape(audit['watermark'] or 'no event yet')}.{span} Made by cdiwatch {escape(__version__)}.</p>"
        + "".join(sections) + "</main></body></html>\n")
