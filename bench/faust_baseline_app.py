"""The "straightforward faust app" that ``bench/stream_bench.py`` compares the worker with.

What a first faust version of the monitor would look like (faust-notes.md,
"faust agent + faust.Record + memory table per message"): one agent reads
both input topics, decodes each JSON value into a ``faust.Record`` and
updates one entry of a memory-backed ``Table`` (one changelog record per
message), keyed by the message key. Settings follow the notes' best case:
``producer_linger=0.01``, logging configured at INFO by us (no faust spinner,
no root logger at DEBUG), short session timeout (Tansu joins after half of it).

Values are taken raw and decoded inside the agent because the capture holds
invalid messages on purpose, and a decode error in faust's value serializer
crashes the agent (faust-notes.md); decoding is the same work either way
(faust's JSON codec is orjson too).

Run by the benchmark as a subprocess, configured by environment:
``BASELINE_BROKER`` (kafka://host:port), ``BASELINE_APP_ID``, ``BASELINE_TOPICS``
(comma-separated), ``BASELINE_PARTITIONS``, ``BASELINE_SESSION_TIMEOUT`` (s),
``BASELINE_PROGRESS`` (a JSON file rewritten every 0.1 s:
``{"count", "invalid", "first", "last"}`` with wall-clock times of the first
and latest message), ``BASELINE_DATADIR`` (faust's data directory).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Optional

import faust
import orjson

BROKER = os.environ["BASELINE_BROKER"]
APP_ID = os.environ.get("BASELINE_APP_ID", "bench-faust")
TOPICS = [t for t in os.environ.get("BASELINE_TOPICS", "cc.incidents,rms.crimes").split(",") if t]
PARTITIONS = int(os.environ.get("BASELINE_PARTITIONS", "6"))
SESSION_TIMEOUT = float(os.environ.get("BASELINE_SESSION_TIMEOUT", "4"))
PROGRESS = os.environ.get("BASELINE_PROGRESS", "faust-baseline-progress.json")
DATADIR = os.environ.get("BASELINE_DATADIR", f"bench/out/state/{APP_ID}")

app = faust.App(
    APP_ID,
    broker=BROKER,
    store="memory://",
    datadir=DATADIR,
    web_enabled=False,
    topic_partitions=PARTITIONS,
    broker_session_timeout=SESSION_TIMEOUT,
    broker_heartbeat_interval=max(0.5, SESSION_TIMEOUT / 6),
    broker_rebalance_timeout=max(SESSION_TIMEOUT * 2, 20.0),
    consumer_auto_offset_reset="earliest",
    producer_linger=0.01,
    table_standby_replicas=0,
)


class Event(faust.Record, serializer="json"):
    """The fields every input event shares, plus the ids (absent fields are None)."""

    schema: Optional[str] = None
    event_id: Optional[str] = None
    event_type: Optional[str] = None
    occurred_at: Optional[str] = None
    incident_id: Optional[str] = None
    crime_id: Optional[str] = None


source = app.topic(*TOPICS, key_type=None, value_type=None, key_serializer="raw", value_serializer="raw")
per_key = app.Table("per-key", default=int, partitions=PARTITIONS)

state = {"count": 0, "invalid": 0, "first": None, "last": None}


@app.agent(source)
async def count_events(stream):
    loads = orjson.loads
    now = time.time
    async for key, value in stream.items():
        try:
            obj = loads(value)
            event = Event.from_data(obj) if isinstance(obj, dict) else None
        except (orjson.JSONDecodeError, TypeError, ValueError):
            event = None
        if event is None:
            state["invalid"] += 1
        per_key[key.decode("utf-8", "replace") if key is not None else ""] += 1
        t = now()
        if state["first"] is None:
            state["first"] = t
        state["last"] = t
        state["count"] += 1


def write_progress() -> None:
    tmp = PROGRESS + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, PROGRESS)


@app.timer(0.1)
async def progress() -> None:
    write_progress()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for name in ("aiokafka", "faust", "mode"):  # same as `cdiwatch worker` at info
        logging.getLogger(name).setLevel(logging.WARNING)
    write_progress()
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
