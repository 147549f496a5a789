"""Properties of the decision core, through ``Monitor`` (contract §2-§4).

- Any arrival order of the same messages gives the same per-incident statuses
  and the same audit (generated event sets, and the sample capture).
- Inserting copies of valid messages changes only the duplicate counts.
- ``required = on_time + late + overdue + pending + exempt`` always holds,
  overall and per category.
"""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.capture import read_capture
from pipeline.core.times import parse_time
from pipeline.core.monitor import Monitor
from scenario import CRIMES, INCIDENTS, NOW, cancelled, closed, linked, opened, reclassified, recorded

from support import SAMPLE_DIR  # noqa: E402
SAMPLE = [(m.topic, m.payload) for m in read_capture(SAMPLE_DIR / "capture.jsonl")]
EXPECTED = json.loads((SAMPLE_DIR / "expected-audit.json").read_text())
SAMPLE_NOW = parse_time("2027-01-01T00:00:00Z")

INCIDENT_IDS = ["I0", "I1", "I2", "I3"]
CRIME_IDS = ["C0", "C1", "C2"]
CATEGORIES = ["theft", "burglary", "rape", "asb", "missing_person"]  # three crime, two not
DISPOSITIONS = ["no_crime", "transferred", "duplicate", "other", "crime_recorded"]
REASONS = [None, "duplicate", "recorded_in_error"]
STATUS_PARTS = ("recorded_on_time", "recorded_late", "overdue", "pending", "exempt")

# Times are quarter hours in [0, 60]: ties, deadline boundaries and lateness all happen.
times = st.integers(0, 240).map(lambda q: q / 4)


# ----------------------------------------------------------------------------- generated captures

@st.composite
def event_sets(draw) -> list[tuple[str, bytes]]:
    """A few incidents and crimes with every event type, some duplicates and invalid messages."""
    events: list[dict] = []
    n = iter(range(10**6))

    def eid() -> str:
        return f"E{next(n):03d}"

    for iid in INCIDENT_IDS:
        if draw(st.integers(0, 9)) > 0:  # sometimes the opened event is lost
            at = draw(times)
            lag = draw(st.sampled_from([0, 0, 0.5, 23, 30]))  # online reports logged late
            events.append(opened(iid, at=at, reported_at=max(0.0, at - lag), event_id=eid(),
                                 category=draw(st.sampled_from(CATEGORIES)),
                                 channel=draw(st.sampled_from(["999", "online"])),
                                 district=draw(st.sampled_from(["Dover", "Atlantis"])),
                                 flags=draw(st.lists(st.sampled_from(["hate", "domestic_abuse"]), max_size=2))))
        for _ in range(draw(st.integers(0, 2))):
            events.append(reclassified(iid, at=draw(times), category=draw(st.sampled_from(CATEGORIES)),
                                       event_id=eid()))
        for _ in range(draw(st.integers(0, 2))):
            events.append(closed(iid, at=draw(times), disposition=draw(st.sampled_from(DISPOSITIONS)),
                                 event_id=eid()))
    links = st.lists(st.sampled_from(INCIDENT_IDS + ["IX"]), max_size=3)
    for cid in CRIME_IDS:
        for _ in range(draw(st.integers(0, 2))):
            events.append(recorded(cid, draw(links), at=draw(times), event_id=eid()))
        for _ in range(draw(st.integers(0, 1))):
            events.append(linked(cid, draw(links.filter(bool)), at=draw(times), event_id=eid()))
        for _ in range(draw(st.integers(0, 2))):
            events.append(cancelled(cid, at=draw(times), reason=draw(st.sampled_from(REASONS)), event_id=eid()))
    messages = [(INCIDENTS if e["schema"] == "incident.v1" else CRIMES, orjson.dumps(e)) for e in events]
    dup_count = draw(st.integers(0, 3))
    if messages:
        messages += [draw(st.sampled_from(messages)) for _ in range(dup_count)]
    invalid = [(INCIDENTS, b"{not json"), (CRIMES, b"[]")]
    invalid += [(INCIDENTS, raw) for topic, raw in messages if topic == CRIMES][:1]  # wrong topic
    messages += draw(st.lists(st.sampled_from(invalid), max_size=2))
    return messages


def run(messages, now: int = NOW) -> Monitor:
    monitor = Monitor()
    for topic, raw in messages:
        monitor.feed(topic, raw, now)
    return monitor


def statuses(monitor: Monitor) -> dict:
    """Each incident's contribution key: (status, category, district label, channel, reason)."""
    return {iid: st.key for iid, st in monitor.incidents.incidents.items()}


def check_identities(doc: dict) -> None:
    inc = doc["incidents"]
    assert inc["required"] == sum(inc[k] for k in STATUS_PARTS), inc
    assert 0 <= inc["at_risk"] <= inc["pending"] and 0 <= inc["downgraded"] <= inc["exempt"]
    assert inc["required"] <= inc["seen"]
    total = dict.fromkeys(("required",) + STATUS_PARTS + ("at_risk", "downgraded"), 0)
    for name, cat in doc["by_category"].items():
        assert cat["required"] > 0, name
        assert cat["required"] == sum(cat[k] for k in STATUS_PARTS), (name, cat)
        assert cat["at_risk"] <= cat["pending"] and cat["downgraded"] <= cat["exempt"]
        for k in total:
            total[k] += cat[k]
    assert total == {k: inc[k] for k in total}  # by_category partitions the required incidents
    cr = doc["crimes"]
    assert cr["without_incident"] <= cr["recorded"] and cr["cancelled_without_reason"] <= cr["cancelled"]
    rate = doc["recording_rate"]
    denominator = inc["recorded_on_time"] + inc["recorded_late"] + inc["overdue"]
    if denominator == 0:
        assert rate == {"value": None, "low": None, "high": None}
    else:
        assert 0.0 <= rate["low"] <= rate["value"] <= rate["high"] <= 1.0


# ----------------------------------------------------------------------------- properties

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_arrival_order_gives_the_same_statuses_and_audit(data):
    messages = data.draw(event_sets())
    reference = run(messages)
    shuffled = run(data.draw(st.permutations(messages)))
    assert statuses(shuffled) == statuses(reference)
    assert shuffled.audit() == reference.audit()
    check_identities(reference.audit())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_inserting_valid_duplicates_changes_only_duplicate_counts(data):
    messages = data.draw(event_sets())
    valid = [m for m in messages if run([m]).audit()["events"][_side(m[0])]["valid"] == 1]
    if not valid:
        return
    copies = data.draw(st.lists(st.sampled_from(valid), min_size=1, max_size=6))
    more = list(messages)
    for copy in copies:
        more.insert(data.draw(st.integers(0, len(more))), copy)
    before, after = run(messages), run(more)
    assert statuses(after) == statuses(before)
    expected = before.audit()
    for copy in copies:
        expected["events"][_side(copy[0])]["duplicate"] += 1
    assert after.audit() == expected


def _side(topic: str) -> str:
    return "incidents" if topic == INCIDENTS else "crimes"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_identities_hold_after_every_message(data):
    messages = data.draw(st.permutations(data.draw(event_sets())))
    monitor = Monitor()
    for topic, raw in messages:
        monitor.feed(topic, raw, NOW)
        check_identities(monitor.audit())
    ev = monitor.audit()["events"]
    assert sum(ev["incidents"].values()) + sum(ev["crimes"].values()) == len(messages)


# ----------------------------------------------------------------------------- the sample

def same_audit(got: dict, expected: dict) -> None:
    """Equal as data; the watermark as an instant, floats within 1e-9."""
    assert parse_time(got["watermark"]) == parse_time(expected["watermark"])
    for key in expected:
        if key in ("watermark", "recording_rate"):
            continue
        assert got[key] == expected[key], key
    assert set(got) == set(expected)
    for k, v in expected["recording_rate"].items():
        assert math.isclose(got["recording_rate"][k], v, rel_tol=0, abs_tol=1e-9), k


SAMPLE_REFERENCE = None


def sample_reference() -> Monitor:
    global SAMPLE_REFERENCE
    if SAMPLE_REFERENCE is None:
        SAMPLE_REFERENCE = run(SAMPLE, SAMPLE_NOW)
    return SAMPLE_REFERENCE


def test_sample_in_capture_order_gives_expected_audit():
    same_audit(sample_reference().audit(), EXPECTED)
    check_identities(sample_reference().audit())


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**64))
def test_sample_in_any_order_gives_expected_audit(seed: int):
    rnd = random.Random(seed)
    messages = list(SAMPLE)
    rnd.shuffle(messages)
    monitor = run(messages, SAMPLE_NOW)
    same_audit(monitor.audit(), EXPECTED)
    assert statuses(monitor) == statuses(sample_reference())


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**64), st.floats(0.05, 0.95))
def test_sample_subsets_in_two_orders_agree(seed: int, keep: float):
    rnd = random.Random(seed)
    subset = [m for m in SAMPLE if rnd.random() < keep]
    other = list(subset)
    rnd.shuffle(other)
    a, b = run(subset, SAMPLE_NOW), run(other, SAMPLE_NOW)
    assert statuses(a) == statuses(b)
    assert a.audit() == b.audit()
    check_identities(a.audit())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_deferred_evaluation_gives_the_eager_statuses_and_audit(data):
    """The offline audit's deferred mode (assess each incident once, at the end)
    decides exactly what the eager mode decides."""
    messages = data.draw(event_sets())
    order = data.draw(st.permutations(messages))
    eager = run(order)
    deferred = Monitor(deferred=True)
    for topic, payload in order:
        deferred.feed(topic, payload, NOW)
    assert deferred.audit() == eager.audit()
    assert statuses(deferred) == statuses(eager)


@pytest.mark.parametrize("outputs", [False, True], ids=["offline", "worker"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_deferred_settles_anywhere_give_the_eager_statuses_and_audit(outputs, data):
    """Settles at any points of the input (offline, each packs the quiet
    incidents and a later input unpacks one; a worker settles at the end of
    each stage record, with outputs) change nothing the deferred mode
    decides. With outputs, each alert is decided once, and they agree with
    the final state: every incident overdue or at risk had that alert, a
    ``resolved`` follows an ``overdue``."""
    messages = data.draw(event_sets())
    order = data.draw(st.permutations(messages))
    settle_after = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    eager = run(order)
    deferred = Monitor(deferred=True, outputs=outputs, keep_alerts=outputs)
    for (topic, payload), settle in zip(order, settle_after):
        deferred.feed(topic, payload, NOW)
        if settle:
            deferred.settle()
    assert deferred.audit() == eager.audit()
    assert statuses(deferred) == statuses(eager)
    if not outputs:
        assert not deferred.alerts
        return
    ids = [a.alert_id for a in deferred.alerts]
    assert len(ids) == len(set(ids))
    for incident_id, key in statuses(deferred).items():
        if key is not None and key.status in ("overdue", "at_risk"):
            assert f"{incident_id}:{key.status}" in ids
    assert all(f"{i.rsplit(':', 1)[0]}:overdue" in ids for i in ids if i.endswith(":resolved"))


def test_deferred_evaluation_with_eviction_matches_eager_on_the_sample():
    from pipeline.settings import Settings

    short = Settings(state_retention=6 * 3600.0)
    monitors = [Monitor(short.core()), Monitor(short.core(), deferred=True)]
    for topic, payload in SAMPLE:
        for monitor in monitors:
            monitor.feed(topic, payload, SAMPLE_NOW)
    eager, deferred = (monitor.audit() for monitor in monitors)
    assert eager["incidents"] == deferred["incidents"] and eager["crimes"] == deferred["crimes"]


def test_kept_events_share_their_incident_id_and_configured_names():
    """Decoded events each bring their own copies of these strings; a ledger
    keeps one of each (memory: a fifth of an open incident), an unknown
    district stays the event's own (no table that input could grow)."""
    import msgspec

    from pipeline.core.events import IncidentEvent
    from pipeline.core.incidents import IncidentLedger
    from pipeline.settings import Settings

    config = Settings().core()
    ledger = IncidentLedger(config.params, config.vocabulary, deferred=True)
    district, category = config.vocabulary.districts[0], config.vocabulary.crime_categories[0]
    base = parse_time("2026-01-06T00:00:00Z")
    sent = [IncidentEvent(base + 2, "e2", "closed", "KNT-1", disposition="no_crime"),
            IncidentEvent(base + 1, "e1", "opened", "KNT-1", category, None, base, "999", district),
            IncidentEvent(base + 3, "e3", "reclassified", "KNT-1", category),
            IncidentEvent(base + 4, "e4", "opened", "KNT-2", category, None, base, "999", "Nowhere Town")]
    decoded = msgspec.msgpack.Decoder(list[IncidentEvent]).decode(msgspec.msgpack.encode(sent))
    assert decoded == sent and decoded[1].district is not decoded[3].district  # fresh copies
    for ev in decoded:
        assert ledger.apply(ev)
    for settled in (False, True):  # as applied; then packed by the settle (quiet) and unpacked again
        if settled:
            ledger.settle()
            assert type(ledger.incidents["KNT-1"].events) is bytes
        kept = ledger.events_of("KNT-1")
        assert [ev.event_id for ev in kept] == ["e1", "e2", "e3"] and kept == sorted(sent[:3])
        assert len({id(ev.incident_id) for ev in kept}) == 1
        assert kept[0].category is category and kept[2].category is category and kept[0].district is district
        assert ledger.events_of("KNT-2")[0].category is category
        assert ledger.events_of("KNT-2")[0].district == "Nowhere Town"
        assert "Nowhere Town" not in ledger._names  # noqa: SLF001
