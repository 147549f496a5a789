"""The simulator: deterministic, contract-valid, Kent-like, and as messy as real feeds."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.commands import cli
from pipeline.capture import read_capture
from pipeline.core.events import Rejection
from pipeline.core.times import parse_time
from pipeline.core.validation import Validator
from pipeline.core.vocabulary import CRIME_CATEGORIES, CRIME_SCHEMA, INCIDENT_SCHEMA
from pipeline.simulation import SimMessage, Simulator, default_start, generate

HOURS, SEED = 96.0, 7
CRIME = set(CRIME_CATEGORIES)


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(HOURS, SEED)


@pytest.fixture(scope="module")
def messages(sim: Simulator) -> list[SimMessage]:
    return list(sim)


@pytest.fixture(scope="module")
def valid(messages: list[SimMessage]) -> list[tuple[SimMessage, dict[str, Any]]]:
    """(message, parsed payload) for every message the contract's validator accepts."""
    validator = Validator()
    now = time.time_ns() // 1000
    schema = {"cc.incidents": "incidents", "rms.crimes": "crimes"}
    return [(m, orjson.loads(m.payload)) for m in messages
            if not isinstance(validator.validate(schema[m.topic], m.payload, now), Rejection)]


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def test_deterministic_per_seed_and_reiterable() -> None:
    first = list(generate(12, 3))
    assert first and first == list(generate(12, 3))
    sim = Simulator(12, 3)
    assert list(sim) == first and list(sim) == first  # iterating again replays the same messages
    assert [m.payload for m in generate(12, 4)] != [m.payload for m in first]


def test_arrival_order_and_no_future_timestamps(messages: list[SimMessage],
                                                valid: list[tuple[SimMessage, dict[str, Any]]],
                                                sim: Simulator) -> None:
    arrivals = [m.arrival for m in messages]
    assert arrivals == sorted(arrivals)
    assert sim.start / 1e6 <= arrivals[0] and arrivals[-1] < sim.end / 1e6 < time.time()
    for m, obj in valid:
        occurred = parse_time(obj["occurred_at"])
        assert occurred is not None and occurred <= m.arrival * 1e6 + 1, obj
        if obj["event_type"] == "opened":
            assert parse_time(obj["reported_at"]) <= occurred  # type: ignore[operator]


def test_every_message_valid_except_the_deliberately_corrupt(messages: list[SimMessage],
                                                              valid: list[tuple[SimMessage, dict[str, Any]]],
                                                              sim: Simulator) -> None:
    corrupt = sum(n for k, n in sim.stats.items() if k.startswith("invalid_"))
    assert len(messages) - len(valid) == corrupt
    assert 0.005 <= _share(corrupt, len(messages)) <= 0.02
    validator = Validator()
    schema = {"cc.incidents": "incidents", "rms.crimes": "crimes"}
    reasons = Counter()
    for m in messages:
        result = validator.validate(schema[m.topic], m.payload, time.time_ns() // 1000)
        if isinstance(result, Rejection):
            reasons[result.reason] += 1
    assert {"invalid_json", "unknown_schema", "schema_violation"} <= set(reasons)
    assert "future_timestamp" not in reasons
    assert any(b"\xe9" in m.payload for m in messages)  # bytes that are not UTF-8


def test_proportions_are_kent_like(valid: list[tuple[SimMessage, dict[str, Any]]], sim: Simulator) -> None:
    opened = [o for _, o in valid if o["event_type"] == "opened"]
    channels = Counter(o["channel"] for o in opened)
    assert 0.33 <= _share(channels["999"], len(opened)) <= 0.43
    assert 0.32 <= _share(channels["101"], len(opened)) <= 0.42
    assert 0.10 <= _share(channels["online"], len(opened)) <= 0.18
    assert set(channels) == {"999", "101", "online", "walk_in", "public_protection", "partner_agency", "other"}
    assert 0.75 <= _share(sum(o["category"] not in CRIME for o in opened), len(opened)) <= 0.87
    assert len({o["district"] for o in opened}) == 13
    per_day = len(opened) / (HOURS / 24)
    assert 2000 <= per_day <= 3000
    # Crime-related at some point (opened or reclassified): ~18-20% of incidents.
    incidents = {o["incident_id"] for _, o in valid if o["schema"] == INCIDENT_SCHEMA}
    crime_related = {o["incident_id"] for _, o in valid
                     if o["schema"] == INCIDENT_SCHEMA and o.get("category") in CRIME}
    assert 0.16 <= _share(len(crime_related), len(incidents)) <= 0.24
    assert 0.17 <= _share(sim.stats["crime_related"], sim.stats["incidents"]) <= 0.23
    # About 500 crimes a day, ~10% recorded with no incident ever linked.
    recorded = {o["crime_id"]: o for _, o in valid if o["event_type"] == "recorded"}
    linked = {o["crime_id"] for _, o in valid if o["event_type"] == "linked"}
    assert 400 <= len(recorded) / (HOURS / 24) <= 650
    alone = [c for c, o in recorded.items() if not o["incident_ids"] and c not in linked]
    assert 0.06 <= _share(len(alone), len(recorded)) <= 0.16


def test_the_mess_of_real_feeds(valid: list[tuple[SimMessage, dict[str, Any]]]) -> None:
    seen = Counter((m.topic, o["event_id"]) for m, o in valid)
    assert 0.008 <= _share(sum(n - 1 for n in seen.values()), len(valid)) <= 0.025  # resent
    by_type: dict[str, list[tuple[SimMessage, dict[str, Any]]]] = defaultdict(list)
    for m, o in valid:
        by_type[o["event_type"]].append((m, o))
    # Incidents whose 'opened' was lost.
    opened_ids = {o["incident_id"] for _, o in by_type["opened"]}
    assert {o["incident_id"] for m, o in valid if o["schema"] == INCIDENT_SCHEMA} - opened_ids
    # Online reports logged hours after they were made.
    assert any(o["channel"] == "online" and parse_time(o["occurred_at"]) - parse_time(o["reported_at"]) > 3600e6
               for _, o in by_type["opened"])
    # The records feed lagging after an outage.
    assert any(m.arrival * 1e6 - parse_time(o["occurred_at"]) > 3600e6 for m, o in valid if o["schema"] == CRIME_SCHEMA)
    # A crime arriving before the 'opened' of the incident it names.
    opened_at = {o["incident_id"]: m.arrival for m, o in by_type["opened"]}
    assert any(m.arrival < opened_at.get(i, 0) for m, o in by_type["recorded"] for i in o["incident_ids"])
    # Links arriving later; one incident -> two crimes; one crime -> two incidents.
    assert by_type["linked"]
    crimes_of: dict[str, set[str]] = defaultdict(set)
    incidents_of: dict[str, set[str]] = defaultdict(set)
    for _, o in by_type["recorded"] + by_type["linked"]:
        for i in o["incident_ids"]:
            crimes_of[i].add(o["crime_id"])
            incidents_of[o["crime_id"]].add(i)
    assert any(len(c) >= 2 for c in crimes_of.values()) and any(len(i) >= 2 for i in incidents_of.values())
    # Reclassifications both ways, every disposition, cancellations with and without reason.
    categories: dict[str, list[str]] = defaultdict(list)
    for _, o in sorted(by_type["opened"] + by_type["reclassified"], key=lambda mo: parse_time(mo[1]["occurred_at"])):
        categories[o["incident_id"]].append(o["category"])
    steps = {(a in CRIME, b in CRIME) for cats in categories.values() for a, b in zip(cats, cats[1:])}
    assert {(False, True), (True, False), (True, True)} <= steps
    assert {o["disposition"] for _, o in by_type["closed"]} == {
        "crime_recorded", "no_crime", "transferred", "duplicate", "other"}
    cancelled = [o for _, o in by_type["cancelled"]]
    assert any("reason" in o for o in cancelled) and any("reason" not in o for o in cancelled)
    # Timestamps as source systems write them.
    stamps = [o["occurred_at"] for _, o in valid]
    assert any(s.endswith("+01:00") for s in stamps) and any(s.endswith("Z") for s in stamps)
    assert {len(s.rstrip("Z").split(".")[-1]) for s in stamps if "." in s and s.endswith("Z")} == {3, 6}
    assert {o["event_type"] for _, o in valid} == {"opened", "reclassified", "closed", "recorded",
                                                   "linked", "cancelled"}


def test_default_start_never_reaches_the_future() -> None:
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert default_start(3, 24, now) == datetime(2026, 1, 8, tzinfo=timezone.utc)
    start = default_start(3, 24 * 365, now)
    assert start + timedelta(days=365) < now
    sim = Simulator(2, 1, start="2026-02-01T00:00:00Z", rate=500)
    assert sim.start == int(datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    with pytest.raises(ValueError):
        Simulator(0, 1)


def test_cli_writes_envelopes_and_bare_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = list(generate(6, 5))
    env = tmp_path / "env.jsonl"
    assert cli.main(["simulate", "--hours", "6", "--seed", "5", "-o", str(env)]) == 0
    err = capsys.readouterr().err
    assert "cc.incidents" in err and "rms.crimes" in err and f"{len(expected):,} messages" in err
    read = list(read_capture(env, on_error=lambda *e: pytest.fail(f"bad line {e}")))
    assert [(m.topic, m.key, m.payload, m.ts_ms) for m in read] == [
        (e.topic, e.key.encode(), e.payload, e.ts_ms) for e in expected]
    bare = tmp_path / "bare.jsonl"
    assert cli.main(["simulate", "--hours", "6", "--seed", "5", "--format", "bare", "-o", str(bare)]) == 0
    assert bare.read_bytes().splitlines() == [e.payload for e in expected]
    assert cli.main(["simulate", "--hours", "-1"]) == 2
