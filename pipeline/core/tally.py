"""Incremental counts the ledgers keep, so an audit never walks every incident.

Each seen incident *contributes* one ``Contribution`` (its status and the
labels it is counted under), one ``DayKey`` (its status on the UTC day it
became required: the registrar's daily chart) and, once recorded, one
recording-delay bucket. When an incident's status changes its contribution
moves from the old key to the new one; when it is evicted its contribution
stays counted. Each crime contributes one ``CrimeKey``. The keys are defined
in :mod:`pipeline.core.keys`.

Districts outside the configured list are counted under ``None`` here: the
tally stays bounded whatever free text a feed sends; the metrics module
chooses to call them ``other`` (contract §2: "kept as sent everywhere else").
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from .keys import Contribution, DayKey
from .rules import Assessment
from .times import US, HOUR, day_of
from .vocabulary import EXEMPT, RECORDED_STATUSES, UNOPENED

if TYPE_CHECKING:  # typed, so that compiled code reads a state's fields natively (incident does not import this module)
    from .incident import IncidentState

__all__ = ["Moves", "IncidentTally", "Counts", "DELAY_EDGES_H", "delay_bucket", "shift"]

#: Upper edges (hours) of the recording-delay buckets; the last bucket is open.
DELAY_EDGES_H: Final = (1, 2, 4, 8, 12, 18, 24, 36, 48, 72, 168)
_DELAY_EDGES: Final = tuple(h * HOUR for h in DELAY_EDGES_H)


class Moves:
    """The contribution moves of a batch, counted per ``(old, new)`` pair (the
    metrics' counters follow these).

    Counted here, in the compiled core, as the ledger decides them: a batch
    moves thousands of incidents between a few hundred pairs of interned
    keys, and the metrics turn each pair into samples once. (A record per
    move, counted in the shell with a lock per counter update, took about 7%
    of a batch's time.) ``delays`` holds
    ``(pair, category, seconds)`` for each move that came with a recording
    delay; the metrics observe it when the pair made the incident recorded."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[Contribution | None, Contribution], int] = {}
        self.delays: list[tuple[tuple[Contribution | None, Contribution], str | None, float]] = []

    def add(self, old: Contribution | None, new: Contribution | None, delay_s: float | None = None) -> None:
        """One incident moved from ``old`` to ``new`` (None: it counts nowhere now, nothing to count)."""
        if new is None:
            return
        pair = (old, new)
        pairs = self.pairs
        pairs[pair] = pairs.get(pair, 0) + 1
        if delay_s is not None:
            self.delays.append((pair, new.category, delay_s))

    def merge(self, other: Moves) -> None:
        """Add ``other``'s moves to these (the runner counts a batch's partitions together)."""
        pairs = self.pairs
        for pair, n in other.pairs.items():
            pairs[pair] = pairs.get(pair, 0) + n
        self.delays.extend(other.delays)

    def clear(self) -> None:
        self.pairs.clear()
        self.delays.clear()

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"Moves({self.pairs!r}, delays={self.delays!r})"


UNOPENED_KEY: Final = Contribution(UNOPENED, None, None, None, None)


def delay_bucket(delay: int) -> int:
    """Index of the recording-delay bucket of ``delay`` microseconds (the first edge above it)."""
    return bisect_right(_DELAY_EDGES, delay)


@mypyc_attr(native_class=False)
class Counts(dict):
    """Counts by key; a key never counted reads 0, so ``counts[key] += 1`` works.

    A ``dict`` with ``__missing__`` rather than a ``Counter``: ``Counter``
    defines ``__delitem__`` in Python, which sends every write
    (``counts[key] = n``) through a Python-level slot, about 1,100
    instructions against 100 here, and the ledgers and the event stage write
    a few per message. :meth:`add` is ``Counter.update``'s adding; readers
    that want a ``Counter`` copy one (``Counter(counts)``)."""

    def __missing__(self, key) -> int:
        return 0

    def add(self, other) -> None:
        """Add ``other``'s counts (a mapping) to these."""
        for key, n in other.items():
            self[key] = self.get(key, 0) + n


def shift(counter: Counts, old, new, n: int = 1) -> None:
    """Move ``n`` from key ``old`` to key ``new`` (None: nowhere); no zero entries left."""
    if old is not None:
        left = counter[old] - n
        if left:
            counter[old] = left
        else:
            del counter[old]
    if new is not None:
        counter[new] = counter.get(new, 0) + n


class IncidentTally:
    """The incident side's counts: contributions, daily statuses, recording delays.

    Responsibilities: compute an incident's keys from its assessment (interned,
    so a million incidents share a few hundred key objects); move counts when
    they change; keep what evicted incidents contributed, for persistence.
    """

    def __init__(self, districts) -> None:
        self.districts = frozenset(districts)
        self.agg = Counts()
        self.daily = Counts()
        self.delays = Counts()
        self.evicted = Counts()
        self.evicted_daily = Counts()
        self.evicted_delays = Counts()
        self._interned: dict = {}

    def _intern(self, key):
        return self._interned.setdefault(key, key)

    def move(self, st: IncidentState, status: str | None, a: Assessment | None,
             moves: Moves | None = None) -> None:
        """Bring ``st``'s counted keys to ``status``; when its contribution moved,
        the move is counted in ``moves`` (None: nobody counts them, as in the
        offline audit)."""
        key: Contribution | None
        day: DayKey | None = None
        delay: int | None = None
        delay_us: int | None = None  # report -> record, when recorded
        if status is None:
            key = None
        elif a is None:
            key = UNOPENED_KEY
        else:
            opening = st.opening
            assert opening is not None  # an assessment is made of an opened incident
            district = opening.district
            if district not in self.districts:
                district = None
            # A NamedTuple hashes and compares as the plain tuple of its values, so
            # the plain tuple finds the interned key: building the NamedTuple is the slow part.
            interned = self._interned
            parts = (status, a.category, district, opening.channel, a.exempt_reason if status == EXEMPT else None)
            key = interned.get(parts) or self._intern(Contribution(*parts))
            since, recorded = a.required_since, a.recorded_at  # since: None unless required
            if since is not None:
                day_parts = (day_of(since), status)
                day = interned.get(day_parts) or self._intern(DayKey(*day_parts))
                if status in RECORDED_STATUSES and recorded is not None:
                    delay_us = recorded - since
                    delay = delay_bucket(delay_us)
        if day is not st.day:
            shift(self.daily, st.day, day)
            st.day = day
        if delay != st.delay:
            shift(self.delays, st.delay, delay)
            st.delay = delay
        old = st.key
        if key is old:
            return
        shift(self.agg, old, key)
        st.key = key
        if moves is not None:
            became_recorded = old is None or old.status not in RECORDED_STATUSES
            moves.add(old, key, max(0, delay_us) / US if delay_us is not None and became_recorded else None)

    def evict(self, st: IncidentState) -> None:
        """The incident is forgotten; what it contributed stays counted."""
        if st.key is not None:
            self.evicted[st.key] += 1
        if st.day is not None:
            self.evicted_daily[st.day] += 1
        if st.delay is not None:
            self.evicted_delays[st.delay] += 1

    def evicted_json(self) -> list:
        return [[[list(k), n] for k, n in self.evicted.items()],
                [[list(k), n] for k, n in self.evicted_daily.items()],
                [[k, n] for k, n in self.evicted_delays.items()]]

    def restore_evicted(self, data: list | None) -> None:
        if not data:
            return
        keys, days, delays = data
        for k, n in keys:
            key = self._intern(Contribution(*k))
            self.evicted[key] += n
            self.agg[key] += n
        for k, n in days:
            day = self._intern(DayKey(*k))
            self.evicted_daily[day] += n
            self.daily[day] += n
        for k, n in delays:
            self.evicted_delays[k] += n
            self.delays[k] += n
