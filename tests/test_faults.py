"""Fault tests on the real broker (issue 9): whatever dies when, nothing is lost,
nothing counts twice, and no worker takes another down.

- **Crash points**: one worker dies (``os._exit``, as ``kill -9``) at a chosen
  point of a chosen batch, again and again through one replay; each time a
  new worker recovers. The final ``/audit`` equals the offline audit exactly
  (statuses *and* the valid, duplicate and invalid counts).
- **Three workers under load**: during a paced replay, one is killed (-9) and
  replaced; or leaves gracefully (SIGTERM) and another joins; or the broker is
  frozen (SIGSTOP) for 20 s; or one worker is frozen past its session
  timeout and comes back as a zombie. Every surviving worker stays up, ``/readyz`` says
  503 while the broker does not answer, and every worker's final ``/audit``
  equals the offline audit. After graceful events no ``alert_id`` and no dead
  letter is published twice; after a kill a repeat carries the same ``alert_id``.

Each scenario runs more than once (other moments, other seeds): a fault that
shows up one run in three is a failure. ``CDI_FAULT_SEED`` replays a run.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import threading
import time
from collections import Counter

import orjson
import pytest

from pipeline.capture import write_capture
from pipeline.commands.audit import audit_files
from pipeline.commands.replay import replay
from pipeline.kafka.local import LocalBroker
from pipeline.kafka.topics import STAGES, TopicPlan
from pipeline.settings import Settings
from pipeline.simulation import Simulator
from pipeline.stream.faults import EXIT_CODE, POINTS
from support import Processes, get_json, http_ok, read_topics, same_audit, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("CDI_FAULT_SEED", random.randrange(1 << 30)))


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A simulated force with its mess: ~20k messages; the offline audit and the alert ids it implies."""
    path = tmp_path_factory.mktemp("faults") / "capture.jsonl"
    sim = Simulator(hours=90, seed=11)
    write_capture(((m.topic, m.key, m.payload, m.ts_ms) for m in sim), str(path))
    expected = audit_files([str(path)], Settings()).audit()
    invalid = expected["events"]["incidents"]["invalid"] + expected["events"]["crimes"]["invalid"]
    return path, expected, invalid


@pytest.fixture
def cluster(tmp_path):
    from conftest import _binary_or_skip

    broker = LocalBroker(binary=_binary_or_skip()).start()
    procs = Processes(tmp_path, broker)
    yield broker, procs
    procs.stop_all()
    broker.stop()


def _audit(url: str) -> dict | None:
    try:
        return get_json(url + "/audit")
    except OSError:
        return None


def converge(procs: Processes, urls: list[str], expected: dict, timeout: float = 180) -> None:
    """Every worker's /audit equals the offline audit (statuses and counts, exactly)."""
    last = {}

    def check():
        for url in urls:
            last[url] = _audit(url)
        return all(same_audit(last[u], expected) for u in urls)

    try:
        procs.wait_until("every worker's /audit to equal the offline audit", check, timeout=timeout)
    except BaseException as exc:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for url, got in last.items():
                print(url, "differs:", "; ".join(_differences(got or {}, expected)) or "nothing")
            for name, _proc, log in procs.procs:  # errors and warnings anywhere in the logs
                bad = [line.rstrip() for line in open(log, errors="replace")
                       if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
                       or (" WARNING " in line and "pipeline." in line)]
                print(f"{name}: {len(bad)} error or warning lines", bad[:8])
            _print_lag(procs.broker.bootstrap)
            _print_event_stage(procs.broker.bootstrap, expected, urls[0])
        print(out.getvalue())
        # The diagnosis goes last in the failure message: a CI record keeps the tail.
        pytest.fail(f"{exc}\n--- diagnosis (CDI_FAULT_SEED={SEED}):\n{out.getvalue()}", pytrace=False)


def _differences(got: dict, expected: dict, path: str = "") -> list[str]:
    """``events.incidents.valid 17406 != 17408``: every leaf where an audit differs from the offline one."""
    if isinstance(expected, dict) and isinstance(got, dict):
        return [d for key in sorted(set(expected) | set(got))
                for d in _differences(got.get(key), expected.get(key), f"{path}.{key}" if path else key)]
    return [] if got == expected else [f"{path} {got!r} != {expected!r}"]


def _print_lag(bootstrap: str) -> None:
    """On a failure: every partition the workers' group reads that is not fully
    committed (a partition nobody consumes shows here as a lag that stays).
    The ends are read, not asked for: the test broker's end offsets are short."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    plan = TopicPlan()
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        got = admin.list_group_offsets({plan.group: None}).get(plan.group, {})
        admin.close()
        topics = list(plan.inputs) + [plan.ops(stage) for stage in STAGES]
        committed = {TopicPartition(t, p): got[TopicPartition(t, p)].offset if TopicPartition(t, p) in got else None
                     for t in topics for p in range(plan.partitions)}
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
        consumer.assign(list(committed))
        consumer.seek_to_beginning()
        ends = {tp: 0 for tp in committed}
        for record in consumer:
            ends[TopicPartition(record.topic, record.partition)] = record.offset + 1
        consumer.close()
        for tp in sorted(committed, key=lambda tp: (tp.topic, tp.partition)):
            if (committed[tp] or 0) != ends[tp]:
                print("lag", f"{tp.topic}[{tp.partition}]", "committed", committed[tp], "end", ends[tp])
        print("group partitions committed:", len(got), "of", len(committed))
    except Exception as exc:  # noqa: BLE001 - a diagnostic only
        print("no lag report:", type(exc).__name__, exc)


def _print_event_stage(bootstrap: str, expected: dict, url: str) -> None:
    """On a failure: input messages that never reached the event stage, and per
    event-stage partition the source positions it was sent against the counts
    its last view record shows (a difference names the partition, and says
    whether a message was not sent, or was sent and not counted)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.core.events import Arrival, IncidentEvent, Invalid, Stale
    from pipeline.stream.codec import decode_batch, decode_json

    plan = TopicPlan()
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000,
                                 max_partition_fetch_bytes=8 << 20)
        topics = list(plan.inputs) + [plan.ops("event"), plan.ops("incident"), plan.views]
        consumer.assign([TopicPartition(t, p) for t in topics for p in range(plan.partitions)])
        consumer.seek_to_beginning()
        side_of = {plan.incidents: "incidents", plan.crimes: "crimes"}
        inputs, sent, views, forwarded = set(), {}, {}, set()
        opened: dict[int, set] = {}  # incident partition -> incidents with an opened event sent to it
        where: dict[str, list] = {}   # incident id -> (kind, partition, offset) of its events in the ops
        incident_views: dict[int, tuple] = {}
        for r in consumer:
            if r.topic in side_of:
                inputs.add((side_of[r.topic], r.partition, r.offset))
            elif r.topic == plan.views:
                if r.key and r.key.startswith(b"p:event:") and r.value:
                    views[int(r.key.rsplit(b":", 1)[1])] = (r.partition, r.offset, decode_json(r.value)["e"])
                elif r.key and r.key.startswith(b"p:incident:") and r.value:
                    seen = sum(n for k, n in decode_json(r.value)["i"] if k[0] != "unopened")
                    incident_views[int(r.key.rsplit(b":", 1)[1])] = (r.offset, seen)
            elif r.topic == plan.ops("incident"):
                for op in decode_batch(r.value).ops:
                    event = op.event if type(op) is Stale else op
                    if type(event) is IncidentEvent:
                        forwarded.add(event.event_id)
                        where.setdefault(event.incident_id, []).append((event.kind, r.partition, r.offset))
                        if event.kind == "opened":
                            opened.setdefault(r.partition, set()).add(event.incident_id)
            else:
                for op in decode_batch(r.value).ops:
                    if type(op) is Arrival:
                        pos = ("incidents" if type(op.event) is IncidentEvent else "crimes", op.partition, op.offset)
                    elif type(op) is Invalid:
                        pos = (op.side, op.partition, op.offset)
                    else:
                        continue
                    sent.setdefault(r.partition, set()).add(pos)
        consumer.close()
        everywhere = set().union(*sent.values()) if sent else set()
        missing = sorted(inputs - everywhere)
        print("input messages on the broker:", {side: sum(1 for x in inputs if x[0] == side) for side in side_of.values()},
              "in the capture:", {side: sum(c.values()) for side, c in expected["events"].items()})
        print("input messages never sent to the event stage:", len(missing), missing[:20])
        print("distinct incident events forwarded to the incident stage:", len(forwarded),
              "valid incident events expected:", expected["events"]["incidents"]["valid"])
        for p in range(plan.partitions):
            print(f"incident[{p}] opened incidents sent", len(opened.get(p, ())),
                  "seen in its last view record", incident_views.get(p))
            if incident_views.get(p) and incident_views[p][1] != len(opened.get(p, ())):
                for incident_id in sorted(opened.get(p, ())):
                    try:
                        doc = get_json(f"{url}/incidents/{incident_id}")
                    except OSError as exc:
                        doc = {"status": f"not found ({exc})"}
                    if doc.get("status") in (None, "unopened") or str(doc.get("status")).startswith("not found"):
                        print("  not seen:", incident_id, doc.get("status"), "its ops:", where.get(incident_id),
                              "held:", [e["event_type"] for e in doc.get("events", [])])
                _print_changelog(bootstrap, plan.changelog("incident"), p)
        for p in range(plan.partitions):
            got = sent.get(p, set())
            at, off, counts = views.get(p, (None, None, {}))
            counted = {side: sum(c.values()) for side, c in counts.items()}
            print(f"event[{p}] sent", {side: sum(1 for x in got if x[0] == side) for side in ("incidents", "crimes")},
                  "view counts", counted, f"(views[{at}]@{off})")
    except Exception as exc:  # noqa: BLE001 - a diagnostic only
        print("no event-stage report:", type(exc).__name__, exc)


def _print_changelog(bootstrap: str, topic: str, partition: int) -> None:
    """The epochs of one changelog partition: each fence with the checkpoints
    around it (offset, writer, next input offset)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.stream.codec import decode_json
    from pipeline.stream.store import CHECKPOINT_PREFIX, FENCE_PREFIX

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000,
                             max_partition_fetch_bytes=8 << 20)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek_to_beginning()
    marks, previous = [], None
    for r in consumer:
        writer = dict(r.headers or []).get("w", b"?").decode()[:6]
        if r.key and r.key.startswith(FENCE_PREFIX):
            if previous:  # the last checkpoint before each fence, then the fence
                marks.append(previous)
            marks.append(f"FENCE@{r.offset}:{writer}")
            previous = None
        elif r.key and r.key.startswith(CHECKPOINT_PREFIX):
            previous = f"cp@{r.offset}:{writer}:next={decode_json(r.value)['next']}"
            if marks and marks[-1].startswith("FENCE"):  # and the first after it
                marks.append(previous)
    if previous:
        marks.append(previous)
    consumer.close()
    print(f"  {topic}[{partition}]:", " ".join(marks))


def outputs(broker: LocalBroker, url: str, invalid: int, repeats: bool) -> None:
    """The alerts and dead letters the cluster published agree with its final state.

    Which alerts an incident gets depends on how its events and the watermark
    arrived (an incident seen overdue before its late record gets ``overdue``
    and ``resolved``), so they are checked against the final state: every
    incident overdue or at risk now had that alert; a ``resolved`` follows an
    ``overdue``; every invalid message has its dead letter. ``repeats``: may an
    output have been published twice (only after a crash)?
    """
    alerts = Counter(orjson.loads(v)["alert_id"] for _t, _p, _k, v in read_topics(broker.bootstrap, ["cdi.alerts"]))
    for status in ("overdue", "at_risk"):
        for x in get_json(f"{url}/incidents?status={status}&limit=5000"):
            assert alerts[f"{x['incident_id']}:{status}"] >= 1, (status, x["incident_id"])
    for alert_id in alerts:
        incident_id, kind = alert_id.rsplit(":", 1)
        if kind == "resolved":
            assert alerts[f"{incident_id}:overdue"] >= 1, alert_id
    letters = Counter()
    for _t, _p, _k, v in read_topics(broker.bootstrap, ["cdi.deadletter"]):
        d = orjson.loads(v)
        letters[(d["source_topic"], d["partition"], d["offset"])] += 1
    assert len(letters) == invalid
    if not repeats:
        assert max(alerts.values()) == 1, [a for a, n in alerts.items() if n > 1][:5]
        assert max(letters.values()) == 1, [k for k, n in letters.items() if n > 1][:5]


class Feeder(threading.Thread):
    """The capture replayed at a pace, in a thread; :meth:`finish` says whether
    every message reached the broker (a convergence that never comes then names
    the feeder, not the workers)."""

    def __init__(self, broker: LocalBroker, path, seconds: float) -> None:
        super().__init__(daemon=True)
        self.args = ([str(path)], Settings(broker=broker.url))
        self.speed = 90 * 3600 / seconds  # the capture spans 90 hours
        self.report = self.error = None

    def run(self) -> None:
        try:
            self.report = replay(*self.args, speed=self.speed)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout: float) -> None:
        self.join(timeout=timeout)
        assert not self.is_alive(), f"the replay did not end within {timeout:g} s"
        assert self.error is None, f"the replay failed: {self.error!r}"
        assert self.report.ok, f"the replay did not deliver everything:\n{self.report.render()}"


def paced_replay(broker: LocalBroker, path, seconds: float) -> Feeder:
    feeder = Feeder(broker, path, seconds)
    feeder.start()
    return feeder


# --------------------------------------------------------------------------- crash points

@pytest.mark.parametrize("run", [0, 1])
def test_a_worker_dying_at_any_point_of_any_batch_loses_nothing(cluster, capture, tmp_path, run):
    """Six workers in turn, each given a sixth of the capture, each dying at a random
    point of a random batch; the next recovers; a last one finishes."""
    broker, procs = cluster
    path, expected, invalid = capture
    rng = random.Random(SEED + run)
    lines = path.read_bytes().splitlines(keepends=True)
    env = worker_env(CDI_BATCH_SIZE="100")
    faults = [(rng.choice(POINTS), rng.randint(1, 25)) for _ in range(6)]
    print(f"CDI_FAULT_SEED={SEED} faults {faults}")
    died = 0
    for i, (point, batch) in enumerate(faults):
        chunk, so_far = tmp_path / f"chunk-{i}.jsonl", tmp_path / f"so-far-{i}.jsonl"
        chunk.write_bytes(b"".join(lines[i * len(lines) // 6:(i + 1) * len(lines) // 6]))
        so_far.write_bytes(b"".join(lines[:(i + 1) * len(lines) // 6]))
        assert replay([str(chunk)], Settings(broker=broker.url)).ok
        expected_so_far = audit_files([str(so_far)], Settings()).audit()
        name = f"doomed-{i}"
        url = procs.start_worker(name, broker.url, {**env, "CDI_TEST_FAULT": f"{point}@{batch}"})
        proc = procs.procs[-1][1]
        procs.killed.add(name)  # its death is the plan
        procs.wait_until(f"{name} to die at {point} of batch {batch}, or to finish its sixth",
                         lambda: proc.poll() is not None or same_audit(_audit(url), expected_so_far), timeout=120)
        if proc.poll() is None:
            procs.stop(name)
            continue
        assert proc.returncode == EXIT_CODE, procs.logs()
        died += 1
    assert died >= 4, f"only {died} of the planned faults happened: {faults}"
    url = procs.start_worker("survivor", broker.url, env)
    converge(procs, [url], expected)
    outputs(broker, url, invalid, repeats=True)


# --------------------------------------------------------------------------- three workers

def three_workers_under_load(broker: LocalBroker, procs: Processes, path, env: dict) -> tuple[list[str], Feeder]:
    """Three workers, ready; then the capture replayed over 20 s. Their URLs and the feeder."""
    urls = [procs.start_worker(f"w{i}", broker.url, env) for i in range(3)]
    procs.wait_until("three workers ready", lambda: all(http_ok(u + "/readyz") for u in urls), timeout=120)
    return urls, paced_replay(broker, path, seconds=20)


@pytest.mark.parametrize("run", [0, 1])
def test_kill_9_of_one_of_three_workers_under_load(cluster, capture, run):
    broker, procs = cluster
    path, expected, invalid = capture
    rng = random.Random(SEED + 10 + run)
    env = worker_env(CDI_BATCH_SIZE="500")
    urls, feeder = three_workers_under_load(broker, procs, path, env)
    pause, victim = rng.uniform(4, 12), rng.randrange(3)
    print(f"CDI_FAULT_SEED={SEED}: w{victim} killed after {pause:.1f} s")
    time.sleep(pause)
    procs.kill(f"w{victim}")
    heir = procs.start_worker("heir", broker.url, env)
    feeder.finish(timeout=120)
    alive = [u for i, u in enumerate(urls) if i != victim] + [heir]
    converge(procs, alive, expected)
    outputs(broker, alive[0], invalid, repeats=True)


@pytest.mark.parametrize("run", [0, 1])
def test_graceful_leave_and_join_under_load_repeat_nothing(cluster, capture, run):
    broker, procs = cluster
    path, expected, invalid = capture
    rng = random.Random(SEED + 20 + run)
    env = worker_env(CDI_BATCH_SIZE="500")
    urls, feeder = three_workers_under_load(broker, procs, path, env)
    pause, leaver = rng.uniform(4, 9), rng.randrange(3)
    print(f"CDI_FAULT_SEED={SEED}: w{leaver} leaves after {pause:.1f} s")
    time.sleep(pause)
    assert procs.stop(f"w{leaver}") in (0, -signal.SIGTERM)
    time.sleep(rng.uniform(1, 5))
    joiner = procs.start_worker("joiner", broker.url, env)
    feeder.finish(timeout=120)
    alive = [u for i, u in enumerate(urls) if i != leaver] + [joiner]
    converge(procs, alive, expected)
    outputs(broker, alive[0], invalid, repeats=False)


@pytest.mark.parametrize("run", [0, 1])
def test_a_worker_frozen_past_its_session_comes_back_without_corrupting_the_view(cluster, capture, run):
    """A worker descheduled for longer than its session timeout (a loaded
    machine, a long pause) is expelled; its partitions move on. When it runs
    again it is a zombie until it hears so: whatever it publishes meanwhile
    must not leave the cluster's view (``/audit`` on every worker) stale."""
    broker, procs = cluster
    path, expected, invalid = capture
    rng = random.Random(SEED + 30 + run)
    env = worker_env(CDI_BATCH_SIZE="500")
    urls, feeder = three_workers_under_load(broker, procs, path, env)
    pause, frozen, still = rng.uniform(3, 10), rng.randrange(3), rng.uniform(6, 10)
    print(f"CDI_FAULT_SEED={SEED}: w{frozen} frozen after {pause:.1f} s for {still:.1f} s")
    time.sleep(pause)
    procs.signal(f"w{frozen}", signal.SIGSTOP)
    try:
        time.sleep(still)  # the session timeout is 4 s
    finally:
        procs.signal(f"w{frozen}", signal.SIGCONT)
    feeder.finish(timeout=120)
    converge(procs, urls, expected)
    outputs(broker, urls[0], invalid, repeats=True)


def test_a_frozen_broker_takes_no_worker_down(cluster, capture):
    broker, procs = cluster
    path, expected, invalid = capture
    env = worker_env(CDI_BATCH_SIZE="500")
    urls, feeder = three_workers_under_load(broker, procs, path, env)
    time.sleep(6)
    os.kill(broker.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        procs.wait_until("every /readyz to say 503 while the broker is frozen",
                         lambda: not any(http_ok(u + "/readyz") for u in urls), timeout=15)
        time.sleep(max(0.0, 20 - (time.monotonic() - frozen)))
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    feeder.finish(timeout=180)
    converge(procs, urls, expected, timeout=240)
    outputs(broker, urls[0], invalid, repeats=False)
