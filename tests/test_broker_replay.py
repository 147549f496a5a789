"""Capture reading, the local broker and replay, end to end on a real Tansu.

Read-back uses kafka-python ``KafkaConsumer.assign()`` (consumer groups never
finish joining on Tansu) and polls until the expected count arrives: Tansu's
ListOffsets(latest) is wrong after multi-record batches, so end offsets cannot
tell when everything has been read.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.commands import cli, replay as replay_module
from pipeline.kafka.admin import BrokerUnreachable, ensure_topics, wait_for_broker
from pipeline.kafka.local import BrokerError, LocalBroker, free_port
from pipeline.kafka.topics import TopicPlan
from pipeline.capture import capture_line, read_capture
from pipeline.settings import Settings
from pipeline.commands.replay import replay
from support import read_topics

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated. Use files:DeprecationWarning")  # kafka-python 3.0 internals

from support import SAMPLE  # noqa: E402


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- capture reading (no broker) ------------------------------------------------

def test_read_capture_envelopes_bare_and_errors(tmp_path: Path) -> None:
    bare = b'{"schema":"crime.v1","event_id":"e1","crime_id":"46/1/26" , "x":1}'
    lines = [
        capture_line("cc.incidents", "K1", b'{"a":1}', 1000),
        capture_line("rms.crimes", None, b"\xff\xfe not utf-8", None),  # base64 envelope
        b'{"topic":"cc.incidents","key":"K2","payload":null,"partition":3,"offset":7,"ts":5}\n',
        b"\n",
        b"   \r\n",
        bare + b"\r\n",
        b"not json\n",
        b"[1,2]\n",
        b'{"topic":"cc.incidents","key":"K3"}\n',
        b'{"schema":"incident.v9","incident_id":"X"}\n',
        b'{"topic":"t","payload":"eA==","payload_encoding":"base64"}\n',
        b'{"topic":"t","payload":"***","payload_encoding":"base64"}\n',
        b'{"schema":"incident.v1","incident_id":"KNT-1"}',  # last line, no newline
    ]
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"".join(lines))
    errors: list[tuple[str, int, str]] = []
    msgs = list(read_capture(path, on_error=lambda *e: errors.append(e)))
    assert [(m.topic, m.key, m.payload, m.line_no) for m in msgs] == [
        ("cc.incidents", b"K1", b'{"a":1}', 1),
        ("rms.crimes", None, b"\xff\xfe not utf-8", 2),
        ("cc.incidents", b"K2", b"", 3),
        ("rms.crimes", b"46/1/26", bare, 6),
        ("t", None, b"x", 11),
        ("cc.incidents", b"KNT-1", b'{"schema":"incident.v1","incident_id":"KNT-1"}', 13),
    ]
    assert (msgs[0].ts_ms, msgs[2].partition, msgs[2].offset, msgs[2].ts_ms) == (1000, 3, 7, 5)
    assert [e[1] for e in errors] == [7, 8, 9, 10, 12]
    assert all(e[0] == str(path) for e in errors)
    assert "incident.v9" in errors[3][2]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=12), st.integers(20, 160),
       st.booleans(), st.data())
def test_every_line_up_to_the_limit_is_read_and_every_longer_one_reported(tmp_path_factory, shape, limit,
                                                                         last_newline, data) -> None:
    """Lines of any length around ``max_line``: those within it (newline
    included) come out exactly, numbered; each longer one is reported once,
    with its number and its size, and skipped; nothing else is lost."""
    path = tmp_path_factory.mktemp("lines") / "c.jsonl"
    lines = [capture_line("cc.incidents", str(i), b"x" * size if json_ok else b"\xff" * size, None)
             for i, (size, json_ok) in enumerate(shape)]
    if lines and not last_newline:
        lines[-1] = lines[-1].rstrip(b"\n")
    if lines and data.draw(st.booleans(), "a line exactly the limit long"):
        limit = len(lines[data.draw(st.integers(0, len(lines) - 1), "which")])
    path.write_bytes(b"".join(lines))
    errors: list[tuple[str, int, str]] = []
    msgs = list(read_capture(path, on_error=lambda *e: errors.append(e), max_line=limit))
    fits = [len(line) <= limit for line in lines]
    assert [m.line_no for m in msgs] == [n for n, ok in enumerate(fits, 1) if ok]
    assert [m.key for m in msgs] == [str(n - 1).encode() for n, ok in enumerate(fits, 1) if ok]
    assert [(e[1], e[2].split(" bytes,")[0]) for e in errors] == [
        (n, f"{len(line):,}") for n, (line, ok) in enumerate(zip(lines, fits), 1) if not ok]


def test_read_capture_sample_payloads_are_kcat_strings() -> None:
    msgs = list(read_capture(SAMPLE, on_error=lambda *e: pytest.fail(f"sample line rejected: {e}")))
    assert len(msgs) == 2668
    raw = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines()]
    assert [m.payload for m in msgs] == [r["payload"].encode() for r in raw]
    assert [m.key for m in msgs] == [r["key"].encode() for r in raw]


# --- broker ------------------------------------------------------------------------

@pytest.mark.integration
def test_local_broker_lifecycle_and_topics(tansu_binary: str) -> None:
    b = LocalBroker(binary=tansu_binary).start()
    log = b.log_path
    settings = Settings(broker=b.url)
    expected = TopicPlan().configs()["cc.incidents"]
    try:
        assert b.url == f"kafka://127.0.0.1:{b.port}"
        wait_for_broker(settings, timeout=5)
        assert ensure_topics(settings, ["x", "y"], 3) == ["x", "y"]
        assert ensure_topics(settings, ["x", "y", "z"], 3) == ["z"]
        from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            desc = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "x")], config_filter="all")
            configs = {k: v["value"] for k, v in desc["topic"]["x"].items()}
            assert {k: configs.get(k) for k in expected} == expected
            assert len(admin.describe_topics(["x"])[0]["partitions"]) == 3
        finally:
            admin.close()
    finally:
        assert b.stop() is not None
    with pytest.raises(BrokerUnreachable):
        wait_for_broker(settings, timeout=1)
    assert log and not Path(log).exists()  # our own log is removed after a clean stop


@pytest.mark.integration
def test_local_broker_start_failure_shows_log(tansu_binary: str, broker: LocalBroker) -> None:
    with pytest.raises(BrokerError, match="already in use"):
        LocalBroker(port=broker.port, binary=tansu_binary).start()
    with pytest.raises(BrokerError, match="Last lines"):
        LocalBroker(binary="/bin/false", startup_timeout=5).start()


# --- replay ------------------------------------------------------------------------

@pytest.mark.integration
def test_replay_sample_byte_for_byte(fresh_broker: LocalBroker) -> None:
    settings = Settings(broker=fresh_broker.url)
    out = io.StringIO()
    report = replay([str(SAMPLE)], settings, stream=out)
    assert report.ok and not report.skipped, out.getvalue()
    expected = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines()]
    want = Counter(e["topic"] for e in expected)
    assert dict(report.sent) == dict(want) == {"cc.incidents": 2190, "rms.crimes": 478}

    got = read_topics(fresh_broker.bootstrap, sorted(want), len(expected))
    assert Counter(t for t, *_ in got) == want
    assert Counter((t, k, v) for t, _, k, v in got) == Counter(
        (e["topic"], e["key"].encode(), e["payload"].encode()) for e in expected)
    # Keys are honoured by the partitioner: one key, one partition, file order kept.
    by_key: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for t, p, k, v in got:
        by_key[(t, k)].append(v)
        partitions[(t, k)].add(p)
    assert all(len(ps) == 1 for ps in partitions.values())
    file_order: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    for e in expected:
        file_order[(e["topic"], e["key"].encode())].append(e["payload"].encode())
    assert by_key == file_order
    assert len({p for _, p, _, _ in got}) == settings.partitions


@pytest.mark.integration
def test_replay_bare_events_routed_by_schema(broker: LocalBroker, tmp_path: Path) -> None:
    settings = Settings(broker=broker.url, incidents_topic=_unique("it.cc"), crimes_topic=_unique("it.rms"))
    lines = [orjson.loads(line)["payload"].encode() for line in SAMPLE.read_bytes().splitlines()[:400]]
    bare = [line for line in lines if line.startswith(b'{"schema":"')]  # routable bare events
    bad = b'{"schema":"incident.v9","event_id":"x","incident_id":"KNT-X"}'
    path = tmp_path / "bare.jsonl"
    path.write_bytes(b"\n".join(bare[:150] + [bad, b"", b"{truncated"] + bare[150:]) + b"\n")
    out = io.StringIO()
    report = replay([str(path)], settings, stream=out)
    incidents = [b for b in bare if b'"schema":"incident.v1"' in b]
    crimes = [b for b in bare if b'"schema":"crime.v1"' in b]
    assert incidents and crimes and len(incidents) + len(crimes) == len(bare)
    assert dict(report.sent) == {settings.incidents_topic: len(incidents), settings.crimes_topic: len(crimes)}
    assert report.ok
    assert [line for _, line, _ in report.skipped] == [151, 153]
    assert f"{path}:151: not sent:" in out.getvalue() and "incident.v9" in out.getvalue()

    got = read_topics(broker.bootstrap, [settings.incidents_topic, settings.crimes_topic], len(bare))
    by_topic: dict[str, Counter[bytes]] = defaultdict(Counter)
    for t, _, k, v in got:
        by_topic[t][v] += 1
        obj = orjson.loads(v)
        assert k == (obj.get("incident_id") if t == settings.incidents_topic else obj.get("crime_id")).encode()
    assert by_topic[settings.incidents_topic] == Counter(incidents)
    assert by_topic[settings.crimes_topic] == Counter(crimes)
    assert bad not in {v for _, _, _, v in got}


@pytest.mark.integration
def test_replay_invalid_envelope_payloads_go_out_unchanged(broker: LocalBroker, tmp_path: Path) -> None:
    topic = _unique("it.raw")
    payloads = [b"\xff\x00 binary", b"{not json", b"", b'{"schema":"incident.v1"}', "caf\u00e9".encode()]
    path = tmp_path / "raw.jsonl"
    path.write_bytes(b"".join(capture_line(topic, f"k{i}", p, None) for i, p in enumerate(payloads)))
    assert b"payload_encoding" in path.read_bytes()
    report = replay([str(path)], Settings(broker=broker.url), stream=io.StringIO())
    assert report.ok and report.sent[topic] == len(payloads)
    got = read_topics(broker.bootstrap, [topic], len(payloads))
    assert sorted((k, v) for _, _, k, v in got) == sorted((f"k{i}".encode(), p) for i, p in enumerate(payloads))


@pytest.mark.integration
def test_replay_paced_by_event_time(broker: LocalBroker, tmp_path: Path) -> None:
    topic = _unique("it.paced")
    path = tmp_path / "paced.jsonl"
    path.write_bytes(b"".join(capture_line(topic, "k", b"{}", 1_000_000 + 500 * i) for i in range(5)))
    t0 = time.monotonic()
    report = replay([str(path)], Settings(broker=broker.url), speed=2.0, stream=io.StringIO())
    assert report.ok and 0.9 <= time.monotonic() - t0 < 10  # 2 s of event time at 2x


def test_replay_unreachable_broker_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The run failed (exit 1): nothing wrong with the command line, the broker is not there."""
    monkeypatch.setattr(replay_module, "CONNECT_TIMEOUT", 1.0)
    port = free_port()
    t0 = time.monotonic()
    code = cli.main(["replay", str(SAMPLE), "--broker", f"kafka://127.0.0.1:{port}", "--no-progress"])
    assert code == 1 and time.monotonic() - t0 < 10
    assert "no Kafka broker answered" in capsys.readouterr().err
    with pytest.raises(BrokerUnreachable):
        replay([str(SAMPLE)], Settings(broker=f"kafka://127.0.0.1:{port}"), connect_timeout=0.5)


@pytest.mark.integration
def test_replay_cli_summary_and_exit_status(broker: LocalBroker, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    topic = _unique("it.cli")
    path = tmp_path / "cli.jsonl"
    path.write_bytes(b"".join(capture_line(topic, str(i), b'{"n":%d}' % i, None) for i in range(50)))
    assert cli.main(["replay", str(path), "--broker", broker.url, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert topic in err and "total" in err and " 50 " in err
    assert cli.main(["replay", str(tmp_path / "missing.jsonl"), "--broker", broker.url]) == 2


@pytest.mark.integration
def test_replay_counts_undelivered_messages(broker: LocalBroker, tmp_path: Path) -> None:
    """A message the broker refuses (too large for the producer) is counted as failed: exit 1."""
    topic = _unique("it.big")
    path = tmp_path / "big.jsonl"
    path.write_bytes(capture_line(topic, "ok", b"{}", None) + capture_line(topic, "big", b"x" * 200_000, None))
    report = replay([str(path)], Settings(broker=broker.url), stream=io.StringIO(),
                    producer_config={"max_request_size": 100_000})
    assert report.sent[topic] == 1 and report.failed[topic] == 1 and not report.ok
    assert any("MessageSizeTooLarge" in e for e in report.errors)


def test_base64_envelope_roundtrip() -> None:
    line = capture_line("t", b"\xff", b"\x00\xff", 1)
    env = orjson.loads(line)
    assert env["payload_encoding"] == "base64" and base64.b64decode(env["payload"]) == b"\x00\xff"
    assert env["key_encoding"] == "base64"
