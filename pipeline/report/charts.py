"""The registrar's report charts, as inline SVG (no script, no external file).

Why SVG strings: the report is one self-contained file a registrar can mail
or archive; SVG needs no library and prints sharply. Every chart here has a
table twin in :mod:`.html` (screen readers and exact figures); the charts only
show the shape. Each function takes rows of the report (``report.v1``) and
returns one ``<svg>`` element with a ``<title>`` and ``<desc>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

__all__ = ["forest_plot", "delay_histogram", "daily_bars", "downgrade_bars", "COLOURS", "pct"]

#: Status colours (3:1 or better against white, as WCAG asks of graphics).
COLOURS = {"recorded_on_time": "#1d6b2c", "recorded_late": "#b35c00", "overdue": "#a4001d",
           "pending": "#0b4f9c", "exempt": "#6b6b6b", "downgraded": "#5b2a86"}
INK, MUTED, GRID = "#1b1b1b", "#4a4a4a", "#d9d9d9"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


@dataclass(frozen=True)
class Frame:
    """A chart's drawing area: the SVG size and the plot box inside it."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom


def _svg(frame: Frame, chart_id: str, title: str, desc: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}" role="img" '
            f'aria-labelledby="{chart_id}-t {chart_id}-d" viewBox="0 0 {frame.width} {frame.height}" '
            f'width="{frame.width}" height="{frame.height}" {FONT}>'
            f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>'
            + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", fill: str = INK, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{escape(text)}</text>'


def forest_plot(rows: list[dict], overall: dict | None, chart_id: str, what: str) -> str:
    """Recording rate with its 95% interval per row: a dot and a line, and a
    dashed vertical line at the force's overall rate. Rows whose whole interval
    lies below the overall rate are drawn in red."""
    decided = [r for r in rows if r["rate"] is not None]
    low = min([r["low"] for r in decided] + ([overall["low"]] if overall and overall["rate"] is not None else []),
              default=0.0)
    start = max(0.0, math.floor(low * 10) / 10)
    row_h = 24
    frame = Frame(760, 48 + row_h * max(len(rows), 1), 220, 130, 26, 22)

    def x(v: float) -> float:
        return frame.left + (v - start) / (1 - start) * frame.plot_width if start < 1 else frame.left

    body = []
    ticks = [i / 10 for i in range(round(start * 10), 11)]
    for t in ticks:
        body.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{frame.top}" y2="{frame.height - frame.bottom}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(x(t), frame.height - 6, pct(t, 0), "middle", MUTED))
    rate = overall["rate"] if overall else None
    if rate is not None:
        body.append(f'<line class="overall" x1="{x(rate):.1f}" x2="{x(rate):.1f}" y1="{frame.top - 8}" '
                    f'y2="{frame.height - frame.bottom}" stroke="{INK}" stroke-dasharray="4 3"/>')
        body.append(_text(x(rate), frame.top - 12, f"all: {pct(rate)}", "middle", INK))
    for i, r in enumerate(rows):
        y = frame.top + row_h * i + row_h / 2
        body.append(_text(frame.left - 10, y + 4, r["label"], "end"))
        if r["rate"] is None:
            body.append(_text(frame.left + 4, y + 4, "no decision yet", fill=MUTED))
            continue
        below = rate is not None and r["high"] < rate
        colour = COLOURS["overdue"] if below else "#0b4f9c"
        n = r["recorded_on_time"] + r["recorded_late"] + r["overdue"]
        tip = (f"{r['label']}: {pct(r['rate'])}, 95% interval {pct(r['low'])} to {pct(r['high'])} "
               f"({r['recorded_on_time'] + r['recorded_late']:,} of {n:,})")
        body.append(f'<g class="row" data-name="{escape(r["name"])}" data-rate="{r["rate"]:.6f}">'
                    f'<title>{escape(tip)}</title>'
                    f'<line x1="{x(r["low"]):.1f}" x2="{x(r["high"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="{colour}" stroke-width="2"/>'
                    f'<circle cx="{x(r["rate"]):.1f}" cy="{y:.1f}" r="{4 + min(4.0, math.sqrt(n) / 4):.1f}" '
                    f'fill="{colour}"/></g>')
        body.append(_text(frame.width - frame.right + 10, y + 4, f"{pct(r['rate'])} of {n:,}", fill=MUTED))
    title = f"Recording rate by {what}, with 95% intervals"
    desc = (f"One row per {what}: the dot is the recording rate, the line its 95% interval; the dashed line is "
            "the force's overall rate. Red rows: the whole interval is below the overall rate. "
            "The table below gives the figures.")
    return _svg(frame, chart_id, title, desc, body)


def delay_histogram(delays: list[dict], deadline_hours: float) -> str:
    """How long records took (report to record), bucket by bucket, with the deadline line."""
    frame = Frame(760, 260, 56, 20, 30, 48)
    top = max([d["count"] for d in delays] + [1])
    scale = _nice(top)
    slot = frame.plot_width / max(len(delays), 1)
    body = _y_axis(frame, scale)
    line_at = None
    for i, d in enumerate(delays):
        h = d["count"] / scale * frame.plot_height
        x0 = frame.left + i * slot
        colour = COLOURS["recorded_on_time"] if d["within_deadline"] else COLOURS["overdue"]
        body.append(f'<rect class="bar" x="{x0 + 4:.1f}" y="{frame.height - frame.bottom - h:.1f}" '
                    f'width="{slot - 8:.1f}" height="{h:.1f}" fill="{colour}"><title>{escape(d["bucket"])}: '
                    f'{d["count"]:,}</title></rect>')
        if d["count"]:
            body.append(_text(x0 + slot / 2, frame.height - frame.bottom - h - 4, f"{d['count']:,}", "middle"))
        body.append(_text(x0 + slot / 2, frame.height - frame.bottom + 16, d["bucket"], "middle", MUTED,
                          ' font-size="11"'))
        if d["within_deadline"]:
            line_at = x0 + slot
    if line_at is not None:
        body.append(f'<line class="deadline" x1="{line_at:.1f}" x2="{line_at:.1f}" y1="{frame.top - 14}" '
                    f'y2="{frame.height - frame.bottom}" stroke="{INK}" stroke-width="2" stroke-dasharray="5 3"/>')
        body.append(_text(line_at - 6, frame.top - 4, f"{deadline_hours:g}-hour deadline", "end"))
    body.append(_text(frame.left + frame.plot_width / 2, frame.height - 8, "time from report to record", "middle",
                      MUTED))
    within = sum(d["count"] for d in delays if d["within_deadline"])
    total = sum(d["count"] for d in delays)
    desc = (f"{within:,} of {total:,} records were made within {deadline_hours:g} hours of the report; "
            "bars right of the dashed line were late.")
    return _svg(frame, "chart-delays", "Recording delay against the deadline", desc, body)


def _nice(top: int) -> int:
    """A round axis maximum at or above ``top``."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10_000):
        if step * 5 >= top:
            return step * 5
    return int(math.ceil(top / 10_000) * 10_000)


def _y_axis(frame: Frame, scale: int) -> list[str]:
    out = []
    for i in range(6):
        v = scale * i / 5
        y = frame.height - frame.bottom - frame.plot_height * i / 5
        out.append(f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{GRID}"/>')
        out.append(_text(frame.left - 6, y + 4, f"{v:,.0f}", "end", MUTED))
    return out


DAILY_PARTS = ("recorded_on_time", "recorded_late", "overdue", "pending", "exempt")
DAILY_NAMES = {"recorded_on_time": "recorded on time", "recorded_late": "recorded late", "overdue": "overdue",
               "pending": "pending", "exempt": "exempt"}


def daily_bars(daily: list[dict]) -> str:
    """Per day of report: what became of the crime-related incidents (stacked)."""
    frame = Frame(760, 280, 56, 20, 40, 40)
    totals = [sum(d[k] for k in DAILY_PARTS) for d in daily]
    scale = _nice(max(totals + [1]))
    slot = frame.plot_width / max(len(daily), 1)
    bar = min(70.0, slot * 0.7)
    body = _y_axis(frame, scale)
    lx = frame.left
    for part, name in DAILY_NAMES.items():  # the legend
        body.append(f'<rect x="{lx}" y="8" width="12" height="12" fill="{COLOURS[part]}"/>')
        body.append(_text(lx + 17, 18, name))
        lx += 17 + 7 * len(name) + 22
    for i, d in enumerate(daily):
        x0 = frame.left + i * slot + (slot - bar) / 2
        y = frame.height - frame.bottom
        for part in DAILY_PARTS:
            h = d[part] / scale * frame.plot_height
            if h > 0:
                y -= h
                body.append(f'<rect class="seg {part}" x="{x0:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                            f'fill="{COLOURS[part]}"><title>{escape(d["day"])}: {d[part]:,} '
                            f'{DAILY_NAMES[part]}</title></rect>')
        body.append(_text(x0 + bar / 2, y - 4, f"{totals[i]:,}", "middle"))
        if len(daily) <= 31 or i % max(1, len(daily) // 15) == 0:
            body.append(_text(x0 + bar / 2, frame.height - frame.bottom + 16, d["day"][5:], "middle", MUTED,
                              ' font-size="11"'))
    desc = "One bar per day of report (UTC): how many crime-related incidents were recorded on time, late, " \
           "are overdue, still pending or exempt. The table below gives the figures."
    return _svg(frame, "chart-daily", "Crime-related incidents by day of report", desc, body)


def downgrade_bars(rows: list[dict]) -> str:
    """Downgrades (exempt as no crime or reclassified as non-crime) per category."""
    row_h = 22
    frame = Frame(760, 30 + row_h * max(len(rows), 1), 220, 80, 8, 22)
    top = max([r["downgraded"] for r in rows] + [1])
    scale = _nice(top)
    body = []
    for i in range(6):
        v = scale * i / 5
        x = frame.left + frame.plot_width * i / 5
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.height - frame.bottom}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(x, frame.height - 6, f"{v:,.0f}", "middle", MUTED))
    for i, r in enumerate(rows):
        y = frame.top + row_h * i
        w = r["downgraded"] / scale * frame.plot_width
        body.append(_text(frame.left - 10, y + 15, r["label"], "end"))
        body.append(f'<rect class="bar" data-name="{escape(r["name"])}" x="{frame.left}" y="{y + 4}" width="{w:.1f}" '
                    f'height="{row_h - 8}" fill="{COLOURS["downgraded"]}"><title>{escape(r["label"])}: '
                    f'{r["downgraded"]:,} downgraded of {r["required"]:,}</title></rect>')
        share = f" ({pct(r['downgraded'] / r['required'])})" if r["required"] else ""
        body.append(_text(frame.left + w + 6, y + 15, f"{r['downgraded']:,}{share}", fill=MUTED))
    total = sum(r["downgraded"] for r in rows)
    desc = (f"{total:,} downgrades in all: crime-related reports closed as no crime or reclassified as non-crime "
            "before a record. The table below gives the figures.")
    return _svg(frame, "chart-downgrades", "Downgrades by crime type", desc, body)
