"""The raw consume ceiling for ``bench/stream_bench.py``: aiokafka in a consumer group,
``getmany`` batches, ``orjson.loads`` of every value, nothing else.

``python bench/raw_consumer.py BOOTSTRAP GROUP TOTAL TOPIC[,TOPIC...]`` prints one JSON
line: ``count``, ``invalid``, and the wall-clock times of the first and the last
message (first batch returned / the batch that completed TOTAL).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer


async def main(bootstrap: str, group: str, total: int, topics: list[str]) -> dict:
    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=4000, heartbeat_interval_ms=600,
                         max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    await c.start()
    loads, bad = orjson.loads, orjson.JSONDecodeError
    n = invalid = 0
    first = last = None
    deadline = time.monotonic() + 300
    try:
        while n < total and time.monotonic() < deadline:
            batches = await c.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                if first is None and records:
                    first = time.time()
                for r in records:
                    try:
                        loads(r.value)
                    except bad:
                        invalid += 1
                n += len(records)
        last = time.time()
    finally:
        await c.stop()
    return {"count": n, "first": first, "last": last, "invalid": invalid}


if __name__ == "__main__":
    doc = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")))
    print(json.dumps(doc))
