"""Grafana provisioning and dashboard (issue 4).

Grafana cannot run here, so the dashboard JSON is checked statically: its
structure, that every query reads only real cdiwatch metrics, Prometheus'
own series or recording rules defined in deploy/prometheus/rules, that every
query parses as PromQL (through ``promtool check rules``), and that the panels
the issue asks for are there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support import load_module
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cdiwatch.json"




names = load_module("cdiwatch_promql_names", ROOT / "deploy" / "prometheus" / "promql_names.py")
builder = load_module("cdiwatch_build_dashboard", GRAFANA / "build_dashboard.py")

# Grafana's built-in variables, replaced by plausible values before parsing.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h", "$category": ".*", "$district": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def query_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def all_targets() -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in query_panels() for t in p["targets"]]


def test_dashboard_json_is_built_from_the_script():
    assert DASHBOARD.read_text(encoding="utf-8") == builder.render(), (
        "dashboards/cdiwatch.json is stale: run deploy/grafana/build_dashboard.py")


def test_dashboard_structure():
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    for p in query_panels():
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_every_query_uses_the_datasource_variable():
    for title, t in all_targets():
        assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    [source] = ds["datasources"]
    [var] = [v for v in dashboard()["templating"]["list"] if v["name"] == "datasource"]
    assert var["current"]["value"] == source["uid"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


def test_every_query_names_real_metrics_or_recording_rules():
    known = names.known_names()
    for title, t in all_targets():
        read = names.metric_names(t["expr"])
        assert read, f"{title}: no metric in {t['expr']!r}"
        assert read <= known, f"{title}: unknown {sorted(read - known)} in {t['expr']!r}"
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
            assert m and m.group(1) in known, var["name"]


def test_every_query_parses_as_promql(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not found")
        pytest.skip("promtool not found (Debian: apt-get install prometheus)")
    rules = []
    for i, (title, t) in enumerate(all_targets()):
        expr = t["expr"]
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{title}: unhandled variable in {expr!r}"
        rules.append({"record": f"dashboard:query:q{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _panels_reading(pattern: str) -> list[dict]:
    return [p for p in query_panels() if any(re.search(pattern, t["expr"]) for t in p["targets"])]


def test_issue_panels_are_present():
    # recording rate with its interval, by category
    [p] = [p for p in _panels_reading(r"category:cdi_recording_rate_wilson_low")
           if p["type"] == "timeseries"]
    exprs = " ".join(t["expr"] for t in p["targets"])
    assert "category:cdi_recording_rate:ratio_rate24h" in exprs and "wilson_high" in exprs
    # overdue by district and by channel
    assert _panels_reading(r"sum by \(district\) \(cdi_incidents_overdue")
    assert _panels_reading(r"sum by \(channel\) \(cdi_incidents_overdue")
    # recording-delay heatmap from the histogram buckets
    [heat] = [p for p in query_panels() if p["type"] == "heatmap"]
    assert "cdi_recording_delay_seconds_bucket" in heat["targets"][0]["expr"]
    assert heat["targets"][0]["format"] == "heatmap" and "by (le)" in heat["targets"][0]["expr"]
    # feed health: last event age per topic, watermark lag
    assert _panels_reading(r"time\(\) - max by \(topic\) \(cdi_last_event_received_timestamp_seconds\)")
    assert _panels_reading(r"time\(\) - max\(cdi_watermark_timestamp_seconds\)")
    # dead letters
    assert _panels_reading(r"cdi_deadletter_total")


def test_dashboard_provider_points_at_the_mounted_folder():
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cdiwatch.yml").read_text(encoding="utf-8"))
    [provider] = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/cdiwatch"
