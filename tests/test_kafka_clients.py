"""Kafka security settings reach every client (issue 10, SASL and TLS options).

The test broker cannot authenticate SASL users, so this proves the other half
without one: the option builders turn ``CDI_KAFKA_*`` into each library's
arguments, and *every place a client is built* (patched constructors record
their keyword arguments) gets the protocol, the TLS context, the mechanism,
the user and the password. The password stays a ``Secret`` in every
options dict a worker keeps; only the constructor call sees the string.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pipeline.settings import Secret

from pipeline.kafka import client as kafka_client
from pipeline.kafka.client import aiokafka_options, describe, kafka_python_options, reveal
from pipeline.settings import Settings, load_settings
from support import SAMPLE

PASSWORD = "pw-Zq7!sasl-secret"
USER = "svc-cdiwatch"


class Stop(BaseException):
    """Raised by a fake client once its arguments are recorded: nothing connects."""


class Recorder:
    """Fake Kafka client classes that record their constructor's keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def fake(self, name: str, *, start_ok: bool = False, stop_in_init: bool = False):
        rec = self

        class Fake:
            def __init__(self, *args, **kwargs):
                rec.calls.append((name, kwargs))
                if stop_in_init:
                    raise Stop(name)

            async def start(self):
                if not start_ok:
                    raise Stop(name)

            async def stop(self):
                pass

            async def flush(self):
                pass

            async def send(self, topic, value=None, key=None, partition=None, headers=None):
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(type("Meta", (), {"offset": 0})())
                return fut

        return Fake

    def only(self, name: str) -> dict:
        found = [kw for n, kw in self.calls if n == name]
        assert len(found) == 1, f"{name}: {len(found)} constructions"
        return found[0]


def sasl_settings(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **extra) -> Settings:
    return Settings(broker="kafka://broker-a.example:9093,broker-b.example:9093", kafka_security_protocol=protocol,
                    kafka_sasl_mechanism=mechanism, kafka_sasl_username=USER,
                    kafka_sasl_password=Secret(PASSWORD), **extra)


def assert_secured(kwargs: dict, settings: Settings, kafka_python: bool = False) -> None:
    assert kwargs["security_protocol"] == settings.kafka_security_protocol
    assert kwargs["sasl_mechanism"] == settings.kafka_sasl_mechanism
    assert kwargs["sasl_plain_username"] == USER
    assert kwargs["sasl_plain_password"] == PASSWORD and type(kwargs["sasl_plain_password"]) is str
    servers = settings.bootstrap_servers
    assert kwargs["bootstrap_servers"] == (servers.split(",") if kafka_python else servers)
    if settings.kafka_security_protocol.endswith("SSL"):
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    else:
        assert "ssl_context" not in kwargs


# ----------------------------------------------------------------- the option builders


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_builders_carry_mechanism_user_and_password(protocol, mechanism):
    s = sasl_settings(protocol, mechanism)
    for options, kp in ((aiokafka_options(s), False), (kafka_python_options(s), True)):
        assert isinstance(options["sasl_plain_password"], Secret)
        assert PASSWORD not in repr(options) and PASSWORD not in str(options)
        assert_secured(reveal(options), s, kafka_python=kp)
    text = describe(s)
    assert mechanism in text and USER in text and PASSWORD not in text


def test_plaintext_and_ssl_carry_no_sasl(tmp_path):
    from tls import make_pki, require_tls_tools

    assert aiokafka_options(Settings()) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    _stunnel, openssl = require_tls_tools()
    pki = make_pki(tmp_path, openssl)
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca_cert, kafka_ssl_certfile=pki.client_cert,
                 kafka_ssl_keyfile=pki.client_key)
    for options in (aiokafka_options(s), kafka_python_options(s)):
        assert options["security_protocol"] == "SSL" and not any(k.startswith("sasl") for k in options)
        ctx = options["ssl_context"]
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert "client certificate" in describe(s)


def test_password_file_is_read_once_into_a_secret(tmp_path, monkeypatch):
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("CDI_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CDI_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("CDI_KAFKA_SASL_USERNAME", USER)
    monkeypatch.setenv("CDI_KAFKA_SASL_PASSWORD_FILE", str(secret))
    s = load_settings()
    assert isinstance(s.kafka_sasl_password, Secret) and s.kafka_sasl_password.get_secret_value() == PASSWORD
    assert_secured(reveal(aiokafka_options(s)), s)


def test_sasl_without_credentials_is_one_configuration_line(monkeypatch):
    monkeypatch.setenv("CDI_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CDI_KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(Exception) as info:
        load_settings()
    assert "CDI_KAFKA_SASL_USERNAME" in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------- every place a client is built


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    import aiokafka
    import aiokafka.admin
    import kafka
    import kafka.admin

    from pipeline.kafka import diagnose
    from pipeline.stream import outbox, runner, store, views

    rec = Recorder()
    monkeypatch.setattr(outbox, "AIOKafkaProducer", rec.fake("worker producer", start_ok=True))
    monkeypatch.setattr(runner, "AIOKafkaConsumer", rec.fake("worker consumer"))
    monkeypatch.setattr(store, "AIOKafkaConsumer", rec.fake("recovery consumer"))
    monkeypatch.setattr(views, "AIOKafkaConsumer", rec.fake("view reader"))
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", rec.fake("broker probe"))
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", rec.fake("demo consumer"))
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", rec.fake("demo producer"))
    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", rec.fake("admin", stop_in_init=True))
    monkeypatch.setattr(kafka, "KafkaProducer", rec.fake("replay producer", stop_in_init=True))
    monkeypatch.setattr(kafka, "KafkaConsumer", rec.fake("capture consumer", stop_in_init=True))
    monkeypatch.setattr(diagnose, "diagnose", lambda settings, timeout=3.0: None)  # no socket
    return rec


@pytest.mark.parametrize("protocol,mechanism", [("SASL_SSL", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "PLAIN"),
                                                ("SASL_SSL", "SCRAM-SHA-256")])
def test_every_worker_client_gets_the_security_settings(recorder, protocol, mechanism, tmp_path):
    from pipeline.stream.app import Worker

    s = sasl_settings(protocol, mechanism, data_dir=tmp_path)
    worker = Worker(s)
    # what the worker keeps for the clients it builds later holds the password as a secret
    for kept in (worker.client_options, worker.runner.client_options, worker.runner.store.client_options,
                 worker.view.client_options, worker.outbox._config):
        assert isinstance(kept["sasl_plain_password"], Secret), kept
        assert PASSWORD not in repr(kept)

    async def build_all():
        await worker.outbox.start()
        with pytest.raises(Stop):
            await worker.runner.run()
        with pytest.raises(Stop):
            await worker.runner.store.recover([("cdiwatch-incident-changelog", 0)])
        with pytest.raises(Stop):
            await worker.view.run()
        with pytest.raises(Stop):
            await worker._probe()

    asyncio.run(build_all())
    for name in ("worker producer", "worker consumer", "recovery consumer", "view reader", "broker probe"):
        assert_secured(recorder.only(name), s)
    # the inputs' aborted transactions are not events
    assert recorder.only("worker consumer")["isolation_level"] == "read_committed"
    # one TLS context for the whole process
    if protocol == "SASL_SSL":
        assert len({id(kw["ssl_context"]) for _n, kw in recorder.calls}) == 1
    # faust runs the process without Kafka clients of its own: no credentials to give it
    assert worker.app.boot_strategy.enable_kafka is False


def test_admin_replay_and_capture_get_the_security_settings(recorder, monkeypatch):
    from pipeline.commands.capture import capture
    from pipeline.commands.replay import replay
    from pipeline.kafka.admin import admin_client, ensure_topics, wait_for_broker

    s = sasl_settings()
    with pytest.raises(Stop):
        admin_client(s)
    assert_secured(recorder.only("admin"), s, kafka_python=True)
    for call in (lambda: wait_for_broker(s), lambda: ensure_topics(s, ["t"], 1)):
        with pytest.raises(Stop):
            call()
    assert len([n for n, _ in recorder.calls if n == "admin"]) == 3

    import pipeline.commands.replay as replay_module

    monkeypatch.setattr(replay_module, "wait_for_broker", lambda settings, timeout: None)
    monkeypatch.setattr(replay_module, "ensure_topics", lambda *a, **k: [])
    with pytest.raises(Stop):
        replay([str(SAMPLE)], s)
    assert_secured(recorder.only("replay producer"), s, kafka_python=True)

    with pytest.raises(Stop):
        next(capture(s, 0, 1))
    assert_secured(recorder.only("capture consumer"), s, kafka_python=True)
    assert recorder.only("capture consumer")["isolation_level"] == "read_committed"


def test_demo_clients_get_the_security_settings(recorder):
    from pipeline.commands.demo import _feed, _print_alerts

    s = sasl_settings("SASL_PLAINTEXT", "PLAIN")

    async def build():
        with pytest.raises(Stop):
            await _print_alerts(s, asyncio.Event())
        with pytest.raises(Stop):
            await _feed(s, iter(()), asyncio.Event())

    asyncio.run(build())
    assert_secured(recorder.only("demo consumer"), s)
    assert_secured(recorder.only("demo producer"), s)


def test_no_client_is_built_anywhere_else():
    """Every Kafka client construction in the package goes through reveal(options)."""
    import re

    root = Path(kafka_client.__file__).resolve().parents[1]
    pattern = re.compile(r"\b(AIOKafkaConsumer|AIOKafkaProducer|AIOKafkaAdminClient|KafkaConsumer|KafkaProducer|"
                         r"KafkaAdminClient)\(")
    sites = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "client.py" and path.parent.name == "kafka":  # its docstring shows the pattern
            continue
        text = path.read_text(encoding="utf-8")
        for m in pattern.finditer(text):
            call = text[m.start():text.find(")", m.end()) + 1]
            where = f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}"
            sites.append(where)
            if path.name == "local.py":  # the local test broker's own readiness probe: loopback, no security
                continue
            assert "reveal(" in text[m.start():m.start() + 400], f"{where}: {call[:120]} does not use reveal(options)"
    # worker: producer, consumer, recovery, views, probe; admin; replay; capture; demo x2; local probe
    assert len(sites) == 11, sites
