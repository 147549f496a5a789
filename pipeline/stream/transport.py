"""The Kafka transport of the stage messages: the workers' :class:`~pipeline.core.stages.Router`.

Each message goes to the partition of its target stage that owns its key
(:func:`~pipeline.core.routing.partition_for`). Messages are gathered per
target partition while a batch is processed, then sent as few records as fit
(one record per partition, split only when it would pass :data:`MAX_BATCH_BYTES`).
Alerts and dead letters are gathered too, and published before the batch's
checkpoint.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..core.events import Alert, CrimeEvent, IncidentEvent, Link, Notice, Rewind, Stale
from ..core.routing import key_of, partition_for
from .codec import encode_batch

__all__ = ["KafkaRouter", "Outgoing", "MAX_BATCH_BYTES"]

#: A stage record's size goal: well under the producer's 1 MB limit (a dead
#: letter carried to the event stage is at most ~90 KB).
MAX_BATCH_BYTES = 512 * 1024


class Outgoing(NamedTuple):
    """One stage record to send: where, its bytes, and what they carry (``t``,
    ``ops``), kept so that the worker that owns the target partition can apply
    it from memory once it is in the log (:mod:`~pipeline.stream.loopback`)."""

    stage: str
    partition: int
    value: bytes
    t: int | None
    ops: list[Any]


class KafkaRouter:
    """Gathers stage messages per (stage, partition), alerts and dead letters, until :meth:`drain`."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        # The messages gathered, by stage, then partition: a message is added
        # without making and hashing a (stage, partition) tuple.
        self._lists: dict[str, list[list[Any] | None]] = {}
        self.alerts: list[Alert] = []
        self.deadletters: list[tuple[bytes | None, bytes]] = []

    def add(self, stage: str, op: Any) -> None:
        """One message to the partition of ``stage`` that owns its key."""
        self.add_keyed(stage, key_of(op), op)

    def add_keyed(self, stage: str, key: str, op: Any) -> None:
        """:meth:`add` for a caller that has the key at hand (``key_of(op)``)."""
        self._list(stage, partition_for(key, self.partitions)).append(op)

    def _list(self, stage: str, partition: int) -> list[Any]:
        """The messages gathered for one partition of ``stage``."""
        lists = self._lists.get(stage)
        if lists is None:
            lists = self._lists[stage] = [None] * self.partitions
        ops = lists[partition]
        if ops is None:
            ops = lists[partition] = []
        return ops

    @property
    def ops(self) -> dict[tuple[str, int], list[Any]]:
        """The messages gathered so far, by ``(stage, partition)`` (for reading)."""
        return {(stage, p): ops for stage, lists in self._lists.items()
                for p, ops in enumerate(lists) if ops is not None}

    def rewind(self, side: str, partition: int, offset: int) -> None:
        """A :class:`~pipeline.core.events.Rewind` to every event-stage partition (each
        holds positions of every input partition), ahead of any record read after it."""
        op = Rewind(side, partition, offset)
        for p in range(self.partitions):
            self._list("event", p).append(op)

    def forget_rewinds(self, sources: set[tuple[str, int]]) -> None:
        """Drop the unsent rewinds of these input partitions (``(side, partition)``):
        they went to another worker, which positions them itself; a rewind sent
        after its records would make them count again."""
        for lists in self._lists.values():
            for p, ops in enumerate(lists):
                if ops is not None:
                    lists[p] = [op for op in ops if type(op) is not Rewind or (op.side, op.partition) not in sources]

    # -- the Router protocol of the core stages
    def incident_event(self, ev: IncidentEvent, stale: bool) -> None:
        self.add_keyed("incident", ev.incident_id, Stale(ev) if stale else ev)

    def crime_event(self, ev: CrimeEvent, stale: bool) -> None:
        self.add_keyed("crime", ev.crime_id, Stale(ev) if stale else ev)

    def link(self, link: Link) -> None:
        self.add_keyed("incident", link.incident_id, link)

    def notice(self, notice: Notice) -> None:
        self.add_keyed("crime", notice.crime_id, notice)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def deadletter(self, key: bytes | None, record: bytes) -> None:
        self.deadletters.append((key, record))

    # -- after the batch
    def drain(self, t: int | None) -> list[Outgoing]:
        """The records of every gathered message, ``t`` on each record."""
        out = []
        for (stage, partition), ops in self.ops.items():
            for value, part in _encode(t, ops):
                out.append(Outgoing(stage, partition, value, t, part))
        self._lists = {}
        return out

    def broadcast(self, t: int, stages: tuple[str, ...]) -> list[Outgoing]:
        """An empty message with ``t`` for every partition of ``stages``: the watermark moved."""
        record = encode_batch(t, [])
        return [Outgoing(stage, p, record, t, []) for stage in stages for p in range(self.partitions)]


def _encode(t: int | None, ops: list[Any]) -> list[tuple[bytes, list[Any]]]:
    """Records (and the messages of each) for a partition's messages, halved until none passes
    :data:`MAX_BATCH_BYTES` (one message is at most ~90 KB: a dead letter, or a crime naming 100 long ids)."""
    value = encode_batch(t, ops)
    if len(value) <= MAX_BATCH_BYTES or len(ops) == 1:
        return [(value, ops)]
    half = len(ops) // 2
    return _encode(t, ops[:half]) + _encode(t, ops[half:])
