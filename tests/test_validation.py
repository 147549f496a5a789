"""The fast ``events.Validator`` and the time helpers (contract §2).

Agreement with the pydantic models is in ``test_models.py``; here are the
Validator's own duties: time parsing to exact microseconds, the reason code
and detail of each rejection, the rules only it knows (future timestamp,
size), configured vocabularies and limits, and the parsed-object fast path.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import test_models as tm
from pipeline.settings import Settings
from pipeline.events import (
    CrimeEvent, IncidentEvent, Rejection, Validator, format_time, parse_time,
)

US = 1_000_000
V = Validator.from_settings(Settings())
NOW = parse_time("2026-06-01T00:00:00Z")
OPENED = {"schema": "incident.v1", "event_id": "e1", "event_type": "opened", "incident_id": "I1",
          "occurred_at": "2026-03-01T09:30:00.250+01:00", "reported_at": "2026-03-01T08:00:00Z",
          "channel": "online", "district": "Thanet", "category": "fraud",
          "flags": ["hate", "repeat_victim"]}


# ----------------------------------------------------------------------------- time

@pytest.mark.parametrize("text, expected", [
    ("1970-01-01T00:00:00Z", 0),
    ("1970-01-01T01:00:00+01:00", 0),
    ("1969-12-31T19:00:00-05:00", 0),
    ("1970-01-01T00:00:00.000001Z", 1),
    ("1970-01-01T00:00:00.1234569Z", 123456),  # beyond µs: truncated
    ("1970-01-01t00:00:01z", US),
    ("2026-03-01T08:00:00-00:00", parse_time("2026-03-01T08:00:00Z")),
    ("2026-10-05T01:57:18.793000+01:00", parse_time("2026-10-05T00:57:18.793Z")),
])
def test_parse_time_gives_exact_utc_microseconds(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("value", [None, 0, 1.5, [], b"2026-03-01T08:00:00Z", "2026-03-01T08:00:00",
                                   "2026-03-01T08:00Z", "2026-03-01T08:00:00+01:60", "2026-02-29T00:00:00Z"])
def test_parse_time_rejects(value):
    assert parse_time(value) is None


@given(st.integers(min_value=-2 * 10**15, max_value=4 * 10**15))
def test_format_time_round_trips_exactly(us):
    text = format_time(us)
    assert text.endswith("Z") and len(text) == 27
    assert parse_time(text) == us


def test_format_time_of_none_is_none():
    assert format_time(None) is None


# ----------------------------------------------------------------------------- events

def test_opened_event_fields():
    ev = V.validate("incident.v1", orjson.dumps(OPENED), NOW)
    assert ev == IncidentEvent("e1", "opened", "I1", parse_time("2026-03-01T08:30:00.25Z"), category="fraud",
                               reported_at=parse_time("2026-03-01T08:00:00Z"), channel="online",
                               district="Thanet", flags=("hate", "repeat_victim"))


def test_crime_event_fields():
    raw = orjson.dumps({"schema": "crime.v1", "event_id": "r1", "event_type": "recorded", "crime_id": "C1",
                        "occurred_at": "2026-03-01T10:00:00Z", "incident_ids": ["I1", "I2"],
                        "category": "robbery"})
    assert V.validate("crime.v1", raw, NOW) == CrimeEvent("r1", "recorded", "C1", parse_time("2026-03-01T10:00:00Z"),
                                                          incident_ids=("I1", "I2"), category="robbery")
    cancel = orjson.dumps({"schema": "crime.v1", "event_id": "r2", "event_type": "cancelled", "crime_id": "C1",
                           "occurred_at": "2026-03-01T11:00:00Z", "reason": None})
    assert V.validate("crime.v1", cancel, NOW).reason is None


def test_text_input_is_accepted_like_bytes():
    raw = orjson.dumps(OPENED)
    assert V.validate("incident.v1", raw.decode(), NOW) == V.validate("incident.v1", raw, NOW)


# ----------------------------------------------------------------------------- rejections

@pytest.mark.parametrize("change, reason, words", [
    ({"channel": None}, "schema_violation", "channel"),
    ({"district": "x" * 41}, "schema_violation", "district"),
    ({"flags": ["bored"]}, "schema_violation", "flags"),
    ({"occurred_at": "noon"}, "schema_violation", "occurred_at"),
    ({"reported_at": "2026-03-01T09:00:00Z"}, "schema_violation", "reported_at"),
    ({"category": "alien_abduction"}, "schema_violation", "category"),
    ({"schema": "crime.v1"}, "unknown_schema", "crime.v1"),
    ({"occurred_at": "2026-06-01T00:15:00.000001Z", "reported_at": "2026-06-01T00:00:00Z"},
     "future_timestamp", "minutes"),
])
def test_each_rejection_has_its_reason_and_a_detail_naming_the_problem(change, reason, words):
    result = V.validate("incident.v1", orjson.dumps({**OPENED, **change}), NOW)
    assert type(result) is Rejection
    assert result.reason == reason
    assert words in result.detail


def test_invalid_json_detail_is_bounded():
    result = V.validate("incident.v1", b'{"schema": "incident.v1", "x": "' + b"y" * 5000, NOW)
    assert result.reason == "invalid_json"
    assert 0 < len(result.detail) <= 300


def test_long_bad_values_are_truncated_in_details():
    result = V.validate("incident.v1", orjson.dumps({**OPENED, "occurred_at": "9" * 5000}), NOW)
    assert result.reason == "schema_violation" and len(result.detail) < 300


def test_future_tolerance_and_size_limit_come_from_settings():
    v = Validator.from_settings(Settings(future_tolerance=60.0, max_message_bytes=400))
    ok = {**OPENED, "occurred_at": "2026-06-01T00:01:00Z", "reported_at": "2026-06-01T00:00:00Z"}
    assert type(v.validate("incident.v1", orjson.dumps(ok), NOW)) is IncidentEvent
    late = {**ok, "occurred_at": "2026-06-01T00:01:00.000001Z"}
    assert v.validate("incident.v1", orjson.dumps(late), NOW).reason == "future_timestamp"
    big = {**ok, "pad": "x" * 400}
    assert v.validate("incident.v1", orjson.dumps(big), NOW).reason == "too_large"


def test_configured_vocabulary_is_used():
    v = Validator(crime_categories=["poaching"], non_crime_categories=["lost_dog"])
    assert type(v.validate("incident.v1", orjson.dumps({**OPENED, "category": "lost_dog"}), NOW)) is IncidentEvent
    assert v.validate("incident.v1", orjson.dumps(OPENED), NOW).reason == "schema_violation"  # fraud unknown here
    rec = {"schema": "crime.v1", "event_id": "r", "event_type": "recorded", "crime_id": "C",
           "occurred_at": "2026-03-01T10:00:00Z", "incident_ids": [], "category": "poaching"}
    assert type(v.validate("crime.v1", orjson.dumps(rec), NOW)) is CrimeEvent
    assert v.validate("crime.v1", orjson.dumps({**rec, "category": "lost_dog"}), NOW).reason == "schema_violation"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parsed_fast_path_gives_the_same_result(data):
    """``validate(..., parsed=obj)`` (bare capture lines) equals validating the bytes."""
    event = data.draw(tm.valid_events())
    if data.draw(st.booleans()):
        event = data.draw(tm.mutated(event))
    try:
        raw = orjson.dumps(event)
    except TypeError:
        assume(False)
    schema = tm.topic_schema(event, draw_other=data.draw(st.booleans()))
    assert V.validate(schema, raw, NOW, orjson.loads(raw)) == V.validate(schema, raw, NOW)
