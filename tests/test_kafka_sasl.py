"""Kafka SASL for real (issue 10): replay and a worker log in with PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512, configured only through ``CDI_*``.

The test broker cannot authenticate SASL users, so a SASL-terminating proxy
(:mod:`sasl_proxy`) stands in front of it and Tansu advertises the proxy's
port: every connection of every client (kafka-python's admin and producer,
aiokafka's consumer, producer, recovery consumer, view reader and probe)
must complete a real SASL exchange. A wrong password fails in bounded time
with one line that neither shows the password nor hangs. ``SASL_SSL``: stunnel
(TLS) in front of the proxy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pipeline.kafka.local import LocalBroker, free_port
from sasl_proxy import SaslProxy
from support import ROOT, SAMPLE, Processes, http_ok
from test_kafka_tls import start_worker, wait_for_sample_audit

pytestmark = pytest.mark.integration

USER, PASSWORD = "svc-cdiwatch", "sasl-Secret-5e0a"


@pytest.fixture
def sasl_broker(tmp_path):
    from conftest import _binary_or_skip

    tansu_port = free_port()
    with SaslProxy(tansu_port, {USER: PASSWORD}) as proxy, \
            LocalBroker(tansu_port, binary=_binary_or_skip(), advertised_port=proxy.port) as broker:
        yield proxy, broker


def sasl_env(proxy: SaslProxy, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    return {"CDI_BROKER": f"kafka://127.0.0.1:{proxy.port}", "CDI_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CDI_KAFKA_SASL_MECHANISM": mechanism, "CDI_KAFKA_SASL_USERNAME": USER,
            "CDI_KAFKA_SASL_PASSWORD": password}


def replay_cli(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDI_")}
    return subprocess.run([sys.executable, "-m", "pipeline", "replay", str(SAMPLE), "--no-progress"],
                          env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_replay_logs_in_with_each_mechanism_and_a_wrong_password_fails_cleanly(sasl_broker):
    proxy, _broker = sasl_broker
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        done = replay_cli(sasl_env(proxy, mechanism))
        assert done.returncode == 0, f"{mechanism}: {done.stderr}"
        assert "2,668" in done.stderr
        assert (mechanism, USER, True) in proxy.logins
    assert all(ok for _m, _u, ok in proxy.logins)

    t0 = time.monotonic()
    done = replay_cli(sasl_env(proxy, "SCRAM-SHA-512", "wrong-password"))
    assert done.returncode == 1 and time.monotonic() - t0 < 30
    [line] = done.stderr.strip().splitlines()
    assert "SASL mechanism, user and password" in line and "wrong-password" not in line and PASSWORD not in line
    assert ("SCRAM-SHA-512", USER, False) in proxy.logins


def test_worker_over_scram_reaches_the_sample_audit(sasl_broker, tmp_path):
    proxy, broker = sasl_broker
    procs = Processes(tmp_path, broker)
    try:
        env = sasl_env(proxy, "SCRAM-SHA-512")
        url = start_worker(procs, "worker", env)
        procs.wait_until("the worker ready over SASL", lambda: http_ok(url + "/readyz"), timeout=90)
        done = replay_cli(sasl_env(proxy, "SCRAM-SHA-256"))
        assert done.returncode == 0, done.stderr
        wait_for_sample_audit(procs, url)
        # the worker's clients each logged in (admin, producer, consumer, probe, view reader, recovery...)
        assert sum(1 for m, _u, ok in proxy.logins if m == "SCRAM-SHA-512" and ok) >= 4
        assert not [login for login in proxy.logins if not login[2]]
        assert procs.stop("worker") in (0, -15)
        assert PASSWORD not in (tmp_path / "worker.log").read_text(encoding="utf-8", errors="replace")
    finally:
        procs.stop_all()


def test_sasl_over_tls_replay(tmp_path):
    """SASL_SSL: stunnel (TLS) -> the SASL proxy -> Tansu, which advertises stunnel's port."""
    from conftest import _binary_or_skip
    from tls import Stunnel, make_pki, require_tls_tools

    stunnel, openssl = require_tls_tools()
    pki = make_pki(tmp_path / "pki", openssl)
    tansu_port = free_port()
    with SaslProxy(tansu_port, {USER: PASSWORD}) as proxy:
        front = Stunnel(stunnel, pki, proxy.port, tmp_path).start()
        try:
            with LocalBroker(tansu_port, binary=_binary_or_skip(), advertised_port=front.port):
                env = {**sasl_env(proxy, "SCRAM-SHA-512"), "CDI_BROKER": f"kafka://127.0.0.1:{front.port}",
                       "CDI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CDI_KAFKA_SSL_CAFILE": str(pki.ca_cert)}
                done = replay_cli(env)
                assert done.returncode == 0, done.stderr
                assert "2,668" in done.stderr and ("SCRAM-SHA-512", USER, True) in proxy.logins
                assert "accepted connection" in front.log.read_text()
        finally:
            front.stop()
