"""The compiled validator and the time helpers (contract §2, revision 2).

Agreement with the pydantic models is in ``test_contract_models.py``; here are
the validator's own duties: exact microseconds, the reason and detail of each
rejection, the rules only it knows (future timestamp, size), configured
vocabularies and limits, the revision-2 limits, and hostile input: whatever
bytes arrive, it returns an event or a rejection with one of §2's reasons and
never raises (structure-aware hypothesis fuzzing).
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_contract_models as tm
from pipeline.core.config import Limits, Vocabulary
from pipeline.core.events import CrimeEvent, IncidentEvent, Rejection
from pipeline.core.times import MAX_US, MIN_US, format_time, parse_time, parse_times
from pipeline.core.validation import Validator
from pipeline.core.vocabulary import DEADLETTER_DETAIL_CHARS, REASONS

US = 1_000_000
V = Validator()
NOW = parse_time("2026-06-01T00:00:00Z")
OPENED = {"schema": "incident.v1", "event_id": "e1", "event_type": "opened", "incident_id": "I1",
          "occurred_at": "2026-03-01T09:30:00.250+01:00", "reported_at": "2026-03-01T08:00:00Z",
          "channel": "online", "district": "Thanet", "category": "fraud",
          "flags": ["hate", "repeat_victim"]}
SIDE = {"incident.v1": "incidents", "crime.v1": "crimes"}


def validate(schema: str, raw: bytes, now: int = NOW, v: Validator = V):
    return v.validate(SIDE[schema], raw, now)


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


#: Instants of every shape §2 admits, the three msgspec reads differently
#: (a space for T, an offset without its colon, more than six fraction digits),
#: and the edges of the range.
STAMPS = ["2026-01-06T00:02:01.977Z", "2026-01-06T01:00:49.715168+01:00", "2026-01-06T00:02:01Z",
          "2026-01-06t00:02:01-05:30", "1970-01-01T00:00:00.5z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
          "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "2026-01-06 00:02:01Z",
          "2026-01-06T00:02:01+0100", "2026-01-06T00:02:01.1234567Z", "2024-02-29T23:59:59.9999995-00:00"]
ODD = "0123456789-:T tzZ+.,|٣²\n"


@st.composite
def stamp(draw) -> str:
    """An instant from :data:`STAMPS`, perhaps with a few characters changed, added or removed."""
    text = list(draw(st.sampled_from(STAMPS)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["set", "add", "cut"]))
        if op == "add" or not text:
            text.insert(at, draw(st.sampled_from(ODD)))
        elif op == "set":
            text[min(at, len(text) - 1)] = draw(st.sampled_from(ODD))
        else:
            del text[min(at, len(text) - 1)]
    return "".join(text)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(stamp(), st.sampled_from(STAMPS[:5]), st.text(max_size=40)), max_size=40))
def test_parse_times_gives_what_parse_time_gives_for_each(texts):
    assert parse_times(texts) == [parse_time(t) for t in texts]


def test_parse_times_reads_each_deviation_as_section_2_does():
    plain = STAMPS[:5] * 20
    assert parse_times(plain) == [parse_time(t) for t in plain]
    for odd in ("2026-01-06 00:02:01Z", "2026-01-06T00:02:01+0100", "2026-01-06T00:02:01.1234567Z"):
        assert parse_times(plain + [odd] + plain) == [parse_time(t) for t in plain + [odd] + plain]
    assert parse_times(["yesterday"] + plain + ["2026-01-06T00:02:01"]) == [None] + [parse_time(t) for t in plain] + [None]
    assert parse_times(["2026-01-06T00:02:01.1234567Z"]) == [parse_time("2026-01-06T00:02:01.1234567Z")] == [1767657721123456]
    assert parse_times([]) == []


@st.composite
def date_time(draw) -> str:
    """A text of RFC 3339's shape whose values may be out of range: month 13,
    February 29th of a common year, hour 24, second 60, offset -24:00, year 0,
    any number of fraction digits, either case of T and Z."""
    year = draw(st.sampled_from([0, 1, 2, 1900, 1970, 2000, 2024, 2026, 9999]) | st.integers(0, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = draw(st.integers(0, 24)), draw(st.integers(0, 60)), draw(st.integers(0, 60))
    digits = draw(st.integers(0, 10))
    fraction = "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))) \
        if digits else draw(st.sampled_from(["", "."]))
    offset = draw(st.sampled_from(["Z", "z"]) | st.builds(
        lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 24), st.integers(0, 60)))
    sep = draw(st.sampled_from("Tt"))
    return f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"


@settings(max_examples=5000, deadline=None)
@given(st.lists(date_time(), min_size=1, max_size=5))
def test_parse_times_reads_every_value_of_the_rfc3339_shape_as_parse_time_does(texts):
    """The compiled reader of parse_times against parse_time (the pattern, then
    fromisoformat), on texts of the valid shape with values in and out of range."""
    assert parse_times(texts) == [parse_time(t) for t in texts]


def test_parse_times_at_the_edges_of_the_calendar_and_the_range():
    texts = ["2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2000-02-29T12:00:00Z", "1900-02-29T12:00:00Z",
             "2026-04-31T00:00:00Z", "2026-12-31T23:59:59.999999999Z", "0001-01-01T00:00:00Z",
             "0001-01-01T00:59:59-01:00", "0001-01-01T00:59:59+01:00", "9999-12-31T23:59:59.999999Z",
             "9999-12-31T23:00:00-01:00", "9999-12-31T22:59:59-01:00", "2026-01-01T00:00:00+23:59",
             "2026-01-01T00:00:00-23:59", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01:60",
             "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00+01:00Z", "2026-01-01T00:00:00", "1970-01-01T00:00:00Z"]
    assert parse_times(texts) == [parse_time(t) for t in texts]
    assert parse_times(["1970-01-01T00:00:00Z", "1970-01-01T01:00:00.5+01:00"]) == [0, 500_000]


def test_parse_times_across_chunks_and_with_many_invalid_texts():
    """Batches longer than one msgspec call, invalid texts dense or sparse,
    deviations on either side of a chunk's edge: the same as one by one."""
    import random

    rng = random.Random(7)
    pool = STAMPS + ["yesterday", "", "2026-01-06T00:02:01", "x" * 50]
    for p_odd in (0.0, 0.001, 0.05, 0.9):
        texts = [rng.choice(pool) if rng.random() < p_odd else rng.choice(STAMPS[:5]) for _ in range(3000)]
        assert parse_times(texts) == [parse_time(t) for t in texts]


# ----------------------------------------------------------------------------- events

def test_opened_event_fields():
    ev = validate("incident.v1", orjson.dumps(OPENED))
    assert ev == IncidentEvent(parse_time("2026-03-01T08:30:00.25Z"), "e1", "opened", "I1", category="fraud",
                               reported_at=parse_time("2026-03-01T08:00:00Z"), channel="online",
                               district="Thanet", flags=("hate", "repeat_victim"))


def test_crime_event_fields():
    raw = orjson.dumps({"schema": "crime.v1", "event_id": "r1", "event_type": "recorded", "crime_id": "C1",
                        "occurred_at": "2026-03-01T10:00:00Z", "incident_ids": ["I1", "I2"],
                        "category": "robbery"})
    assert validate("crime.v1", raw) == CrimeEvent(parse_time("2026-03-01T10:00:00Z"), "r1", "recorded", "C1",
                                                   incident_ids=("I1", "I2"), category="robbery")
    cancel = orjson.dumps({"schema": "crime.v1", "event_id": "r2", "event_type": "cancelled", "crime_id": "C1",
                           "occurred_at": "2026-03-01T11:00:00Z", "reason": None})
    assert validate("crime.v1", cancel).reason is None


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
    result = validate("incident.v1", orjson.dumps({**OPENED, **change}))
    assert type(result) is Rejection
    assert result.reason == reason
    assert words in result.detail


def test_invalid_json_detail_is_bounded():
    result = validate("incident.v1", b'{"schema": "incident.v1", "x": "' + b"y" * 5000)
    assert result.reason == "invalid_json"
    assert 0 < len(result.detail) <= 300


def test_long_bad_values_are_truncated_in_details():
    result = validate("incident.v1", orjson.dumps({**OPENED, "occurred_at": "9" * 5000}))
    assert result.reason == "schema_violation" and len(result.detail) < 300


def test_future_tolerance_and_size_limit_come_from_configuration():
    v = Validator(limits=Limits(future_tolerance=60 * US, max_message_bytes=400))
    ok = {**OPENED, "occurred_at": "2026-06-01T00:01:00Z", "reported_at": "2026-06-01T00:00:00Z"}
    assert type(validate("incident.v1", orjson.dumps(ok), v=v)) is IncidentEvent
    late = {**ok, "occurred_at": "2026-06-01T00:01:00.000001Z"}
    assert validate("incident.v1", orjson.dumps(late), v=v).reason == "future_timestamp"
    big = {**ok, "pad": "x" * 400}
    assert validate("incident.v1", orjson.dumps(big), v=v).reason == "too_large"


def test_configured_vocabulary_is_used():
    v = Validator(Vocabulary(crime_categories=("poaching",), non_crime_categories=("lost_dog",)))
    assert type(validate("incident.v1", orjson.dumps({**OPENED, "category": "lost_dog"}), v=v)) is IncidentEvent
    assert validate("incident.v1", orjson.dumps(OPENED), v=v).reason == "schema_violation"  # fraud unknown here
    rec = {"schema": "crime.v1", "event_id": "r", "event_type": "recorded", "crime_id": "C",
           "occurred_at": "2026-03-01T10:00:00Z", "incident_ids": [], "category": "poaching"}
    assert type(validate("crime.v1", orjson.dumps(rec), v=v)) is CrimeEvent
    assert validate("crime.v1", orjson.dumps({**rec, "category": "lost_dog"}), v=v).reason == "schema_violation"


# ----------------------------------------------------------------------------- revision 2 limits

CANCEL = {"schema": "crime.v1", "event_id": "e", "event_type": "cancelled", "crime_id": "c",
          "occurred_at": "2026-03-01T08:00:00Z"}
LINKED = {"schema": "crime.v1", "event_id": "e", "event_type": "linked", "crime_id": "c",
          "occurred_at": "2026-03-01T08:00:00Z", "incident_ids": ["I1"]}


@pytest.mark.parametrize("field", ["event_id", "crime_id"])
def test_ids_are_1_to_256_characters(field):
    assert type(validate("crime.v1", orjson.dumps({**CANCEL, field: "x" * 256}))) is CrimeEvent
    assert type(validate("crime.v1", orjson.dumps({**CANCEL, field: "é" * 256}))) is CrimeEvent  # characters
    for bad in ("", "x" * 257, "x" * (1 << 19)):
        r = validate("crime.v1", orjson.dumps({**CANCEL, field: bad}))
        assert r.reason == "schema_violation" and field in r.detail and len(r.detail) <= 300


def test_incident_id_of_a_mebibyte_is_rejected_with_a_short_detail():
    r = validate("incident.v1", orjson.dumps({**OPENED, "incident_id": "i" * (1 << 20) }),
                 v=Validator(limits=Limits(max_message_bytes=4 << 20)))
    assert r.reason == "schema_violation" and len(r.detail) <= 300


def test_incident_ids_at_most_100_each_at_most_256():
    assert type(validate("crime.v1", orjson.dumps({**LINKED, "incident_ids": ["i"] * 100}))) is CrimeEvent
    assert validate("crime.v1", orjson.dumps({**LINKED, "incident_ids": ["i"] * 101})).reason == "schema_violation"
    assert validate("crime.v1", orjson.dumps({**LINKED, "incident_ids": ["i" * 257]})).reason == "schema_violation"


def test_flags_at_most_16():
    assert type(validate("incident.v1", orjson.dumps({**OPENED, "flags": ["hate"] * 16}))) is IncidentEvent
    assert validate("incident.v1", orjson.dumps({**OPENED, "flags": ["hate"] * 17})).reason == "schema_violation"


@pytest.mark.parametrize("text, ok", [
    ("9999-12-31T23:59:59Z", True), ("9999-12-31T23:59:59.999999Z", True), ("9999-12-31T23:59:59+01:00", True),
    ("9999-12-31T23:59:59-01:00", False), ("9999-12-31T23:59:59-23:59", False),
    ("0001-01-01T00:00:00Z", True), ("0001-01-01T00:00:00-01:00", True), ("0001-01-01T00:00:00+00:01", False),
    ("0001-01-01T00:00:00+01:00", False),
])
def test_instants_must_lie_in_years_1_to_9999_once_the_offset_is_applied(text, ok):
    assert (parse_time(text) is not None) == ok
    event = {**OPENED, "occurred_at": text, "reported_at": text}
    r = validate("incident.v1", orjson.dumps(event), now=MAX_US)
    assert (type(r) is IncidentEvent) == ok, r
    if not ok:
        assert r.reason == "schema_violation"


def test_format_time_covers_the_whole_range():
    assert format_time(MIN_US) == "0001-01-01T00:00:00.000000Z"
    assert format_time(MAX_US) == "9999-12-31T23:59:59.999999Z"
    assert parse_time(format_time(MIN_US)) == MIN_US and parse_time(format_time(MAX_US)) == MAX_US


def test_a_repeated_member_the_last_one_counts():
    raw = (b'{"schema":"crime.v1","event_id":"a","event_type":"cancelled","crime_id":"first",'
           b'"crime_id":"last","occurred_at":"2026-03-01T08:00:00Z"}')
    assert validate("crime.v1", raw).crime_id == "last"
    bad_then_good = raw.replace(b'"crime_id":"first"', b'"crime_id":5')
    assert validate("crime.v1", bad_then_good).reason == "schema_violation"  # every occurrence must be valid JSON of its type


def test_null_optional_fields_are_absent_and_null_required_fields_are_missing():
    assert validate("incident.v1", orjson.dumps({**OPENED, "flags": None})).flags == ()
    assert validate("crime.v1", orjson.dumps({**CANCEL, "reason": None})).reason is None
    assert validate("crime.v1", orjson.dumps({**CANCEL, "crime_id": None})).reason == "schema_violation"


def test_unknown_fields_are_ignored_but_must_be_json():
    assert type(validate("crime.v1", orjson.dumps({**CANCEL, "note": {"deep": [1, 2.5, None, True]}}))) is CrimeEvent
    raw = orjson.dumps({**CANCEL, "note": 1})[:-2] + b"1e400}"
    assert validate("crime.v1", raw).reason == "invalid_json"


# ----------------------------------------------------------------------------- hostile input

HOSTILE_TIMES = st.sampled_from([
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59.9999999999Z",
    "0000-01-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-03-01T24:00:00Z", "2026-03-01T08:00:60Z",
    "2026-03-01T08:00:00+23:59", "2026-03-01T08:00:00-23:59", "2026-03-01T08:00:00+24:00",
    "+2026-03-01T08:00:00Z", "2026-03-01T08:00:00Z\x00", "２０２６-03-01T08:00:00Z", "1e400", "",
])
ID_LIKE = st.one_of(st.text(max_size=300), st.just("x" * 256), st.just("x" * 257), st.just(""),
                    st.text(st.characters(codec="utf-8"), min_size=250, max_size=260))
LIST_LIKE = st.one_of(st.lists(ID_LIKE, max_size=3), st.just(["i"] * 100), st.just(["i"] * 101),
                      st.just(["hate"] * 16), st.just(["hate"] * 17))
ODD_JSON = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"18446744073709551616",
                            b"1e-400", b'"\\ud800"', b'"\\udc00\\ud800"', b"[" * 3000 + b"]" * 3000,
                            b'{"a":' * 3000 + b"1" + b"}" * 3000, b'"\\u0000"', b"true", b"null", b"[]", b"{}"])


@st.composite
def hostile(draw) -> bytes:
    """A valid event made hostile at the edges of every rule."""
    event = dict(draw(tm.valid_events()))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(tm.FIELDS + ["extra"]))
        event[field] = draw(st.one_of(HOSTILE_TIMES, ID_LIKE, LIST_LIKE, tm.values))
    try:
        raw = orjson.dumps(event)
    except TypeError:  # a value orjson cannot write (an integer past 64 bits): the standard library can
        raw = json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "odd", "dup", "bytes", "cut"]))
    if damage == "odd":
        raw = raw[:-1] + b',"z":' + draw(ODD_JSON) + b"}"
    elif damage == "dup":
        name = draw(st.sampled_from(["event_id", "schema", "occurred_at", "event_type", "incident_ids"]))
        raw = raw[:-1] + b',"' + name.encode() + b'":' + draw(ODD_JSON) + b"}"
    elif damage == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    elif damage == "cut":
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


def _judged(side: str, raw: bytes, now: int):
    r = V.validate(side, raw, now)
    if type(r) is Rejection:
        assert r.reason in REASONS and r.reason != "processing_error"
        assert r.detail and len(r.detail) <= DEADLETTER_DETAIL_CHARS and "\n" not in r.detail
    else:
        assert type(r) in (IncidentEvent, CrimeEvent)
        assert MIN_US <= r.at <= MAX_US
        assert format_time(r.at)  # every accepted instant can be written back
    return r


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile(), st.sampled_from(["incidents", "crimes"]), st.sampled_from([NOW, MIN_US, MAX_US]))
def test_hostile_input_never_raises_and_gets_a_reason_of_section_2(raw, side, now):
    _judged(side, raw, now)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(hostile(), st.builds(lambda e: orjson.dumps(e), tm.valid_events())), max_size=30),
       st.sampled_from(["incidents", "crimes"]), st.sampled_from([NOW, MIN_US, MAX_US]))
def test_validate_many_gives_what_validate_gives_for_each(raws, side, now):
    assert V.validate_many(side, raws, now) == [V.validate(side, raw, now) for raw in raws]


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["incidents", "crimes"]))
def test_random_bytes_never_raise(raw, side):
    _judged(side, raw, NOW)


def test_deep_nesting_and_huge_input_are_rejected_not_raised():
    deep = b'{"schema":"crime.v1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _judged("crimes", deep, NOW).reason == "invalid_json"
    assert _judged("crimes", b"x" * ((1 << 20) + 1), NOW).reason == "too_large"
