"""The Python peer for ``bench/stream_bench.py``: a quixstreams application doing the
least a stateful monitor must do with every message.

It reads both input topics (the same topics, on the same broker, as the
cdiwatch worker) as raw bytes, parses each value as JSON (orjson; the capture
holds invalid messages on purpose, so a failed parse is counted, not raised),
and updates a per-key state: ``count`` and ``last`` (the last parsed event)
in quixstreams' RocksDB store, with its changelog topics (the default). One
StreamingDataFrame per topic, ``update(..., stateful=True)``. Everything else
is quixstreams' defaults (``commit_interval`` 5 s, at-least-once), except the
group timeouts (Tansu completes a join after about half the session timeout).

Timing, all wall clock (``time.time()``): ``first``, when the update function
saw the first message; ``last``, when it saw message N; ``final_save``, when
the checkpoint commit that follows message N returned (quixstreams' forced
commit at stop: changelog records produced and flushed, offsets committed,
RocksDB written). Every checkpoint commit's start and end is recorded too.

Configured by environment: ``QUIX_BOOTSTRAP`` (host:port), ``QUIX_GROUP``,
``QUIX_TOPICS`` (comma-separated), ``QUIX_STATE_DIR``, ``QUIX_COUNT`` (stop
after this many messages), ``QUIX_RESULT`` (JSON file written at the end),
``QUIX_SESSION_TIMEOUT_MS``; ``QUIX_COUNT=0`` runs until no message came for
``QUIX_IDLE`` seconds (``bench/quix_check.py`` uses that for its recovery check).
"""

from __future__ import annotations

import json
import os
import sys
import time

import orjson
from quixstreams import Application

BOOTSTRAP = os.environ["QUIX_BOOTSTRAP"]
GROUP = os.environ.get("QUIX_GROUP", "bench-quix")
TOPICS = [t for t in os.environ.get("QUIX_TOPICS", "cc.incidents,rms.crimes").split(",") if t]
STATE_DIR = os.environ.get("QUIX_STATE_DIR", "bench/out/quix-state")
COUNT = int(os.environ["QUIX_COUNT"])  # 0: run until idle for QUIX_IDLE seconds instead
IDLE = float(os.environ.get("QUIX_IDLE", "8"))
RESULT = os.environ.get("QUIX_RESULT", "quix-result.json")
SESSION_MS = int(os.environ.get("QUIX_SESSION_TIMEOUT_MS", "4000"))

progress = {"count": 0, "invalid": 0, "first": None, "last": None}
commits: list[tuple[float, float, bool]] = []


def count_and_last(value: bytes, state) -> None:
    """The per-key update: how many messages this key had, and its last event."""
    p = progress
    n = p["count"] = p["count"] + 1
    if n == 1:
        p["first"] = time.time()
    if n == COUNT:
        p["last"] = time.time()
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        event = None
        p["invalid"] += 1
    state.set("count", state.get("count", 0) + 1)
    if event is not None:
        state.set("last", event)


def main() -> int:
    app = Application(
        broker_address=BOOTSTRAP,
        consumer_group=GROUP,
        auto_offset_reset="earliest",
        state_dir=STATE_DIR,
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": SESSION_MS,
                               "heartbeat.interval.ms": max(300, SESSION_MS // 6)},
    )
    for name in TOPICS:
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        app.dataframe(topic).update(count_and_last, stateful=True)

    # Record every checkpoint commit (quixstreams commits when its interval expires and, forced, at stop).
    context = app._processing_context  # noqa: SLF001 - read-only timing hook
    original = context.commit_checkpoint

    def commit_checkpoint(force: bool = False, revoking: bool = False):
        before = context.checkpoint
        had_offsets = not before.empty()
        t0 = time.time()
        original(force=force, revoking=revoking)
        if had_offsets and context.checkpoint is not before:  # committed (a new checkpoint began)
            commits.append((t0, time.time(), force))

    context.commit_checkpoint = commit_checkpoint
    t_start = time.time()
    if COUNT:
        app.run(count=COUNT, timeout=0)
    else:
        app.run(timeout=IDLE)
    t_exit = time.time()
    after_last = [c for c in commits if progress["last"] is not None and c[0] >= progress["last"]]
    doc = {**progress, "start": t_start, "exit": t_exit, "commits": commits,
           "final_save": after_last[0][1] if after_last else None}
    with open(RESULT, "w") as fh:
        json.dump(doc, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
