"""End to end on a real Kafka-protocol broker (Tansu): replay -> workers -> topics, HTTP, metrics.

These are the issue's acceptance tests for the stream layer: the sample
capture replayed into one or two workers gives exactly the expected audit
(whichever worker is asked), every invalid message is dead-lettered with the
offline validator's reason, ``cdi.alerts`` holds one overdue alert per
incident overdue at the end, and ``/metrics`` agrees with ``/audit``.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.capture import read_capture
from pipeline.core.events import Rejection
from pipeline.core.times import parse_time
from pipeline.core.validation import Validator
from pipeline.commands.replay import replay
from pipeline.settings import Settings
from support import EXPECTED_AUDIT, SAMPLE, Processes, get_json, http_ok, read_topics, same_audit

pytestmark = pytest.mark.integration

CONTRACT_FAMILIES = {
    "cdi_incidents_required": "counter", "cdi_incidents_recorded": "counter",
    "cdi_incidents_breached": "counter", "cdi_incidents_overdue": "gauge",
    "cdi_incidents_pending": "gauge", "cdi_incidents_at_risk": "gauge",
    "cdi_incidents_exempt": "counter", "cdi_recording_delay_seconds": "histogram",
    "cdi_crimes_cancelled": "counter", "cdi_events": "counter",
    "cdi_watermark_timestamp_seconds": "gauge", "cdi_last_event_received_timestamp_seconds": "gauge",
}


@pytest.fixture
def procs(tmp_path, request):
    p = Processes(tmp_path)
    yield p
    p.stop_all()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # the workers' logs, in the failure's report
        print(p.logs())


def expected_audit() -> dict:
    return json.loads(EXPECTED_AUDIT.read_text())


def wait_ready(procs: Processes, *urls: str) -> None:
    procs.wait_until("workers ready", lambda: all(http_ok(u + "/readyz") for u in urls), timeout=90)


def wait_audit(procs: Processes, url: str, expected: dict, timeout: float = 90) -> dict:
    last = {}

    def check():
        nonlocal last
        try:
            last = get_json(url + "/audit")
        except OSError:
            return False
        return same_audit(last, expected)

    try:
        procs.wait_until(f"{url}/audit to equal the expected audit", check, timeout=timeout)
    except BaseException:
        print("last audit:", json.dumps(last, indent=1)[:3000])
        raise
    return last


def metric_samples(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = (fam.type, fam.samples)
    return families


def total(families: dict, name: str, **labels) -> float:
    _type, samples = families.get(name, (None, []))
    return sum(s.value for s in samples
               if s.name in (name, name + "_total") and all(s.labels.get(k) == v for k, v in labels.items()))


def offline_reasons() -> Counter:
    """What the validator says about each sample message (topic, reason)."""
    v = Validator()
    side = {"cc.incidents": "incidents", "rms.crimes": "crimes"}
    now = time.time_ns() // 1000
    out = Counter()
    for m in read_capture([SAMPLE]):
        r = v.validate(side[m.topic], m.payload, now)
        if type(r) is Rejection:
            out[(m.topic, r.reason, m.payload)] += 1
    return out


@pytest.fixture(scope="module")
def sample_cluster(tmp_path_factory):
    """One broker, one worker, the sample replayed and fully processed."""
    from conftest import _binary_or_skip
    from pipeline.kafka.local import LocalBroker

    procs = Processes(tmp_path_factory.mktemp("cluster"))
    with LocalBroker(binary=_binary_or_skip()) as broker:
        try:
            url = procs.start_worker("worker", broker.url)
            wait_ready(procs, url)
            report = replay([SAMPLE], Settings(broker=broker.url))
            assert report.ok and sum(report.sent.values()) == 2668
            audit = wait_audit(procs, url, expected_audit())
            time.sleep(2.5)  # the open-incident lists are published every 2 s
            yield broker, url, audit
        finally:
            procs.stop_all()


def test_one_worker_audit_deadletters_alerts_and_metrics(sample_cluster):
    fresh_broker, url, audit = sample_cluster

    # every invalid message is on the dead-letter topic, with the validator's reason
    want = offline_reasons()
    letters = read_topics(fresh_broker.bootstrap, ["cdi.deadletter"], expected=sum(want.values()))
    got = Counter()
    for _topic, _p, _key, value in letters:
        d = orjson.loads(value)
        assert d["schema"] == "deadletter.v1" and d["detail"] and d["received_at"]
        assert isinstance(d["partition"], int) and isinstance(d["offset"], int)
        payload = d["payload"].encode() if "payload_encoding" not in d else base64.b64decode(d["payload"])
        got[(d["source_topic"], d["reason"], payload)] += 1
    assert got == want
    assert sum(got.values()) == audit["events"]["incidents"]["invalid"] + audit["events"]["crimes"]["invalid"]

    # exactly one overdue alert for each incident overdue at the end
    overdue = {x["incident_id"] for x in get_json(url + "/incidents?status=overdue")}
    assert len(overdue) == audit["incidents"]["overdue"]
    alerts = [orjson.loads(v) for _t, _p, _k, v in read_topics(fresh_broker.bootstrap, ["cdi.alerts"])]
    overdue_alerts = Counter(a["incident_id"] for a in alerts if a["kind"] == "overdue")
    assert all(overdue_alerts[i] == 1 for i in overdue), "missing or repeated overdue alerts"
    assert len({a["alert_id"] for a in alerts}) == len(alerts), "an alert_id was published twice"
    for a in alerts:
        assert a["alert_id"] == f"{a['incident_id']}:{a['kind']}" and a["schema"] == "alert.v1"
    resolved = [a for a in alerts if a["kind"] == "resolved"]
    assert all(a["timeliness"] in ("on_time", "late") and overdue_alerts[a["incident_id"]] == 1 for a in resolved)
    # (a `downgraded` alert may precede a record that arrives later: it was true when sent)
    assert sum(a["kind"] == "downgraded" for a in alerts) >= 1

    # /metrics has every family of the contract and agrees with /audit
    fams = metric_samples(url)
    for name, kind in CONTRACT_FAMILIES.items():
        assert name in fams and fams[name][0] == kind, name
    inc = audit["incidents"]
    assert total(fams, "cdi_incidents_overdue") == inc["overdue"]
    assert total(fams, "cdi_incidents_pending") == inc["pending"]
    assert total(fams, "cdi_incidents_at_risk") == inc["at_risk"]
    assert total(fams, "cdi_incidents_required") == inc["required"]
    assert total(fams, "cdi_incidents_recorded", timeliness="on_time") == inc["recorded_on_time"]
    assert total(fams, "cdi_incidents_recorded", timeliness="late") == inc["recorded_late"]
    assert total(fams, "cdi_crimes_cancelled") == 5
    for topic, part in (("cc.incidents", "incidents"), ("rms.crimes", "crimes")):
        for outcome in ("valid", "duplicate", "invalid"):
            assert total(fams, "cdi_events", topic=topic, outcome=outcome) == audit["events"][part][outcome]
    wm = fams["cdi_watermark_timestamp_seconds"][1][0].value
    assert abs(wm - parse_time(audit["watermark"]) / 1e6) < 1e-3
    # no unbounded label values
    for _name, (_type, samples) in fams.items():
        for s in samples:
            assert not any(v.startswith("KNT-") for v in s.labels.values())


def test_inputs_compressed_with_any_kafka_codec_are_read(fresh_broker, procs, tmp_path):
    """Producers choose their compression (Java clients often lz4 or zstd): a
    codec the worker's client cannot decompress would fail every fetch of that
    partition, a crash and restart loop. The sample in three parts, each sent
    with another codec (and gzip), gives the expected audit; `capture` reads
    the compressed topics back byte for byte."""
    from pipeline.commands.capture import capture

    url = procs.start_worker("worker", fresh_broker.url)
    wait_ready(procs, url)
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    cut = len(lines) // 4
    settings = Settings(broker=fresh_broker.url)
    for n, codec in enumerate(("lz4", "zstd", "snappy", "gzip")):
        part = tmp_path / f"{codec}.jsonl"
        part.write_bytes(b"".join(lines[n * cut:(n + 1) * cut] if n < 3 else lines[n * cut:]))
        report = replay([part], settings, producer_config={"compression_type": codec})
        assert report.ok, codec
    wait_audit(procs, url, expected_audit())
    got = Counter((topic, payload) for topic, _key, payload, *_ in capture(settings, 0, 2**62))
    assert got == Counter((m.topic, m.payload) for m in read_capture([SAMPLE]))


def test_two_workers_each_answer_for_the_whole_cluster(fresh_broker, procs):
    a = procs.start_worker("worker-a", fresh_broker.url)
    b = procs.start_worker("worker-b", fresh_broker.url)
    wait_ready(procs, a, b)
    # let the group settle so both own partitions before the replay
    time.sleep(3)
    wait_ready(procs, a, b)
    report = replay([SAMPLE], Settings(broker=fresh_broker.url))
    assert report.ok
    expected = expected_audit()
    wait_audit(procs, a, expected)
    wait_audit(procs, b, expected)
    fa, fb = metric_samples(a), metric_samples(b)
    assert total(fa, "cdi_incidents_overdue") + total(fb, "cdi_incidents_overdue") == expected["incidents"]["overdue"]
    assert total(fa, "cdi_incidents_pending") + total(fb, "cdi_incidents_pending") == expected["incidents"]["pending"]
    def overdue(url):
        return {x["incident_id"] for x in get_json(url + "/incidents?status=overdue")}

    procs.wait_until("both workers list every overdue incident",
                     lambda: len(overdue(a)) == expected["incidents"]["overdue"] and overdue(a) == overdue(b),
                     timeout=30)


def test_graceful_restart_recovers_state_without_repeating_alerts(fresh_broker, procs):
    url = procs.start_worker("first", fresh_broker.url)
    wait_ready(procs, url)
    assert replay([SAMPLE], Settings(broker=fresh_broker.url)).ok
    expected = expected_audit()
    wait_audit(procs, url, expected)
    time.sleep(1.5)  # let the last ticks publish
    before = read_topics(fresh_broker.bootstrap, ["cdi.alerts"])
    assert procs.stop("first") in (0, -15)
    url2 = procs.start_worker("second", fresh_broker.url)
    wait_ready(procs, url2)
    wait_audit(procs, url2, expected)
    time.sleep(2)
    after = read_topics(fresh_broker.bootstrap, ["cdi.alerts"])
    ids = Counter(orjson.loads(v)["alert_id"] for _t, _p, _k, v in after)
    assert len(after) == len(before), f"alerts repeated after a graceful restart: {[i for i, n in ids.items() if n > 1][:5]}"


def test_bad_query_and_health_endpoints(fresh_broker, procs):
    url = procs.start_worker("worker", fresh_broker.url)
    assert procs.wait_until("healthz", lambda: http_ok(url + "/healthz"), timeout=60)
    wait_ready(procs, url)
    ready = get_json(url + "/readyz")
    assert ready["ready"] is True
    try:
        get_json(url + "/incidents?status=bogus")
        raise AssertionError("a bad status should be a 400")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
    assert get_json(url + "/audit")["watermark"] is None


def test_a_killed_worker_loses_nothing(fresh_broker, procs, tmp_path):
    """SIGKILL mid-stream, a new worker takes over from the changelogs and the
    committed offsets: every status ends as the offline audit says. Messages
    re-read after the crash are counted again as duplicates or invalid (at
    least once), never applied twice."""
    import threading

    from pipeline.commands.audit import audit_files
    from pipeline.simulation import generate

    capture = tmp_path / "capture.jsonl"
    with open(capture, "wb") as fh:
        for m in generate(hours=80, seed=7):
            fh.write(orjson.dumps({"topic": m.topic, "key": m.key, "payload": m.payload.decode("utf-8", "replace"),
                                   "ts": m.ts_ms}) + b"\n")
    expected = audit_files([str(capture)], Settings()).audit()
    total = sum(sum(c.values()) for c in expected["events"].values())

    first = procs.start_worker("doomed", fresh_broker.url)
    wait_ready(procs, first)
    feeder = threading.Thread(target=replay, args=([str(capture)], Settings(broker=fresh_broker.url)),
                              kwargs={"speed": 80 * 3600 / 8})  # the capture in about 8 s
    feeder.start()

    def partly_done():
        try:
            events = get_json(first + "/audit")["events"]
        except OSError:
            return False
        return sum(sum(c.values()) for c in events.values()) > total // 4

    procs.wait_until("a quarter of the capture applied", partly_done, timeout=60)
    procs.kill("doomed")
    second = procs.start_worker("heir", fresh_broker.url)
    feeder.join(timeout=60)
    wait_ready(procs, second)

    def converged():
        try:
            got = get_json(second + "/audit")
        except OSError:
            return False
        return all(got[k] == expected[k] for k in ("incidents", "by_category", "crimes", "watermark")) and \
            all(got["events"][t]["valid"] == expected["events"][t]["valid"] for t in ("incidents", "crimes"))

    procs.wait_until("the heir's audit to match the offline audit", converged, timeout=120)
    got = get_json(second + "/audit")
    for t in ("incidents", "crimes"):
        assert got["events"][t]["duplicate"] >= expected["events"][t]["duplicate"]
        assert got["events"][t]["invalid"] >= expected["events"][t]["invalid"]
    assert got["recording_rate"] == expected["recording_rate"]
