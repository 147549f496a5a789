"""When the ledgers' states are next due: the deadline index both ledgers keep.

A state stores its own due instant (``st.timer``). An entry here whose
instant no longer matches the state's is stale, and the ledger skips it when
it comes due: rescheduling is one :meth:`Timers.add`, never a search.

Two ways to keep the entries, one interface, because the ledgers ask at very
different rates:

- **exact** (a heap of ``(instant, key)``): :meth:`Timers.due` yields an entry
  as soon as the watermark reaches it. The workers' ledgers ask on every
  watermark move, so that an alert goes out when it is true.
- **coarse** (entries in hour buckets, a heap of bucket numbers): adding is
  two list appends instead of a heap push over every open incident. Whole
  buckets are taken at once; only the bucket the watermark is in is scanned.
  For the offline audit's deferred ledger, which asks only at a settle (a
  handful of times per month of events): per ask, it costs a scan of one
  bucket. A bucket keeps its instants and keys in two lists, not as pairs:
  the instant is the object the state holds anyway, so an entry costs two
  list slots (16 bytes), not a tuple besides (72; 5 MiB of the audit's
  ledgers on the 300k bench capture).

Both give exactly the entries due at or before the watermark asked for.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
from typing import Final

from .times import HOUR

__all__ = ["Timers"]

_BUCKET: Final = HOUR
_NONE: Final[tuple] = ()  # what due() returns most of the time (a worker asks on every watermark move)


class Timers:
    """Due instants of keyed states (see the module doc)."""

    __slots__ = ("coarse", "_heap", "_buckets", "_size")

    def __init__(self, coarse: bool = False) -> None:
        self.coarse = coarse
        self._heap: list = []  # exact: (instant, key); coarse: bucket numbers
        self._buckets: dict[int, tuple[list[int], list[str]]] = {}  # coarse: bucket -> (instants, keys)
        self._size = 0

    def __len__(self) -> int:
        """Entries held, stale ones included (the ledger compacts when there are too many)."""
        return self._size if self.coarse else len(self._heap)

    def add(self, at: int, key: str) -> None:
        """``key`` is due at ``at`` (an earlier entry for it becomes stale)."""
        if not self.coarse:
            heapq.heappush(self._heap, (at, key))
            return
        b = at // _BUCKET
        bucket = self._buckets.get(b)
        if bucket is None:
            self._buckets[b] = ([at], [key])
            heapq.heappush(self._heap, b)
        else:
            bucket[0].append(at)
            bucket[1].append(key)
        self._size += 1

    def due(self, w: int) -> list[tuple[int, str]] | tuple:
        """Remove and return the entries due at ``w`` (instant <= ``w``), stale ones included."""
        heap = self._heap
        if not heap or (heap[0][0] if not self.coarse else heap[0] * _BUCKET) > w:
            return _NONE
        if not self.coarse:
            out = []
            while heap and heap[0][0] <= w:
                out.append(heapq.heappop(heap))
            return out
        out = []
        buckets = self._buckets
        while heap and heap[0] * _BUCKET <= w:
            b = heapq.heappop(heap)
            instants, keys = buckets.pop(b)
            if (b + 1) * _BUCKET <= w + 1:  # the whole bucket is due
                out += zip(instants, keys)
                continue
            # the bucket the watermark is in: the last one to look at
            later: tuple[list, list] = ([], [])
            for at, key in zip(instants, keys):
                if at <= w:
                    out.append((at, key))
                else:
                    later[0].append(at)
                    later[1].append(key)
            if later[0]:
                buckets[b] = later
                heapq.heappush(heap, b)
            break
        self._size -= len(out)
        return out

    def reset(self, entries) -> None:
        """Hold exactly ``entries`` (``(instant, key)`` pairs): drops the stale ones."""
        self._heap, self._buckets, self._size = [], {}, 0
        if not self.coarse:
            self._heap = list(entries)
            heapq.heapify(self._heap)
            return
        for at, key in entries:
            self.add(at, key)
