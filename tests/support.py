"""Test support: real processes (workers, Prometheus...), reading topics back,
comparing audits.

Each process gets a log file; failures show the tails. Waits are bounded and
fail with what the processes said, never hang.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.kafka.local import free_port
from pipeline.core.times import parse_time

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "examples" / "sample"
SAMPLE = SAMPLE_DIR / "capture.jsonl"
EXPECTED_AUDIT = SAMPLE_DIR / "expected-audit.json"
WAIT = 90.0

__all__ = ["load_module", "require_binary", "Processes", "get_json", "http_ok", "log_tail", "worker_env", "read_topics", "assert_same_audit",
           "same_audit", "ROOT", "SAMPLE", "SAMPLE_DIR", "EXPECTED_AUDIT"]


def load_module(name: str, path: Path):
    """Import a script that is not in a package (deploy/ generators and helpers)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def require_binary(*binaries: str, package: str) -> str:
    """Path of the first binary found; a failure in CI (env CI), a skip elsewhere."""
    import shutil

    for binary in binaries:
        path = shutil.which(binary)
        if path:
            return path
    msg = f"{' or '.join(binaries)} not found (Debian: apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def assert_same_audit(got: dict, expected: dict) -> None:
    """Equal as data: the watermark as an instant, floats within 1e-9."""
    assert set(got) == set(expected)
    assert parse_time(got["watermark"]) == parse_time(expected["watermark"])
    for key in expected:
        if key not in ("watermark", "recording_rate"):
            assert got[key] == expected[key], key
    for k, v in expected["recording_rate"].items():
        if v is None:
            assert got["recording_rate"][k] is None, k
        else:
            assert math.isclose(got["recording_rate"][k], v, rel_tol=0, abs_tol=1e-9), k


def same_audit(got: dict, expected: dict) -> bool:
    try:
        assert_same_audit(got, expected)
    except (AssertionError, TypeError, KeyError):
        return False
    return True


def read_topics(bootstrap: str, topics: list[str], expected: int | None = None,
                timeout: float = 30.0) -> list[tuple[str, int, bytes | None, bytes]]:
    """Every message of ``topics`` as (topic, partition, key, value), from the beginning.

    kafka-python consumer *groups* never finish joining Tansu, so this uses
    ``assign()``; and Tansu's end offsets are wrong after multi-record batches,
    so it polls until ``expected`` messages (or, with None, until a quiet second).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        got: list[tuple[str, int, bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if expected is not None and len(got) >= expected:
                break
            if expected is None and time.monotonic() - quiet_since > 1.5:
                break
            batch = consumer.poll(timeout_ms=300, max_records=10_000)
            for tp, records in batch.items():
                got.extend((tp.topic, tp.partition, r.key, r.value) for r in records)
            if batch:
                quiet_since = time.monotonic()
        # A short grace poll: more than expected would be a bug too (e.g. a retried batch).
        for tp, records in consumer.poll(timeout_ms=300).items():
            got.extend((tp.topic, tp.partition, r.key, r.value) for r in records)
        return got
    finally:
        consumer.close()


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a test worker: short group timeouts (Tansu finishes a
    join only after half the session timeout), quick ticks."""
    env = dict(os.environ)
    env.update({"CDI_SESSION_TIMEOUT": "4", "CDI_TICK_INTERVAL": "0.3", "CDI_LOG_LEVEL": "info"})
    env.update(extra)
    return env


class Processes:
    """Started subprocesses, each with a log file; stopped in reverse order, killed after a grace period."""

    def __init__(self, tmp: Path, broker=None) -> None:
        self.tmp = tmp
        self.broker = broker  # a LocalBroker started elsewhere: watched and reported, not stopped here
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.killed: set[str] = set()

    def kill(self, name: str) -> None:
        """SIGKILL one process on purpose (a crash test): its exit is not a failure."""
        for n, proc, _log in self.procs:
            if n == name and proc.poll() is None:
                self.killed.add(name)
                proc.kill()
                proc.wait(timeout=10)

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to one running process (SIGSTOP / SIGCONT: a worker descheduled)."""
        for n, proc, _log in self.procs:
            if n == name and proc.poll() is None:
                proc.send_signal(sig)

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=ROOT)
        self.procs.append((name, proc, log))
        return proc

    def start_worker(self, name: str, broker_url: str, env: dict | None = None) -> str:
        """A ``cdiwatch worker`` on a free port; returns its base URL."""
        port = free_port()
        self.start(name, [sys.executable, "-m", "pipeline", "worker", "--broker", broker_url,
                          "--web-port", str(port), "--data-dir", str(self.tmp / f"data-{name}")],
                   env or worker_env())
        return f"http://127.0.0.1:{port}"

    def wait_until(self, what: str, check, timeout: float = WAIT, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            for name, proc, _log in self.procs:
                if proc.poll() is not None and proc.returncode not in (0, -15) and name not in self.killed:
                    pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
            if self.broker is not None and not self.broker.running:
                pytest.fail(f"the broker exited while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.logs()}")
            time.sleep(interval)

    def stop(self, name: str, timeout: float = 20.0) -> int:
        """Graceful stop (SIGTERM) of one process; kill after ``timeout``."""
        for n, proc, _log in self.procs:
            if n == name and proc.poll() is None:
                proc.terminate()
                try:
                    return proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait(timeout=5)
        return 0

    def logs(self) -> str:
        parts = [f"--- {name} ({log}):\n{log_tail(log)}" for name, _p, log in self.procs]
        if self.broker is not None:
            parts.append(f"--- broker (running={self.broker.running}):\n{self.broker.log_tail()}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc, _log in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
