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
Ids are held as ints (:func:`id_key`): a 20-character id takes 48 bytes, not
the 80 of its str, and the offline audit's reader holds every id of a
capture shorter than the retention (300,000 of them on the bench capture:
its peak RSS 57 -> 49 MiB).

Pure: no clock, no Kafka.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Final

from mypy_extensions import mypyc_attr

from . import tally
from .config import Params
from .times import HOUR, watermark
from .vocabulary import SIDES

__all__ = ["EventIds", "Counts", "DUPLICATE", "FIRST", "STALE", "id_key", "event_id_of"]

_BUCKET: Final = HOUR
_NEVER: Final = 1 << 126  # later than any event time
DUPLICATE, FIRST, STALE = 0, 1, 2
_from_bytes = int.from_bytes


def id_key(event_id: str) -> int:
    """The int an event id is held as: its UTF-8 bytes, little-endian, under a
    byte 1 that keeps the length (``"a"`` and ``"a\\0"`` differ). One to one:
    :func:`event_id_of` gives the id back."""
    try:
        raw = event_id.encode()
    except UnicodeEncodeError:  # a lone surrogate: no JSON or msgpack decoder gives one, but no input may stop us
        raw = event_id.encode("utf-8", "surrogatepass")
    return _from_bytes(raw + b"\x01", "little")


def event_id_of(key: int) -> str:
    """The event id :func:`id_key` made ``key`` of."""
    return key.to_bytes((key.bit_length() + 7) // 8, "little")[:-1].decode("utf-8", "surrogatepass")


@mypyc_attr(native_class=False)  # a dict's subclass
class Counts(tally.Counts):
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
        # Seen ids (their id_key) per feed. Each is in exactly one expiry bucket (an
        # id is added only when absent, and leaves only with its bucket), so its
        # time need not be kept: a set (the reader of the 300k bench capture: 7 MiB less).
        self.seen: dict[str, set[int]] = {side: set() for side in SIDES}
        self.counts: dict[str, Counts] = {side: Counts() for side in SIDES}
        self.forgotten: Counter = Counter()  # ids expired per feed (still counted as valid)
        self.max_time: int | None = None
        # Since the last drain, per expiry bucket: the ids added, and the buckets
        # forgotten (persistence writes and deletes a bucket's ids together).
        self.added: dict[tuple[str, int], list[str]] = {}  # (side, bucket) -> event ids
        self.removed: list[tuple[str, int]] = []           # (side, bucket)
        # expiry buckets: per feed, bucket -> id keys; a heap of the buckets
        self._buckets: dict[str, dict[int, list[int]]] = {side: {} for side in SIDES}
        self._bucket_heap: list[int] = []
        self._forget_from = _NEVER  # the event time from which the earliest bucket has expired

    @property
    def watermark(self) -> int | None:
        return watermark(self.max_time, self.lateness)

    def bucket_of(self, at: int) -> int:
        """The expiry bucket of an id whose event happened at ``at``: the id is
        forgotten with the bucket, once the watermark has passed its end."""
        return (at + self.retention) // _BUCKET

    def stale(self, at: int) -> bool:
        """True when an event this old may have been forgotten: absence proves nothing."""
        w = self.watermark
        return w is not None and at + self.retention <= w

    def claim(self, side: str, event_id: str, at: int) -> int:
        """Count one valid copy of ``event_id`` on ``side``: :data:`DUPLICATE` (0)
        when seen before, :data:`FIRST` (1) for the first copy, :data:`STALE` (2)
        for a first copy so old its id may have been forgotten."""
        seen = self.seen[side]
        key = id_key(event_id)
        if key in seen:
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
        seen.add(key)
        bucket = expiry // _BUCKET
        if self.track:
            added = self.added.get((side, bucket))
            if added is None:
                self.added[(side, bucket)] = [event_id]
            else:
                added.append(event_id)
        keys = self._buckets[side].get(bucket)
        if keys is None:
            keys = self._new_bucket(side, bucket)
        keys.append(key)
        return FIRST

    def held(self, side: str) -> set[str]:
        """The event ids of ``side`` held now (for tests and inspection)."""
        return {event_id_of(key) for key in self.seen[side]}

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
        if w is None:
            return
        heap = self._bucket_heap
        while heap and (heap[0] + 1) * _BUCKET <= w:
            bucket = heapq.heappop(heap)
            for side in SIDES:
                self._forget(bucket, side)
        self._forget_from = (heap[0] + 1) * _BUCKET + self.lateness if heap else _NEVER

    def _new_bucket(self, side: str, bucket: int) -> list[int]:
        ids = self._buckets[side][bucket] = []
        heap = self._bucket_heap
        heapq.heappush(heap, bucket)
        if heap[0] == bucket:  # W >= end of bucket  <=>  max_time >= end of bucket + lateness
            self._forget_from = (bucket + 1) * _BUCKET + self.lateness
        return ids

    def _forget(self, bucket: int, side: str) -> None:
        keys = self._buckets[side].pop(bucket, None)
        if keys is None:
            return
        if self.track:
            self.removed.append((side, bucket))
        seen = self.seen[side]
        before = len(seen)
        seen.difference_update(keys)
        self.forgotten[side] += before - len(seen)

    def drain(self) -> tuple[dict[tuple[str, int], list[str]], list[tuple[str, int]]]:
        """For persistence, since the last drain: the ids added, by ``(side,
        bucket)``, then the buckets forgotten (a bucket can be in both: its ids
        were added, then it expired; delete after writing)."""
        added, removed = self.added, self.removed
        self.added, self.removed = {}, []
        return added, removed

    # ------------------------------------------------------------- persistence
    def load(self, buckets: list[tuple[str, int, list[str]]], meta: dict | None) -> list[tuple[str, int]]:
        """Rebuild from persisted ids, ``(side, bucket, event ids)``, and the
        partition's meta (counts, watermark source). Buckets that had expired
        by then are dropped: returns them, ``(side, bucket)``, for persistence
        to delete."""
        if meta:
            self.max_time = meta.get("max_time")
            self.forgotten.update(meta.get("forgotten", {}))
            for side in SIDES:
                self.counts[side].add(meta.get("counts", {}).get(side, {}))
        w = self.watermark
        dropped: list[tuple[str, int]] = []
        for side, bucket, event_ids in buckets:
            if w is not None and (bucket + 1) * _BUCKET <= w:
                dropped.append((side, bucket))
                continue
            seen = self.seen[side]
            bucket_keys = self._buckets[side].get(bucket)
            for event_id in event_ids:
                key = id_key(event_id)
                if key in seen:
                    continue
                seen.add(key)
                if bucket_keys is None:
                    bucket_keys = self._new_bucket(side, bucket)
                bucket_keys.append(key)
        return dropped

    def meta(self) -> dict:
        return {"max_time": self.max_time, "forgotten": dict(self.forgotten),
                "counts": {side: dict(c) for side, c in self.counts.items()}}
