"""One owned partition of one stage: a core stage, its input position, its changelog.

Responsibilities:
- apply the records of the stage's input partition in order and without a
  gap, each message through the core stage, a failing message caught,
  dead-lettered as a ``processing_error`` and skipped
  (:meth:`StagePartition.process`);
- after a batch, say what to persist: the changed state records and the
  checkpoint (meta and next input offset) (:meth:`StagePartition.collect`);
- rebuild from a recovered changelog (:meth:`StagePartition.load`).

The core stages do the deciding; this module only moves bytes to and from them.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

import msgspec

from ..core.config import CoreConfig
from ..core.crimes import CrimeChanges
from ..core.events import Arrival, CrimeEvent, IncidentEvent, Invalid, Link, Notice, Rewind, Stale
from ..core.incidents import IncidentChanges
from ..core.stages import CrimeStage, EventStage, IncidentStage
from .codec import decode_batch, decode_crime, decode_incident, encode_crime, encode_incident
from .idlog import Change, IdLog
from .store import Recovered
from .transport import KafkaRouter

__all__ = ["StagePartition", "EventPartition", "IncidentPartition", "CrimePartition", "PARTITION_TYPES"]

logger = logging.getLogger(__name__)

#: on_error(stage, record, op, exc): a message whose processing raised.
ErrorHandler = Callable[[str, Any, Any, BaseException], None]


class StagePartition:
    """The common part; subclasses say how their stage's messages and state look."""

    stage_name = ""

    def __init__(self, partition: int, stage: EventStage | IncidentStage | CrimeStage) -> None:
        self.partition = partition
        self.stage = stage
        self.next_offset = 0  # the offset of the next record to apply (a checkpoint's ``next``)
        self.dirty = False

    def process(self, record: Any, on_error: ErrorHandler) -> bool:
        """Apply one record of the stage's input partition; False (and nothing
        done) when it comes after records not applied yet.

        A stage partition's offsets have no holes (no compaction, no
        transactions), so a record past :attr:`next_offset` came early (the
        consumer's position ran ahead of this partition's checkpoint, or the
        broker served it before the one below it): applying it would lose the
        records between. The caller reads them again instead."""
        offset = record.offset
        if offset != self.next_offset:
            if offset < self.next_offset:
                return True  # applied before the checkpoint this partition was recovered from
            return False
        self.next_offset = offset + 1
        self.dirty = True
        try:
            batch = decode_batch(record.value)
        except (msgspec.DecodeError, TypeError) as exc:
            on_error(self.stage_name, record, None, exc)
            return True  # dead-lettered: applied as far as it can be
        self._apply(batch.t, batch.ops, record, on_error)
        return True

    def apply_own(self, record: Any, t: int | None, ops: list[Any], on_error: ErrorHandler) -> bool:
        """Apply a record this worker wrote to the partition's input, from the
        messages it was encoded from (no decoding): only when it is the next
        one to apply; False (nothing done) otherwise. ``record`` names its
        topic, partition, offset and value, for a dead letter."""
        if record.offset != self.next_offset:
            return False
        self.next_offset = record.offset + 1
        self.dirty = True
        self._apply(t, ops, record, on_error)
        return True

    def _apply(self, t: int | None, ops: list[Any], record: Any, on_error: ErrorHandler) -> None:
        dispatch = self.dispatch
        for op in ops:
            try:
                dispatch(op)
            except Exception as exc:  # noqa: BLE001 - no message stops a worker
                on_error(self.stage_name, record, op, exc)
        # The batch's event time last, as the in-process wiring does: each message
        # applies under the watermark of what was read before it, so an
        # incident's own late event keeps it alive instead of finding it evicted.
        self.stage.observe(t)
        self.settle()

    def settle(self) -> None:
        """After each record: a stage that defers its decisions makes them (see IncidentPartition)."""

    def skip_to(self, offset: int) -> None:
        """The records before ``offset`` are gone from the log (retention removed
        them before this partition applied them): go on from ``offset``."""
        if offset > self.next_offset:
            self.next_offset = offset
            self.dirty = True

    def dispatch(self, op: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def collect(self) -> list[Change]:  # pragma: no cover - abstract
        """The state records changed since the last collect (and send the stage's messages)."""
        raise NotImplementedError

    def meta(self) -> dict:
        return self.stage.meta()

    def max_time(self) -> int | None:  # pragma: no cover - abstract
        raise NotImplementedError


class EventPartition(StagePartition):
    """Event ids and counts (:class:`~pipeline.core.stages.EventStage`)."""

    stage_name = "event"

    def __init__(self, partition: int, config: CoreConfig, router: KafkaRouter) -> None:
        self.events = events = EventStage(config, router)  # self.stage, typed
        super().__init__(partition, events)
        self.deadletters: Counter = Counter()  # (side, reason) published since the last collect
        self.idlog = IdLog()  # how the ids are written to the changelog

    def dispatch(self, op: Any) -> None:
        t = type(op)
        if t is Arrival:
            self.events.arrive(op.event, op.partition, op.offset)
        elif t is Invalid:
            if self.events.reject(op.side, op.partition, op.offset, op.key, op.deadletter):
                self.deadletters[(op.side, op.reason)] += 1
        elif t is Rewind:
            self.events.rewind(op.side, op.partition, op.offset)
        else:
            raise TypeError(f"the event stage takes no {t.__name__}")

    def collect(self) -> list[Change]:
        added, removed = self.events.ids.drain()
        return self.idlog.changes(added, removed)

    def load(self, rec: Recovered) -> None:
        ids, unreadable = self.idlog.read(rec.values, self.events.ids.bucket_of)
        rec.unreadable += unreadable
        self.idlog.expired(self.events.load(ids, rec.meta))
        self.next_offset = rec.next_offset or 0

    def counts(self) -> dict[str, Any]:
        return self.events.ids.counts

    def counts_now(self) -> dict[str, dict]:
        """A copy of the counts (the runner's metrics count what a batch adds)."""
        return {side: dict(c) for side, c in self.counts().items()}

    def max_time(self) -> int | None:
        return self.events.ids.max_time


class IncidentPartition(StagePartition):
    """The incident ledger (:class:`~pipeline.core.stages.IncidentStage`)."""

    stage_name = "incident"

    def __init__(self, partition: int, config: CoreConfig, router: KafkaRouter) -> None:
        # Deferred to the end of each record: an incident's several messages in one
        # record are evaluated once (a quarter of the evaluations on the benchmark).
        self.incidents = incidents = IncidentStage(config, router, deferred=True, outputs=True)  # self.stage, typed
        super().__init__(partition, incidents)
        self.changes: IncidentChanges | None = None  # the last collect's, for metrics and views

    def dispatch(self, op: Any) -> None:
        t = type(op)
        stage = self.incidents
        if t is IncidentEvent:
            stage.event(op)
        elif t is Link:
            stage.link(op)
        elif t is Stale and type(op.event) is IncidentEvent:
            stage.event(op.event, True)
        else:
            raise TypeError(f"the incident stage takes no {t.__name__}")

    def settle(self) -> None:
        self.incidents.settle()

    def collect(self) -> list[Change]:
        ch = self.changes = self.incidents.flush()
        if ch is None:
            return []
        states = self.incidents.ledger.incidents
        out: list[Change] = [(b"i:" + i.encode("utf-8"), encode_incident(states[i]))
                                                 for i in ch.touched if i in states]
        out.extend((b"i:" + i.encode("utf-8"), None) for i in ch.evicted)
        return out

    def load(self, rec: Recovered) -> None:
        self.incidents.load(_readable(rec, b"i:", decode_incident), rec.meta)
        self.incidents.ledger.drain()
        self.next_offset = rec.next_offset or 0

    def max_time(self) -> int | None:
        return self.incidents.ledger.max_time


class CrimePartition(StagePartition):
    """The crime ledger (:class:`~pipeline.core.stages.CrimeStage`)."""

    stage_name = "crime"

    def __init__(self, partition: int, config: CoreConfig, router: KafkaRouter) -> None:
        self.crimes = crimes = CrimeStage(config, router)  # self.stage, typed
        super().__init__(partition, crimes)
        self.changes: CrimeChanges | None = None  # the last collect's, for metrics

    def dispatch(self, op: Any) -> None:
        t = type(op)
        stage = self.crimes
        if t is CrimeEvent:
            stage.event(op)
        elif t is Notice:
            stage.notice(op)
        elif t is Stale and type(op.event) is CrimeEvent:
            stage.event(op.event, True)
        else:
            raise TypeError(f"the crime stage takes no {t.__name__}")

    def collect(self) -> list[Change]:
        ch = self.changes = self.crimes.flush()
        if ch is None:
            return []
        states = self.crimes.ledger.crimes
        out: list[Change] = [(b"c:" + i.encode("utf-8"), encode_crime(states[i]))
                                                 for i in ch.touched if i in states]
        out.extend((b"c:" + i.encode("utf-8"), None) for i in ch.evicted)
        return out

    def load(self, rec: Recovered) -> None:
        self.crimes.load(_readable(rec, b"c:", decode_crime), rec.meta)
        self.crimes.ledger.drain()
        self.next_offset = rec.next_offset or 0

    def max_time(self) -> int | None:
        return self.crimes.ledger.max_time


PARTITION_TYPES = {"event": EventPartition, "incident": IncidentPartition, "crime": CrimePartition}


def _readable(rec: Recovered, prefix: bytes, decode: Callable) -> dict:
    """The recovered values under ``prefix``, decoded, by the id after it. A
    record no worker wrote (it does not decode) is left out and counted in
    :attr:`~pipeline.stream.store.Recovered.unreadable`: the partition is
    recovered without it rather than not at all."""
    out = {}
    n = len(prefix)
    for key, value in rec.values.items():
        if key.startswith(prefix):
            try:
                out[key[n:].decode("utf-8")] = decode(value)
            except (UnicodeDecodeError, msgspec.DecodeError):
                rec.unreadable += 1
    return out
