"""The ``cdi_*`` Prometheus metrics of a worker (contract §4).

Two kinds, on purpose:
- **counters** (``*_total``, the delay histogram) count what *this process*
  decided, from the ledgers' contribution moves, so a partition moving to another
  worker neither double counts nor goes backwards (``increase()`` handles
  restarts);
- **gauges** of current state (overdue, pending, at risk, watermark) are read
  at scrape time from the partitions this worker owns, through the same audit
  fold as ``/audit`` (:func:`pipeline.core.audit.fold`): summed over workers
  they are the cluster's numbers.

No label ever holds an incident id, crime id or other unbounded value. The
tally counts districts outside the configured list under ``None``; this
module labels them ``other``.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.audit import fold
from ..core.tally import Contribution, Moves
from ..core.vocabulary import EXEMPT, LATE, OVERDUE, RECORDED_STATUSES, REQUIRED_STATUSES

__all__ = ["Metrics", "StateCollector", "district_label", "OTHER_DISTRICT"]

# ``*_created`` series double the exposition and no rule or dashboard uses them.
disable_created_metrics()

OTHER_DISTRICT = "other"
_STEPS_MAX = 100_000
DELAY_BUCKETS = (60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, 18 * 3600,
                 24 * 3600, 36 * 3600, 48 * 3600, 72 * 3600, 7 * 86400)


def district_label(district: str | None) -> str:
    """The metric label of a tallied district: configured districts as they are, others ``other``."""
    return OTHER_DISTRICT if district is None else district


class Metrics:
    """Owns the registry and every ``cdi_*`` family; turns ledger changes into samples."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.required = PCounter("cdi_incidents_required_total", "Incidents that became crime-related (a record is required).",
                                 ["category", "district", "channel"], registry=r)
        self.recorded = PCounter("cdi_incidents_recorded_total", "Required incidents that got a crime record.",
                                 ["category", "district", "timeliness"], registry=r)
        self.breached = PCounter("cdi_incidents_breached_total", "Required incidents whose recording deadline passed unrecorded.",
                                 ["category", "district", "channel"], registry=r)
        self.exempt = PCounter("cdi_incidents_exempt_total", "Required incidents exempted (reason: reclassified_non_crime, no_crime, transferred, duplicate).",
                               ["category", "reason"], registry=r)
        self.delay = Histogram("cdi_recording_delay_seconds", "Seconds from report (required_since) to crime record.",
                               ["category"], buckets=DELAY_BUCKETS, registry=r)
        self.cancelled = PCounter("cdi_crimes_cancelled_total", "Crime cancellation events (reason 'none' when absent).",
                                  ["reason"], registry=r)
        self.events = PCounter("cdi_events_total", "Input messages by outcome.", ["topic", "outcome"], registry=r)
        self.deadletter = PCounter("cdi_deadletter_total", "Input messages sent to the dead-letter topic, by reason.",
                                   ["topic", "reason"], registry=r)
        self.processing_errors = PCounter("cdi_processing_errors_total",
                                          "Messages whose processing raised inside the monitor (dead-lettered, "
                                          "skipped), and changelog records no worker wrote (skipped at recovery).",
                                          ["stage"], registry=r)
        self.alerts = PCounter("cdi_alerts_total", "Alerts published on the alerts topic.", ["kind"], registry=r)
        self.input_lost = PCounter("cdi_input_records_lost_total",
                                   "Input records removed from their topic (retention) before this consumer group "
                                   "read them: never validated, never counted.", ["topic"], registry=r)
        self.last_received = Gauge("cdi_last_event_received_timestamp_seconds",
                                   "Wall clock when a message was last read from the input topic.", ["topic"], registry=r)
        self.ready = Gauge("cdi_worker_ready", "1 when this worker has recovered its partitions, reaches the broker and is consuming.",
                           registry=r)
        self.recovery = Gauge("cdi_recovery_seconds", "Seconds the last partition recovery took.", registry=r)
        for stage in ("intake", "event", "incident", "crime"):
            self.processing_errors.labels(stage)
        self._children: dict = {}
        # (old, new) contribution -> what the move counts (see _steps_of); bounded:
        # the keys are interned, and it is cleared at _STEPS_MAX entries anyway
        self._steps: dict = {}

    def observe_moves(self, moves: Moves) -> None:
        """Counter increments for the status changes this process decided.

        The ledger counts a batch's moves per (old, new) pair
        (:class:`~pipeline.core.tally.Moves`): contributions are interned (a
        few hundred), so a batch has far fewer pairs than moves. What a pair
        counts is worked out once per process (:meth:`_steps_of`, memoised),
        and each counter is added to once per label set: each ``labels()``
        call costs a lookup under a lock."""
        if not moves.pairs:
            return
        memo, steps, decided = self._steps, {}, {}  # steps: (family, labels) -> n
        for pair, n in moves.pairs.items():
            got = memo.get(pair)
            if got is None:
                if len(memo) >= _STEPS_MAX:
                    memo.clear()
                got = memo[pair] = self._steps_of(*pair)
            decided[pair] = got
            for step in got[0]:
                steps[step] = steps.get(step, 0) + n
        child = self.child
        for (family, labels), n in steps.items():
            child(family, labels).inc(n)
        for pair, category, delay_s in moves.delays:
            if decided[pair][1]:  # became recorded
                child(self.delay, (category,)).observe(delay_s)

    def _steps_of(self, old: Contribution | None, new: Contribution) -> tuple[tuple, bool]:
        """The counters a move from ``old`` to ``new`` adds one to, ``((family,
        labels), ...)``, and whether the incident became recorded (its delay is observed)."""
        status, category, district, channel, reason = new
        district = district_label(district)
        old_status = old.status if old else None
        out = []
        if status in REQUIRED_STATUSES and old_status not in REQUIRED_STATUSES:
            out.append((self.required, (category, district, channel)))
        became_recorded = status in RECORDED_STATUSES and old_status not in RECORDED_STATUSES
        if became_recorded:
            out.append((self.recorded, (category, district, status)))
        # Breached: the deadline passed with no record. Usually seen as the
        # move to overdue; a record that arrives already late without the
        # incident having been seen overdue (lateness, batching) breached too.
        if (status == OVERDUE and old_status != OVERDUE) or \
                (status == LATE and old_status not in (OVERDUE, LATE)):
            out.append((self.breached, (category, district, channel)))
        if status == EXEMPT and old_status != EXEMPT:
            out.append((self.exempt, (category, reason)))
        return tuple(out), became_recorded

    def observe_cancellations(self, reasons: Iterable[str | None]) -> None:
        for reason, n in Counter(reason or "none" for reason in reasons).items():
            self.child(self.cancelled, (reason,)).inc(n)

    def observe_alerts(self, alerts: Iterable) -> None:
        """The alerts of a batch, published (``cdi_alerts_total`` by kind)."""
        for kind, n in Counter(a.kind for a in alerts).items():
            self.child(self.alerts, (kind,)).inc(n)

    def child(self, family, labels: tuple):
        """``family.labels(*labels)``, looked up once per label set: label
        values come from the vocabularies, so there are a few hundred sets,
        and ``labels()`` checks and locks on every call."""
        key = (family, labels)
        got = self._children.get(key)
        if got is None:
            got = self._children[key] = family.labels(*labels)
        return got


class StateCollector(Collector):
    """State gauges read from the owned partitions at scrape time.

    ``source`` returns ``(incident contributions, greatest watermark in µs)``
    for the partitions this worker owns right now.
    """

    def __init__(self, source: Callable[[], tuple[Counter, int | None]]) -> None:
        self.source = source

    def collect(self):
        agg, watermark_us = self.source()
        overdue = GaugeMetricFamily("cdi_incidents_overdue", "Required incidents past their deadline with no record.",
                                    labels=["category", "district", "channel"])
        pending = GaugeMetricFamily("cdi_incidents_pending", "Required incidents before their deadline with no record (at risk included).",
                                    labels=["category", "district"])
        at_risk = GaugeMetricFamily("cdi_incidents_at_risk", "Pending incidents inside the at-risk window.",
                                    labels=["category", "district"])
        for (category, district, channel), c in sorted(fold(agg, _by_channel).items(), key=str):
            if c["overdue"]:
                overdue.add_metric([category, district, channel], c["overdue"])
        for (category, district), c in sorted(fold(agg, _by_district).items(), key=str):
            if c["pending"]:
                pending.add_metric([category, district], c["pending"])
            if c["at_risk"]:
                at_risk.add_metric([category, district], c["at_risk"])
        wm = GaugeMetricFamily("cdi_watermark_timestamp_seconds",
                               "Event-time watermark (greatest occurred_at minus allowed lateness).")
        if watermark_us is not None:
            wm.add_metric([], watermark_us / 1_000_000)
        return [overdue, pending, at_risk, wm]

    def describe(self):
        return []


def _by_channel(k: Contribution) -> tuple:
    return (k.category, district_label(k.district), k.channel)


def _by_district(k: Contribution) -> tuple:
    return (k.category, district_label(k.district))
