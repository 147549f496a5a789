"""The stream stages without faust or a broker: any interleaving of their op
messages, in any batching, with rebalances (ledgers rebuilt from their tables)
in between, gives the audit the single-process core gives."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pipeline.commands.audit import audit_files
from pipeline.capture import read_capture
from pipeline.settings import Settings
from stage_harness import StageHarness
from support import SAMPLE


def replay_through_stages(settings: Settings, seed: int, chunk: int, restart_every: int):
    messages = list(read_capture([SAMPLE]))

    async def main():
        h = StageHarness(settings, seed=seed)
        for i in range(0, len(messages), chunk):
            for topic in (settings.incidents_topic, settings.crimes_topic):
                part = [(m.line_no % 3, m.line_no, m.key, m.payload) for m in messages[i:i + chunk] if m.topic == topic]
                if part:
                    await h.feed(topic, part)
            if h.rng.random() < 0.5:
                await h.drain(restart_every=restart_every)
        await h.drain()
        return h

    return asyncio.run(main())


@pytest.mark.parametrize("seed,chunk,restart_every,partitions", [
    (1, 500, 0, 6), (2, 97, 7, 6), (3, 2668, 3, 1), (4, 50, 11, 4),
])
def test_stages_in_any_interleaving_give_the_core_audit(seed, chunk, restart_every, partitions):
    settings = Settings(partitions=partitions)
    h = replay_through_stages(settings, seed, chunk, restart_every)
    assert h.audit() == audit_files([SAMPLE], settings).audit()
    # every invalid message went to the dead-letter topic, exactly once
    audit = h.audit()
    assert len(h.deadletters) == audit["events"]["incidents"]["invalid"] + audit["events"]["crimes"]["invalid"]
    # one alert per incident and kind, whatever the interleaving
    ids = [orjson.loads(a)["alert_id"] for a in h.alerts]
    assert len(ids) == len(set(ids))
