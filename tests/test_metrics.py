"""Ledger moves -> cdi_* samples (contract §4)."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter as PCounter, Histogram, generate_latest

from pipeline.core.keys import Contribution
from pipeline.core.tally import Moves
from pipeline.stream.metrics import DELAY_BUCKETS, CounterFamily, DelayHistogram, Metrics, StateCollector


def key(status, category="rape", district="Medway", channel="999", reason=None):
    return Contribution(status, category, district, channel, reason)


class Move(NamedTuple):
    """One incident's move, as a test writes it (the ledger counts them in :class:`Moves`)."""

    incident: str
    old: Contribution | None
    new: Contribution | None
    delay_s: float | None = None


def observe(m: Metrics, moves: list[Move]) -> None:
    """A batch of moves, counted as the ledger counts them, then observed."""
    batch = Moves()
    for move in moves:
        batch.add(move.old, move.new, move.delay_s)
    m.observe_moves(batch)


def value(m: Metrics, name: str, **labels) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_each_incident_is_required_recorded_and_breached_once():
    m = Metrics()
    observe(m, [
        Move("A", None, key("pending")),
        Move("A", key("pending"), key("at_risk")),
        Move("A", key("at_risk"), key("overdue")),
        Move("A", key("overdue"), key("late"), delay_s=30 * 3600),
        Move("B", None, key("on_time"), delay_s=60),
        Move("C", None, key("pending")),
        Move("C", key("pending"), key("late"), delay_s=26 * 3600),  # late, never seen overdue
    ])
    labels = {"category": "rape", "district": "Medway", "channel": "999"}
    assert value(m, "cdi_incidents_required_total", **labels) == 3
    assert value(m, "cdi_incidents_breached_total", **labels) == 2  # A and C, once each
    assert value(m, "cdi_incidents_recorded_total", category="rape", district="Medway", timeliness="late") == 2
    assert value(m, "cdi_incidents_recorded_total", category="rape", district="Medway", timeliness="on_time") == 1
    assert value(m, "cdi_recording_delay_seconds_count", category="rape") == 3


def test_the_same_move_counts_each_time_in_a_batch_and_across_batches():
    """The steps of a move are worked out once per (old, new) pair: every
    transition still counts, and its delay is observed when it became recorded."""
    m = Metrics()
    moves = [Move(i, key("pending"), key("on_time"), delay_s=60) for i in "ABC"]
    observe(m, moves)
    observe(m, moves[:2] + [Move("D", key("on_time"), key("on_time", channel="online"))])
    labels = {"category": "rape", "district": "Medway"}
    assert value(m, "cdi_incidents_recorded_total", timeliness="on_time", **labels) == 5
    assert value(m, "cdi_recording_delay_seconds_count", category="rape") == 5  # not D: it was recorded already
    assert value(m, "cdi_incidents_required_total", channel="999", **labels) == 0  # pending was required already


def test_counts_stay_right_when_the_memo_of_moves_is_cleared_mid_batch(monkeypatch):
    """The memo of what a move counts is bounded: cleared while a batch is
    counted, every move still counts and every delay is still observed."""
    monkeypatch.setattr("pipeline.stream.metrics._STEPS_MAX", 1)
    m = Metrics()
    observe(m, [Move("A", key("pending"), key("on_time"), delay_s=60),
                           Move("B", None, key("pending", channel="online")),
                           Move("C", key("pending"), key("on_time"), delay_s=90),
                           Move("D", key("overdue"), key("late"), delay_s=30 * 3600)])
    assert value(m, "cdi_incidents_recorded_total", category="rape", district="Medway", timeliness="on_time") == 2
    assert value(m, "cdi_incidents_recorded_total", category="rape", district="Medway", timeliness="late") == 1
    assert value(m, "cdi_incidents_required_total", category="rape", district="Medway", channel="online") == 1
    assert value(m, "cdi_recording_delay_seconds_count", category="rape") == 3


def test_exemptions_and_cancellations_have_their_reasons():
    m = Metrics()
    observe(m, [Move("D", key("pending"), key("exempt", reason="no_crime"))])
    m.observe_cancellations([None, "duplicate"])
    assert value(m, "cdi_incidents_exempt_total", category="rape", reason="no_crime") == 1
    assert value(m, "cdi_crimes_cancelled_total", reason="none") == 1
    assert value(m, "cdi_crimes_cancelled_total", reason="duplicate") == 1


def test_state_gauges_come_from_the_owned_ledgers_at_scrape_time():
    agg = Counter({key("overdue"): 2, key("at_risk"): 1, key("pending"): 3, key("on_time"): 9})
    m = Metrics()
    m.registry.register(StateCollector(lambda: (agg, 1_800_000_000_000_000)))
    assert value(m, "cdi_incidents_overdue", category="rape", district="Medway", channel="999") == 2
    assert value(m, "cdi_incidents_pending", category="rape", district="Medway") == 4  # at risk included
    assert value(m, "cdi_incidents_at_risk", category="rape", district="Medway") == 1
    assert value(m, "cdi_watermark_timestamp_seconds") == 1_800_000_000.0
    text = generate_latest(m.registry).decode()
    assert "_created" not in text


def test_districts_outside_the_list_are_labelled_other_by_the_metrics_module():
    """The tally counts unknown districts under None (bounded); metrics call them ``other``."""
    agg = Counter({key("overdue", district=None): 2})
    m = Metrics()
    m.registry.register(StateCollector(lambda: (agg, None)))
    observe(m, [Move("X", None, key("pending", district=None))])
    assert value(m, "cdi_incidents_overdue", category="rape", district="other", channel="999") == 2
    assert value(m, "cdi_incidents_required_total", category="rape", district="other", channel="999") == 1


def test_processing_errors_are_exposed_per_stage_from_the_start():
    m = Metrics()
    for stage in ("intake", "event", "incident", "crime"):
        assert m.registry.get_sample_value("cdi_processing_errors_total", {"stage": stage}) == 0.0


def test_published_alerts_are_counted_by_kind():
    from types import SimpleNamespace

    m = Metrics()
    m.observe_alerts([SimpleNamespace(kind="overdue"), SimpleNamespace(kind="at_risk"), SimpleNamespace(kind="overdue")])
    m.observe_alerts([SimpleNamespace(kind="overdue")])
    assert value(m, "cdi_alerts_total", kind="overdue") == 3
    assert value(m, "cdi_alerts_total", kind="at_risk") == 1


@given(st.lists(st.tuples(st.sampled_from(["rape", "burglary", None]),
                          st.one_of(st.sampled_from([float(b) for b in DELAY_BUCKETS]),
                                    st.floats(0, 10 * 86400, allow_nan=False))), max_size=60))
@settings(max_examples=300, deadline=None)
def test_the_delay_histogram_exposes_what_a_prometheus_client_histogram_would(observations):
    """``cdi_recording_delay_seconds`` is counted by the monitor itself (a lock
    per observation was most of the metrics' cost); its exposition is the
    library's, sample for sample, bounds included."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = DelayHistogram(DELAY_BUCKETS)
    ours.register(histogram)
    reference = Histogram(DelayHistogram.NAME, DelayHistogram.DOC, ["category"], buckets=DELAY_BUCKETS,
                          registry=theirs)
    for category, seconds in observations:
        histogram.observe(category, seconds)
        reference.labels(category).observe(seconds)
    assert generate_latest(ours) == generate_latest(theirs)


@given(st.lists(st.tuples(st.tuples(st.sampled_from(["rape", "burglary"]), st.sampled_from(["Medway", "other", None])),
                          st.integers(1, 1000)), max_size=40))
@settings(max_examples=300, deadline=None)
def test_a_counter_family_exposes_what_a_prometheus_client_counter_would(increments):
    """The move counters are counted by the monitor itself (a lock per label set
    and batch was most of their cost); their exposition is the library's."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = CounterFamily("cdi_incidents_required_total", "Incidents that became crime-related.", ["category", "district"])
    ours.register(family)
    reference = PCounter("cdi_incidents_required_total", "Incidents that became crime-related.", ["category", "district"],
                         registry=theirs)
    for labels, n in increments:
        key = family.key(labels)
        family.counts[key] = family.counts.get(key, 0.0) + n
        reference.labels(*labels).inc(n)
    assert generate_latest(ours) == generate_latest(theirs)
