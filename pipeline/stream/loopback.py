"""Loopback: a stage record this worker wrote to a stage partition it owns is
applied from the messages it was encoded from, not read back and decoded.

Why: one worker owns every stage partition, or a share of them that its own
records mostly go to; each stage message crossed the broker only to come
back to the same process, and decoding it again was a tenth of a batch's
work. The log stays the one truth, so nothing changes in what is applied or
in which order:

- a record is applied from memory only once the broker has acknowledged it:
  it is durable, and its offset is known;
- only when that offset is the partition's next one (its checkpoint's
  ``next``): records other workers wrote before it are applied first, from
  the log, by the consumer; a record the consumer applied first is dropped here;
- the consumer still reads these records and the partition skips them (they
  are before its next offset); after a crash, recovery reads them from the
  log like any other record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, NamedTuple

from .partitions import StagePartition
from .transport import Outgoing

__all__ = ["Loopback", "OwnRecord"]


class OwnRecord(NamedTuple):
    """What a dead letter names of a record applied from memory (as a consumer record would)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Loopback:
    """The records sent to owned stage partitions, per partition in the order sent, until applied."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, int], deque[tuple[asyncio.Future, Outgoing]]] = {}

    def keep(self, future: asyncio.Future, out: Outgoing) -> None:
        """A record just sent (``future``: the producer's, answered with its offset)."""
        queue = self.sent.get((out.stage, out.partition))
        if queue is None:
            queue = self.sent[(out.stage, out.partition)] = deque()
        queue.append((future, out))

    def deliver(self, owned: dict[tuple[str, int], StagePartition], topic_of: Callable[[str], str],
                on_error: Callable[..., Any], only: tuple[str, int] | None = None) -> int:
        """Apply the acknowledged records that come next in their partitions
        (only ``only``'s, if given); the number applied. Records of partitions
        no longer owned are dropped (their owner reads them from the log)."""
        applied = 0
        for key in [only] if only is not None else list(self.sent):
            queue = self.sent.get(key)
            part = owned.get(key)
            while queue and part is not None:
                future, out = queue[0]
                if not future.done():
                    break
                if future.cancelled() or future.exception() is not None:
                    queue.clear()  # not in the log; the next flush raises
                    break
                offset = future.result().offset
                if offset >= part.next_offset:
                    record = OwnRecord(topic_of(out.stage), out.partition, offset, None, out.value)
                    if not part.apply_own(record, out.t, out.ops, on_error):
                        break  # another writer's record comes first: the consumer applies it
                    applied += 1
                queue.popleft()
            if not queue or part is None:
                self.sent.pop(key, None)
        return applied
