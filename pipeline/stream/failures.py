"""Processing errors: a message whose handling raised (a defect, or a state
limit) is counted (``cdi_processing_errors_total``), logged without its
content, dead-lettered as a ``processing_error`` with the detail, and skipped;
the rest of its batch goes on. No message stops a worker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from ..core.config import InputTopics
from ..core.events import Invalid
from .deadletters import deadletter_record
from .metrics import Metrics
from .transport import KafkaRouter

__all__ = ["ProcessingErrors"]

logger = logging.getLogger(__name__)


class ProcessingErrors:
    """The runner's handlers for a failing input record (:meth:`intake`) and a
    failing stage message (:meth:`stage`)."""

    def __init__(self, metrics: Metrics, router: KafkaRouter, topics: InputTopics) -> None:
        self.metrics = metrics
        self.router = router
        self.topics = topics

    def intake(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               exc: BaseException) -> None:
        """An input record whose handling raised: counted invalid and dead-lettered, once
        (through the event stage, by its source position)."""
        self._log("intake", topic, partition, offset, exc)
        side = self.topics.side_of(topic)
        dl_key, record = deadletter_record(topic, partition, offset, key, value, "processing_error",
                                           f"{type(exc).__name__}: {exc}", time.time_ns() // 1000)
        self.router.add("event", Invalid(side, partition, offset, "processing_error", dl_key, record))

    def stage(self, stage: str, record: Any, op: Any, exc: BaseException) -> None:
        """A stage message whose processing raised: dead-lettered, skipped; the rest goes on."""
        self._log(stage, record.topic, record.partition, record.offset, exc)
        payload = msgspec.json.encode(op) if op is not None else (record.value or b"")[:65536]
        key, value = deadletter_record(record.topic, record.partition, record.offset, record.key, payload,
                                       "processing_error", f"{stage} stage: {type(exc).__name__}: {exc}",
                                       time.time_ns() // 1000)
        self.router.deadletter(key, value)

    def _log(self, stage: str, topic: str, partition: int, offset: int, exc: BaseException) -> None:
        self.metrics.processing_errors.labels(stage).inc()
        # The exception's text may hold incident data: it goes to the dead letter, not to the log.
        logger.error("processing error in the %s stage at %s[%d]@%d: %s (dead-lettered with the detail, skipped)",
                     stage, topic, partition, offset, type(exc).__name__)
