"""Duplicates and the event counts (contract §2): the first valid copy of an
``event_id`` on a feed is applied, later valid copies are duplicates.

Why a ledger of its own, keyed by event id rather than inside the incident
and crime ledgers: a resent message may carry a different key or even a
different incident id, and an incident may already be evicted when a late
copy arrives. Only a store keyed by the event id answers "seen before?" in
both cases. It also owns the event counts (valid, duplicate, invalid) per
feed, so that ``valid + duplicate + invalid = messages consumed``.

Ids are kept at least :attr:`~pipeline.core.config.Params.id_retention` of
event time after their ``occurred_at`` (and at most an hour more: they expire
in hourly buckets, a list append per id instead of a heap push). A copy older
than that is :meth:`EventIds.stale`: the id may have been forgotten, so the
ledger that owns the event decides (:class:`~pipeline.core.events.Stale`).
Pure: no clock, no Kafka.
"""

from __future__ import annotations

import heapq
from collections import Counter

from .config import Params
from .times import HOUR, watermark
from .vocabulary import SIDES

__all__ = ["EventIds", "Counts", "DUPLICATE", "FIRST", "STALE"]

_BUCKET = HOUR
_NEVER = 1 << 126  # later than any event time
DUPLICATE, FIRST, STALE = 0, 1, 2


class Counts(Counter):
    """valid / duplicate / invalid message counts of one feed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for outcome in ("valid", "duplicate", "invalid"):
            self.setdefault(outcome, 0)


class EventIds:
    """Seen event ids per feed, their expiry, and the event counts."""

    def __init__(self, params: Params, track: bool = True) -> None:
        """``track``: collect the ids added and forgotten, for persistence (the
        offline audit persists nothing and turns it off)."""
        self.params = params
        self.track = track
        self.retention = params.id_retention
        self.lateness = params.allowed_lateness
        # Seen ids per feed. Each is in exactly one expiry bucket (an id is added
        # only when absent, and leaves only with its bucket), so its time need
        # not be kept: a set (the reader of the 300k bench capture: 7 MiB less).
        self.seen: dict[str, set[str]] = {side: set() for side in SIDES}
        self.counts: dict[str, Counts] = {side: Counts() for side in SIDES}
        self.forgotten: Counter = Counter()  # ids expired per feed (still counted as valid)
        self.max_time: int | None = None
        self.added: list[tuple[str, str, int]] = []  # (side, event_id, at) since the last drain
        self.removed: list[tuple[str, str]] = []     # (side, event_id) forgotten since the last drain
        # expiry buckets: per feed, bucket -> event ids; a heap of the buckets
        self._buckets: dict[str, dict[int, list[str]]] = {side: {} for side in SIDES}
        self._bucket_heap: list[int] = []
        self._forget_from = _NEVER  # the event time from which the earliest bucket has expired

    @property
    def watermark(self) -> int | None:
        return watermark(self.max_time, self.lateness)

    def stale(self, at: int) -> bool:
        """True when an event this old may have been forgotten: absence proves nothing."""
        w = self.watermark
        return w is not None and at + self.retention <= w

    def claim(self, side: str, event_id: str, at: int) -> int:
        """Count one valid copy of ``event_id`` on ``side``: :data:`DUPLICATE` (0)
        when seen before, :data:`FIRST` (1) for the first copy, :data:`STALE` (2)
        for a first copy so old its id may have been forgotten."""
        seen = self.seen[side]
        if event_id in seen:
            self.counts[side]["duplicate"] += 1
            return DUPLICATE
        self.counts[side]["valid"] += 1
        max_time = self.max_time
        if max_time is None or at > max_time:
            self.max_time = max_time = at
            if at >= self._forget_from:
                self._expire()
        expiry = at + self.retention
        if expiry <= max_time - self.lateness:
            return STALE
        seen.add(event_id)
        if self.track:
            self.added.append((side, event_id, at))
        bucket = expiry // _BUCKET
        ids = self._buckets[side].get(bucket)
        if ids is None:
            ids = self._new_bucket(side, bucket)
        ids.append(event_id)
        return FIRST

    def invalid(self, side: str, n: int = 1) -> None:
        self.counts[side]["invalid"] += n

    def observe(self, event_time: int | None) -> None:
        """The watermark source moved: forget ids whose bucket has expired."""
        if event_time is None or (self.max_time is not None and event_time <= self.max_time):
            return
        self.max_time = event_time
        if event_time >= self._forget_from:
            self._expire()

    def _expire(self) -> None:
        """Forget the ids of every bucket the watermark has passed (a bucket
        expires at its end: the last instant whose ids it holds)."""
        w = self.watermark
        heap = self._bucket_heap
        while heap and (heap[0] + 1) * _BUCKET <= w:
            bucket = heapq.heappop(heap)
            for side in SIDES:
                self._forget(bucket, side)
        self._forget_from = (heap[0] + 1) * _BUCKET + self.lateness if heap else _NEVER

    def _new_bucket(self, side: str, bucket: int) -> list[str]:
        ids = self._buckets[side][bucket] = []
        heap = self._bucket_heap
        heapq.heappush(heap, bucket)
        if heap[0] == bucket:  # W >= end of bucket  <=>  max_time >= end of bucket + lateness
            self._forget_from = (bucket + 1) * _BUCKET + self.lateness
        return ids

    def _forget(self, bucket: int, side: str) -> None:
        ids = self._buckets[side].pop(bucket, None)
        if not ids:
            return
        seen = self.seen[side]
        before = len(seen)
        seen.difference_update(ids)
        self.forgotten[side] += before - len(seen)
        if self.track:
            self.removed.extend((side, event_id) for event_id in ids)

    def drain(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
        """Ids added and forgotten since the last drain, for persistence."""
        added, removed = self.added, self.removed
        self.added, self.removed = [], []
        return added, removed

    # ------------------------------------------------------------- persistence
    def load(self, ids: list[tuple[str, str, int]], meta: dict | None) -> None:
        """Rebuild from persisted ids and the partition's meta (counts, watermark
        source). Ids that had expired by then are dropped."""
        if meta:
            self.max_time = meta.get("max_time")
            self.forgotten.update(meta.get("forgotten", {}))
            for side in SIDES:
                self.counts[side].update(meta.get("counts", {}).get(side, {}))
        w = self.watermark
        for side, event_id, at in ids:
            bucket = (at + self.retention) // _BUCKET
            if (w is not None and (bucket + 1) * _BUCKET <= w) or event_id in self.seen[side]:
                continue
            self.seen[side].add(event_id)
            bucket_ids = self._buckets[side].get(bucket)
            if bucket_ids is None:
                bucket_ids = self._new_bucket(side, bucket)
            bucket_ids.append(event_id)

    def meta(self) -> dict:
        return {"max_time": self.max_time, "forgotten": dict(self.forgotten),
                "counts": {side: dict(c) for side, c in self.counts.items()}}
