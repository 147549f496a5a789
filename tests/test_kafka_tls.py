"""Kafka over real TLS (issue 10): a worker, ``cdiwatch replay`` and ``cdiwatch
capture`` reach a broker that only speaks TLS, configured only through
``CDI_BROKER`` and ``CDI_KAFKA_*``.

The broker is Tansu behind Debian's stunnel (:mod:`tls`), advertising
stunnel's port, so every connection of every client (bootstrap, metadata,
group coordinator, fetches, the worker's probe and view reader) goes through
TLS. Proven: the sample capture gives exactly the expected audit; with client
certificates required (mutual TLS) it works with ``CDI_KAFKA_SSL_CERTFILE`` /
``KEYFILE`` and, without them or with the wrong CA, every command fails in
bounded time with one line that says what to fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline.capture import read_capture
from pipeline.kafka.local import free_port
from support import EXPECTED_AUDIT, ROOT, SAMPLE, Processes, get_json, http_ok, same_audit, worker_env
from tls import tls_broker

pytestmark = pytest.mark.integration

SAMPLE_MESSAGES = 2668


def cdiwatch(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """``cdiwatch ARGS`` as a subprocess with exactly the given ``CDI_*`` settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDI_")}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env={**base, **env}, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds) of a started command; fails the test on a hang."""
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args[3:]} still running after {timeout:g} s\n{err[-2000:]}")
    return proc.returncode, out, err, time.monotonic() - t0


def start_worker(procs: Processes, name: str, env: dict[str, str]) -> str:
    """A worker configured by environment only (no --broker flag); its base URL."""
    port = free_port()
    tuning = {"CDI_SESSION_TIMEOUT", "CDI_TICK_INTERVAL", "CDI_LOG_LEVEL"}  # worker_env's test timings
    full = {k: v for k, v in worker_env().items() if not k.startswith("CDI_") or k in tuning}
    full.update(env, CDI_WEB_PORT=str(port), CDI_DATA_DIR=str(procs.tmp / f"data-{name}"))
    procs.start(name, [sys.executable, "-m", "pipeline", "worker"], full)
    return f"http://127.0.0.1:{port}"


def wait_for_sample_audit(procs: Processes, url: str) -> dict:
    expected = json.loads(EXPECTED_AUDIT.read_text())
    last: dict = {}

    def check():
        nonlocal last
        try:
            last = get_json(url + "/audit")
        except OSError:
            return False
        return same_audit(last, expected)

    try:
        procs.wait_until(f"{url}/audit to equal the expected sample audit", check, timeout=120)
    except BaseException:
        print("last audit:", json.dumps(last)[:2000])
        raise
    return last


def replay_sample(env: dict[str, str]) -> None:
    code, _out, err, _s = finish(cdiwatch("replay", str(SAMPLE), "--no-progress", env=env), timeout=120)
    assert code == 0, err
    assert f"{SAMPLE_MESSAGES:,}" in err and "failed" in err, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def test_worker_replay_and_capture_over_tls(tmp_path, procs):
    """Server-authenticated TLS (the CA only): the whole sample path through TLS."""
    with tls_broker(tmp_path) as broker:
        procs.broker = broker
        env = broker.env()
        assert set(env) == {"CDI_BROKER", "CDI_KAFKA_SECURITY_PROTOCOL", "CDI_KAFKA_SSL_CAFILE"}
        url = start_worker(procs, "worker", env)
        procs.wait_until("the worker ready over TLS", lambda: http_ok(url + "/readyz"), timeout=90)

        replay_sample(env)
        audit = wait_for_sample_audit(procs, url)
        assert audit["events"]["incidents"]["invalid"] > 0  # the dead-letter path wrote through TLS too

        # capture reads the inputs back over TLS: exactly what was replayed
        out = tmp_path / "captured.jsonl"
        now = time.time()
        frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
        to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))
        code, _o, err, _s = finish(cdiwatch("capture", "--from", frm, "--to", to, "-o", str(out), "--no-progress",
                                            env=env), timeout=120)
        assert code == 0, err
        got = Counter((m.topic, m.key, m.payload) for m in read_capture([out]))
        sent = Counter((m.topic, m.key, m.payload) for m in read_capture([SAMPLE]))
        assert got == sent

        # and nothing reached the broker but through the TLS front
        assert broker.stunnel.log.read_text().count("accepted connection") >= 5


def test_mutual_tls_works_with_a_client_certificate_and_fails_cleanly_without(tmp_path, procs):
    with tls_broker(tmp_path, verify_clients=True) as broker:
        procs.broker = broker
        ok_env = broker.env(client_cert=True)

        # without a client certificate, with a CA that did not sign the broker's
        # certificate, and in plaintext: each command fails in bounded time, one line
        failing = {
            "replay without a client certificate": (
                cdiwatch("replay", str(SAMPLE), "--no-progress", env=broker.env()),
                "requires a client certificate (mutual TLS): set CDI_KAFKA_SSL_CERTFILE and CDI_KAFKA_SSL_KEYFILE"),
            "worker without a client certificate": (
                cdiwatch("worker", "--web-port", str(free_port()), "--data-dir", str(tmp_path / "data-x"),
                         env=broker.env()),
                "requires a client certificate"),
            "capture without a client certificate": (
                cdiwatch("capture", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z",
                         "-o", str(tmp_path / "never.jsonl"), env=broker.env()),
                "requires a client certificate"),
            "replay trusting another CA": (
                cdiwatch("replay", str(SAMPLE), "--no-progress",
                         env=broker.env(client_cert=True, CDI_KAFKA_SSL_CAFILE=str(broker.pki.other_ca_cert))),
                "TLS certificate was refused"),
            "replay in plaintext": (
                cdiwatch("replay", str(SAMPLE), "--no-progress", env={"CDI_BROKER": broker.url}),
                "does the broker expect TLS? (CDI_KAFKA_SECURITY_PROTOCOL)"),
        }
        for what, (proc, expected) in failing.items():
            code, out, err, seconds = finish(proc, timeout=60)
            line = one_line(err)
            assert code == 1, f"{what}: exit {code}: {err}"
            assert expected in line, f"{what}: {line}"
            assert line.startswith("cdiwatch "), line
            assert not out
        assert not (tmp_path / "never.jsonl").exists()

        # with the client certificate: the worker and replay work end to end
        url = start_worker(procs, "worker", ok_env)
        procs.wait_until("the worker ready over mutual TLS", lambda: http_ok(url + "/readyz"), timeout=90)
        replay_sample(ok_env)
        wait_for_sample_audit(procs, url)
        log = broker.stunnel.log.read_text()
        assert "peer did not return a certificate" in log and "Certificate accepted" in log
