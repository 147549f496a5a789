"""Prometheus configuration, recording rules and alerts (issue 4).

Runs ``promtool check config``, ``promtool check rules`` and the promtool unit
tests in ``deploy/prometheus/tests/``, and checks the shape of every alert
(for, severity, summary, description with values, runbook anchor) and that
every alert has unit tests that fire and that do not fire.

promtool missing: the tests fail when ``CI`` is set and skip otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support import load_module
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules"
UNIT_TESTS = sorted((PROM / "tests").glob("*.test.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"

HIGH_HARM = {"rape", "sexual_offence", "violence_with_injury", "stalking_harassment", "robbery"}
ISSUE_ALERTS = {
    "UnrecordedCrimeOverdue", "OverdueBacklogHigh", "RecordingRateLow", "ChannelRecordingRateLow",
    "LateRecordingsHigh", "DowngradesHigh", "FeedSilent", "WatermarkStalled", "DeadLetterRateHigh",
    "WorkerDown",
}




names = load_module("cdiwatch_promql_names", PROM / "promql_names.py")
generator = load_module("cdiwatch_generate_recording_rules", PROM / "generate_recording_rules.py")


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        msg = f"{binary} not found (Debian: apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run(*cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+)(ms|s|m|h|d|w|y)", text):
        assert m.start() == pos, f"bad duration {text!r}"
        total += int(m.group(1)) * units[m.group(2)]
        pos = m.end()
    assert pos == len(text) and pos > 0, f"bad duration {text!r}"
    return total


# ----------------------------------------------------------------- promtool


def test_promtool_check_config(tmp_path):
    """The full check needs the files the config names: the token file is a
    compose secret (/run/secrets/...), so the full check runs on a copy that
    names a stand-in token file, and the real file gets the syntax check."""
    import shutil as sh

    promtool = require("promtool")
    run(promtool, "check", "config", "--syntax-only", str(PROM / "prometheus.yml"))
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    token = tmp_path / "cdiwatch_http_token"
    token.write_text("stand-in\n", encoding="utf-8")
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "cdiwatch"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/cdiwatch_http_token"
    job["authorization"]["credentials_file"] = str(token)
    sh.copytree(RULES, tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    out = run(promtool, "check", "config", str(tmp_path / "prometheus.yml")).stdout
    assert "2 rule files found" in out


def test_workers_are_scraped_with_the_token_from_a_file():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "cdiwatch"]
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth and "bearer_token" not in job
    assert auth["credentials_file"].startswith("/run/secrets/")


def test_promtool_check_rules():
    promtool = require("promtool")
    run(promtool, "check", "rules", *map(str, sorted(RULES.glob("*.rules.yml"))))


def test_promtool_unit_tests():
    promtool = require("promtool")
    assert UNIT_TESTS, "no promtool unit tests found"
    out = run(promtool, "test", "rules", *map(str, UNIT_TESTS)).stdout
    assert "FAILED" not in out


def test_recording_rules_file_is_generated_from_the_script():
    assert generator.OUTPUT.read_text(encoding="utf-8") == generator.render(), (
        "rules/cdiwatch-recording.rules.yml is stale: run deploy/prometheus/generate_recording_rules.py")


# ----------------------------------------------------------------- coverage of the unit tests


def _alert_tests() -> list[dict]:
    cases = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            cases.extend(test.get("alert_rule_test") or [])
    return cases


def test_every_alert_has_unit_tests_that_fire_and_that_do_not_fire():
    alerts = {r["alert"] for r in names.alert_rules()}
    assert ISSUE_ALERTS <= alerts
    cases = _alert_tests()
    for alert in sorted(alerts):
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in mine), f"{alert}: no unit test where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert}: no unit test where it stays quiet"


def test_every_alert_rule_variant_fires_in_some_unit_test():
    """Rules sharing a name (e.g. the two WorkerDown) are told apart by their static labels."""
    fired = [(c["alertname"], e.get("exp_labels") or {}) for c in _alert_tests() for e in c.get("exp_alerts") or []]
    for rule in names.alert_rules():
        static = {k: str(v) for k, v in rule.get("labels", {}).items()}
        assert any(a == rule["alert"] and all(str(lbl.get(k)) == v for k, v in static.items())
                   for a, lbl in fired), f"no unit test fires {rule['alert']} with labels {static}"


# ----------------------------------------------------------------- shape of the alerts


def _runbook_anchors() -> set[str]:
    anchors = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:  # GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
        anchors.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return anchors


@pytest.mark.parametrize("rule", names.alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_has_for_severity_summary_description_and_runbook(rule):
    assert duration(rule["for"]) > 0
    assert rule["labels"]["severity"] in {"critical", "warning"}
    ann = rule["annotations"]
    assert ann["summary"].strip()
    assert re.search(r"\{\{[^}]*(\$value|\$labels|query )", ann["description"]), "description must carry the values"
    m = re.fullmatch(r"docs/runbook\.md#([a-z0-9\-]+)", ann["runbook_url"])
    assert m, ann["runbook_url"]
    assert m.group(1) in _runbook_anchors(), f"docs/runbook.md has no anchor #{m.group(1)}"
    assert m.group(1) == rule["alert"].lower()


def test_rules_read_only_known_metrics_and_recording_rules():
    known = names.known_names()
    for group in names.load_rule_groups():
        for rule in group["rules"]:
            read = names.metric_names(rule["expr"])
            assert read, rule
            assert read <= known, f"{rule.get('alert') or rule.get('record')} reads unknown {read - known}"


def test_recording_rule_names_follow_level_metric_operations():
    for name in names.recording_rule_names():
        level, metric, ops = name.split(":")
        assert level and metric.startswith("cdi_") and ops, name
        assert re.fullmatch(r"(increase|ratio_rate)(1h|24h|7d)", ops), name
    for window in ("1h", "24h", "7d"):
        for level in ("force", "category", "district"):
            assert f"{level}:cdi_recording_rate:ratio_rate{window}" in names.recording_rule_names()
            assert f"{level}:cdi_timeliness:ratio_rate{window}" in names.recording_rule_names()
        assert f"channel:cdi_recording_rate_estimate:ratio_rate{window}" in names.recording_rule_names()
        assert f"category:cdi_recording_rate_wilson_low:ratio_rate{window}" in names.recording_rule_names()


def test_unrecorded_crime_overdue_covers_high_harm_and_fires_within_15_minutes():
    [rule] = [r for r in names.alert_rules() if r["alert"] == "UnrecordedCrimeOverdue"]
    m = re.search(r'category=~"([^"]+)"', rule["expr"])
    assert set(m.group(1).split("|")) == HIGH_HARM
    assert re.search(r"sum by \(category, district, channel\)", rule["expr"])
    assert rule["labels"]["severity"] == "critical"
    # worst case from the gauge going above zero to the webhook: one scrape, one
    # evaluation, for:, then Alertmanager's group_wait on the critical route
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))["global"]
    am = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))["route"]
    [critical] = [r for r in am["routes"] if 'severity="critical"' in r["matchers"]]
    worst = (duration(prom["scrape_interval"]) + duration(prom["evaluation_interval"])
             + duration(rule["for"]) + duration(critical.get("group_wait", am["group_wait"])))
    assert worst <= 15 * 60, worst


def test_feed_silent_is_per_topic_and_worker_down_covers_absent():
    rules = names.alert_rules()
    [feed] = [r for r in rules if r["alert"] == "FeedSilent"]
    assert "cdi_last_event_received_timestamp_seconds" in feed["expr"]
    assert "by (topic)" in feed["expr"]
    down = [r["expr"] for r in rules if r["alert"] == "WorkerDown"]
    assert 'up{job="cdiwatch"} == 0' in down
    assert any(e.startswith('absent(up{job="cdiwatch"}') for e in down)


def test_prometheus_config_scrapes_workers_and_sends_to_alertmanager():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "cdiwatch"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert len(targets) >= 2 and all(t.endswith(":6066") for t in targets)
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert cfg["rule_files"] == ["rules/*.rules.yml"]
