"""Alert latency: how soon after the watermark passes a deadline the ``overdue`` alert is out.

A fresh worker (default tick 0.5 s, session timeout 4 s) on its own local
broker and fresh topic names, idle and caught up, gets N crime-related
``opened`` incidents reported 26 h ago with no crime record (pending), then
one warm-up event that puts them all at risk (that burst of ``at_risk``
alerts is over before measuring), then N "clock" events (non-crime ``opened``
incidents), one every ``--latency-gap`` s: clock j carries ``occurred_at`` =
deadline j + allowed lateness + 0.5 s, so the watermark passes exactly one
more deadline each time (all times stay in the past).

Latency = wall time the benchmark reads incident j's ``overdue`` alert from
the alerts topic (assigned consumer, 10 ms fetch wait) minus the wall time
the broker acknowledged clock j. Ids are chosen so that 1 clock in 6 lands on
its incident's own incident-stage partition ("same partition") and 5 in 6 on
a partition with no test incident, so the watermark reaches the incident only
through the worker's tick broadcast ("other partition"): what a quiet feed
with 6 partitions sees. Hops (from record timestamps, CreateTime set by the
worker's producer): ack -> the first incident-ops record on the incident's
partition whose watermark source ``t`` reaches the clock; -> the alert
record; -> read by the benchmark.

Run through ``bench/run.py --only latency`` or alone: ``python bench/latency_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter, defaultdict

from common import (LOGS, OUT, Children, free_port, get_json, median, pct, row, wait_ready, worker_cmd,
                    worker_env)

BENCH = "latency"
GOAL_S = 1.0
PARTITIONS = 6
POLL = 0.2

__all__ = ["run", "add_arguments"]


def _id_on(prefix: str, partition: int) -> str:
    """The first ``prefix-k`` whose incident-stage partition is ``partition``."""
    from pipeline.core.routing import partition_for

    k = 0
    while partition_for(f"{prefix}-{k}", PARTITIONS) != partition:
        k += 1
    return f"{prefix}-{k}"


def _iso(t: float) -> str:
    from pipeline.core.times import format_time

    return format_time(int(t * 1_000_000))


def measure(children: Children, broker, n: int, gap: float, app_id: str = "bench-latency",
            fetch_cap_ms: int | None = None) -> dict:
    topics = {"CDI_INCIDENTS_TOPIC": f"{app_id}.incidents", "CDI_CRIMES_TOPIC": f"{app_id}.crimes",
              "CDI_ALERTS_TOPIC": f"{app_id}.alerts", "CDI_DEADLETTER_TOPIC": f"{app_id}.deadletter"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = children.start(app_id, worker_cmd(broker.url, port, OUT / "state" / app_id, fetch_cap_ms),
                          worker_env(CDI_APP_ID=app_id, **topics))
    try:
        wait_ready(children, proc, url)
        return asyncio.run(_latency(children, proc, broker.bootstrap, url, topics, app_id, n, gap))
    finally:
        children.stop(proc)


async def _latency(children, proc, bootstrap: str, url: str, topics: dict, app_id: str, n: int,
                   gap: float) -> dict:
    import orjson
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from pipeline.core.routing import partition_for

    incidents_topic, alerts_topic = topics["CDI_INCIDENTS_TOPIC"], topics["CDI_ALERTS_TOPIC"]
    same = [j % 6 == 0 for j in range(n)]
    inc_part = [1 if same[j] else 2 + (j % 4) for j in range(n)]
    inc_ids = [_id_on(f"LAT{j:04d}", inc_part[j]) for j in range(n)]
    clk_ids = [_id_on(f"CLK{j:04d}", inc_part[j] if same[j] else 0) for j in range(n)]
    base = time.time() - 26 * 3600  # deadlines 2 h ago: every clock event stays in the past
    reported = [base + j for j in range(n)]
    deadline = [r + 24 * 3600 for r in reported]
    lateness = 600.0

    def opened(event_id: str, incident_id: str, occurred: float, reported_at: float, category: str) -> bytes:
        return orjson.dumps({"schema": "incident.v1", "event_id": event_id, "event_type": "opened",
                             "incident_id": incident_id, "occurred_at": _iso(occurred),
                             "reported_at": _iso(reported_at), "channel": "999", "district": "Dover",
                             "category": category, "flags": []})

    arrivals: dict[str, tuple[float, int]] = {}  # incident_id -> (arrival wall time, alert CreateTime ms)
    kinds: Counter = Counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()

    async def collect() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            t = time.time()
            for records in batches.values():
                for r in records:
                    alert = orjson.loads(r.value)
                    kinds[alert["kind"]] += 1
                    if alert["kind"] == "overdue":
                        arrivals.setdefault(alert["incident_id"], (t, r.timestamp))

    async def wait_audit(what: str, check, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while True:
            _status, doc = await asyncio.to_thread(get_json, url + "/audit")
            if isinstance(doc, dict) and check(doc):
                return
            children.check(proc, f"waiting for {what}")
            if time.monotonic() > end:
                got = json.dumps(doc.get("incidents")) if isinstance(doc, dict) else repr(doc)
                raise RuntimeError(f"latency setup: no {what} after {timeout:g} s: {got}\n{children.tail(proc)}")
            await asyncio.sleep(POLL)

    collector = None
    try:
        parts = consumer.partitions_for_topic(alerts_topic)
        if not parts:
            await consumer.topics()  # refresh metadata once
            parts = consumer.partitions_for_topic(alerts_topic)
        tps = [TopicPartition(alerts_topic, p) for p in sorted(parts or ())]
        if not tps:
            raise RuntimeError(f"{alerts_topic} does not exist: the worker should have created it")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        collector = asyncio.create_task(collect())
        for j in range(n):  # crime-related, no record: pending, then at risk, then overdue
            await producer.send(incidents_topic, opened(f"lat-open-{j}", inc_ids[j], reported[j] + 1, reported[j],
                                                        "burglary"), key=inc_ids[j].encode())
        await producer.flush()
        await wait_audit(f"{n} pending incidents", lambda d: d["incidents"]["pending"] == n)
        # Warm-up clock: W = D_0 - 1 h puts every test incident in the at-risk window.
        warm = deadline[0] - 3600 + lateness
        await producer.send_and_wait(incidents_topic, opened("lat-warm", "CLK-warm", warm, warm, "admin"),
                                     key=b"CLK-warm")
        await wait_audit(f"{n} at-risk incidents", lambda d: d["incidents"]["at_risk"] == n)
        end = time.monotonic() + 15
        while kinds["at_risk"] < n and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # idle again
        acks, clock_occ = [], []
        for j in range(n):  # clock j: W = D_j + 0.5 s, past D_j, before D_{j+1} = D_j + 1 s
            occ = deadline[j] + lateness + 0.5
            clock_occ.append(occ)
            await producer.send_and_wait(incidents_topic, opened(f"lat-clock-{j}", clk_ids[j], occ, occ, "admin"),
                                         key=clk_ids[j].encode())
            acks.append(time.time())
            await asyncio.sleep(gap)
        end = time.monotonic() + 15
        while len(arrivals) < n and time.monotonic() < end:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        if collector is not None:
            try:
                await asyncio.wait_for(collector, 2)
            except (asyncio.TimeoutError, Exception):
                collector.cancel()
        await producer.stop()
        await consumer.stop()

    hops_by_part = await _op_watermarks(bootstrap, f"{app_id}-incident-ops")
    lat, early = [], 0
    by_path: dict[str, list[float]] = {"same": [], "other": []}
    hops: dict[str, list[tuple[float, float, float]]] = {"same": [], "other": []}
    for j in range(n):
        got = arrivals.get(inc_ids[j])
        if got is None:
            continue
        arrival, alert_ts = got
        latency = arrival - acks[j]
        early += latency < 0
        lat.append(latency)
        path = "same" if same[j] else "other"
        by_path[path].append(latency)
        need = int(clock_occ[j] * 1_000_000) - 1
        op_ts = next((ts for _o, ts, t in hops_by_part.get(partition_for(inc_ids[j], PARTITIONS), []) if t >= need),
                     None)
        if op_ts is not None:
            hops[path].append((op_ts / 1000 - acks[j], alert_ts / 1000 - op_ts / 1000, arrival - alert_ts / 1000))
    return {"lat": lat, "by_path": by_path, "hops": hops, "n": n, "early": early, "kinds": dict(kinds)}


async def _op_watermarks(bootstrap: str, topic: str, quiet: float = 1.0, timeout: float = 30.0) -> dict:
    """partition -> [(offset, CreateTime ms, t)] of every ops record carrying a watermark source ``t``
    (read until ``quiet`` s without records: Tansu's end offsets are short after multi-record batches)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from pipeline.stream.codec import decode_batch

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    out: dict[int, list] = defaultdict(list)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        deadline = last + timeout
        while time.monotonic() - last < quiet and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                for r in records:
                    t = decode_batch(r.value).t
                    if t is not None:
                        out[tp.partition].append((r.offset, r.timestamp, t))
            if batches:
                last = time.monotonic()
    finally:
        await consumer.stop()
    for lst in out.values():
        lst.sort()
    return out


def _ms(values: list[float]) -> str:
    return f"{1000 * median(values):,.0f}"


def run(opts: argparse.Namespace) -> list[dict]:
    from pipeline.kafka.local import LocalBroker

    n, gap = opts.latency_alerts, opts.latency_gap
    children = Children()
    try:
        with LocalBroker(log_path=str(LOGS / "tansu-latency.log")) as broker:
            print(f"latency: {n} deadlines, one every {gap * 1000:.0f} ms ...", file=sys.stderr, flush=True)
            lat = measure(children, broker, n, gap)
    finally:
        children.stop_all()
    (OUT / "latency.json").write_text(json.dumps(lat, indent=0))
    values = lat["lat"]
    if not values:
        return [row(BENCH, "alert latency", "", "", f"no overdue alert arrived of {n} (kinds seen {lat['kinds']})")]
    p50, p99 = pct(values, 0.5), pct(values, 0.99)
    ok = p99 < GOAL_S and len(values) == n
    rows = [
        row(BENCH, "alert latency p50", f"{p50:.3f}", "s",
            f"broker ack of the event that moves W past a deadline -> overdue alert read from the alerts topic; "
            f"{n} deadlines, one every {gap * 1000:.0f} ms; 1 worker, idle and caught up, tick 0.5 s (default)"),
        row(BENCH, "alert latency p99", f"{p99:.3f}", "s",
            f"goal < {GOAL_S:g} s: {'MET' if ok else 'NOT MET'}; max {max(values):.3f} s; {len(values)}/{n} alerts"
            + (f"; {lat['early']} before their clock!" if lat["early"] else "")),
    ]
    for path, label in (("same", "event on the incident's partition"), ("other", "watermark via tick broadcast")):
        v, h = lat["by_path"][path], lat["hops"][path]
        if not v:
            continue
        hop = (f"; hop medians: ack -> op on the incident's partition {_ms([x[0] for x in h])} ms, -> alert "
               f"produced {_ms([x[1] for x in h])} ms, -> read {_ms([x[2] for x in h])} ms") if h else ""
        rows.append(row(BENCH, f"p50 / p99, {label}", f"{pct(v, 0.5):.3f} / {pct(v, 0.99):.3f}", "s",
                        f"{len(v)} alerts{hop}"))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latency-alerts", type=int, default=200, help="alert latency: deadlines crossed (default 200)")
    p.add_argument("--latency-gap", type=float, default=0.05,
                   help="alert latency: seconds between clock events (default 0.05)")


if __name__ == "__main__":
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    bench_run.print_table(run(parser.parse_args()))
