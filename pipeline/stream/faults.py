"""Fault injection for the crash tests: die at an exact point of an exact batch.

``CDI_TEST_FAULT=POINT@N`` makes the worker end itself with ``os._exit`` (no
cleanup, no flush: as a ``kill -9`` would) when its N-th batch, or the first
later one that gets there, reaches POINT:

- ``before_outputs``: the batch is applied in memory, nothing sent;
- ``after_outputs``: its outputs are acknowledged, its checkpoint not written;
- ``mid_checkpoint``: its state changes are written, the checkpoint record not;
- ``after_checkpoint``: the checkpoint is durable, the input offsets not committed.

For tests only (``tests/test_faults.py``); unset, it costs one comparison per batch.
"""

from __future__ import annotations

import logging
import os

__all__ = ["FaultPlan", "POINTS"]

logger = logging.getLogger(__name__)

POINTS = ("before_outputs", "after_outputs", "mid_checkpoint", "after_checkpoint")
EXIT_CODE = 137


class FaultPlan:
    """Where this process dies, if anywhere (see the module doc)."""

    def __init__(self, spec: str | None) -> None:
        self.point, self.batch = None, -1
        if spec:
            point, _, batch = spec.partition("@")
            if point not in POINTS or not batch.isdigit():
                raise ValueError(f"CDI_TEST_FAULT must be POINT@BATCH with POINT one of {', '.join(POINTS)}")
            self.point, self.batch = point, int(batch)

    def at(self, point: str, batch: int) -> None:
        """Die here if this is the planned point of the planned batch."""
        if point == self.point and batch >= self.batch:
            logger.warning("CDI_TEST_FAULT: dying at %s of batch %d", point, batch)
            logging.shutdown()
            os._exit(EXIT_CODE)
