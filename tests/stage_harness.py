"""Drive the three stream stages without faust or a broker.

Op messages go through in-memory per-partition queues; a random scheduler
picks which queue delivers next, so tests can check that any interleaving of
the stages gives the audit the single-process core gives.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque

from pipeline.settings import Settings
from pipeline.metrics import Metrics
from pipeline.stream.ingest import IngestStage
from pipeline.stream.stages import CrimeStage, DedupeStage, IncidentStage
from pipeline.summary import AuditParts, build_audit


class StageHarness:
    def __init__(self, settings: Settings, seed: int = 0) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.metrics = Metrics()
        self.queues: dict[tuple[str, int], deque] = {}
        self.tables = {"event": {}, "incident": {}, "crime": {}}
        self.alerts: list[bytes] = []
        self.deadletters: list[bytes] = []

        def writer(name):
            async def write(p, changes):
                table = self.tables[name]
                for k, v in changes:
                    if v is None:
                        table.pop(k, None)
                    else:
                        table[k] = v
            return write

        async def to(stage, p, value):
            self.queues.setdefault((stage, p), deque()).append(value)

        async def send_alert(key, value):
            self.alerts.append(value)

        async def send_dl(key, value):
            self.deadletters.append(value)

        self.ingest = IngestStage(settings, self.metrics, lambda p, v: to("e", p, v), lambda p, v: to("i", p, v),
                                  lambda p, v: to("c", p, v), send_dl)
        self.dedupe = DedupeStage(settings, self.metrics, self.tables["event"], writer("event"),
                                  lambda p, v: to("i", p, v), lambda p, v: to("c", p, v))
        self.incident = IncidentStage(settings, self.metrics, self.tables["incident"], writer("incident"),
                                      send_alert, lambda p, v: to("c", p, v))
        self.crime = CrimeStage(settings, self.metrics, self.tables["crime"], writer("crime"),
                                lambda p, v: to("i", p, v))

    async def feed(self, topic: str, messages: list[tuple[int, int, bytes | None, bytes]]) -> None:
        await self.ingest.handle(topic, messages)

    async def drain(self, restart_every: int = 0) -> None:
        """Deliver queued op messages in random order until all queues are empty."""
        steps = 0
        while True:
            await self.ingest.broadcast()
            ready = [k for k, q in self.queues.items() if q]
            if not ready:
                return
            stage, p = self.rng.choice(ready)
            target = {"e": self.dedupe, "i": self.incident, "c": self.crime}[stage]
            # a batch: a few messages of this stage, from any of its partitions
            for _ in range(self.rng.randint(1, 5)):
                value = self.queues[(stage, p)].popleft()
                target.apply(p, value)
                same = [k for k, q in self.queues.items() if q and k[0] == stage]
                if not same:
                    break
                stage, p = self.rng.choice(same)
            await target.finish()
            steps += 1
            if restart_every and steps % restart_every == 0:
                # a rebalance: every ledger is rebuilt from its table
                for stage in (self.dedupe, self.incident, self.crime):
                    stage.revoke(set(range(self.settings.partitions)))

    def audit(self) -> dict:
        total = AuditParts()
        for stage in (self.dedupe, self.incident, self.crime):
            for p in range(self.settings.partitions):
                stage.ledger(p)  # (re)load, as a newly assigned worker would
                total.add(stage.parts(p))
        return build_audit(total, int(self.settings.allowed_lateness * 1_000_000))


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)
