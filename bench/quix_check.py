"""Does the quixstreams peer really work on Tansu? ``python bench/quix_check.py`` (about a minute).

Not part of ``make bench``: a correctness check of the peer the stream benchmark
times, on the three ways Tansu differs from Apache Kafka that could break it:

* consumer-group joins complete only after about half the session timeout
  (the app uses 4 s, like every consumer in the benchmarks);
* end offsets (high watermarks) are short after multi-record batches, and
  quixstreams recovers state from a changelog *up to its high watermark*;
* topic configs are reported only when set at creation (quixstreams creates
  its changelog topics itself, with ``cleanup.policy=compact``).

Steps, on a fresh local broker: replay capture A (about 20,000 messages);
run ``bench/quix_app.py`` until it has counted them (group G, state dir 1);
replay A again; run the app again with group G and an *empty* state dir 2,
so it must recover every key from the changelog before it counts the second
copy. Then compare, for every key, the last ``count`` on the changelog with
twice the number of messages A holds for that key. Prints what
it found and exits 1 on any difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

from common import HERE, LOGS, OUT, PY, SESSION_TIMEOUT_S, make_capture

GROUP = "check-quix"


def keys_of(path) -> Counter:
    counts: Counter = Counter()
    with open(path, "rb") as fh:
        for line in fh:
            key = json.loads(line).get("key")
            if key is not None:
                counts[key.encode()] += 1
    return counts


def run_app(bootstrap: str, state: str, count: int, log: str) -> float:
    env = dict(os.environ, QUIX_BOOTSTRAP=bootstrap, QUIX_GROUP=GROUP, QUIX_STATE_DIR=state,
               QUIX_COUNT=str(count), QUIX_IDLE="8", QUIX_RESULT=str(OUT / f"{log}.json"),
               QUIX_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_S * 1000))
    t0 = time.monotonic()
    with open(LOGS / f"{log}.log", "wb") as fh:
        subprocess.run([PY, "-W", "ignore::DeprecationWarning", str(HERE / "quix_app.py")], env=env, stdout=fh,
                       stderr=subprocess.STDOUT, check=True, timeout=300)
    return time.monotonic() - t0


async def changelog_counts(bootstrap: str) -> tuple[dict, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    counts: dict[bytes, int] = {}
    n = 0
    try:
        topics = [t for t in await c.topics() if t.startswith(f"changelog__{GROUP}")]
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() - last < 2.0:  # until quiet: end offsets cannot be trusted here
            batches = await c.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                for r in records:
                    n += 1
                    key, _, field = r.key.rpartition(b"|")
                    if field == b'"count"' and r.value is not None:
                        counts[key] = json.loads(r.value)
            if batches:
                last = time.monotonic()
    finally:
        await c.stop()
    return counts, n


def main() -> int:
    from pipeline.commands.replay import replay
    from pipeline.kafka.local import LocalBroker
    from pipeline.settings import load_settings

    a = make_capture(20_000, seed=11)
    want = keys_of(a) + keys_of(a)  # A is replayed twice: every key's count doubles
    for d in ("check-quix-1", "check-quix-2"):
        shutil.rmtree(OUT / "state" / d, ignore_errors=True)
    with LocalBroker(log_path=str(LOGS / "tansu-quix-check.log")) as broker:
        settings = load_settings(broker=broker.url, partitions=6)
        sent_a = replay([str(a)], settings).total_sent
        first = run_app(broker.bootstrap, str(OUT / "state" / "check-quix-1"), sent_a, "check-quix-1")
        sent_b = replay([str(a)], settings).total_sent
        second = run_app(broker.bootstrap, str(OUT / "state" / "check-quix-2"), 0, "check-quix-2")
        got, records = asyncio.run(changelog_counts(broker.bootstrap))
    wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    print(f"capture A {sent_a:,} messages, then {sent_b:,} again, {len(want):,} keys; run 1 {first:.1f} s, "
          f"run 2 (empty "
          f"state dir: recovery from the changelog, then the copy) {second:.1f} s; {records:,} changelog records")
    if wrong:
        sample = list(wrong.items())[:5]
        print(f"MISMATCH: {len(wrong):,} keys have the wrong count (changelog, expected), e.g. {sample}")
        return 1
    print("OK: every key's count on the changelog equals the messages the captures hold for it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
