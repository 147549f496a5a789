"""The streaming worker on a real Kafka-protocol broker: throughput and alert latency.

Issue 3, item 6. From ONE run on ONE local Tansu broker (``LocalBroker`` on a
free port):

1. **replay**: a simulated capture of about ``--stream-messages`` messages is
   published to ``cc.incidents`` / ``rms.crimes`` at max speed (``pipeline.replay``,
   kafka-python) before any consumer starts;
2. **cdiwatch end to end**: one ``python -m pipeline worker`` subprocess reads the
   pre-loaded topics; the clock runs from its first consumed message (the
   earliest broker timestamp on its op topics) until ``/audit`` (polled every
   0.2 s) equals the offline audit of the same capture as data. That includes
   every crime -> incident link round trip: it is the honest end-to-end point.
   Peak RSS (VmHWM) and CPU seconds come from ``/proc``;
3. **the straightforward faust app** (``bench/faust_baseline_app.py``: one agent,
   ``faust.Record`` decode, one memory-table update per message) on the same
   topics with its own consumer group, first message to last;
4. **raw aiokafka** ``getmany`` + ``orjson.loads`` of every value, in a group;
5. the **ratio** cdiwatch / straightforward faust (goal >= 5x), and where that
   leaves us against quixstreams' ~42,000 msg/s (faust-notes.md, not re-measured);
6. **alert latency**: a fresh worker on fresh topic names, idle and caught up,
   gets N crime-related incidents with no record, then N "clock" events, one
   every ``--stream-gap`` s, each moving the watermark past exactly one
   deadline. Latency = arrival of that incident's ``overdue`` alert on the
   alerts topic minus the broker's ack of the clock event. The clocks are placed
   (by choosing ids) so that 1 in 6 lands on the crossing incident's own stage-2
   partition ("same partition") and 5 in 6 on a partition holding no test
   incident, so the watermark reaches the incident only through the worker's
   tick broadcast ("other partition") - the mix a quiet feed with 6 partitions
   sees. Each latency is split into hops with broker timestamps (see README).
7. **what-ifs** (``--stream-whatif``, default on): the same worker with every
   consumer's fetch wait capped at 20 ms (``bench/worker_fetchwait.py``:
   Tansu does not wake waiting fetches, Kafka does), then also with a 0.1 s
   tick: how much of the latency is the test broker and how much the tick.

Every process started here (broker, workers, faust app, consumers) is stopped
in ``finally`` blocks, and the children also get SIGTERM if this process dies.

Run through ``bench/run.py --only stream`` (``make bench``) or alone:
``python bench/stream_bench.py [--stream-messages N] [--repeat R] [--stream-profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "bench" / "out"  # git-ignored
LOGS = OUT / "stream-logs"
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

PY = sys.executable
BENCH = "stream"
PARTITIONS = 6
POLL = 0.2  # /audit poll interval (s)
FAUST_GOAL = 5.0
QUIX_BAR = 42_000  # quixstreams 3.28 stateful per-key update on this kind of machine (faust-notes.md)
LATENCY_GOAL = 1.0
WHATIF_FETCH_MS = 20
# The same group timeouts as tests/support.worker_env(): Tansu finishes a join after half the session timeout.
SESSION_TIMEOUT = "4"

__all__ = ["run", "add_arguments"]


# ---------------------------------------------------------------- processes
def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def data_dir(app_id: str) -> str:
    """A fresh faust data directory for one worker (its parent must exist)."""
    import shutil

    path = OUT / "stream-data" / app_id
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def worker_cmd(broker, port: int, app_id: str, fetch_cap_ms: int | None = None) -> list[str]:
    """``python -m pipeline worker ...``, or the same through bench/worker_fetchwait.py (a what-if)."""
    args = ["worker", "--broker", broker.url, "--web-port", str(port), "--data-dir", data_dir(app_id)]
    if fetch_cap_ms is None:
        return [PY, "-m", "pipeline", *args]
    return [PY, str(HERE / "worker_fetchwait.py"), str(fetch_cap_ms), *args]


class Children:
    """Subprocesses started by this benchmark, each with a log file; all stopped by :meth:`stop_all`."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = LOGS / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux")
                and threading.current_thread() is threading.main_thread() else None)
        self.procs.append((name, proc, log))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc, _log in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def check(self, proc: subprocess.Popen, what: str) -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{self.name_of(proc)} exited with {proc.returncode} while {what}\n"
                               f"{self.tail(proc)}")

    def name_of(self, proc: subprocess.Popen) -> str:
        return next((n for n, p, _l in self.procs if p is proc), "?")

    def tail(self, proc: subprocess.Popen, lines: int = 25) -> str:
        for name, p, log in self.procs:
            if p is proc:
                text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                return f"--- {name} ({log}):\n" + "\n".join(text)
        return ""


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_mem(pid: int) -> dict[str, float]:
    """VmHWM / VmRSS in MiB from /proc/<pid>/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


# --------------------------------------------------------------------- HTTP
def get_json(url: str, timeout: float = 5.0):
    """(status, document) or (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return None, None


def same_audit(got: dict | None, expected: dict) -> bool:
    """Equal as data: the watermark as an instant, floats within 1e-9 (as tests/support.py)."""
    from pipeline.events import parse_time

    if not isinstance(got, dict) or set(got) != set(expected):
        return False
    if parse_time(got["watermark"]) != parse_time(expected["watermark"]):
        return False
    if any(got[k] != expected[k] for k in expected if k not in ("watermark", "recording_rate")):
        return False
    for k, v in expected["recording_rate"].items():
        g = got["recording_rate"].get(k)
        if (v is None) != (g is None) or (v is not None and abs(g - v) > 1e-9):
            return False
    return True


def audit_diff(got: dict | None, expected: dict) -> str:
    if not isinstance(got, dict):
        return f"no audit ({got!r})"
    keys = [k for k in expected if got.get(k) != expected[k]]
    return "; ".join(f"{k}: got {json.dumps(got.get(k))[:300]} want {json.dumps(expected[k])[:300]}" for k in keys)


def worker_env(**extra: str) -> dict[str, str]:
    """Like tests/support.worker_env() (short group timeouts, info logging), but the
    product's default tick interval: the alert latency must be the one users get."""
    env = dict(os.environ)
    env.pop("CDI_TICK_INTERVAL", None)
    env.update({"CDI_SESSION_TIMEOUT": SESSION_TIMEOUT, "CDI_LOG_LEVEL": "info"})
    env.update(extra)
    return env


def wait_ready(children: Children, proc: subprocess.Popen, url: str, timeout: float = 120.0,
               samples: list | None = None) -> float:
    """Poll ``/readyz`` every 0.1 s; the wall time it first answered 200."""
    deadline = time.monotonic() + timeout
    while True:
        status, _doc = get_json(url + "/readyz", timeout=2)
        now = time.time()
        if samples is not None:
            samples.append((now, proc_cpu(proc.pid)))
        if status == 200:
            return now
        children.check(proc, "waiting for /readyz")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready after {timeout:g} s\n{children.tail(proc)}")
        time.sleep(0.1)


# -------------------------------------------------------------- Kafka reads
async def _first_timestamps(bootstrap: str, topics: list[str], timeout: float = 10.0) -> dict:
    """Broker timestamp (ms) of the first record of every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                max_partition_fetch_bytes=64 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        first: dict = {}
        deadline = time.monotonic() + timeout
        while len(first) < len(tps) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                if records and tp not in first:
                    first[tp] = records[0].timestamp
                    consumer.pause(tp)
        return first
    finally:
        await consumer.stop()


async def _read_all(bootstrap: str, topics: list[str], quiet: float = 1.0, timeout: float = 30.0) -> list:
    """Every record of ``topics`` from the beginning, until ``quiet`` s without new ones
    (Tansu's end offsets cannot be trusted after multi-record batches)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = []
        last = time.monotonic()
        deadline = last + timeout
        while time.monotonic() - last < quiet and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                out.extend(records)
            if batches:
                last = time.monotonic()
        return out
    finally:
        await consumer.stop()


# ------------------------------------------------------------ the capture
def prepare_capture(messages: int, seed: int) -> tuple[Path, int, dict, float]:
    """(path, lines, offline audit, seconds the offline audit took)."""
    from audit_bench import make_capture

    from pipeline.audit import audit_files
    from pipeline.config import Settings

    path = make_capture(messages, seed)
    with open(path, "rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    t0 = time.perf_counter()
    errors: list = []
    expected = audit_files([str(path)], Settings(), errors=errors).audit()
    if errors:
        raise RuntimeError(f"capture has {len(errors)} unreadable lines: {errors[:3]}")
    return path, lines, expected, time.perf_counter() - t0


# -------------------------------------------------------- 2. cdiwatch e2e
def run_worker_e2e(children: Children, broker, capture_msgs: int, expected: dict, app_id: str,
                   profile: bool = False, fetch_cap_ms: int | None = None) -> dict:
    from pipeline.broker import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = worker_cmd(broker, port, app_id, fetch_cap_ms)
    broker_pid = broker._proc.pid  # noqa: SLF001 - read-only, for its CPU seconds
    t_spawn = time.time()
    proc = children.start(app_id, cmd, worker_env(CDI_APP_ID=app_id))
    samples: list[tuple[float, float]] = []  # (wall time, worker CPU s)
    broker_cpu0 = proc_cpu(broker_pid)
    t_ready = wait_ready(children, proc, url, samples=samples)
    spy = None
    if profile:  # from ready (~ the first consumed message) to convergence; idle samples kept, per thread
        spy = children.start(f"{app_id}-py-spy", [str(Path(PY).with_name("py-spy")), "record", "-f", "raw",
                                                   "--threads", "--idle", "-r", "100",
                                                   "-o", str(OUT / "stream-worker.folded"), "--pid", str(proc.pid)])
    want_events = expected["events"]
    trace = []  # (wall time, audit parts that still differ from the offline audit)
    t_applied = t_done = None
    last = None
    deadline = time.monotonic() + max(180.0, capture_msgs / 500)
    next_poll = time.monotonic()
    while t_done is None:
        _status, doc = get_json(url + "/audit", timeout=10)
        now = time.time()
        samples.append((now, proc_cpu(proc.pid)))
        last = doc
        trace.append((now, [k for k in expected if not isinstance(doc, dict) or doc.get(k) != expected[k]]))
        if isinstance(doc, dict):
            if t_applied is None and doc.get("events") == want_events:
                t_applied = now
            if same_audit(doc, expected):
                t_done = now
                break
        children.check(proc, "waiting for /audit to converge")
        if time.monotonic() > deadline:
            raise RuntimeError(f"/audit did not converge: {audit_diff(last, expected)}\n{children.tail(proc)}")
        next_poll += POLL
        time.sleep(max(0.0, next_poll - time.monotonic()))
    cpu_done = proc_cpu(proc.pid)
    broker_cpu = proc_cpu(broker_pid) - broker_cpu0
    mem = proc_mem(proc.pid)
    if spy is not None:
        children.stop(spy, timeout=30, sig=signal.SIGINT)  # py-spy writes its file on SIGINT
    first = asyncio.run(_first_timestamps(broker.bootstrap, [f"{app_id}-incident-ops", f"{app_id}-crime-ops"]))
    children.stop(proc)
    if not first:
        raise RuntimeError("no records on the worker's op topics")
    t_first = min(first.values()) / 1000
    elapsed = t_done - t_first

    def cpu_at(t: float) -> float:  # the last sample at or before t (samples every 0.1-0.2 s)
        return next((cpu for ts, cpu in reversed(samples) if ts <= t), samples[0][1])

    cpu_first = cpu_at(t_first)
    t_applied = t_applied or t_done
    def settled(key: str) -> float:  # first poll after which ``key`` matched for good
        bad = [t for t, d in trace if key in d]
        later = [t for t, _d in trace if not bad or t > bad[-1]]
        return (later[0] if later else t_done) - t_first

    (OUT / f"{app_id}-trace.json").write_text(json.dumps(
        [{"t": round(t - t_first, 2), "differs": d} for t, d in trace], indent=0))
    return {
        "cpu_applied": cpu_at(t_applied) - cpu_first,
        "rate": capture_msgs / elapsed, "elapsed": elapsed, "startup": t_first - t_spawn,
        "ready_after_first": t_ready - t_first, "rate_from_ready": capture_msgs / (t_done - t_ready),
        "applied": t_applied - t_first, "incidents_ok": settled("incidents"), "cpu": cpu_done - cpu_first, "cpu_total": cpu_done,
        "hwm": mem.get("VmHWM", float("nan")), "rss": mem.get("VmRSS", float("nan")), "broker_cpu": broker_cpu,
    }


# ---------------------------------------------- 3. straightforward faust app
def run_faust_baseline(children: Children, broker, capture_msgs: int, rep: int, timeout: float) -> dict:
    app_id = f"bench-faust-{rep}"
    progress = OUT / f"{app_id}-progress.json"
    progress.unlink(missing_ok=True)
    env = dict(os.environ, BASELINE_BROKER=broker.url, BASELINE_APP_ID=app_id,
               BASELINE_TOPICS="cc.incidents,rms.crimes", BASELINE_PARTITIONS=str(PARTITIONS),
               BASELINE_SESSION_TIMEOUT=SESSION_TIMEOUT, BASELINE_PROGRESS=str(progress))
    proc = children.start(app_id, [PY, str(HERE / "faust_baseline_app.py")], env)
    deadline = time.monotonic() + timeout
    state: dict = {}
    timed_out = False
    try:
        while True:
            time.sleep(POLL)
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                state = state or {}
            if state.get("count", 0) >= capture_msgs:
                break
            children.check(proc, "the faust baseline was consuming")
            if time.monotonic() > deadline:
                timed_out = True
                break
        cpu = proc_cpu(proc.pid)
    finally:
        children.stop(proc)
    if not state.get("first"):
        raise RuntimeError(f"the faust baseline consumed nothing in {timeout:g} s\n{children.tail(proc)}")
    n = state["count"]
    end = state["last"] if not timed_out else time.time()
    elapsed = end - state["first"]
    return {"rate": n / elapsed, "elapsed": elapsed, "count": n, "timed_out": timed_out, "cpu": cpu,
            "invalid": state.get("invalid", 0)}


# ---------------------------------------------------- 4. raw aiokafka + orjson
_RAW = r"""
import asyncio, json, sys, time
import orjson
from aiokafka import AIOKafkaConsumer

bootstrap, group, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
topics = sys.argv[4].split(",")

async def main():
    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=4000, heartbeat_interval_ms=600,
                         max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    await c.start()
    loads, bad = orjson.loads, orjson.JSONDecodeError
    n = invalid = 0
    first = None
    deadline = time.monotonic() + 120
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
    print(json.dumps({"count": n, "first": first, "last": last, "invalid": invalid}))

asyncio.run(main())
"""


def run_raw(children: Children, broker, capture_msgs: int, rep: int) -> dict:
    proc = subprocess.run([PY, "-c", _RAW, broker.bootstrap, f"bench-raw-{rep}", str(capture_msgs),
                           "cc.incidents,rms.crimes"], cwd=REPO, capture_output=True, text=True, timeout=180,
                          preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if proc.returncode != 0:
        raise RuntimeError(f"raw consumer failed:\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    if doc["count"] < capture_msgs:
        raise RuntimeError(f"raw consumer read {doc['count']} of {capture_msgs} messages")
    elapsed = doc["last"] - doc["first"]
    return {"rate": doc["count"] / elapsed, "elapsed": elapsed}


# ------------------------------------------------------- 6. alert latency
def _id_on(prefix: str, partition: int, start: int = 0) -> str:
    from pipeline.stream.ops import partition_for

    k = start
    while partition_for(f"{prefix}-{k}", PARTITIONS) != partition:
        k += 1
    return f"{prefix}-{k}"


def _iso(t: float) -> str:
    from pipeline.events import format_time

    return format_time(int(t * 1_000_000))


def run_latency(children: Children, broker, n: int, gap: float, app_id: str = "bench-latency",
                fetch_cap_ms: int | None = None, tick: float | None = None) -> dict:
    from pipeline.broker import free_port

    topics = {"CDI_INCIDENTS_TOPIC": f"{app_id}.incidents", "CDI_CRIMES_TOPIC": f"{app_id}.crimes",
              "CDI_ALERTS_TOPIC": f"{app_id}.alerts", "CDI_DEADLETTER_TOPIC": f"{app_id}.deadletter"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = worker_env(CDI_APP_ID=app_id, **topics)
    if tick is not None:
        env["CDI_TICK_INTERVAL"] = str(tick)
    proc = children.start(app_id, worker_cmd(broker, port, app_id, fetch_cap_ms), env)
    try:
        wait_ready(children, proc, url)
        result = asyncio.run(_latency(children, proc, broker.bootstrap, url, topics, app_id, n, gap))
    finally:
        children.stop(proc)
    return result


async def _latency(children, proc, bootstrap: str, url: str, topics: dict, app_id: str, n: int,
                   gap: float) -> dict:
    import orjson
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from pipeline.stream.ops import partition_for

    incidents_topic, alerts_topic = topics["CDI_INCIDENTS_TOPIC"], topics["CDI_ALERTS_TOPIC"]
    # Plan: incident j on a chosen stage-2 partition; its clock either on the same partition
    # (every 6th: "same") or on partition 0, where no test incident lives ("other", via the tick).
    same = [j % 6 == 0 for j in range(n)]
    inc_part = [1 if same[j] else 2 + (j % 4) for j in range(n)]
    inc_ids = [_id_on(f"LAT{j:04d}", inc_part[j]) for j in range(n)]
    clk_ids = [_id_on(f"CLK{j:04d}", inc_part[j] if same[j] else 0) for j in range(n)]
    now = time.time()
    base = now - 26 * 3600  # deadlines 2 h ago: every clock event stays in the past
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

    async def audit() -> dict:
        _status, doc = await asyncio.to_thread(get_json, url + "/audit")
        return doc if isinstance(doc, dict) else {}

    async def wait_audit(what: str, check, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while True:
            doc = await audit()
            if doc and check(doc):
                return
            children.check(proc, f"waiting for {what}")
            if time.monotonic() > end:
                raise RuntimeError(f"latency setup: no {what} after {timeout:g} s: "
                                   f"{json.dumps(doc.get('incidents'))}\n{children.tail(proc)}")
            await asyncio.sleep(POLL)

    collector = None
    try:
        tps = [TopicPartition(alerts_topic, p) for p in sorted(consumer.partitions_for_topic(alerts_topic) or ())]
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
        # Warm-up clock: W = D_0 - 1 h puts every test incident in the at-risk window (n at_risk alerts),
        # so that burst is over before the measured clocks start.
        warm = deadline[0] - 3600 + lateness
        await producer.send_and_wait(incidents_topic, opened("lat-warm", "CLK-warm", warm, warm, "admin"),
                                     key=b"CLK-warm")
        await wait_audit(f"{n} at-risk incidents", lambda d: d["incidents"]["at_risk"] == n)
        end = time.monotonic() + 15
        while kinds["at_risk"] < n and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # idle again
        acks = []
        clock_occ = []
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

    # Hops, from broker timestamps: the first incident-ops record on the incident's partition
    # whose watermark source t reaches the clock's occurred_at is when stage 2 was told.
    ops_topic = f"{app_id}-incident-ops"
    ops = await _read_all(bootstrap, [ops_topic], quiet=1.0)
    by_part: dict[int, list[tuple[int, int]]] = defaultdict(list)  # partition -> [(offset, ts_ms, t_us)]
    for r in ops:
        t = orjson.loads(r.value).get("t")
        if t is not None:
            by_part[r.partition].append((r.offset, r.timestamp, t))
    for lst in by_part.values():
        lst.sort()
    lat, hops = [], {"same": [], "other": []}
    by_path: dict[str, list[float]] = {"same": [], "other": []}
    early = 0
    for j in range(n):
        got = arrivals.get(inc_ids[j])
        if got is None:
            continue
        arrival, alert_ts = got
        latency = arrival - acks[j]
        if latency < 0:
            early += 1  # an alert before its clock: the test's construction would be wrong
        lat.append(latency)
        path = "same" if same[j] else "other"
        by_path[path].append(latency)
        need = int(clock_occ[j] * 1_000_000) - 1
        op_ts = next((ts for _o, ts, t in by_part.get(partition_for(inc_ids[j], PARTITIONS), []) if t >= need), None)
        if op_ts is not None:
            hops[path].append((op_ts / 1000 - acks[j], alert_ts / 1000 - op_ts / 1000, arrival - alert_ts / 1000))
    return {"lat": lat, "by_path": by_path, "hops": hops, "n": n, "early": early, "kinds": dict(kinds)}


# ------------------------------------------------------------- profiling
IDLE_LEAVES = ("select", "poll", "wait", "sleep", "acquire", "epoll")


def summarize_profile(folded: Path, top: int = 15) -> str:
    """Per thread: busy share and the functions busy samples were in (py-spy raw file
    recorded with ``--threads --idle``). Printed to stderr and kept in bench/out/."""
    if not folded.exists():
        return "no profile written"
    threads: dict[str, dict] = {}
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in frames[1:]]
        th = threads.setdefault(thread, {"total": 0, "busy": 0, "self": Counter(), "incl": Counter()})
        c = int(count)
        th["total"] += c
        leaf = frames[-1] if frames else "?"
        if any(k in leaf.split(" (")[0].lower() for k in IDLE_LEAVES):
            continue
        th["busy"] += c
        th["self"][leaf] += c
        for f in set(frames):
            th["incl"][f] += c
    lines = [f"py-spy profile of the cdiwatch worker, /readyz -> converged ({folded}); "
             f"% of each thread's samples:"]
    for name, th in sorted(threads.items(), key=lambda kv: -kv[1]["busy"]):
        if not th["busy"]:
            continue
        total = th["total"]
        lines.append(f"thread {name}: busy {100 * th['busy'] / total:.0f}% of {total} samples")
        lines.append("  self (busy samples):")
        lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in th["self"].most_common(top)]
        lines.append("  inclusive (busy samples):")
        lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in th["incl"].most_common(top + 20)]
    text = "\n".join(lines)
    print(text, file=sys.stderr)
    (OUT / "stream-worker-profile.txt").write_text(text + "\n")
    return text


# ------------------------------------------------------------------- rows
def _row(measure: str, value: str, unit: str, note: str) -> dict:
    return {"benchmark": BENCH, "measure": measure, "value": value, "unit": unit, "note": note}


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def run(opts: argparse.Namespace) -> list[dict]:
    from pipeline.broker import LocalBroker
    from pipeline.config import Settings
    from pipeline.replay import replay

    messages = getattr(opts, "stream_messages", 100_000)
    repeat = max(1, getattr(opts, "repeat", 1))
    seed = getattr(opts, "seed", 1)
    n_alerts = getattr(opts, "stream_alerts", 200)
    gap = getattr(opts, "stream_gap", 0.05)
    profile = getattr(opts, "stream_profile", False)
    whatif = getattr(opts, "stream_whatif", True)
    whatif_runs: dict = {}
    OUT.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    path, lines, expected, audit_s = prepare_capture(messages, seed)
    print(f"stream: capture {path.name}: {lines:,} messages; offline audit {audit_s:.1f} s", file=sys.stderr)
    rows = [_row("capture", f"{lines:,}", "messages",
                 f"{path.relative_to(REPO)}; offline audit {audit_s:.1f} s; ready in {time.perf_counter() - t0:.1f} s")]
    children = Children()
    e2e, faust_runs, raws = [], [], []
    lat: dict | None = None
    try:
        with LocalBroker(log_path=str(LOGS / "tansu.log")) as broker:
            settings = Settings(broker=broker.url, partitions=PARTITIONS)
            report = replay([str(path)], settings)
            if not report.ok or report.total_sent != lines:
                raise RuntimeError(f"replay delivered {report.total_sent} of {lines}:\n{report.render()}")
            rows.append(_row("replay to input topics (max speed)", f"{lines / report.elapsed:,.0f}", "msgs/s",
                             f"pipeline.replay (kafka-python, linger 20 ms, acks=all); {report.elapsed:.1f} s; "
                             f"{PARTITIONS} partitions; before any consumer starts"))
            for rep in range(repeat):
                print(f"stream: [{rep + 1}/{repeat}] cdiwatch worker ...", file=sys.stderr, flush=True)
                e2e.append(run_worker_e2e(children, broker, lines, expected, f"bench-e2e-{rep}", profile and rep == 0))
                print(f"stream:   {e2e[-1]['rate']:,.0f} msg/s ({e2e[-1]['elapsed']:.1f} s)", file=sys.stderr)
                print(f"stream: [{rep + 1}/{repeat}] straightforward faust app ...", file=sys.stderr, flush=True)
                faust_runs.append(run_faust_baseline(children, broker, lines, rep, timeout=max(120.0, lines / 600)))
                print(f"stream:   {faust_runs[-1]['rate']:,.0f} msg/s", file=sys.stderr)
                print(f"stream: [{rep + 1}/{repeat}] raw aiokafka ...", file=sys.stderr, flush=True)
                raws.append(run_raw(children, broker, lines, rep))
                print(f"stream:   {raws[-1]['rate']:,.0f} msg/s", file=sys.stderr)
            print(f"stream: alert latency ({n_alerts} deadlines, one every {gap * 1000:.0f} ms) ...",
                  file=sys.stderr, flush=True)
            lat = run_latency(children, broker, n_alerts, gap)
            if whatif:
                cap = WHATIF_FETCH_MS
                print(f"stream: what-if: fetch waits capped at {cap} ms ...", file=sys.stderr, flush=True)
                whatif_runs["e2e"] = run_worker_e2e(children, broker, lines, expected, "bench-e2e-fetchcap",
                                                    fetch_cap_ms=cap)
                whatif_runs["lat"] = run_latency(children, broker, n_alerts, gap, "bench-latency-fetchcap",
                                                 fetch_cap_ms=cap)
                print("stream: what-if: ... and tick 0.1 s ...", file=sys.stderr, flush=True)
                whatif_runs["lat_tick"] = run_latency(children, broker, n_alerts, gap, "bench-latency-fetchcap-tick",
                                                      fetch_cap_ms=cap, tick=0.1)
    except BaseException:
        # Keep what was measured before the failure visible (run.py shows only the error row).
        done = {"e2e": e2e, "faust": faust_runs, "raw": raws, "whatif": list(whatif_runs)}
        print(f"stream: failed; measured so far: {json.dumps(done, default=str)}", file=sys.stderr)
        raise
    finally:
        children.stop_all()

    med = statistics.median
    runs = f"median of {repeat}" if repeat > 1 else "1 run"
    w_rate = med(r["rate"] for r in e2e)
    w = sorted(e2e, key=lambda r: r["rate"])[len(e2e) // 2]
    f_rate = med(r["rate"] for r in faust_runs)
    f = sorted(faust_runs, key=lambda r: r["rate"])[len(faust_runs) // 2]
    r_rate = med(r["rate"] for r in raws)
    ratio = w_rate / f_rate
    rows += [
        _row("cdiwatch worker end to end", f"{w_rate:,.0f}", "msgs/s",
             f"{runs}; first consumed message -> /audit == offline audit: {w['elapsed']:.1f} s "
             f"(all events applied at {w['applied']:.1f} s, incidents right at {w['incidents_ok']:.1f} s, the rest: "
             f"crimes.without_incident waiting for seen notices); "
             f"from /readyz 200: {w['rate_from_ready']:,.0f} msg/s; startup {w['startup']:.1f} s"),
        _row("cdiwatch worker CPU", f"{w['cpu']:.1f}", "s",
             f"in the {w['elapsed']:.1f} s window = {w['cpu'] / w['elapsed']:.2f} cores "
             f"({w['cpu_total']:.1f} s incl. startup); until all events applied {w['cpu_applied'] / w['applied']:.2f} "
             f"cores, after {(w['cpu'] - w['cpu_applied']) / max(1e-9, w['elapsed'] - w['applied']):.2f}; "
             f"Tansu {w['broker_cpu']:.1f} s; one process, ~1 core of Python under the GIL, 2 cores here"),
        _row("cdiwatch worker peak RSS", f"{w['hwm']:,.0f}", "MiB", f"VmHWM; VmRSS {w['rss']:,.0f} MiB at the end"),
        _row("straightforward faust (Record + memory table)", f"{f_rate:,.0f}", "msgs/s",
             f"{runs}; bench/faust_baseline_app.py, first -> last message, {f['elapsed']:.1f} s"
             + (" (TIMED OUT: partial)" if f["timed_out"] else "")
             + "; notes: ~2,700 (~4,200 with -l info and producer_linger=0.01)"),
        _row("raw aiokafka getmany + orjson", f"{r_rate:,.0f}", "msgs/s",
             f"{runs}; consumer group, first -> last message; notes: ~310,000 (200k msgs)"),
        _row("ratio cdiwatch / straightforward faust", f"{ratio:.1f}", "x",
             f"goal >= {FAUST_GOAL:g}x: {'MET' if ratio >= FAUST_GOAL else 'NOT MET'} "
             f"({w_rate / 2700:.1f}x the notes' 2,700; until all events applied {lines / w['applied'] / f_rate:.1f}x); cdiwatch is "
             f"{100 * w_rate / QUIX_BAR:.0f}% of quixstreams' ~{QUIX_BAR:,} msg/s bar (faust-notes.md, not measured here)"),
    ]
    if lat is not None:
        rows += latency_rows(lat, gap)
    if whatif_runs:
        cap = WHATIF_FETCH_MS
        x = whatif_runs["e2e"]
        rows.append(_row(f"what-if fetch wait <= {cap} ms: end to end", f"{x['rate']:,.0f}", "msgs/s",
                         f"bench/worker_fetchwait.py (a broker that answers fetches when data arrives); "
                         f"{x['elapsed']:.1f} s, all events applied at {x['applied']:.1f} s: if not faster, "
                         f"throughput is not bound by fetch waits"))
        for key, label in (("lat", f"fetch wait <= {cap} ms"), ("lat_tick", f"fetch wait <= {cap} ms, tick 0.1 s")):
            v = whatif_runs[key]["lat"]
            if v:
                paths = "; ".join(f"{p}: p50 {_pct(x, 0.5):.3f} p99 {_pct(x, 0.99):.3f}"
                                  for p, x in whatif_runs[key]["by_path"].items() if x)
                rows.append(_row(f"what-if {label}: alert latency p50 / p99", f"{_pct(v, 0.5):.3f} / {_pct(v, 0.99):.3f}",
                                 "s", f"{len(v)}/{whatif_runs[key]['n']} alerts; {paths}"))
    if profile:
        summarize_profile(OUT / "stream-worker.folded")
        rows.append(_row("profile of the worker", "", "",
                         "py-spy record --threads --idle at 100 Hz, first run, /readyz -> converged (it pauses "
                         "the worker to sample: that run is a little slower); per-thread summary on stderr and in "
                         "bench/out/stream-worker-profile.txt"))
    return rows


def latency_rows(lat: dict, gap: float) -> list[dict]:
    n, values = lat["n"], lat["lat"]
    if not values:
        return [_row("alert latency", "", "", f"no overdue alert arrived of {n} (kinds seen {lat['kinds']})")]
    p50, p99, mx = _pct(values, 0.5), _pct(values, 0.99), max(values)
    ok = p99 < LATENCY_GOAL and len(values) == n
    rows = [
        _row("alert latency p50", f"{p50:.3f}", "s",
             f"ack of the event that moves W past a deadline -> overdue alert read from the alerts topic; "
             f"{n} deadlines, one every {gap * 1000:.0f} ms, worker idle and caught up, tick 0.5 s (default)"),
        _row("alert latency p99", f"{p99:.3f}", "s",
             f"goal < {LATENCY_GOAL:g} s: {'MET' if ok else 'NOT MET'}"),
        _row("alert latency max", f"{mx:.3f}", "s",
             f"{len(values)}/{n} overdue alerts arrived" + (f"; {lat['early']} before their clock!" if lat["early"] else "")),
    ]
    for path, label in (("same", "event on the incident's partition"), ("other", "watermark via tick broadcast")):
        v = lat["by_path"][path]
        h = lat["hops"][path]
        if not v:
            continue
        hop = ""
        if h:
            hop = (f"; hop medians: ack -> op on incident partition {med_ms([x[0] for x in h])} ms, "
                   f"op -> alert produced {med_ms([x[1] for x in h])} ms, alert -> read {med_ms([x[2] for x in h])} ms")
        rows.append(_row(f"alert latency p50 / p99, {label}", f"{_pct(v, 0.5):.3f} / {_pct(v, 0.99):.3f}", "s",
                         f"{len(v)} alerts{hop}"))
    return rows


def med_ms(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):,.0f}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream-messages", type=int, default=100_000,
                   help="stream bench capture size (default 100,000; cached in bench/out/)")
    p.add_argument("--repeat", type=int, default=1,
                   help="stream bench: runs of each throughput measurement, median shown (default 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stream-alerts", type=int, default=200, help="alert latency: deadlines crossed (default 200)")
    p.add_argument("--stream-gap", type=float, default=0.05,
                   help="alert latency: seconds between clock events (default 0.05)")
    p.add_argument("--stream-whatif", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the worker with consumer fetch waits capped (bench/worker_fetchwait.py), and "
                        "that with tick 0.1 s: what Tansu's fetch quirk and the tick cost (default on; ~1 min)")
    p.add_argument("--stream-profile", action="store_true",
                   help="py-spy record the first cdiwatch worker run (bench/out/stream-worker.folded)")


if __name__ == "__main__":
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    bench_run.print_table(run(args))
