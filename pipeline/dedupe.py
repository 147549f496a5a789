"""Duplicates and event counts (contract §2): the first valid copy of an
``event_id`` on a topic is applied, later valid copies are duplicates.

Why a ledger of its own, keyed by event id rather than inside the incident
and crime ledgers: a resent message may carry a different key or even a
different incident id, and an incident may already have been evicted when a
late copy arrives. Only a store keyed by the event id itself answers "seen
before?" in both cases. It also owns the per-topic counts (valid, duplicate,
invalid), so that ``valid + duplicate + invalid = messages consumed``.

Event ids are kept ``recording_deadline`` plus twice ``state_retention`` of
event time after their ``occurred_at`` — longer than an incident that had no
later activity — then forgotten. Pure: no clock, no Kafka.
"""

from __future__ import annotations

import heapq
from collections import Counter

from .rules import Params

__all__ = ["EventIds", "TOPICS"]

TOPICS = ("incidents", "crimes")


class EventIds:
    """Seen event ids per topic, their eviction, and the event counts."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.retention = params.recording_deadline + 2 * params.state_retention
        self.seen: dict[str, dict[str, int]] = {t: {} for t in TOPICS}
        self.counts: dict[str, Counter] = {t: Counter(valid=0, duplicate=0, invalid=0) for t in TOPICS}
        self.evicted: Counter = Counter()  # forgotten ids per topic: still counted as valid
        self.max_time: int | None = None
        self._heap: list[tuple[int, str, str]] = []
        self.added: list[tuple[str, str, int]] = []    # (topic, event_id, at) since the last drain
        self.removed: list[tuple[str, str]] = []       # (topic, event_id) evicted since the last drain

    def claim(self, topic: str, event_id: str, at: int) -> bool:
        """True for the first valid copy of ``event_id`` on ``topic``; counts it either way."""
        seen = self.seen[topic]
        if event_id in seen:
            self.counts[topic]["duplicate"] += 1
            return False
        seen[event_id] = at
        self.counts[topic]["valid"] += 1
        self.added.append((topic, event_id, at))
        heapq.heappush(self._heap, (at + self.retention, topic, event_id))
        if self.max_time is None or at > self.max_time:
            self.observe(at)
        return True

    def recount_duplicate(self, topic: str) -> None:
        """A claimed id turned out to be known to its incident or crime (it had
        been forgotten here first): count it as the duplicate it is."""
        c = self.counts[topic]
        c["valid"] -= 1
        c["duplicate"] += 1

    def invalid(self, topic: str, n: int = 1) -> None:
        self.counts[topic]["invalid"] += n

    def observe(self, event_time: int) -> None:
        """The watermark source moved: forget ids older than the retention."""
        if self.max_time is not None and event_time <= self.max_time:
            return
        self.max_time = event_time
        w = event_time - self.params.allowed_lateness
        heap = self._heap
        while heap and heap[0][0] <= w:
            _due, topic, event_id = heapq.heappop(heap)
            if self.seen[topic].pop(event_id, None) is not None:
                self.removed.append((topic, event_id))
                self.evicted[topic] += 1

    def drain(self) -> tuple[list, list]:
        """Ids added and evicted since the last drain (for persistence)."""
        added, removed = self.added, self.removed
        self.added, self.removed = [], []
        return added, removed

    # ------------------------------------------------------------- persistence
    def load(self, ids: dict[tuple[str, str], int], meta: dict | None) -> None:
        """Rebuild from persisted ids and meta.

        ``valid`` is derived (ids held + ids evicted), not read from the meta:
        the ids are the truth, so a crash between writing ids and writing the
        meta cannot lose a valid count. Duplicate and invalid counts come from
        the meta (messages re-read after a crash count again anyway).
        """
        if meta:
            self.max_time = meta.get("max_time")
            self.evicted.update(meta.get("evicted", {}))
            for topic in TOPICS:
                c = meta.get("counts", {}).get(topic, {})
                self.counts[topic]["duplicate"] = c.get("duplicate", 0)
                self.counts[topic]["invalid"] = c.get("invalid", 0)
        for (topic, event_id), at in ids.items():
            self.seen[topic][event_id] = at
            heapq.heappush(self._heap, (at + self.retention, topic, event_id))
        for topic in TOPICS:
            self.counts[topic]["valid"] = len(self.seen[topic]) + self.evicted[topic]

    def meta(self) -> dict:
        return {"max_time": self.max_time, "evicted": dict(self.evicted),
                "counts": {t: {"duplicate": c["duplicate"], "invalid": c["invalid"]} for t, c in self.counts.items()}}
