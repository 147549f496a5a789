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

from bisect import bisect_left
from collections import Counter
from itertools import accumulate
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..core.audit import fold
from ..core.keys import Contribution
from ..core.tally import Moves
from ..core.vocabulary import EXEMPT, LATE, OVERDUE, RECORDED_STATUSES, REQUIRED_STATUSES

__all__ = ["Metrics", "StateCollector", "CounterFamily", "DelayHistogram", "district_label", "OTHER_DISTRICT"]

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
        # The four counters of status moves are counted here (CounterFamily): a batch adds to
        # hundreds of their label sets, and a prometheus_client child takes a lock for each.
        self.required = CounterFamily("cdi_incidents_required_total",
                                      "Incidents that became crime-related (a record is required).",
                                      ["category", "district", "channel"])
        self.recorded = CounterFamily("cdi_incidents_recorded_total", "Required incidents that got a crime record.",
                                      ["category", "district", "timeliness"])
        self.breached = CounterFamily("cdi_incidents_breached_total",
                                      "Required incidents whose recording deadline passed unrecorded.",
                                      ["category", "district", "channel"])
        self.exempt = CounterFamily("cdi_incidents_exempt_total", "Required incidents exempted (reason: "
                                    "reclassified_non_crime, no_crime, transferred, duplicate).", ["category", "reason"])
        for family in (self.required, self.recorded, self.breached, self.exempt):
            r.register(family)
        self.delay = DelayHistogram(DELAY_BUCKETS)
        r.register(self.delay)
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
        counts is worked out once per process (:meth:`_steps_of`, memoised)."""
        if not moves.pairs:
            return
        memo, decided = self._steps, {}
        for pair, n in moves.pairs.items():
            got = memo.get(pair)
            if got is None:
                if len(memo) >= _STEPS_MAX:
                    memo.clear()
                got = memo[pair] = self._steps_of(*pair)
            decided[pair] = got
            for counts, labels in got[0]:
                counts[labels] = counts.get(labels, 0.0) + n
        observe = self.delay.observe
        for pair, category, delay_s in moves.delays:
            if decided[pair][1]:  # became recorded
                observe(category, delay_s)

    def _steps_of(self, old: Contribution | None, new: Contribution) -> tuple[tuple, bool]:
        """The counters a move from ``old`` to ``new`` adds one to, ``((counts,
        labels), ...)`` (a :class:`CounterFamily`'s counts and the key in them),
        and whether the incident became recorded (its delay is observed)."""
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
        return tuple((family.counts, family.key(labels)) for family, labels in out), became_recorded

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


class CounterFamily(Collector):
    """A counter family counted here, ``labels -> total``, and exposed at scrape
    time exactly as a prometheus_client ``Counter`` with those labels (the same
    samples, in the order the label sets first counted). Adding is a dict
    update, where a ``Counter`` child takes a lock. Counted and scraped on the
    worker's one event-loop thread."""

    def __init__(self, name: str, doc: str, labelnames: list[str]) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self.counts: dict[tuple[str, ...], float] = {}

    @staticmethod
    def key(labels: tuple) -> tuple[str, ...]:
        """The key of a label set in :attr:`counts` (values as ``labels()`` would make them: text)."""
        return tuple(str(value) for value in labels)

    def collect(self):
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, n in self.counts.items():
            family.add_metric(list(labels), n)
        return [family]

    def describe(self):
        return []


class DelayHistogram(Collector):
    """``cdi_recording_delay_seconds``, by category: counted here, exposed as a
    histogram at scrape time (the same ``_bucket``, ``_count`` and ``_sum``
    samples as prometheus_client's ``Histogram``). A batch observes thousands
    of delays, and ``Histogram.observe`` takes a lock and walks the buckets for
    each one; here it is a bisection and two additions. Observed and scraped
    on the worker's one event-loop thread."""

    NAME = "cdi_recording_delay_seconds"
    DOC = "Seconds from report (required_since) to crime record."

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self.counts: dict[str, list[int]] = {}  # category -> count per bucket (the last: above every bound)
        self.sums: dict[str, float] = {}

    def observe(self, category: str | None, seconds: float) -> None:
        label = str(category)  # as a Histogram's labels() would make it
        counts = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(self.bounds) + 1)
            self.sums[label] = 0.0
        counts[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        self.sums[label] += seconds

    def collect(self):
        family = HistogramMetricFamily(self.NAME, self.DOC, labels=["category"])
        for label, counts in self.counts.items():
            cumulative = list(accumulate(counts))
            buckets = [(floatToGoString(b), n) for b, n in zip(self.bounds, cumulative)]
            family.add_metric([label], buckets + [("+Inf", cumulative[-1])], self.sums[label])
        return [family]

    def describe(self):
        return []


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
