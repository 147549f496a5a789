"""The pydantic models (the published contract) and the compiled validator
accept and reject the same inputs; the checked-in JSON Schemas match the models.

Inputs are valid events mutated by hypothesis: a field dropped, given a wrong
type, ``null``, an out-of-vocabulary value, a malformed timestamp, extra
fields, and byte-level damage (NaN, truncation, bad UTF-8). The
future-timestamp and size rules are the Validator's alone (they need the wall
clock and the raw length), so the Validator here runs with a far-future clock
and the payloads stay far below 1 MiB.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from pipeline.capture import read_capture
from pipeline.contract.models import SCHEMA_MODELS, AuditModel
from pipeline.contract.schemas import SCHEMA_DIR, render
from pipeline.core.events import CrimeEvent, IncidentEvent, Rejection
from pipeline.core.times import parse_time
from pipeline.core.validation import Validator
from pipeline.core.vocabulary import (
    CANCEL_REASONS, CHANNELS, CRIME_CATEGORIES, DISPOSITIONS, FLAGS, NON_CRIME_CATEGORIES,
)

REPO = Path(__file__).resolve().parents[1]
from support import SAMPLE_DIR as SAMPLE  # noqa: E402
FAR_FUTURE = 10**18  # µs: year 33658, so no future_timestamp rejection here
VALIDATOR = Validator()
SIDE = {"incident.v1": "incidents", "crime.v1": "crimes"}
ADAPTERS = {name: TypeAdapter(SCHEMA_MODELS[name]) for name in ("incident.v1", "crime.v1")}
ALL_CATEGORIES = CRIME_CATEGORIES + NON_CRIME_CATEGORIES

# ----------------------------------------------------------------------------- strategies

ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


@st.composite
def instants(draw) -> datetime:
    return draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2090, 12, 31),
                             timezones=st.just(timezone.utc)))


@st.composite
def rfc3339(draw, dt: datetime) -> str:
    """One of the many valid spellings of an instant."""
    offset = draw(st.sampled_from([None, 0, 60, -300, 330, 13 * 60 + 45, -12 * 60]))
    local = dt if offset is None else dt.astimezone(timezone(timedelta(minutes=offset)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        frac = f"{local.microsecond:06d}" + "".join(draw(st.lists(st.sampled_from("0123456789"),
                                                                  min_size=3, max_size=3)))
        text += "." + frac[:digits]
    if offset is None:
        text += draw(st.sampled_from(["Z", "z"]))
    else:
        sign = "+" if offset >= 0 else "-"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    if draw(st.booleans()):
        text = text.replace("T", "t")
    return text


BAD_TIMES = [
    "2026-03-01T08:00Z", "2026-03-01T08:00:00", "2026-03-01", "2026-03-01 08:00:00Z",
    "2026-02-30T08:00:00Z", "2026-03-01T25:00:00Z", "2026-03-01T24:00:00Z", "2026-03-01T08:00:60Z",
    "2026-03-01T08:00:00.Z", "2026-03-01T08:00:00+0100", "2026-03-01T08:00:00+01",
    "26-03-01T08:00:00Z", "2026-3-1T08:00:00Z", "2026-03-01T08:00:00Z ", " 2026-03-01T08:00:00Z",
    "2026-03-01T08:00:00Z\n", "2026-03-01T08:00:00+24:00", "2026-03-01T08:00:00+01:60",
    "2026-03-01T08:00:00+01:99", "2026-03-01T08:00:00-00:75",
    "2026-03-01T08:00:00,5Z", "０２６-03-01T08:00:00Z", "２０２６-03-01T08:00:00Z",
    "0000-01-01T00:00:00Z", "yesterday afternoon", "", "2026-13-01T08:00:00Z",
    "2026-03-01T08:00:00+01:00Z", "1700000000",
    # contract revision 2: the instant must lie in years 1-9999 once the offset is applied
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59",
]
ODD_GOOD_TIMES = ["2026-03-01T08:00:00-00:00", "2026-03-01T08:00:00.123456789Z",
                  "9999-12-31T23:59:59+01:00", "0001-01-01T00:00:00-01:00", "2026-03-01t08:00:00z"]


@st.composite
def valid_events(draw) -> dict:
    """One valid incident.v1 or crime.v1 event of any type."""
    kind = draw(st.sampled_from(["opened", "reclassified", "closed", "recorded", "linked", "cancelled"]))
    t1, t2 = sorted([draw(instants()), draw(instants())])
    common = {"event_id": draw(ids), "event_type": kind, "occurred_at": draw(rfc3339(t2))}
    if kind in ("opened", "reclassified", "closed"):
        e = {"schema": "incident.v1", **common, "incident_id": draw(ids)}
        if draw(st.booleans()):
            e["flags"] = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=4))
        if kind == "opened":
            reported = draw(rfc3339(t1))
            if parse_time(reported) > parse_time(e["occurred_at"]):  # truncated fractions
                reported, e["occurred_at"] = e["occurred_at"], reported
            e.update(reported_at=reported, channel=draw(st.sampled_from(sorted(CHANNELS))),
                     district=draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)),
                     category=draw(st.sampled_from(ALL_CATEGORIES)))
        elif kind == "reclassified":
            e["category"] = draw(st.sampled_from(ALL_CATEGORIES))
        else:
            e["disposition"] = draw(st.sampled_from(sorted(DISPOSITIONS)))
    else:
        e = {"schema": "crime.v1", **common, "crime_id": draw(ids)}
        if kind == "recorded":
            e.update(incident_ids=draw(st.lists(ids, max_size=3)),
                     category=draw(st.sampled_from(CRIME_CATEGORIES)))
        elif kind == "linked":
            e["incident_ids"] = draw(st.lists(ids, min_size=1, max_size=3))
        elif draw(st.booleans()):
            e["reason"] = draw(st.sampled_from(sorted(CANCEL_REASONS)))
    return e


FIELDS = ["schema", "event_id", "event_type", "occurred_at", "incident_id", "crime_id", "reported_at",
          "channel", "district", "category", "disposition", "flags", "incident_ids", "reason"]
VOCAB = sorted({*ALL_CATEGORIES, *CHANNELS, *DISPOSITIONS, *FLAGS, *CANCEL_REASONS,
                "opened", "reclassified", "closed", "recorded", "linked", "cancelled",
                "incident.v1", "crime.v1", "alien_abduction", "Theft", "theft ", "deadletter.v1"})

wrong_types = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.just([]), st.just({}),
    st.lists(st.one_of(st.integers(), st.none(), st.just(""), st.sampled_from(VOCAB)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
values = st.one_of(
    wrong_types,
    st.sampled_from(VOCAB),
    st.sampled_from(BAD_TIMES + ODD_GOOD_TIMES),
    instants().flatmap(rfc3339),
    st.text(max_size=6),
    st.sampled_from(["", "x" * 39, "x" * 40, "x" * 41, "é" * 40, "é" * 41]),
    st.lists(st.sampled_from(sorted(FLAGS) + ["grumpy"]), max_size=3),
    st.lists(ids, max_size=3),
    # the limits of contract revision 2, at and past the edge
    st.sampled_from(["i" * 256, "i" * 257, "é" * 256, "é" * 257]),
    st.sampled_from([["i"] * 100, ["i"] * 101, ["hate"] * 16, ["hate"] * 17, ["i" * 257]]),
)


@st.composite
def mutated(draw, event: dict) -> dict:
    e = dict(event)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "set", "set", "extra", "null"]))
        if op == "drop" and e:
            e.pop(draw(st.sampled_from(sorted(e))))
        elif op == "null":
            e[draw(st.sampled_from(FIELDS))] = None
        elif op == "extra":
            e[draw(st.one_of(st.text(max_size=8), st.just("schema_")))] = draw(values)
        else:
            e[draw(st.sampled_from(FIELDS))] = draw(values)
    return e


BYTE_DAMAGE = [
    lambda b: b[:-1] + b',"x":NaN}', lambda b: b[:-1] + b',"x":[Infinity]}',
    lambda b: b[:-1] + b',"x":{"y":-Infinity}}', lambda b: b[:-1] + b',"x":1e400}',
    lambda b: b[:-1] + b',"x":-1e309}', lambda b: b[:-1] + b',"x":1e-400}',
    lambda b: b[:-1] + b',"x":18446744073709551616}', lambda b: b[:-1] + b',"x":"\\ud800"}',
    lambda b: b[:-1] + b',"x":"\xff"}', lambda b: b"\xef\xbb\xbf" + b, lambda b: b + b"\n",
    lambda b: b"  " + b + b" \t", lambda b: b[:-1], lambda b: b + b"{}", lambda b: b[:-1] + b",}",
    lambda b: b.replace(b'"schema"', b"'schema'", 1), lambda b: b[:-1] + b',"event_id":"dup"}',
    lambda b: b"[" + b + b"]", lambda b: b"null", lambda b: b"",
]

# ----------------------------------------------------------------------------- helpers


def model_accepts(schema: str, raw: bytes):
    try:
        return ADAPTERS[schema].validate_json(raw)
    except ValidationError:
        return None


def validator_result(schema: str, raw: bytes):
    result = VALIDATOR.validate(SIDE[schema], raw, FAR_FUTURE)
    if type(result) is Rejection:
        assert result.reason in ("invalid_json", "unknown_schema", "schema_violation"), result
        assert result.detail
    return result


def same_content(model, event) -> None:
    """An accepted input means the same thing to both."""
    assert model.event_id == event.event_id
    assert model.event_type == event.kind
    assert parse_time(model.occurred_at) == event.at
    if type(event) is IncidentEvent:
        assert model.incident_id == event.incident_id
        assert tuple(model.flags or ()) == event.flags
        assert getattr(model, "category", None) == event.category
        assert getattr(model, "disposition", None) == event.disposition
        assert getattr(model, "channel", None) == event.channel
        assert getattr(model, "district", None) == event.district
        reported = getattr(model, "reported_at", None)
        assert (reported and parse_time(reported)) == event.reported_at
    else:
        assert type(event) is CrimeEvent
        assert model.crime_id == event.crime_id
        assert tuple(getattr(model, "incident_ids", ())) == event.incident_ids
        assert getattr(model, "category", None) == event.category
        assert getattr(model, "reason", None) == event.reason


def check_agreement(schema: str, raw: bytes) -> bool:
    model = model_accepts(schema, raw)
    event = validator_result(schema, raw)
    v_ok = type(event) is not Rejection
    assert (model is not None) == v_ok, (raw[:400], event, model)
    if v_ok:
        same_content(model, event)
    return v_ok


def topic_schema(event: dict, draw_other: bool) -> str:
    schema = event.get("schema")
    own = schema if isinstance(schema, str) and schema in ADAPTERS else "incident.v1"
    if draw_other:
        return "crime.v1" if own == "incident.v1" else "incident.v1"
    return own


# ----------------------------------------------------------------------------- agreement tests

@settings(max_examples=300, deadline=None)
@given(valid_events())
def test_valid_events_are_accepted_by_both(event):
    raw = orjson.dumps(event)
    assert check_agreement(event["schema"], raw)


@settings(max_examples=300, deadline=None)
@given(valid_events())
def test_valid_events_on_the_wrong_topic_are_rejected_by_both(event):
    raw = orjson.dumps(event)
    other = topic_schema(event, draw_other=True)
    assert not check_agreement(other, raw)
    assert VALIDATOR.validate(SIDE[other], raw, FAR_FUTURE).reason == "unknown_schema"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_events_are_judged_alike(data):
    event = data.draw(valid_events())
    bad = data.draw(mutated(event))
    try:
        raw = orjson.dumps(bad)
    except TypeError:  # e.g. a key orjson cannot write: not an input we can send
        assume(False)
    check_agreement(topic_schema(event, draw_other=False), raw)


@settings(max_examples=200, deadline=None)
@given(valid_events(), st.sampled_from(range(len(BYTE_DAMAGE))))
def test_byte_level_damage_is_judged_alike(event, which):
    raw = BYTE_DAMAGE[which](orjson.dumps(event))
    check_agreement(event["schema"], raw)


@pytest.mark.parametrize("value", BAD_TIMES)
@pytest.mark.parametrize("field", ["occurred_at", "reported_at"])
def test_bad_timestamps_are_rejected_by_both(field, value):
    e = {"schema": "incident.v1", "event_id": "e", "event_type": "opened", "incident_id": "i",
         "occurred_at": "2026-03-01T09:00:00Z", "reported_at": "2026-03-01T08:00:00Z",
         "channel": "999", "district": "Dover", "category": "theft", field: value}
    assert not check_agreement("incident.v1", orjson.dumps(e))


@pytest.mark.parametrize("value", ODD_GOOD_TIMES)
def test_unusual_but_valid_timestamps_are_accepted_by_both(value):
    e = {"schema": "crime.v1", "event_id": "e", "event_type": "cancelled", "crime_id": "c",
         "occurred_at": value}
    assert check_agreement("crime.v1", orjson.dumps(e))


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"[NaN]", b'{"a":-1e999}'])
def test_non_finite_numbers_are_rejected_by_both(literal):
    """RFC 8259 has no NaN/Infinity: both reject it, even in an ignored field (contract §2)."""
    raw = (b'{"schema":"crime.v1","event_id":"e","event_type":"cancelled","crime_id":"c",'
           b'"occurred_at":"2026-03-01T08:00:00Z","extra":' + literal + b"}")
    assert VALIDATOR.validate("crimes", raw, FAR_FUTURE).reason == "invalid_json"
    assert model_accepts("crime.v1", raw) is None


def test_pydantic_reads_the_same_as_validator_on_the_sample():
    """Every sample message: both agree (the sample holds the realistic invalid ones)."""
    n = 0
    for msg in read_capture(SAMPLE / "capture.jsonl"):
        schema = "incident.v1" if msg.topic == "cc.incidents" else "crime.v1"
        n += check_agreement(schema, msg.payload)
    assert n == 2133 + 37 + 458 + 14  # valid + duplicate messages of expected-audit.json


# ----------------------------------------------------------------------------- JSON Schema

def test_checked_in_schemas_match_the_models():
    """``make schemas`` output equals ``schemas/``: run it after changing pipeline/contract/models.py."""
    rendered = render()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.schema.json")}
    assert sorted(on_disk) == sorted(rendered), "schema files added or missing: run `make schemas`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"schemas/{name} drifted from pipeline/contract/models.py: run `make schemas`"


def _schema_validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_sample_payloads_validate_against_the_json_schemas():
    checkers = {s: _schema_validator(s) for s in ("incident.v1", "crime.v1")}
    valid = invalid = 0
    for msg in read_capture(SAMPLE / "capture.jsonl"):
        schema = "incident.v1" if msg.topic == "cc.incidents" else "crime.v1"
        result = VALIDATOR.validate(SIDE[schema], msg.payload, FAR_FUTURE)
        if type(result) is not Rejection:
            errors = list(checkers[schema].iter_errors(orjson.loads(msg.payload)))
            assert not errors, (msg.line_no, [e.message for e in errors])
            valid += 1
        elif result.reason != "invalid_json":
            # The sample's invalid objects are all of a kind JSON Schema can express
            # (vocabulary, pattern, required); reported_at order or calendar dates it cannot.
            assert not checkers[schema].is_valid(orjson.loads(msg.payload)), msg.line_no
            invalid += 1
    assert valid == 2133 + 37 + 458 + 14
    assert invalid > 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_json_schema_accepts_whatever_the_validator_accepts(data):
    """The published schema is never stricter than the monitor."""
    event = data.draw(valid_events())
    if data.draw(st.booleans()):
        event = data.draw(mutated(event))
    try:
        raw = orjson.dumps(event)
    except TypeError:
        assume(False)
    schema = topic_schema(event, draw_other=False)
    if type(VALIDATOR.validate(SIDE[schema], raw, FAR_FUTURE)) is not Rejection:
        assert _SCHEMA_CHECKERS[schema].is_valid(orjson.loads(raw)), raw


_SCHEMA_CHECKERS = {s: _schema_validator(s) for s in ("incident.v1", "crime.v1")}


def test_expected_audit_matches_the_audit_model_and_schema():
    doc = json.loads((SAMPLE / "expected-audit.json").read_text())
    AuditModel.model_validate(doc)
    _schema_validator("audit.v1").validate(doc)
