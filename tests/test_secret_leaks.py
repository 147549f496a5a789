"""Secrets never leak (issue 10): the SASL password and the HTTP token, given
directly or as ``_FILE`` variables, are set to recognisable strings and looked
for everywhere a user or a log collector can see text:

- ``repr()``/``str()``/JSON of the settings, ``describe()``, the worker's banner;
- every configuration error (``CDI_WEB_PORT=0`` and other mistakes with the
  secrets set), ``--help`` of every command;
- the error output of replay, capture and worker against an address where
  nothing listens and against a broker that refuses the SASL login;
- a running worker's log at debug level (libraries log their configuration
  there), ``/metrics``, ``/readyz``, ``/healthz``, ``/audit``, and its 401s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from pipeline.commands import cli
from pipeline.kafka.client import describe
from pipeline.kafka.local import free_port
from pipeline.settings import load_settings
from support import ROOT, SAMPLE, Processes, http_ok, worker_env

PASSWORD = "KAFKA-PW-leakcheck-7c1e"
TOKEN = "HTTP-TOKEN-leakcheck-93ab"
FILE_PASSWORD = "KAFKA-PWFILE-leakcheck-e55d"
FILE_TOKEN = "HTTP-TOKFILE-leakcheck-1f02"
SECRETS = (PASSWORD, TOKEN, FILE_PASSWORD, FILE_TOKEN)
SASL = {"CDI_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CDI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "CDI_KAFKA_SASL_USERNAME": "svc-cdiwatch"}


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}:\n{text[:3000]}"
    assert "leakcheck" not in text, f"part of a secret appears in {where}"


@pytest.fixture(params=["direct", "files"])
def secret_env(request, tmp_path) -> dict[str, str]:
    """The secrets as variables, or as files named by ``_FILE`` variables."""
    if request.param == "direct":
        return {"CDI_KAFKA_SASL_PASSWORD": PASSWORD, "CDI_HTTP_TOKEN": TOKEN}
    pw, tok = tmp_path / "kafka-password", tmp_path / "http-token"
    pw.write_text(FILE_PASSWORD + "\n", encoding="utf-8")
    tok.write_text(FILE_TOKEN + "\n", encoding="utf-8")
    return {"CDI_KAFKA_SASL_PASSWORD_FILE": str(pw), "CDI_HTTP_TOKEN_FILE": str(tok)}


@pytest.fixture
def env(monkeypatch, secret_env):
    for key in [k for k in os.environ if k.startswith("CDI_")]:
        monkeypatch.delenv(key)
    for key, value in {**SASL, **secret_env}.items():
        monkeypatch.setenv(key, value)
    return {**SASL, **secret_env}


def test_settings_never_show_a_secret(env):
    s = load_settings()
    assert s.kafka_sasl_password.get_secret_value() in (PASSWORD, FILE_PASSWORD)
    assert s.http_token.get_secret_value() in (TOKEN, FILE_TOKEN)
    for text, where in ((repr(s), "repr"), (str(s), "str"), (json.dumps(s.as_dict(), default=str), "JSON"), (describe(s), "describe"),
                        (repr(s.with_overrides(web_port=7000)), "repr of a copy"), (repr(s.as_dict()), "dump")):
        assert_clean(text, where)


@pytest.mark.parametrize("mistake", [
    {"CDI_WEB_PORT": "0"},
    {"CDI_KAFKA_SASL_MECHANISM": "GSSAPI"},
    {"CDI_BROKER": "https://broker:9093"},
    {"CDI_KAFKA_SASL_USERNAME": ""},
    {"CDI_KAFKA_SSL_CERTFILE": "/nonexistent/cert.pem"},
    {"CDI_HTTP_ALLOW_ANONYMOUS": "perhaps", "CDI_PARTITIONS": "-1"},
])
def test_configuration_errors_never_show_a_secret(env, monkeypatch, capsys, mistake):
    for key, value in mistake.items():
        monkeypatch.setenv(key, value)
    for argv in (["worker"], ["replay", str(SAMPLE)], ["capture", "--from", "2026-01-01T00:00:00Z",
                                                       "--to", "2026-01-02T00:00:00Z"], ["audit", str(SAMPLE)]):
        assert cli.main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert "configuration" in err and len(err.strip().splitlines()) == 1, err
        assert_clean(out + err, f"{argv[0]} with {mistake}")


def test_unreadable_secret_file_names_the_file_not_a_secret(env, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CDI_HTTP_TOKEN_FILE", str(tmp_path / "missing-token"))
    monkeypatch.delenv("CDI_HTTP_TOKEN", raising=False)
    assert cli.main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "CDI_HTTP_TOKEN_FILE" in err and "missing-token" in err
    assert_clean(err, "the error of an unreadable token file")


def test_help_never_shows_a_secret(env, capsys):
    for argv in (["--help"], *([cmd, "--help"] for cmd in ("worker", "replay", "capture", "audit", "demo",
                                                           "broker", "simulate"))):
        assert cli.main(argv) == 0
        out, err = capsys.readouterr()
        assert "usage:" in out
        assert_clean(out + err, " ".join(argv))


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDI_")}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env={**base, **env}, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


COMMANDS = {
    "replay": lambda tmp: ["replay", str(SAMPLE), "--no-progress"],
    "capture": lambda tmp: ["capture", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z",
                            "-o", str(tmp / "out.jsonl")],
    "worker": lambda tmp: ["worker", "--web-port", str(free_port()), "--data-dir", str(tmp / "data"),
                           "--log-level", "debug"],
    "replay --debug": lambda tmp: ["replay", str(SAMPLE), "--no-progress", "--debug"],
}


@pytest.mark.integration
def test_failing_commands_never_show_a_secret(secret_env, fresh_broker, tmp_path):
    """Nothing listening, and a broker that refuses the SASL login (the test
    broker has no SCRAM user): exit 1, and the output has no secret, even at debug level."""
    brokers = {"nothing listening": f"kafka://127.0.0.1:{free_port()}", "SASL refused": fresh_broker.url}
    running = []
    for what, url in brokers.items():
        for name, argv in COMMANDS.items():
            running.append((f"{name}, {what}", run_cli(argv(tmp_path), {**SASL, **secret_env, "CDI_BROKER": url})))
    for what, proc in running:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, f"{what}: exit {proc.returncode}\n{err[-2000:]}"
        assert "no Kafka broker answered" in err.strip().splitlines()[-1], f"{what}: {err[-1000:]}"
        assert_clean(out + err, what)


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode("utf-8", "replace") + json.dumps(dict(resp.headers))
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace") + json.dumps(dict(exc.headers))


@pytest.mark.integration
def test_running_worker_never_shows_a_secret(secret_env, fresh_broker, tmp_path):
    """A worker at debug level, the SASL password set (not used: the test broker
    is plaintext) and the HTTP token on: its log and every answer are clean."""
    procs = Processes(tmp_path, fresh_broker)
    try:
        env = worker_env(**secret_env, CDI_LOG_LEVEL="debug", CDI_KAFKA_SASL_USERNAME="svc-cdiwatch")
        url = procs.start_worker("worker", fresh_broker.url, env)
        procs.wait_until("worker ready", lambda: http_ok(url + "/readyz"), timeout=90)
        token = TOKEN if "CDI_HTTP_TOKEN" in secret_env else FILE_TOKEN
        seen = []
        for path in ("/metrics", "/audit", "/readyz", "/healthz", "/board/state", "/incidents", "/no-such-page"):
            for given in (token, None, "wrong"):
                status, text = fetch(url + path, given)
                seen.append(status)
                assert_clean(text, f"{path} (status {status})")
        assert 200 in seen and 401 in seen and 404 in seen
        assert procs.stop("worker") in (0, -15)
        log = (tmp_path / "worker.log").read_text(encoding="utf-8", errors="replace")
        assert "DEBUG" in log and "cdiwatch worker" in log  # a real debug log was written
        assert_clean(log, "the worker's debug log")
    finally:
        procs.stop_all()


def test_log_filter_blanks_secrets_in_messages_arguments_and_tracebacks():
    import io
    import logging

    from pipeline.commands.worker import RedactSecrets

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([PASSWORD, TOKEN]))
    log = logging.getLogger("cdiwatch-test-redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("config %s", {"sasl_plain_password": PASSWORD})
        log.warning(f"token {TOKEN}")
        try:
            raise ValueError(f"bad password {PASSWORD}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert text.count(RedactSecrets.MASK) == 3 and "ValueError" in text
    assert_clean(text, "a filtered log")
