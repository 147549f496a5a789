"""Every common mistake gets one clear line and the documented exit code, never
a traceback (issue 11): each row of the issue's table, run as a user would.

Exit codes: 0 done, 1 the run failed or found problems, 2 a usage or
configuration mistake, 130 interrupted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import __version__
from pipeline.settings import FIELDS
from support import ROOT, SAMPLE


def cdiwatch(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in proc.stderr and err.count("\n") == 0, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_audit_of_a_directory(tmp_path):
    one_line(cdiwatch("audit", str(tmp_path)), 2, str(tmp_path), "is a directory")


def test_audit_url_that_is_not_a_url():
    one_line(cdiwatch("audit", "--url", "notaurl"), 2, "notaurl", "http")


@pytest.mark.parametrize("broker", ["nonsense", "kafka://127.0.0.1", "kafka+ssl://127.0.0.1:9093",
                                    "kafka://127.0.0.1:99999"])
def test_replay_with_a_broker_address_that_is_not_one(broker):
    one_line(cdiwatch("replay", str(SAMPLE), "--broker", broker), 2, "broker")


def test_simulate_into_a_directory_that_does_not_exist():
    one_line(cdiwatch("simulate", "--hours", "1", "-o", "/nonexistent/dir/x.jsonl"), 2, "/nonexistent/dir")


def test_worker_with_its_web_port_busy(busy_port):
    one_line(cdiwatch("worker", "--web-port", str(busy_port)), 2, f"web port {busy_port}", "in use")


def test_broker_with_its_port_busy(busy_port):
    one_line(cdiwatch("broker", "--port", str(busy_port)), 2, f"port {busy_port}", "in use")


@pytest.mark.parametrize("content", [bytes(range(256)) * 40, b"just some text\nand more\n", b""])
def test_audit_of_a_binary_or_wrong_file_fails(tmp_path, content):
    path = tmp_path / "not-a-capture.bin"
    path.write_bytes(content)
    one_line(cdiwatch("audit", str(path)), 1, "no capture message could be read", str(path))


def test_replay_of_a_directory(tmp_path):
    one_line(cdiwatch("replay", str(tmp_path), "--broker", "kafka://127.0.0.1:1"), 2, "is a directory")


@pytest.mark.parametrize("variable, value", [("CDI_PARTITIONS", "abc"), ("CDI_PARTITIONS", "0"),
                                             ("CDI_RECORDING_DEADLINE", "0"), ("CDI_WEB_PORT", "70000"),
                                             ("CDI_AT_RISK_WINDOW", "soon"), ("CDI_TIMEZONE", "Mars/Olympus")])
def test_bad_settings_name_the_variable(tmp_path, variable, value):
    one_line(cdiwatch("audit", str(SAMPLE), env={variable: value}), 2, variable)


def test_unknown_option_before_any_command():
    one_line(cdiwatch("--frobnicate"), 2, "--frobnicate")


def test_unknown_option_of_a_command():
    one_line(cdiwatch("audit", str(SAMPLE), "--frobnicate"), 2, "--frobnicate")


def test_no_command():
    one_line(cdiwatch(), 2, "choose a command")


def test_version_and_help_show_defaults():
    proc = cdiwatch("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"cdiwatch {__version__}"
    proc = cdiwatch("worker", "--help")
    assert proc.returncode == 0 and "default kafka://127.0.0.1:9092" in proc.stdout and "default 6066" in proc.stdout


def test_debug_shows_the_traceback_of_an_unexpected_failure(tmp_path):
    """--debug is for developers: an unexpected failure shows its traceback."""
    code = ("import sys; from pipeline.commands import cli, audit; "
            "audit.run = lambda a, s: 1 / 0; sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "audit", str(SAMPLE)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    one_line(proc, 1, "unexpected failure", "ZeroDivisionError", "--debug")
    proc = subprocess.run([sys.executable, "-c", code, "--debug", "audit", str(SAMPLE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" in proc.stderr


def test_settings_come_from_defaults_then_cdi_variables_then_flags(monkeypatch):
    """The environment as operators set it: ``CDI_<FIELD>`` in any case, lists
    comma-separated, durations with units; a flag (keyword) wins over the
    variable; a ``CDI_*`` name that is no setting is ignored, not an error."""
    from pipeline.settings import Settings, load_settings

    for key in [k for k in os.environ if k.upper().startswith("CDI_")]:
        monkeypatch.delenv(key)
    assert Settings().partitions == 6
    monkeypatch.setenv("CDI_PARTITIONS", "9")
    monkeypatch.setenv("cdi_log_level", "WARNING")
    monkeypatch.setenv("CDI_DISTRICTS", "Dover, Thanet ,")
    monkeypatch.setenv("CDI_STATE_RETENTION", "7d")
    monkeypatch.setenv("CDI_NOT_A_SETTING", "whatever")
    s = load_settings()
    assert (s.partitions, s.log_level, s.districts, s.state_retention) == (9, "warning", ("Dover", "Thanet"),
                                                                          7 * 86400.0)
    assert load_settings(partitions=3, log_level=None).partitions == 3
    assert load_settings(log_level=None).log_level == "warning"


def test_settings_report_every_mistake_at_once_and_read_booleans_as_operators_write_them(monkeypatch):
    """Every wrong setting in one error (a line each), never only the first;
    true/false as operators write them; no unknown keyword; frozen, and a
    changed copy is checked again."""
    from pipeline.settings import Settings, SettingsError, load_settings

    for key in [k for k in os.environ if k.upper().startswith("CDI_")]:
        monkeypatch.delenv(key)
    with pytest.raises(SettingsError) as err:
        load_settings(partitions=0, web_port="x", log_level="loud")
    text = str(err.value)
    for expected in ("--partitions / CDI_PARTITIONS", "--web-port / CDI_WEB_PORT", "--log-level / CDI_LOG_LEVEL",
                     "one of debug, info, warning, error", "(got 'x')"):
        assert expected in text, text
    for word, value in (("yes", True), ("OFF", False), ("1", True), (" false ", False), ("On", True)):
        monkeypatch.setenv("CDI_HTTP_ALLOW_ANONYMOUS", word)
        assert load_settings().http_allow_anonymous is value, word
    monkeypatch.setenv("CDI_HTTP_ALLOW_ANONYMOUS", "maybe")
    with pytest.raises(SettingsError, match="CDI_HTTP_ALLOW_ANONYMOUS: not true or false"):
        load_settings()
    monkeypatch.delenv("CDI_HTTP_ALLOW_ANONYMOUS")
    with pytest.raises(SettingsError, match="nonsense: not a setting"):
        Settings(nonsense=1)
    s = load_settings()
    with pytest.raises(SettingsError, match="CDI_PARTITIONS"):
        s.with_overrides(partitions=0)
    assert s.with_overrides(partitions=3).partitions == 3 and s.partitions == 6
    with pytest.raises(AttributeError):
        s.partitions = 3
    assert Settings(timezone="Europe/Paris").zone.key == "Europe/Paris" and s.zone.key == "Europe/London"


_HOSTILE = ["\x00", "\n", "9" * 400, "nan", "inf", "-1", "1e400", "/nonexistent/\x00", " 6 ", "kafka://[::1]:9092",
            "\u0665", "true\x00", "é" * 300]


def _taken_or_one_line(name: str, value: str) -> None:
    from pipeline.settings import Settings, SettingsError

    try:
        Settings(**{name: value})
    except SettingsError as exc:
        text = str(exc)
        assert "\n" not in text and len(text) < 700, (name, text)


def test_no_hostile_value_of_any_setting_raises_anything_but_a_one_line_settings_error():
    """Think like an attacker (or a typo): whatever text a variable holds, the
    settings either take it or say why in one line; never another exception
    (a NUL in a file name, a time zone too long for a file name...)."""
    for name in FIELDS:
        for value in _HOSTILE:
            _taken_or_one_line(name, value)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(FIELDS)), value=st.text(max_size=60))
def test_no_text_in_any_setting_raises_anything_but_a_one_line_settings_error(name, value):
    _taken_or_one_line(name, value)


@pytest.mark.parametrize("command, option, value", [
    ("simulate", "--hours", "inf"), ("simulate", "--hours", "1e12"), ("simulate", "--hours", "nan"),
    ("simulate", "--rate", "1e12"), ("simulate", "--rate", "-inf"), ("demo", "--hours", "1e300"),
    ("demo", "--rate", "inf"), ("demo", "--duration", "inf"), ("replay", "--speed", "inf"),
])
def test_numbers_no_run_could_use_are_a_usage_error(command, option, value):
    """Infinite, not-a-number or absurd spans and rates: one usage line, not an
    'unexpected failure' (an overflow deep in the simulator) or a run that never ends."""
    extra = [str(SAMPLE)] if command == "replay" else []
    err = one_line(cdiwatch(command, *extra, f"{option}={value}", timeout=20), 2, f"argument {option}: must be",
                   repr(value))
    assert "unexpected" not in err
