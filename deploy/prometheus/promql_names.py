"""The metric names a PromQL expression reads, and the names cdiwatch defines.

Used by the deploy tests to check that every rule and every dashboard query
names a real metric (``cdiwatch-metrics.yml``) or a recording rule defined in
``rules/``. A small lexer, not a full PromQL parser: it understands what the
rules and the dashboard use (selectors, ranges, offsets, aggregation clauses,
function calls, strings, Grafana ``$variables``).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

__all__ = ["metric_names", "known_names", "recording_rule_names", "alert_rules", "load_rule_groups"]

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "cdiwatch-metrics.yml"
RULES_DIR = HERE / "rules"

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "atan2", "inf", "nan",
}
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-zA-Z_$]+")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NUMBER = re.compile(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric (or recording rule) names read by ``expr``."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _CLAUSE.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("("):  # function or aggregation call
            continue
        if name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def load_rule_groups(rules_dir: Path = RULES_DIR) -> list[dict]:
    groups: list[dict] = []
    for path in sorted(rules_dir.glob("*.rules.yml")):
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


def recording_rule_names(rules_dir: Path = RULES_DIR) -> set[str]:
    return {r["record"] for g in load_rule_groups(rules_dir) for r in g["rules"] if "record" in r}


def alert_rules(rules_dir: Path = RULES_DIR) -> list[dict]:
    return [r for g in load_rule_groups(rules_dir) for r in g["rules"] if "alert" in r]


def known_names(rules_dir: Path = RULES_DIR, catalog: Path = CATALOG) -> set[str]:
    """Every name a query may read: worker metrics (with histogram series), Prometheus' own, recording rules."""
    data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    names = set(data.get("synthetic", []))
    for name, spec in data["metrics"].items():
        names.add(name)
        if spec["type"] == "histogram":
            names.update(name + s for s in _HIST_SUFFIXES)
    return names | recording_rule_names(rules_dir)
