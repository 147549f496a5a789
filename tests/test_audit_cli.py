"""``cdiwatch audit`` as a user runs it (contract §5): a subprocess, real files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.core.vocabulary import label
from support import assert_same_audit

REPO = Path(__file__).resolve().parents[1]
from support import SAMPLE_DIR  # noqa: E402
SAMPLE = SAMPLE_DIR / "capture.jsonl"
EXPECTED = json.loads((SAMPLE_DIR / "expected-audit.json").read_text())


def cdiwatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_audit_json_of_the_sample_equals_expected_audit():
    proc = cdiwatch("audit", str(SAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    assert_same_audit(json.loads(proc.stdout), EXPECTED)
    # the sample has invalid messages, but every line is a capture message
    assert proc.stderr == "cdiwatch audit: read 2,668 lines: 2,668 messages, 0 skipped\n"


def test_audit_table_shows_the_recording_rate():
    proc = cdiwatch("audit", str(SAMPLE))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Recording rate: 92.3%" in out
    assert "between 89.4% and 94.5%" in out
    for category in EXPECTED["by_category"]:
        assert label(category) in out  # human labels (the board and report use the same words)
    assert "Public protection referral" in out and "999 call" in out  # the per-channel panel


def test_offline_audit_does_not_import_faust(tmp_path):
    code = ("import sys; from pipeline.commands.cli import main; "
            f"rc = main(['audit', {str(SAMPLE)!r}, '--json']); "
            "assert 'faust' not in sys.modules, 'faust imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_malformed_capture_lines_are_reported_with_line_numbers_and_counted(tmp_path):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    damaged = list(lines)
    damaged.insert(10, b"this is not json\n")  # line 11
    damaged.insert(100, b'["an", "array"]\n')  # line 101
    damaged.insert(200, b'{"topic": "cc.incidents", "key": "k"}\n')  # line 201: envelope without payload
    damaged.insert(300, b"\n")  # line 301: blank lines are skipped silently
    damaged.insert(400, b'{"schema": "alert.v1", "alert_id": "x"}\n')  # line 401: not an input schema
    damaged.insert(500, b'{"topic": "cdi.alerts", "key": null, "payload": "{}"}\n')  # line 501: not an input topic
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"".join(damaged))
    proc = cdiwatch("audit", str(path), "--json")
    assert proc.returncode == 1, proc.stderr  # lines it could not read: problems found
    assert_same_audit(json.loads(proc.stdout), EXPECTED)  # nothing else changed
    for line_no in (11, 101, 201, 401, 501):
        assert f"{path}:{line_no}:" in proc.stderr, proc.stderr
    assert f"{path}:301:" not in proc.stderr
    assert "read 2,673 lines: 2,668 messages, 5 skipped" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_truncated_last_line_is_reported_not_a_crash(tmp_path):
    text = SAMPLE.read_bytes()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(text + b'{"topic": "cc.incidents", "payl')
    proc = cdiwatch("audit", str(path))
    assert proc.returncode == 1, proc.stderr
    last_line = text.count(b"\n") + 1
    assert f"{path}:{last_line}:" in proc.stderr


def test_a_line_longer_than_any_capture_line_is_skipped_unread_and_the_rest_is_read(tmp_path):
    """A file with a huge line (here 400 MiB of zero bytes: a disk image
    given by mistake) must not take the memory: the line is reported and
    skipped, a piece at a time; the lines after it are read."""
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    path = tmp_path / "holed.jsonl"
    with open(path, "wb") as fh:
        fh.write(b"".join(lines[:50]))
        fh.seek(fh.tell() + (400 << 20))  # a sparse hole: reads as zero bytes, takes no disk
        fh.write(b"\n" + b"".join(lines[50:]))
    # the peak RSS of the command's processes, measured from a fresh parent
    # (this one's children include earlier tests' workers)
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "pipeline", "audit", str(path),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # a line it could not read
    assert_same_audit(json.loads(proc.stdout), EXPECTED)
    assert f"{path}:51: skipped: 419,430,401 bytes, over the 67,108,864-byte limit of a line" in proc.stderr
    assert "read 2,669 lines: 2,668 messages, 1 skipped" in proc.stderr
    peak_mib = int(proc.stderr.rsplit("\n", 2)[-2]) / 1024
    assert peak_mib < 300, f"the 400 MiB line was held in memory: a process peaked at {peak_mib:.0f} MiB"


def test_bare_events_and_split_files_give_the_same_audit(tmp_path):
    """Bare events are routed by schema; several files are one capture."""
    bare, envelopes = [], []
    for i, line in enumerate(SAMPLE.read_bytes().splitlines()):
        env = orjson.loads(line)
        try:
            event = orjson.loads(env["payload"])
        except orjson.JSONDecodeError:
            event = None
        own_topic = isinstance(event, dict) and (
            (event.get("schema"), env["topic"]) in (("incident.v1", "cc.incidents"), ("crime.v1", "rms.crimes")))
        if own_topic and i % 2 == 0 and "\n" not in env["payload"]:
            bare.append(env["payload"].encode())  # the payload bytes, unchanged, as a line
        else:
            envelopes.append(line)
    assert len(bare) > 1000
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(bare) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\r\n".join(envelopes))  # CRLF and no final newline
    proc = cdiwatch("audit", str(tmp_path / "b.jsonl"), str(tmp_path / "a.jsonl"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert_same_audit(json.loads(proc.stdout), EXPECTED)


def test_missing_file_exits_2_with_a_clear_message(tmp_path):
    missing = tmp_path / "nope.jsonl"
    proc = cdiwatch("audit", str(missing), "--json")
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_url_against_nothing_is_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cdiwatch("audit", "--url", f"http://127.0.0.1:{port}", "--json", timeout=60)
    assert proc.returncode != 0
    assert f"cannot read http://127.0.0.1:{port}/audit" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [[], ["--url", "http://127.0.0.1:1", "x.jsonl"]])
def test_files_or_url_but_not_both_nor_neither(args):
    proc = cdiwatch("audit", *args)
    assert proc.returncode == 2
    assert "cdiwatch audit:" in proc.stderr


@pytest.mark.parametrize("retention_days", [30, 1])
def test_the_reader_process_changes_nothing(tmp_path, retention_days):
    """The offline audit claims event ids in its reader process (``jobs=2``) or
    in one process (``jobs=1``): the audit, the rejection reasons and the
    message count are the monitor's own, message by message, also when ids
    expire and stale first copies reach the ledgers (a one-day retention:
    the deferred ledger then settles every two hours of event time); and on
    the simulated capture the deferred monitor's audit is the eager one's."""
    import time

    from pipeline.capture import write_capture
    from pipeline.capture.reading import read_payloads
    from pipeline.commands.audit import audit_files
    from pipeline.core.monitor import Monitor
    from pipeline.settings import Settings
    from pipeline.simulation import Simulator

    path = tmp_path / "capture.jsonl"
    sim = Simulator(hours=24 * 8, seed=5)
    write_capture(((m.topic, m.key, m.payload, m.ts_ms) for m in sim), str(path))
    settings = Settings(state_retention=retention_days * 86400.0)
    now = time.time_ns() // 1000
    monitor = Monitor(settings.core(), deferred=True)
    n = 0
    for topic, payload in read_payloads([str(path), str(SAMPLE)], "cc.incidents", "rms.crimes", lambda *a: None):
        monitor.feed(topic, payload, now)
        n += 1
    deferred, eager = Monitor(settings.core(), deferred=True), Monitor(settings.core())  # eager: as a worker
    for topic, payload in read_payloads([str(path)], "cc.incidents", "rms.crimes", lambda *a: None):
        deferred.feed(topic, payload, now)
        eager.feed(topic, payload, now)
    assert eager.audit() == deferred.audit()
    for jobs in (1, 2):
        result = audit_files([str(path), str(SAMPLE)], settings, now_us=now, jobs=jobs)
        assert result.audit() == monitor.audit(), jobs
        assert result.monitor.rejections == monitor.rejections
        assert result.messages == n
    if retention_days == 1:
        assert monitor.incident.recounted or monitor.events.ids.forgotten  # ids did expire


@pytest.mark.parametrize("retention_days", [30, 1])
def test_a_capture_after_an_unrelated_one_gives_the_same_audit_eager_and_deferred(tmp_path, retention_days):
    """The sample read after a simulated capture nine months older: the watermark
    jumps past the state retention and every crime of the first capture is
    evicted at once. A *seen* notice still on its way to a linked crime must
    reach it before that, in the deferred monitor as in the eager one (it once
    waited for the next settle there, and 307 crimes more were counted
    "without incident")."""
    import time

    from pipeline.capture import write_capture
    from pipeline.capture.reading import read_payloads
    from pipeline.core.monitor import Monitor
    from pipeline.settings import Settings
    from pipeline.simulation import Simulator

    path = tmp_path / "capture.jsonl"
    write_capture(((m.topic, m.key, m.payload, m.ts_ms) for m in Simulator(hours=24 * 8, seed=5)), str(path))
    now = time.time_ns() // 1000
    settings = Settings(state_retention=retention_days * 86400.0)
    deferred, eager = Monitor(settings.core(), deferred=True), Monitor(settings.core())
    for topic, payload in read_payloads([str(path), str(SAMPLE)], "cc.incidents", "rms.crimes", lambda *a: None):
        deferred.feed(topic, payload, now)
        eager.feed(topic, payload, now)
    assert eager.audit() == deferred.audit()


def test_an_audit_stopped_early_leaves_no_reader_behind(tmp_path):
    """A consumer of the reader's batches that stops after the first few (an
    error in the caller, a ^C) stops the reader process and the thread that
    receives its frames, even when both wait on a full pipe or queue."""
    import multiprocessing
    import threading
    import time

    from pipeline.capture import write_capture
    from pipeline.capture.validated import claimed_batches
    from pipeline.settings import Settings
    from pipeline.simulation import Simulator

    path = tmp_path / "capture.jsonl"
    write_capture(((m.topic, m.key, m.payload, m.ts_ms) for m in Simulator(hours=24 * 40, seed=5)), str(path))
    batches = claimed_batches([str(path)], Settings().core(), time.time_ns() // 1000, jobs=2)
    first = next(batches)
    time.sleep(0.5)  # the reader fills the pipe and the queue meanwhile
    assert first and multiprocessing.active_children()
    batches.close()
    assert not multiprocessing.active_children()
    assert not [t for t in threading.enumerate() if t.name == "capture-frames"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_event_the_ledger_cannot_hold_is_a_processing_error_and_the_rest_goes_on(tmp_path, jobs):
    """An incident past the most events one may hold: the event that does not
    fit is remembered as a processing error (a worker dead-letters it with
    reason ``processing_error``), never raised; every other message, before
    and after it in the same batch, is applied."""
    import time

    from pipeline.capture import write_capture
    from pipeline.commands.audit import audit_files
    from pipeline.core.vocabulary import MAX_EVENTS_PER_INCIDENT
    from pipeline.settings import Settings
    from scenario import closed, opened, payload

    events = [opened("BIG", at=0)] + [closed("BIG", at=1 + i / 1000, disposition="crime_recorded")
                                      for i in range(MAX_EVENTS_PER_INCIDENT)]
    events.append(opened("AFTER", at=2, category="burglary"))
    path = tmp_path / "capture.jsonl"
    write_capture((("cc.incidents", None, payload(e), 0) for e in events), str(path))
    result = audit_files([str(path)], Settings(), now_us=time.time_ns() // 1000, jobs=jobs)
    assert [event_id for event_id, _ in result.monitor.processing_errors] == [events[-2]["event_id"]]
    assert "StateLimit" in result.monitor.processing_errors[0][1]
    assert result.messages == len(events) and not result.monitor.rejections
    assert "AFTER" in result.monitor.incidents.incidents
    assert len(result.monitor.incidents.events_of("BIG")) == MAX_EVENTS_PER_INCIDENT
