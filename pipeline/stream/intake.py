"""Intake: input records in, messages for the event stage out.

Validation (contract §2) happens here, once per message, with the wall clock
of the moment it is read (the future-timestamp rule). A valid message goes
to the event-stage partition that owns its ``event_id``; an invalid one, with
its dead-letter record already built, to the event-stage partition of its
source partition, where it is counted and published once per source position
(:meth:`pipeline.core.stages.EventStage.reject`). Intake keeps no state, so
a message read twice (after a rebalance) is dropped there, not here.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from ..core.config import InputTopics
from ..core.events import Arrival, CrimeEvent, IncidentEvent, Invalid, Rejection
from .deadletters import deadletter_record
from .transport import KafkaRouter

__all__ = ["Intake"]

logger = logging.getLogger(__name__)


class BatchValidator(Protocol):
    """What intake needs of :class:`~pipeline.core.validation.Validator` (a test wraps one)."""

    def validate(self, side: str, raw: bytes, now: int) -> IncidentEvent | CrimeEvent | Rejection: ...

    def validate_many(self, side: str, raws: list[bytes], now: int) -> list[IncidentEvent | CrimeEvent | Rejection]:
        ...


class Intake:
    """Validates input records and routes them to the event stage.

    ``on_error(topic, partition, offset, key, value, exc)`` is called for a
    record whose handling raised (a defect): it becomes a ``processing_error``.
    """

    def __init__(self, topics: InputTopics, validator: BatchValidator, router: KafkaRouter) -> None:
        self.topics = topics
        self.validator = validator
        self.router = router

    def handle(self, topic: str, records: list, on_error: Callable[..., None]) -> int:
        """Route one fetched batch of one input partition; the number of records.

        The batch is validated at once (:meth:`Validator.validate_many`: its
        instants in one call); should that raise (a defect), each record is
        validated alone, so that only a record that itself fails becomes a
        ``processing_error``."""
        side = self.topics.side_of(topic)
        assert side is not None  # the runner hands over input topics only
        now = time.time_ns() // 1000
        validator = self.validator
        add, add_keyed = self.router.add, self.router.add_keyed
        values = [b"" if r.value is None else r.value for r in records]
        try:
            results = validator.validate_many(side, values, now)
        except Exception as exc:  # noqa: BLE001 - a defect: each record alone, below
            # the type only: an exception's text may quote a payload, which is never logged
            logger.error("validating a batch of %s failed (%s); validating its records one by one",
                         topic, type(exc).__name__)
            results = None
        for i, r in enumerate(records):
            try:
                result = validator.validate(side, values[i], now) if results is None else results[i]
                if isinstance(result, Rejection):
                    key, record = deadletter_record(topic, r.partition, r.offset, r.key, r.value, result.reason,
                                                    result.detail, now)
                    add("event", Invalid(side, r.partition, r.offset, result.reason, key, record))
                else:
                    add_keyed("event", result.event_id, Arrival(result, r.partition, r.offset))
            except Exception as exc:  # noqa: BLE001 - no message stops a worker
                on_error(topic, r.partition, r.offset, r.key, r.value, exc)
        return len(records)
