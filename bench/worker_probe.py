"""``python bench/worker_probe.py [--fetch-cap-ms MS] worker ...``: ``cdiwatch worker``
in this process, with two benchmark-only additions from outside the product:

* the wall-clock time (``time.time()``) at which the worker's first batch holding
  input records reached ``Runner.process`` (right after the consumer's ``getmany``
  returned it) is written to the file named by ``$BENCH_FIRST_BATCH``: the
  "first message consumed" of the end-to-end throughput. (The earliest broker
  timestamp on the op topics would be later by the first batch's processing.)
* ``--fetch-cap-ms MS`` (a what-if, off by default): every aiokafka consumer's
  ``fetch_max_wait_ms`` capped at MS. Tansu does not wake a waiting fetch when
  records arrive (it looks again at half the wait and at its end); Apache Kafka
  answers as soon as data is there. The product already uses 50 ms for its
  consumer and 100 ms for the views reader.

Nothing else changes: same code, same settings, same process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _record_first_batch(path: str) -> None:
    from pipeline.stream import runner

    original = runner.Runner.process
    state = {"done": False}

    async def process(self, batch):
        if not state["done"]:
            now = time.time()
            inputs = self.plan.inputs
            if any(records and tp.topic in inputs for tp, records in batch.items()):
                state["done"] = True
                tmp = path + ".tmp"
                with open(tmp, "w") as fh:
                    fh.write(repr(now))
                os.replace(tmp, path)
        return await original(self, batch)

    runner.Runner.process = process


def _cap_fetch_wait(cap: int) -> None:
    import aiokafka

    original = aiokafka.AIOKafkaConsumer.__init__

    def init(self, *args, **kwargs):
        kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), cap)
        original(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = init


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fetch-cap-ms"]:
        _cap_fetch_wait(int(argv[1]))
        argv = argv[2:]
    first = os.environ.get("BENCH_FIRST_BATCH")
    if first:
        _record_first_batch(first)
    from pipeline.commands.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
