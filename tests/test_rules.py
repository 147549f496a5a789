"""One named test per contract rule (contract §2 invalid input, §3 decisions, §4 audit).

Every test is a small hand-made scenario fed as JSON bytes through
``Monitor`` with a fixed wall clock (``scenario.NOW``). Times in the scenarios
are hours after ``scenario.T0``; the default parameters apply (deadline 24 h,
allowed lateness 10 min, at-risk window 4 h) unless a test says otherwise.
"""

from __future__ import annotations

import math

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.core.times import format_time
from scenario import (
    CRIMES, HOUR, INCIDENTS, MINUTE, NOW, T0, Scenario, cancelled, closed, iso, linked, opened,
    reclassified, recorded, us,
)

DEADLINE = 24  # hours
LATENESS = 10 / 60  # hours
WINDOW = 4  # hours
Z = 1.959963984540054


def incidents_block(sc: Scenario) -> dict:
    return sc.audit()["incidents"]


# --------------------------------------------------------------------------- §3 the clock

def test_clock_starts_at_report_not_at_logging():
    """required_since = reported_at of the opened event (not its occurred_at)."""
    sc = Scenario()
    sc.opened("I1", at=2, reported_at=0, category="theft")
    a = sc.assessment("I1")
    assert a.required_since == us(0)
    assert a.deadline == us(DEADLINE)
    # A record 25 h after the report but 23 h after logging is late.
    sc.recorded("C1", ["I1"], at=25)
    assert sc.status("I1") == "late"
    assert incidents_block(sc)["recorded_late"] == 1


def test_reclassification_to_crime_starts_the_clock_at_the_reclassification():
    sc = Scenario()
    sc.opened("I1", at=0, category="concern_for_safety")
    assert sc.status("I1") == "not_required"
    sc.reclassified("I1", at=10, category="burglary")
    a = sc.assessment("I1")
    assert (a.required_since, a.deadline) == (us(10), us(10 + DEADLINE))
    sc.recorded("C1", ["I1"], at=30, category="burglary")  # 30 h after the call, 20 h after reclassification
    assert sc.status("I1") == "on_time"
    assert sc.audit()["by_category"]["burglary"]["recorded_on_time"] == 1


def test_reclassification_between_crime_categories_keeps_the_original_clock():
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.reclassified("I1", at=10, category="robbery")
    assert sc.assessment("I1").required_since == us(0)


def test_online_report_logged_after_its_deadline_is_overdue_immediately():
    sc = Scenario()
    sc.opened("I1", at=30, reported_at=0, channel="online", category="fraud")
    assert sc.status("I1") == "overdue"
    assert sc.alerts("I1") == ["I1:overdue"]  # never at_risk: it skipped the window
    # A closure after the deadline cannot exempt it either.
    sc.closed("I1", at=31, disposition="no_crime")
    assert sc.status("I1") == "overdue"
    assert sc.alerts("I1") == ["I1:overdue"]


# --------------------------------------------------------------------------- §3 exemption

@pytest.mark.parametrize("disposition, downgrade", [("no_crime", True), ("transferred", False),
                                                    ("duplicate", False)])
def test_closure_with_no_crime_transferred_or_duplicate_exempts(disposition, downgrade):
    sc = Scenario()
    sc.opened("I1", at=0, category="violence_with_injury")
    sc.closed("I1", at=3, disposition=disposition)
    sc.tick(at=50)  # well past the deadline
    assert sc.status("I1") == "exempt"
    assert sc.exempt_reason("I1") == disposition
    inc = incidents_block(sc)
    assert (inc["exempt"], inc["downgraded"], inc["overdue"]) == (1, int(downgrade), 0)
    assert sc.alerts("I1") == (["I1:downgraded"] if downgrade else [])


@pytest.mark.parametrize("disposition", ["other", "crime_recorded"])
def test_closure_with_other_dispositions_does_not_exempt(disposition):
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.closed("I1", at=3, disposition=disposition)
    sc.tick(at=50)
    assert sc.status("I1") == "overdue"


def test_reclassified_to_non_crime_before_deadline_is_a_downgrade():
    sc = Scenario()
    sc.opened("I1", at=0, category="stalking_harassment")
    sc.reclassified("I1", at=5, category="domestic_non_crime")
    assert sc.status("I1") == "exempt"
    assert sc.exempt_reason("I1") == "reclassified_non_crime"
    assert sc.alerts("I1") == ["I1:downgraded"]
    inc = incidents_block(sc)
    assert (inc["required"], inc["exempt"], inc["downgraded"]) == (1, 1, 1)
    # still counted under its last crime-related category
    assert sc.audit()["by_category"]["stalking_harassment"]["downgraded"] == 1


def test_downgrade_of_a_recorded_incident_is_recorded_and_raises_no_alert():
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.recorded("C1", ["I1"], at=2)
    sc.reclassified("I1", at=5, category="asb")
    assert sc.status("I1") == "on_time"
    assert sc.alerts("I1") == []
    assert incidents_block(sc)["downgraded"] == 0


def test_reclassification_checked_before_closure():
    """Non-crime category wins over a transferred closure (checked first)."""
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.closed("I1", at=1, disposition="transferred")
    sc.reclassified("I1", at=2, category="admin")
    assert sc.exempt_reason("I1") == "reclassified_non_crime"


def test_exemption_after_the_deadline_does_not_exempt():
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.opened("I2", at=0, category="robbery")
    sc.reclassified("I1", at=DEADLINE + 1, category="asb")
    sc.closed("I2", at=DEADLINE + 1, disposition="no_crime")
    assert sc.status("I1") == sc.status("I2") == "overdue"
    assert incidents_block(sc)["downgraded"] == 0
    assert "I1:downgraded" not in sc.alerts() and "I2:downgraded" not in sc.alerts()


def test_exemption_exactly_at_the_deadline_counts():
    """Events with occurred_at <= D are replayed: one at D exempts, one 1 µs later does not."""
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.opened("I2", at=0)
    sc.closed("I1", at=DEADLINE, disposition="transferred")
    sc.closed("I2", at=DEADLINE + 1 / HOUR, disposition="transferred")  # D + 1 µs
    assert sc.status("I1") == "exempt"
    assert sc.status("I2") == "at_risk"  # W = D - 10 min
    sc.tick(at=DEADLINE + 1)
    assert sc.status("I2") == "overdue"


def test_only_the_last_closed_event_counts():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.closed("I1", at=1, disposition="no_crime")
    sc.closed("I1", at=2, disposition="other")  # reopened and closed otherwise
    sc.opened("I2", at=0)
    sc.closed("I2", at=1, disposition="other")
    sc.closed("I2", at=2, disposition="transferred")
    sc.opened("I3", at=0)
    sc.closed("I3", at=1, disposition="duplicate")
    sc.closed("I3", at=DEADLINE + 2, disposition="other")  # after D: not replayed
    sc.tick(at=60)
    assert sc.status("I1") == "overdue"
    assert (sc.status("I2"), sc.exempt_reason("I2")) == ("exempt", "transferred")
    assert (sc.status("I3"), sc.exempt_reason("I3")) == ("exempt", "duplicate")


def test_closed_before_it_became_required_does_not_count():
    sc = Scenario()
    sc.opened("I1", at=0, category="suspicious_activity")
    sc.closed("I1", at=1, disposition="no_crime")
    sc.reclassified("I1", at=2, category="criminal_damage_arson")
    assert sc.status("I1") == "pending"
    sc.tick(at=2 + DEADLINE + 1)
    assert sc.status("I1") == "overdue"


def test_closed_event_category_field_is_ignored():
    """Only opened and reclassified set the category; closed carries none."""
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.closed("I1", at=1, disposition="other", category="asb")
    assert sc.status("I1") == "pending"


# --------------------------------------------------------------------------- §3 category label

def test_category_label_is_the_last_crime_related_category_replayed():
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.reclassified("I1", at=2, category="asb")
    sc.reclassified("I1", at=3, category="burglary")
    sc.reclassified("I1", at=DEADLINE + 5, category="robbery")  # after D: not replayed
    assert sc.assessment("I1").category == "burglary"
    by_cat = sc.audit()["by_category"]
    assert list(by_cat) == ["burglary"]
    assert by_cat["burglary"]["required"] == 1


def test_by_category_lists_only_categories_with_required_incidents():
    sc = Scenario()
    sc.opened("I1", at=0, category="asb")
    sc.opened("I2", at=0, category="missing_person")
    sc.opened("I3", at=0, category="rape")
    sc.recorded("C1", ["I3"], at=1, category="sexual_offence")  # crime's own category is not a label
    sc.recorded("C2", [], at=1, category="fraud")
    doc = sc.audit()
    assert list(doc["by_category"]) == ["rape"]
    assert doc["by_category"]["rape"] == {
        "required": 1, "recorded_on_time": 1, "recorded_late": 0, "overdue": 0, "pending": 0,
        "at_risk": 0, "exempt": 0, "downgraded": 0}
    empty = Scenario()
    empty.opened("X", at=0, category="admin")
    assert empty.audit()["by_category"] == {}


# --------------------------------------------------------------------------- §2/§3 crimes and links

def test_record_before_incident_is_on_time():
    sc = Scenario()
    sc.recorded("C1", ["I1"], at=1)  # crime recorded straight from the public, incident logged later
    assert sc.audit()["crimes"]["without_incident"] == 1
    sc.opened("I1", at=3, reported_at=0.5)
    assert sc.status("I1") == "on_time"
    assert sc.audit()["crimes"]["without_incident"] == 0


def test_link_later_records_the_incident():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.recorded("C1", [], at=5)
    assert sc.status("I1") == "pending"
    sc.linked("C1", ["I1"], at=40)  # linked long after the deadline; the crime was recorded at 5 h
    assert sc.status("I1") == "on_time"


def test_link_to_a_crime_not_yet_recorded_waits_for_the_record():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.linked("C1", ["I1"], at=2)
    assert sc.status("I1") == "pending"
    assert sc.audit()["crimes"]["recorded"] == 0
    sc.recorded("C1", [], at=26)
    assert sc.status("I1") == "late"
    assert sc.audit()["crimes"] == {"recorded": 1, "without_incident": 0, "cancelled": 0,
                                    "cancelled_without_reason": 0}


def test_one_crime_for_two_incidents():
    sc = Scenario()
    sc.opened("I1", at=0, category="robbery")
    sc.opened("I2", at=1, category="robbery")
    sc.recorded("C1", ["I1", "I2"], at=3, category="robbery")
    assert sc.status("I1") == sc.status("I2") == "on_time"
    doc = sc.audit()
    assert doc["crimes"]["recorded"] == 1
    assert doc["incidents"]["recorded_on_time"] == 2


def test_two_crimes_for_one_incident_earliest_recording_decides():
    sc = Scenario()
    sc.opened("I1", at=0, category="violence_with_injury")
    sc.recorded("C-late", ["I1"], at=DEADLINE + 1, category="violence_with_injury")
    assert sc.status("I1") == "late"
    sc.recorded("C-early", ["I1"], at=DEADLINE - 1, category="violence_with_injury")
    assert sc.status("I1") == "on_time"
    doc = sc.audit()
    assert doc["crimes"]["recorded"] == 2
    assert (doc["incidents"]["recorded_on_time"], doc["incidents"]["recorded_late"]) == (1, 0)


def test_crime_recording_time_is_its_earliest_recorded_event():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.recorded("C1", ["I1"], at=30)
    assert sc.status("I1") == "late"
    sc.recorded("C1", [], at=20)  # an earlier recorded event of the same crime, linking nothing
    assert sc.status("I1") == "on_time"


def test_recorded_late_after_overdue_alert_resolves_with_timeliness():
    sc = Scenario()
    sc.opened("I1", at=0, flags=["domestic_abuse"], district="Medway", channel="101")
    sc.tick(at=DEADLINE - WINDOW + LATENESS)  # W = D - 4h: at risk
    sc.tick(at=DEADLINE + LATENESS)  # W = D: overdue
    assert sc.status("I1") == "overdue"
    sc.recorded("C1", ["I1"], at=DEADLINE + 3)
    assert sc.status("I1") == "late"
    assert sc.alerts("I1") == ["I1:at_risk", "I1:overdue", "I1:resolved"]
    resolved = sc.alert("I1:resolved")
    assert resolved.timeliness == "late"
    assert resolved.crime_ids == ("C1",)
    assert (resolved.district, resolved.channel, resolved.flags) == ("Medway", "101", ("domestic_abuse",))
    assert (resolved.required_since, resolved.deadline) == (us(0), us(DEADLINE))
    assert sc.alert("I1:overdue").timeliness is None
    inc = incidents_block(sc)
    assert (inc["recorded_late"], inc["overdue"]) == (1, 0)


def test_record_on_time_arriving_after_overdue_resolves_on_time():
    """The records feed lagged: W passed D, then a record made before D arrives."""
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.tick(at=DEADLINE + 2)
    assert sc.status("I1") == "overdue"
    sc.recorded("C1", ["I1"], at=DEADLINE - 1)
    assert sc.status("I1") == "on_time"
    assert sc.alert("I1:resolved").timeliness == "on_time"


def test_recorded_status_regardless_of_watermark():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.recorded("C1", ["I1"], at=5)
    assert sc.watermark == us(5) - 10 * MINUTE  # the record is later than W ...
    assert sc.status("I1") == "on_time"  # ... and still counts


def test_cancellation_is_counted_and_does_not_undo_recording():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.recorded("C1", ["I1"], at=1)
    sc.cancelled("C1", at=2)  # no reason
    sc.recorded("C2", [], at=1)
    sc.cancelled("C2", at=2, reason="duplicate")
    sc.cancelled("C2", at=3)  # a second cancellation, this one without a reason
    sc.recorded("C3", [], at=1)
    sc.cancelled("C3", at=2, reason="recorded_in_error")
    sc.cancelled("C3", at=3, reason=None)  # null = absent: without a reason
    sc.recorded("C4", [], at=1)
    sc.cancelled("C4", at=2, reason="additional_verifiable_information")
    sc.cancelled("C5", at=2, reason="outside_jurisdiction")  # never recorded
    assert sc.status("I1") == "on_time"
    assert sc.audit()["crimes"] == {"recorded": 4, "without_incident": 3, "cancelled": 5,
                                    "cancelled_without_reason": 3}


# --------------------------------------------------------------------------- §3 watermark and status boundaries

def test_at_risk_boundary_is_inclusive():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.tick(at=DEADLINE - WINDOW + LATENESS - 1 / HOUR)  # D - W = 4 h + 1 µs
    assert sc.status("I1") == "pending"
    assert incidents_block(sc)["at_risk"] == 0
    sc.tick(at=DEADLINE - WINDOW + LATENESS)  # D - W = 4 h exactly
    assert sc.status("I1") == "at_risk"
    inc = incidents_block(sc)
    assert (inc["pending"], inc["at_risk"]) == (1, 1)  # at_risk is a kind of pending
    assert sc.alerts("I1") == ["I1:at_risk"]


def test_overdue_boundary_is_inclusive():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.tick(at=DEADLINE + LATENESS - 1 / HOUR)  # W = D - 1 µs
    assert sc.status("I1") == "at_risk"
    sc.tick(at=DEADLINE + LATENESS)  # W = D
    assert sc.status("I1") == "overdue"
    inc = incidents_block(sc)
    assert (inc["overdue"], inc["pending"], inc["at_risk"]) == (1, 0, 0)


def test_watermark_is_max_event_time_minus_lateness_and_never_moves_back():
    sc = Scenario()
    assert sc.audit()["watermark"] is None
    sc.opened("I1", at=5)
    assert sc.audit()["watermark"] == format_time(us(5) - 10 * MINUTE)
    sc.recorded("C1", [], at=7)  # crime events move it too
    assert sc.audit()["watermark"] == format_time(us(7) - 10 * MINUTE)
    sc.opened("I2", at=1)  # an older event does not move it back
    sc.reclassified("I1", at=6, category="theft")
    assert sc.audit()["watermark"] == format_time(us(7) - 10 * MINUTE)
    # invalid and duplicate messages never move it
    bad = opened("I3", at=20, category="not_a_category")
    assert sc.feed(bad).reason == "schema_violation"
    first = opened("I4", at=6)
    sc.feed(first)
    assert sc.feed({**first, "occurred_at": iso(30)}) is None  # duplicate with other content
    assert sc.audit()["watermark"] == format_time(us(7) - 10 * MINUTE)


def test_watermark_is_utc_instant_whatever_the_offsets():
    sc = Scenario()
    event = opened("I1", at=5)
    event["occurred_at"] = iso(5, offset_hours=2)
    event["reported_at"] = iso(4, offset_hours=-5)
    sc.feed_all([event])
    assert sc.audit()["watermark"] == format_time(us(5) - 10 * MINUTE)
    assert sc.audit()["watermark"].endswith("Z")
    assert sc.assessment("I1").required_since == us(4)


# --------------------------------------------------------------------------- §2 duplicates

def test_duplicate_event_is_counted_and_not_applied_twice():
    sc = Scenario()
    ev = opened("I1", at=0)
    cr = recorded("C1", [], at=1)
    for e in (ev, ev, ev, cr, cr):
        assert sc.feed(e) is None
    events = sc.audit()["events"]
    assert events["incidents"] == {"valid": 1, "duplicate": 2, "invalid": 0}
    assert events["crimes"] == {"valid": 1, "duplicate": 1, "invalid": 0}
    assert len(sc.state("I1").events) == 1


def test_duplicate_with_different_content_is_still_a_duplicate():
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    first = sc.reclassified("I1", at=2, category="burglary")
    sc.feed({**first, "category": "asb"})  # same event_id, other content: ignored
    assert sc.status("I1") == "pending"
    assert sc.assessment("I1").category == "burglary"
    rec = sc.recorded("C1", ["I1"], at=30)
    sc.feed({**rec, "occurred_at": iso(3)})  # an "earlier" copy of the same event is ignored
    assert sc.status("I1") == "late"
    events = sc.audit()["events"]
    assert events["incidents"]["duplicate"] == 1
    assert events["crimes"]["duplicate"] == 1


@pytest.mark.parametrize("kind", ["incident", "crime"])
def test_repeated_event_id_on_another_key_is_a_duplicate(kind):
    """Contract §2: a repeated event_id on the same topic is a duplicate, whatever its content."""
    sc = Scenario()
    if kind == "incident":
        sc.opened("I1", at=0, event_id="E-1")
        sc.feed(opened("I2", at=0, event_id="E-1"))
        counts = sc.audit()["events"]["incidents"]
        assert sc.audit()["incidents"]["seen"] == 1  # the copy was not applied
    else:
        sc.recorded("C1", [], at=0, event_id="E-1")
        sc.feed(recorded("C2", [], at=0, event_id="E-1"))
        counts = sc.audit()["events"]["crimes"]
    assert counts == {"valid": 1, "duplicate": 1, "invalid": 0}


def test_only_valid_messages_register_event_ids():
    sc = Scenario()
    good = opened("I1", at=0)
    bad = {**good, "channel": "carrier_pigeon"}
    assert sc.feed(bad).reason == "schema_violation"
    assert sc.feed(good) is None
    assert sc.feed(good) is None
    assert sc.audit()["events"]["incidents"] == {"valid": 1, "duplicate": 1, "invalid": 1}
    assert sc.status("I1") == "pending"


# --------------------------------------------------------------------------- §3 unopened

def test_unopened_incidents_are_counted_and_their_events_wait_for_opened():
    sc = Scenario()
    sc.reclassified("I1", at=3, category="theft")
    sc.closed("I1", at=4, disposition="other")
    sc.recorded("C1", ["I1"], at=5)
    inc = incidents_block(sc)
    assert (inc["seen"], inc["unopened"], inc["required"]) == (0, 1, 0)
    assert sc.audit()["crimes"]["without_incident"] == 1
    sc.opened("I1", at=1, category="asb")
    inc = incidents_block(sc)
    assert (inc["seen"], inc["unopened"], inc["required"], inc["recorded_on_time"]) == (1, 0, 1, 1)
    assert sc.assessment("I1").required_since == us(3)  # the waiting reclassification applied
    assert sc.audit()["crimes"]["without_incident"] == 0


def test_crime_links_alone_do_not_make_an_incident_unopened():
    sc = Scenario()
    sc.recorded("C1", ["GHOST"], at=1)
    inc = incidents_block(sc)
    assert (inc["seen"], inc["unopened"]) == (0, 0)


def test_crimes_without_incident():
    sc = Scenario()
    sc.recorded("C1", ["I9"], at=1)  # links only an id never seen
    sc.recorded("C2", [], at=1)  # links nothing
    sc.reclassified("I8", at=1, category="theft")  # I8 has an event but no opened: not seen
    sc.recorded("C3", ["I8"], at=2)
    sc.opened("I7", at=0)
    sc.recorded("C4", ["I7", "I9"], at=2)  # one seen incident is enough
    sc.linked("C5", ["I7"], at=2)  # linked but never recorded: not a recorded crime
    assert sc.audit()["crimes"]["without_incident"] == 3
    assert sc.audit()["crimes"]["recorded"] == 4
    sc.opened("I9", at=0.5)
    assert sc.audit()["crimes"]["without_incident"] == 2
    sc.linked("C2", ["I7"], at=3)
    assert sc.audit()["crimes"]["without_incident"] == 1


# --------------------------------------------------------------------------- §4 recording rate

def _wilson_by_hand(s: int, n: int) -> tuple[float, float, float]:
    p = s / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return p, centre - half, centre + half


def test_recording_rate_is_wilson_interval():
    sc = Scenario()
    for i in range(4):
        sc.opened(f"R{i}", at=0)
    sc.recorded("C0", ["R0"], at=1)
    sc.recorded("C1", ["R1"], at=2)
    sc.recorded("C2", ["R2"], at=30)  # late counts as recorded
    sc.opened("P", at=40)  # pending: not in the denominator
    sc.opened("E", at=0)
    sc.closed("E", at=1, disposition="no_crime")  # exempt: not in the denominator
    sc.tick(at=45)
    inc = incidents_block(sc)
    assert (inc["recorded_on_time"], inc["recorded_late"], inc["overdue"], inc["pending"], inc["exempt"]) == (2, 1, 1, 1, 1)
    rate = sc.audit()["recording_rate"]
    # 3 of 4, by hand: p = .75, z² = 3.8414588, centre = (.75 + z²/8) / (1 + z²/4) = .6275273,
    # half = z / (1 + z²/4) * sqrt(.75 * .25 / 4 + z²/64) = .3268854
    assert rate["value"] == 0.75
    assert rate["low"] == pytest.approx(0.3006418, abs=1e-6)
    assert rate["high"] == pytest.approx(0.9544127, abs=1e-6)
    value, low, high = _wilson_by_hand(3, 4)
    assert (rate["low"], rate["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert value == rate["value"]


def test_recording_rate_is_clamped_to_unit_interval():
    sc = Scenario()
    sc.opened("I1", at=0)
    sc.recorded("C1", ["I1"], at=1)
    rate = sc.audit()["recording_rate"]
    assert rate["value"] == 1.0 and rate["high"] <= 1.0 and 0.0 <= rate["low"] < 1.0
    sc2 = Scenario()
    sc2.opened("I1", at=0)
    sc2.tick(at=30)
    rate = sc2.audit()["recording_rate"]
    assert rate["value"] == 0.0 and rate["low"] >= 0.0 and 0.0 < rate["high"] <= 1.0


def test_recording_rate_is_null_without_denominator():
    sc = Scenario()
    assert sc.audit()["recording_rate"] == {"value": None, "low": None, "high": None}
    sc.opened("I1", at=0)  # pending only
    sc.opened("I2", at=0)
    sc.closed("I2", at=1, disposition="duplicate")
    assert sc.audit()["recording_rate"] == {"value": None, "low": None, "high": None}


def test_audit_identity_and_document_shape():
    sc = Scenario()
    sc.opened("A", at=0)
    sc.opened("B", at=0)
    sc.recorded("CB", ["B"], at=30)
    sc.opened("C", at=30)
    sc.opened("D", at=0)
    sc.closed("D", at=1, disposition="no_crime")
    sc.opened("E", at=25)
    doc = sc.audit()
    inc = doc["incidents"]
    assert inc["required"] == (inc["recorded_on_time"] + inc["recorded_late"] + inc["overdue"]
                               + inc["pending"] + inc["exempt"])
    assert set(doc) == {"schema", "watermark", "events", "incidents", "by_category", "crimes", "recording_rate"}
    assert doc["schema"] == "audit.v1"


# --------------------------------------------------------------------------- §4 alerts

def test_alert_ids_are_published_once_per_incident_and_kind():
    sc = Scenario()
    sc.opened("I1", at=0, category="rape", flags=["vulnerable_victim"])
    for h in (20.5, 21, 22, 23):
        sc.tick(at=h)  # inside the at-risk window several times
    for h in (25, 26, 30):
        sc.tick(at=h)  # overdue several times
    sc.recorded("C1", ["I1"], at=31, category="rape")
    sc.recorded("C2", ["I1"], at=32, category="rape")  # a second crime: no second resolved
    sc.recorded("C3", ["I1"], at=20, category="rape")  # now on time: still no new alert
    assert sc.status("I1") == "on_time"
    ids = sc.alerts("I1")
    assert ids == ["I1:at_risk", "I1:overdue", "I1:resolved"]
    for a in sc.monitor.alerts:
        assert a.alert_id == f"{a.incident_id}:{a.kind}"
    assert sc.alert("I1:at_risk").watermark == us(20.5) - 10 * MINUTE
    assert sc.alert("I1:at_risk").category == "rape"


def test_downgraded_alert_only_while_unrecorded_and_once():
    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.closed("I1", at=1, disposition="no_crime")
    sc.closed("I1", at=2, disposition="no_crime")
    sc.reclassified("I1", at=3, category="admin")
    assert sc.alerts("I1") == ["I1:downgraded"]
    assert sc.exempt_reason("I1") == "reclassified_non_crime"


def test_no_alerts_for_not_required_incidents():
    sc = Scenario()
    sc.opened("I1", at=0, category="missing_person")
    sc.tick(at=100)
    assert sc.alerts("I1") == []
    assert sc.status("I1") == "not_required"


# --------------------------------------------------------------------------- eviction

def test_eviction_after_state_retention_keeps_counts():
    sc = Scenario(Settings(state_retention=3600.0))
    sc.opened("A", at=0)
    sc.recorded("CA", ["A"], at=1)  # on time
    sc.opened("B", at=0)
    sc.closed("B", at=1, disposition="no_crime")  # downgrade
    sc.opened("C", at=0)  # will go overdue
    sc.opened("N", at=0, category="asb")  # not required
    sc.reclassified("U", at=0, category="theft")  # unopened
    sc.recorded("CX", [], at=1)
    sc.cancelled("CX", at=2)
    sc.tick(at=DEADLINE + 0.5)
    before = sc.audit()
    sc.tick(at=DEADLINE + 3)  # W = D + 1h50: every one of them is past retention
    after = sc.audit()
    for iid in ("A", "B", "C", "N", "U"):
        assert iid not in sc.monitor.incidents.incidents
    assert "CX" not in sc.monitor.crimes.crimes and "CA" not in sc.monitor.crimes.crimes
    for block in ("by_category", "crimes", "recording_rate"):
        assert after[block] == before[block]
    for field in ("unopened", "required", "recorded_on_time", "overdue", "exempt", "downgraded"):
        assert after["incidents"][field] == before["incidents"][field], field
    assert after["incidents"]["seen"] == before["incidents"]["seen"] + 1  # the last tick
    assert (before["incidents"]["overdue"], before["incidents"]["downgraded"]) == (1, 1)
    assert before["crimes"] == {"recorded": 2, "without_incident": 1, "cancelled": 1,
                                "cancelled_without_reason": 1}


def test_a_resend_after_eviction_is_still_a_duplicate():
    """Event ids outlive the incidents they belong to (deadline + twice the
    retention), so a late copy of an evicted incident's event is not counted
    or applied again."""
    sc = Scenario(Settings(state_retention=3600.0))
    first = sc.opened("A", at=0)
    sc.tick(at=DEADLINE + 1.5)  # A is evicted (D + 1 h), its event id is kept (until D + 2 h)
    assert "A" not in sc.monitor.incidents.incidents
    before = sc.audit()
    sc.feed(first)
    after = sc.audit()
    assert after["events"]["incidents"]["duplicate"] == before["events"]["incidents"]["duplicate"] + 1
    assert after["incidents"] == before["incidents"]
    assert "A" not in sc.monitor.incidents.incidents


# --------------------------------------------------------------------------- §2 invalid input

VALID_OPENED = opened("V1", at=0)
VALID_LINKED = linked("VC", ["V1"], at=1)


def _mutate(base: dict, **changes) -> bytes:
    d = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return orjson.dumps(d)


_DROP = object()

INVALID = [
    # invalid_json
    ("bad json", INCIDENTS, b'{"schema":"incident.v1",', "invalid_json"),
    ("NaN", INCIDENTS, orjson.dumps(VALID_OPENED)[:-1] + b',"x":NaN}', "invalid_json"),
    ("Infinity", CRIMES, orjson.dumps(VALID_LINKED)[:-1] + b',"x":-Infinity}', "invalid_json"),
    ("not UTF-8", INCIDENTS, orjson.dumps(VALID_OPENED).replace(b"Dover", b"D\xf6ver"), "invalid_json"),
    ("empty", INCIDENTS, b"", "invalid_json"),
    # unknown_schema
    ("crime on incidents topic", INCIDENTS, orjson.dumps(VALID_LINKED), "unknown_schema"),
    ("incident on crimes topic", CRIMES, orjson.dumps(VALID_OPENED), "unknown_schema"),
    ("schema v2", INCIDENTS, _mutate(VALID_OPENED, schema="incident.v2"), "unknown_schema"),
    # schema_violation
    ("not an object", INCIDENTS, b'["incident.v1"]', "schema_violation"),
    ("a string", INCIDENTS, b'"incident.v1"', "schema_violation"),
    ("missing field", INCIDENTS, _mutate(VALID_OPENED, channel=_DROP), "schema_violation"),
    ("missing event_id", CRIMES, _mutate(VALID_LINKED, event_id=_DROP), "schema_violation"),
    ("required null", INCIDENTS, _mutate(VALID_OPENED, district=None), "schema_violation"),
    ("empty id", INCIDENTS, _mutate(VALID_OPENED, incident_id=""), "schema_violation"),
    ("wrong type", INCIDENTS, _mutate(VALID_OPENED, incident_id=42), "schema_violation"),
    ("flags not a list", INCIDENTS, _mutate(VALID_OPENED, flags="hate"), "schema_violation"),
    ("incident_ids not a list", CRIMES, _mutate(VALID_LINKED, incident_ids="V1"), "schema_violation"),
    ("out of vocabulary category", INCIDENTS, _mutate(VALID_OPENED, category="alien_abduction"), "schema_violation"),
    ("out of vocabulary event_type", INCIDENTS, _mutate(VALID_OPENED, event_type="vanished"), "schema_violation"),
    ("out of vocabulary flag", INCIDENTS, _mutate(VALID_OPENED, flags=["grumpy"]), "schema_violation"),
    ("non-crime category on recorded", CRIMES, orjson.dumps(recorded("C", [], at=0, category="asb")), "schema_violation"),
    ("out of vocabulary cancel reason", CRIMES, orjson.dumps(cancelled("C", at=0, reason="bored")), "schema_violation"),
    ("unparseable timestamp", INCIDENTS, _mutate(VALID_OPENED, occurred_at="yesterday afternoon"), "schema_violation"),
    ("impossible date", INCIDENTS, _mutate(VALID_OPENED, occurred_at="2026-02-30T10:00:00Z"), "schema_violation"),
    ("timestamp without seconds", INCIDENTS, _mutate(VALID_OPENED, occurred_at="2026-03-01T08:00Z"), "schema_violation"),
    ("timestamp without offset", INCIDENTS, _mutate(VALID_OPENED, occurred_at="2026-03-01T08:00:00"), "schema_violation"),
    ("date only", INCIDENTS, _mutate(VALID_OPENED, reported_at="2026-03-01"), "schema_violation"),
    ("reported_at after occurred_at", INCIDENTS, _mutate(VALID_OPENED, reported_at=iso(0.001)), "schema_violation"),
    ("district too long", INCIDENTS, _mutate(VALID_OPENED, district="x" * 41), "schema_violation"),
    ("district empty", INCIDENTS, _mutate(VALID_OPENED, district=""), "schema_violation"),
    ("linked with no incidents", CRIMES, _mutate(VALID_LINKED, incident_ids=[]), "schema_violation"),
    ("empty item in incident_ids", CRIMES, _mutate(VALID_LINKED, incident_ids=["V1", ""]), "schema_violation"),
    # future_timestamp
    ("15 min + 1 µs ahead", INCIDENTS,
     orjson.dumps(opened("F", at=(NOW - T0 + 15 * MINUTE + 1) / HOUR)), "future_timestamp"),
]


@pytest.mark.parametrize("topic, raw, reason", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_is_rejected_with_its_reason(topic, raw, reason):
    sc = Scenario()
    rejection = sc.feed(raw, topic=topic)
    assert rejection is not None and rejection.reason == reason
    assert rejection.detail
    doc = sc.audit()
    side = "incidents" if topic == INCIDENTS else "crimes"
    other = "crimes" if side == "incidents" else "incidents"
    assert doc["events"][side] == {"valid": 0, "duplicate": 0, "invalid": 1}
    assert doc["events"][other] == {"valid": 0, "duplicate": 0, "invalid": 0}
    assert doc["watermark"] is None  # never applied
    assert sc.monitor.incidents.incidents == {} and sc.monitor.crimes.crimes == {}


def test_future_timestamp_boundary_is_fifteen_minutes():
    sc = Scenario()
    ahead = (NOW - T0 + 15 * MINUTE) / HOUR
    assert sc.feed(opened("F1", at=ahead)) is None
    assert sc.feed(opened("F2", at=ahead + 1 / HOUR)).reason == "future_timestamp"
    # the rule is about the wall clock when read: the same message is fine later on
    assert sc.feed(opened("F2", at=ahead + 1 / HOUR), now=NOW + HOUR) is None


def test_too_large_limit_is_one_mebibyte():
    base = orjson.dumps(opened("L1", at=0))
    filler = 1024 * 1024 - len(base) - len(b',"padding":""')
    exact = base[:-1] + b',"padding":"' + b"x" * filler + b'"}'
    assert len(exact) == 1024 * 1024
    sc = Scenario()
    assert sc.feed(exact, topic=INCIDENTS) is None  # exactly 1 MiB is fine (and padding ignored)
    over = exact[:-2] + b'xx"}'
    rejection = sc.feed(over.replace(b"L1", b"L2"), topic=INCIDENTS)
    assert rejection.reason == "too_large"
    assert sc.audit()["events"]["incidents"] == {"valid": 1, "duplicate": 0, "invalid": 1}


def test_too_large_wins_over_invalid_json():
    sc = Scenario()
    assert sc.feed(b"[" * (1024 * 1024 + 1), topic=CRIMES).reason == "too_large"


def test_null_optional_is_absent_and_unknown_fields_are_ignored():
    sc = Scenario()
    assert sc.feed(opened("I1", at=0, flags=None, surprise={"nested": [1, 2]}, priority=3)) is None
    assert sc.feed(cancelled("C1", at=1, reason=None)) is None
    assert sc.feed(reclassified("I1", at=1, category="theft", flags=None, disposition="bogus")) is None
    assert sc.feed(closed("I1", at=2, disposition="other", reported_at="not a time")) is None
    assert sc.feed(recorded("C2", ["I1"], at=3, reason="not checked here", flags="nor this")) is None
    assert sc.feed(linked("C2", ["I1"], at=3, category="asb")) is None
    assert sc.audit()["events"]["incidents"] == {"valid": 3, "duplicate": 0, "invalid": 0}
    assert sc.audit()["events"]["crimes"] == {"valid": 3, "duplicate": 0, "invalid": 0}
    assert sc.audit()["crimes"]["cancelled_without_reason"] == 1
    assert sc.status("I1") == "on_time"


def test_messages_consumed_equal_valid_plus_duplicate_plus_invalid():
    sc = Scenario()
    msgs = [(INCIDENTS, orjson.dumps(VALID_OPENED))] * 3 + [(INCIDENTS, b"nope")] + \
           [(CRIMES, orjson.dumps(VALID_LINKED))] * 2 + [(CRIMES, b"{}")]
    for topic, raw in msgs:
        sc.feed(raw, topic=topic)
    ev = sc.audit()["events"]
    assert sum(ev["incidents"].values()) == 4
    assert sum(ev["crimes"].values()) == 3


@pytest.mark.parametrize("total", [1, 3, 10, 12, 1000])
def test_recording_rate_interval_contains_the_rate_at_zero_and_one(total):
    """0 of n: low is exactly 0; n of n: high is exactly 1 (the exact Wilson bounds)."""
    sc = Scenario()
    for i in range(total):
        sc.opened(f"I{i}", at=0)
    sc.tick(at=30)
    assert sc.audit()["recording_rate"]["low"] == 0.0
    assert sc.audit()["recording_rate"]["value"] == 0.0
    for i in range(total):
        sc.recorded(f"C{i}", [f"I{i}"], at=1)
    rate = sc.audit()["recording_rate"]
    assert rate["value"] == 1.0 and rate["high"] == 1.0 and rate["low"] < 1.0


def test_a_key_goes_to_its_crc32_partition_a_lone_surrogate_included():
    """Stage partitions are CRC-32 of the key's UTF-8 (internal, but it must not
    change between releases: a new hash would need new internal topics), and
    a key no UTF-8 encoder takes (a lone surrogate) is routed, not raised."""
    import zlib

    from pipeline.core.routing import partition_for

    assert partition_for("KNT-20260106-000003", 6) == zlib.crc32(b"KNT-20260106-000003") % 6
    assert partition_for("anything", 1) == 0
    assert partition_for("a\ud800", 6) == zlib.crc32("a\ud800".encode("utf-8", "surrogatepass")) % 6
