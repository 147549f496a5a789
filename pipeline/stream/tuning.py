"""The one place cdiwatch changes faust's behaviour from outside.

faust-streaming 0.15 creates its aiokafka consumer with a hard-coded
``fetch_max_wait_ms=1500`` (faust/transport/drivers/aiokafka.py). Against
Apache Kafka that only delays an *idle* partition's next fetch. Tansu (the
test and demo broker) answers a waiting fetch only at half the wait or its
end, so every hop between stages waits up to 750 ms: three hops and an alert
is seconds late. Measured with bench/stream_bench.py: alert p99 0.81 s with
faust's default, 0.13 s with this patch (bench/README.md).

The patch wraps faust's consumer factory and lowers the wait on the consumer
it returns, before the consumer starts (aiokafka reads it in ``start()``).
It is applied once, by :func:`shorten_fetch_wait`, when a worker is built.
"""

from __future__ import annotations

import logging

__all__ = ["shorten_fetch_wait"]

logger = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 100
_applied = False


def shorten_fetch_wait(wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    global _applied
    if _applied:
        return
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = original(self, transport)
        if hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_max_wait_ms = wait_ms
        else:  # pragma: no cover - a future aiokafka renamed it: keep faust's default
            logger.warning("cannot shorten faust's fetch wait: aiokafka changed")
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    _applied = True
