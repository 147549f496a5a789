#!/usr/bin/env python3
"""Build ``dashboards/cdiwatch.json``, the cdiwatch Grafana dashboard.

The dashboard is written as Python data here (shorter and easier to review
than hand-edited panel JSON) and committed as JSON, which Grafana's file
provisioning loads (``provisioning/dashboards/cdiwatch.yml``).
``tests/test_deploy_grafana.py`` fails when the two disagree.

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 on drift

Queries use the recording rules of ``deploy/prometheus/rules`` where they
exist (recording rate, Wilson interval, timeliness, channel estimate,
downgrades) and the raw ``cdi_*`` metrics for state gauges, the delay
histogram and feed health.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "cdiwatch.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
HIGH_HARM = "rape|sexual_offence|violence_with_injury|stalking_harassment|robbery"

_next_id = 0


def _id() -> int:
    global _next_id
    _next_id += 1
    return _next_id


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto", "format": fmt}
    if instant:
        t.update(instant=True, range=False)
    else:
        t.update(instant=False, range=True)
    return t


def panel(kind: str, title: str, x: int, y: int, w: int, h: int, targets: list[dict], *,
          description: str = "", unit: str | None = None, minv: float | None = None, maxv: float | None = None,
          thresholds: list[tuple[float | None, str]] | None = None, options: dict | None = None,
          overrides: list | None = None, transformations: list | None = None, custom: dict | None = None) -> dict:
    defaults: dict = {}
    if unit:
        defaults["unit"] = unit
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": [{"color": c, "value": v} for v, c in thresholds]}
    if custom:
        defaults["custom"] = custom
    p = {
        "id": _id(), "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": targets,
    }
    if transformations:
        p["transformations"] = transformations
    return p


def row(title: str, y: int) -> dict:
    return {"id": _id(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


RATE_STEPS = [(None, "red"), (0.9, "orange"), (0.95, "green")]
SEL = 'category=~"$category"'
DSEL = 'district=~"$district"'


def panels() -> list[dict]:
    out: list[dict] = []
    y = 0
    # ------------------------------------------------------------- headline
    out.append(row("Recording rate (HMICFRS measure: recorded / should have been recorded)", y)); y += 1
    out.append(panel(
        "stat", "Force recording rate, 24h", 0, y, 6, 5,
        [target("force:cdi_recording_rate:ratio_rate24h", "rate", "A"),
         target("force:cdi_recording_rate_wilson_low:ratio_rate24h", "95% low", "B"),
         target("force:cdi_recording_rate_wilson_high:ratio_rate24h", "95% high", "C")],
        description="Recorded / (recorded on time + breached) over 24h, with its 95% Wilson interval. "
                    "Floor for RecordingRateLow: 95%.",
        unit="percentunit", minv=0, maxv=1, thresholds=RATE_STEPS,
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                 "colorMode": "value", "graphMode": "none"}))
    out.append(panel(
        "stat", "Timeliness, 24h", 6, y, 4, 5,
        [target("force:cdi_timeliness:ratio_rate24h", "on time")],
        description="Share of crimes recorded within 24h of the report.",
        unit="percentunit", minv=0, maxv=1, thresholds=[(None, "red"), (0.8, "orange"), (0.9, "green")],
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "value", "graphMode": "area"}))
    out.append(panel(
        "stat", "Overdue now", 10, y, 5, 5,
        [target("sum(cdi_incidents_overdue)", "all categories", "A"),
         target(f'sum(cdi_incidents_overdue{{category=~"{HIGH_HARM}"}})', "high harm", "B")],
        description="Required incidents past the 24h deadline with no crime record (all workers).",
        thresholds=[(None, "green"), (1, "orange"), (20, "red")],
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                 "colorMode": "background", "graphMode": "area"}))
    out.append(panel(
        "stat", "At risk / pending now", 15, y, 5, 5,
        [target("sum(cdi_incidents_at_risk)", "at risk (deadline within 4h)", "A"),
         target("sum(cdi_incidents_pending)", "pending", "B")],
        thresholds=[(None, "blue")],
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                 "colorMode": "value", "graphMode": "area"}))
    out.append(panel(
        "stat", "Decisions, 24h", 20, y, 4, 5,
        [target("force:cdi_recording_decisions:increase24h", "reached deadline", "A"),
         target("force:cdi_incidents_recorded:increase24h", "recorded", "B")],
        description="The counts behind the rate: incidents whose deadline was decided (on time or breached) and records.",
        unit="none", thresholds=[(None, "text")],
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                 "colorMode": "none", "graphMode": "none"}))
    y += 5
    out.append(panel(
        "timeseries", "Recording rate by category, 24h, with 95% interval", 0, y, 14, 9,
        [target(f"category:cdi_recording_rate:ratio_rate24h{{{SEL}}}", "{{category}}", "A"),
         target(f"category:cdi_recording_rate_wilson_low:ratio_rate24h{{{SEL}}}", "{{category}} low", "B"),
         target(f"category:cdi_recording_rate_wilson_high:ratio_rate24h{{{SEL}}}", "{{category}} high", "C")],
        description="Dashed lines: 95% Wilson interval (z = 1.96) computed in the recording rules from the counts.",
        unit="percentunit", minv=0, maxv=1,
        overrides=[{"matcher": {"id": "byRegexp", "options": ".* (low|high)$"},
                    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
                                   {"id": "custom.lineWidth", "value": 1}]}],
        options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
                 "tooltip": {"mode": "multi", "sort": "desc"}}))
    out.append(panel(
        "table", "By category, 24h: rate, interval and counts", 14, y, 10, 9,
        [target(f"category:cdi_recording_rate:ratio_rate24h{{{SEL}}}", "", "rate", instant=True, fmt="table"),
         target(f"category:cdi_recording_rate_wilson_low:ratio_rate24h{{{SEL}}}", "", "low", instant=True, fmt="table"),
         target(f"category:cdi_recording_rate_wilson_high:ratio_rate24h{{{SEL}}}", "", "high", instant=True, fmt="table"),
         target(f"category:cdi_incidents_recorded:increase24h{{{SEL}}}", "", "recorded", instant=True, fmt="table"),
         target(f"category:cdi_recording_decisions:increase24h{{{SEL}}}", "", "decided", instant=True, fmt="table"),
         target(f"category:cdi_timeliness:ratio_rate24h{{{SEL}}}", "", "timeliness", instant=True, fmt="table")],
        transformations=[{"id": "merge", "options": {}},
                         {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                        "renameByName": {"Value #rate": "rate", "Value #low": "95% low",
                                                                         "Value #high": "95% high",
                                                                         "Value #recorded": "recorded",
                                                                         "Value #decided": "decided",
                                                                         "Value #timeliness": "on time"}}}],
        overrides=[{"matcher": {"id": "byRegexp", "options": "rate|95% low|95% high|on time"},
                    "properties": [{"id": "unit", "value": "percentunit"}, {"id": "decimals", "value": 1}]},
                   {"matcher": {"id": "byRegexp", "options": "recorded|decided"},
                    "properties": [{"id": "decimals", "value": 0}]}],
        options={"sortBy": [{"displayName": "rate", "desc": False}]}))
    y += 9
    out.append(panel(
        "timeseries", "Recording rate by district, 24h", 0, y, 8, 8,
        [target(f"district:cdi_recording_rate:ratio_rate24h{{{DSEL}}}", "{{district}}")],
        unit="percentunit", minv=0, maxv=1,
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}}))
    out.append(panel(
        "timeseries", "Estimated recording rate by channel, 24h", 8, y, 8, 8,
        [target("channel:cdi_recording_rate_estimate:ratio_rate24h", "{{channel}}")],
        description="1 - breached / required by channel (the recorded counter has no channel label; "
                    "exempt incidents count as not breached). Watch public_protection and online.",
        unit="percentunit", minv=0, maxv=1,
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}}))
    out.append(panel(
        "timeseries", "Timeliness and downgrades by category, 24h", 16, y, 8, 8,
        [target(f"category:cdi_timeliness:ratio_rate24h{{{SEL}}}", "{{category}} on time", "A"),
         target(f"category:cdi_downgrade_ratio:ratio_rate24h{{{SEL}}}", "{{category}} downgraded", "B")],
        description="On time = recorded within 24h / recorded. Downgraded = exempted as reclassified_non_crime "
                    "or no_crime / newly required.",
        unit="percentunit", minv=0, maxv=1,
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}}))
    y += 8
    # ------------------------------------------------------------- overdue
    out.append(row("Overdue: crimes not recorded within 24 hours", y)); y += 1
    out.append(panel(
        "bargauge", "Overdue by district", 0, y, 8, 9,
        [target(f"sum by (district) (cdi_incidents_overdue{{{SEL}}})", "{{district}}", instant=True)],
        thresholds=[(None, "green"), (1, "orange"), (20, "red")],
        options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                 "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}))
    out.append(panel(
        "bargauge", "Overdue by channel", 8, y, 8, 9,
        [target(f"sum by (channel) (cdi_incidents_overdue{{{SEL}, {DSEL}}})", "{{channel}}", instant=True)],
        thresholds=[(None, "green"), (1, "orange"), (20, "red")],
        options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                 "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}))
    out.append(panel(
        "table", "High-harm overdue (pages UnrecordedCrimeOverdue)", 16, y, 8, 9,
        [target(f'sum by (category, district, channel) (cdi_incidents_overdue{{category=~"{HIGH_HARM}"}}) > 0',
                "", instant=True, fmt="table")],
        description="List the incidents with GET /incidents?status=overdue on any worker.",
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                        "renameByName": {"Value": "overdue"}}}],
        options={"sortBy": [{"displayName": "overdue", "desc": True}]}))
    y += 9
    out.append(panel(
        "timeseries", "Overdue over time by district", 0, y, 12, 8,
        [target(f"sum by (district) (cdi_incidents_overdue{{{SEL}, {DSEL}}})", "{{district}}")],
        custom={"stacking": {"mode": "normal"}, "fillOpacity": 30},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}}))
    out.append(panel(
        "timeseries", "Deadlines breached per hour by channel", 12, y, 12, 8,
        [target(f"sum by (channel) (increase(cdi_incidents_breached_total{{{SEL}, {DSEL}}}[1h]))", "{{channel}}")],
        custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 60},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}}))
    y += 8
    # ------------------------------------------------------------- delay
    out.append(row("Recording delay (report to crime record)", y)); y += 1
    out.append(panel(
        "heatmap", "Recording delay heatmap", 0, y, 16, 9,
        [target(f"sum by (le) (increase(cdi_recording_delay_seconds_bucket{{{SEL}}}[$__rate_interval]))",
                "{{le}}", fmt="heatmap")],
        description="Histogram buckets of cdi_recording_delay_seconds; the 24h line is the recording limit.",
        options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                 "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
                 "tooltip": {"show": True, "yHistogram": True}}))
    out.append(panel(
        "timeseries", "Recording delay p50 / p90, 24h", 16, y, 8, 9,
        [target(f"histogram_quantile(0.5, sum by (le) (increase(cdi_recording_delay_seconds_bucket{{{SEL}}}[24h])))", "p50", "A"),
         target(f"histogram_quantile(0.9, sum by (le) (increase(cdi_recording_delay_seconds_bucket{{{SEL}}}[24h])))", "p90", "B")],
        unit="s", thresholds=[(None, "green"), (86400, "red")],
        custom={"thresholdsStyle": {"mode": "line"}},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    y += 9
    # ------------------------------------------------------------- feed health
    out.append(row("Feed and worker health", y)); y += 1
    out.append(panel(
        "timeseries", "Time since last message, by input topic", 0, y, 8, 8,
        [target("time() - max by (topic) (cdi_last_event_received_timestamp_seconds)", "{{topic}}")],
        description="FeedSilent fires above 30 minutes (for 5m).",
        unit="s", thresholds=[(None, "green"), (1800, "red")], custom={"thresholdsStyle": {"mode": "line"}},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    out.append(panel(
        "timeseries", "Watermark lag behind wall clock", 8, y, 8, 8,
        [target("time() - max(cdi_watermark_timestamp_seconds)", "cluster", "A"),
         target("time() - cdi_watermark_timestamp_seconds", "{{instance}}", "B")],
        description="Event-time watermark = greatest occurred_at - allowed lateness (10m). "
                    "Live it sits a little above 10 minutes; a growing line means deadlines are checked late.",
        unit="s",
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    out.append(panel(
        "timeseries", "Messages per second by topic and outcome", 16, y, 8, 8,
        [target("sum by (topic, outcome) (rate(cdi_events_total[$__rate_interval]))", "{{topic}} {{outcome}}")],
        unit="reqps", custom={"stacking": {"mode": "normal"}, "fillOpacity": 20},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    y += 8
    out.append(panel(
        "stat", "Workers up / ready", 0, y, 8, 5,
        [target('sum(up{job="cdiwatch"})', "up", "A"),
         target("sum(cdi_worker_ready)", "ready", "B"),
         target('count(up{job="cdiwatch"})', "targets", "C")],
        thresholds=[(None, "red"), (1, "green")],
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                 "colorMode": "value", "graphMode": "none"}))
    out.append(panel(
        "timeseries", "Dead letters per minute by topic and reason", 8, y, 8, 8,
        [target("sum by (topic, reason) (rate(cdi_deadletter_total[$__rate_interval])) * 60", "{{topic}} {{reason}}")],
        description="Invalid messages sent to cdi.deadletter. DeadLetterRateHigh fires above 1% of a topic.",
        unit="none", custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 60},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    out.append(panel(
        "timeseries", "Invalid share by topic", 16, y, 8, 8,
        [target('sum by (topic) (rate(cdi_events_total{outcome="invalid"}[$__rate_interval])) '
                "/ sum by (topic) (rate(cdi_events_total[$__rate_interval]))", "{{topic}}")],
        unit="percentunit", minv=0, thresholds=[(None, "green"), (0.01, "red")],
        custom={"thresholdsStyle": {"mode": "line"}},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    y += 5
    out.append(panel(
        "timeseries", "Alerts published per hour by kind", 0, y, 8, 8,
        [target("sum by (kind) (increase(cdi_alerts_total[1h]))", "{{kind}}")],
        description="alert.v1 messages on cdi.alerts: at_risk, overdue, resolved, downgraded.",
        custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 60},
        options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}))
    y += 3
    out.append(panel(
        "bargauge", "Crimes cancelled by reason, 7d", 8, y, 8, 5,
        [target("sum by (reason) (increase(cdi_crimes_cancelled_total[7d]))", "{{reason}}", instant=True)],
        description="Cancellations need additional verifiable information or another ground; 'none' = no reason given.",
        thresholds=[(None, "blue")],
        options={"orientation": "horizontal", "displayMode": "basic",
                 "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}))
    out.append(panel(
        "stat", "Messages missing from the decisions, 24h", 16, y, 8, 5,
        [target("sum(increase(cdi_input_records_lost_total[24h])) or vector(0)", "lost unread", "A", instant=True),
         target("sum(increase(cdi_processing_errors_total[24h])) or vector(0)", "processing errors", "B",
                instant=True)],
        description="Input records the topic's retention removed before a worker read them (InputRecordsLost), "
                    "and messages whose processing raised (ProcessingErrors): each one an incident or crime "
                    "cdiwatch did not check. See the runbook.",
        thresholds=[(None, "green"), (1, "red")],
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "textMode": "value_and_name",
                 "colorMode": "value", "graphMode": "none"}))
    return out


def dashboard() -> dict:
    global _next_id
    _next_id = 0
    return {
        "uid": "cdiwatch-overview",
        "title": "cdiwatch: crime data integrity",
        "description": "Recording rate, overdue crimes, recording delay and feed health from cdiwatch "
                       "(docs/runbook.md explains every alert).",
        "tags": ["cdiwatch", "crime-data-integrity"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {"text": "Prometheus", "value": "cdiwatch-prometheus"}, "hide": 0, "refresh": 1},
            {"name": "category", "label": "Category", "type": "query", "datasource": DS,
             "query": {"query": "label_values(cdi_incidents_required_total, category)", "refId": "category"},
             "definition": "label_values(cdi_incidents_required_total, category)",
             "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
             "current": {"text": ["All"], "value": ["$__all"]}},
            {"name": "district", "label": "District", "type": "query", "datasource": DS,
             "query": {"query": "label_values(cdi_incidents_required_total, district)", "refId": "district"},
             "definition": "label_values(cdi_incidents_required_total, district)",
             "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
             "current": {"text": ["All"], "value": ["$__all"]}},
        ]},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
