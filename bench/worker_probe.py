"""``python bench/worker_probe.py [--fetch-cap-ms MS] worker ...``: ``cdiwatch worker``
in this process, with two benchmark-only additions from outside the product:

* with ``$BENCH_PROBE`` set to a file name, the runner's batches are timed
  (``time.time()``): ``first``, when the first batch holding input records
  reached ``Runner.process`` (right after the consumer's ``getmany`` returned
  it): the "first message consumed" of the throughput benchmarks; ``ends``,
  when each of the last 256 batches holding records had been processed and
  published, its checkpoints acknowledged and its offsets committed (the last
  two in the background while the next batch runs); ``busy``, whether such
  a batch is in progress (its foreground part); ``gc_first`` and ``gc``, the seconds the cyclic garbage
  collector had taken by then; ``in_batches`` and ``in_batches_cpu``, the
  wall time spent inside batches holding records, and the main thread's CPU
  in them (the difference is waiting: flushes, commits). The file (JSON, replaced atomically) is
  rewritten when every such batch starts and ends (tens of microseconds, a few dozen
  times a second). The benchmarks take the end of the work from it, so that
  they need not poll ``/audit`` often (see ``common.AuditPoller``);
* ``--fetch-cap-ms MS`` (a what-if, off by default): every aiokafka consumer's
  ``fetch_max_wait_ms`` capped at MS. Tansu does not wake a waiting fetch when
  records arrive (it looks again at half the wait and at its end); Apache Kafka
  answers as soon as data is there. The product uses 50 ms for its consumer and
  100 ms for the views reader.

Nothing else changes: same code, same settings, same process.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _probe_batches(path: str) -> None:
    from pipeline.stream import runner

    original = runner.Runner.process
    state = {"first": None, "ends": deque(maxlen=256), "batches": 0, "busy": False, "gc_first": None,
             "gc": deque(maxlen=256), "in_batches": 0.0, "in_batches_cpu": 0.0}
    tmp = path + ".tmp"
    gc_seconds = [0.0, 0.0]  # the current collection's start, the total so far

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_seconds[0] = time.perf_counter()
        else:
            gc_seconds[1] += time.perf_counter() - gc_seconds[0]

    gc.callbacks.append(on_gc)

    async def process(self, batch):
        if not any(batch.values()):
            return await original(self, batch)
        if state["first"] is None:
            inputs = self.plan.inputs
            if any(records and tp.topic in inputs for tp, records in batch.items()):
                state["first"] = time.time()
                state["gc_first"] = gc_seconds[1]
        state["busy"] = True
        write()
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await original(self, batch)
        state["in_batches"] += time.perf_counter() - t0
        state["in_batches_cpu"] += time.thread_time() - c0
        state["batches"] += 1
        state["busy"] = False
        task = self._commit  # the batch's checkpoints acknowledged, then its offsets committed

        def ended(_task=None) -> None:
            state["ends"].append(time.time())
            state["gc"].append(gc_seconds[1])
            write()

        if task is None or task.done():
            ended()
        else:
            task.add_done_callback(ended)
        return result

    def write() -> None:
        with open(tmp, "w") as fh:
            json.dump({"first": state["first"], "ends": list(state["ends"]), "batches": state["batches"],
                       "busy": state["busy"], "gc_first": state["gc_first"], "gc": list(state["gc"]),
                       "in_batches": state["in_batches"], "in_batches_cpu": state["in_batches_cpu"]}, fh)
        os.replace(tmp, path)

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
    probe = os.environ.get("BENCH_PROBE")
    if probe:
        _probe_batches(probe)
    from pipeline.commands.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
