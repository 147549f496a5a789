"""Test helpers for Kafka over real TLS: a throwaway PKI and a TLS front for the test broker.

Why a front: the test broker (Tansu) has no working TLS listener of its own,
and cdiwatch's TLS code must be proven against a real TLS server, not a mock.
Debian's ``stunnel4`` accepts TLS on one loopback port and forwards plaintext
to Tansu; Tansu is started with ``advertised_port`` = stunnel's port, so every
client is told to come back through TLS (a client that cannot speak TLS to the
front cannot reach the broker at all).

- :func:`make_pki`: a CA, a server certificate for ``IP:127.0.0.1`` and
  ``DNS:localhost``, and a client certificate (mutual TLS), made with the
  ``openssl`` command in a temporary directory.
- :class:`Stunnel`: one stunnel process in the foreground with its own
  configuration file and log; ``verify_clients=True`` makes it require a
  client certificate signed by the CA (``verify = 2`` + ``CAfile``).
- :func:`tls_broker`: both, as a context manager yielding the TLS bootstrap
  address.

A missing ``stunnel4``/``openssl`` is a failure in CI and a skip elsewhere
(:func:`support.require_binary`).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.kafka.local import LocalBroker, free_port, listening
from support import log_tail, require_binary

__all__ = ["PKI", "make_pki", "Stunnel", "TLSBroker", "tls_broker", "require_tls_tools"]

HOST = "127.0.0.1"


def require_tls_tools() -> tuple[str, str]:
    """(stunnel, openssl) binaries: a failure in CI, a skip elsewhere."""
    return (require_binary("stunnel4", "stunnel", package="stunnel4"),
            require_binary("openssl", package="openssl"))


@dataclass(frozen=True)
class PKI:
    """Paths of a test CA and the certificates it signed (PEM files)."""

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # a CA that signed nothing here: trusting it must fail


def _openssl(openssl: str, *args: str, cwd: Path) -> None:
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")


def _self_signed_ca(openssl: str, d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    return cert, key


def _signed(openssl: str, d: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext"
    _openssl(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(csr), cwd=d)
    ext.write_text(extensions, encoding="utf-8")
    _openssl(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert), cwd=d)
    return cert, key


def make_pki(directory: Path, openssl: str = "openssl") -> PKI:
    """A CA, a server certificate (SAN 127.0.0.1 and localhost) and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _self_signed_ca(openssl, directory, "cdiwatch-test-ca")
    other, _ = _self_signed_ca(openssl, directory, "cdiwatch-other-ca")
    server = _signed(openssl, directory, "server", ca,
                     "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                     "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client = _signed(openssl, directory, "cdiwatch-worker", ca,
                     "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                     "extendedKeyUsage=clientAuth\n")
    return PKI(directory, ca[0], server[0], server[1], client[0], client[1], other)


class Stunnel:
    """stunnel in the foreground: TLS on ``port``, plaintext to ``target_port``; killed at stop."""

    def __init__(self, binary: str, pki: PKI, target_port: int, directory: Path, *,
                 verify_clients: bool = False, port: int | None = None) -> None:
        self.binary, self.pki, self.target_port = binary, pki, target_port
        self.port = port or free_port()
        self.verify_clients = verify_clients
        self.config = directory / f"stunnel-{self.port}.conf"
        self.log = directory / f"stunnel-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def _config_text(self) -> str:
        lines = ["foreground = yes", "pid =", "syslog = no", "debug = notice", "",
                 "[kafka]", f"accept = {HOST}:{self.port}", f"connect = {HOST}:{self.target_port}",
                 f"cert = {self.pki.server_cert}", f"key = {self.pki.server_key}"]
        if self.verify_clients:  # mutual TLS: no client certificate from our CA, no connection
            lines += ["verify = 2", f"CAfile = {self.pki.ca_cert}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> "Stunnel":
        self.config.write_text(self._config_text(), encoding="utf-8")
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([self.binary, str(self.config)], stdin=subprocess.DEVNULL,
                                         stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnel did not listen on {HOST}:{self.port}:\n{log_tail(self.log)}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def log_tail(self) -> str:
        return log_tail(self.log)


@dataclass
class TLSBroker:
    """A Tansu broker reachable only through a stunnel TLS front."""

    broker: LocalBroker
    stunnel: Stunnel
    pki: PKI

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.stunnel.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def running(self) -> bool:
        return self.broker.running and self.stunnel.proc is not None and self.stunnel.proc.poll() is None

    def log_tail(self) -> str:
        return f"{self.broker.log_tail()}\n--- stunnel:\n{self.stunnel.log_tail()}"

    def env(self, *, client_cert: bool = False, **extra: str) -> dict[str, str]:
        """The ``CDI_*`` variables a cdiwatch process needs to reach this broker."""
        env = {"CDI_BROKER": self.url, "CDI_KAFKA_SECURITY_PROTOCOL": "SSL",
               "CDI_KAFKA_SSL_CAFILE": str(self.pki.ca_cert)}
        if client_cert:
            env.update(CDI_KAFKA_SSL_CERTFILE=str(self.pki.client_cert),
                       CDI_KAFKA_SSL_KEYFILE=str(self.pki.client_key))
        env.update(extra)
        return env


@contextlib.contextmanager
def tls_broker(directory: Path, *, verify_clients: bool = False, pki: PKI | None = None) -> Iterator[TLSBroker]:
    """A fresh Tansu behind stunnel: TLS only from the clients' point of view.

    stunnel starts first (it connects to Tansu only when a client arrives), so
    that Tansu can advertise its port from the start.
    """
    from conftest import _binary_or_skip

    stunnel_bin, openssl = require_tls_tools()
    tansu = _binary_or_skip()
    pki = pki or make_pki(directory / "pki", openssl)
    tansu_port = free_port()
    front = Stunnel(stunnel_bin, pki, tansu_port, directory, verify_clients=verify_clients).start()
    try:
        with LocalBroker(tansu_port, binary=tansu, advertised_port=front.port) as broker:
            yield TLSBroker(broker, front, pki)
    finally:
        front.stop()
