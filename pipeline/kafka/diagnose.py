"""Why a broker did not answer: one short reason for the user's one-line error.

Kafka clients report a broker they cannot reach as a timeout, whatever the
cause; kafka-python logs the real cause (a refused connection, an untrusted
certificate, a missing client certificate) as tracebacks. When the admin
bootstrap fails, :func:`diagnose` opens one connection to each bootstrap
server itself, with the same TLS context, and sends one ApiVersions request
(allowed before any authentication), so the error names what to fix:
``CDI_BROKER``, ``CDI_KAFKA_SECURITY_PROTOCOL``, ``CDI_KAFKA_SSL_CAFILE`` or
the client certificate. Never a secret: only the address, the protocol and
the TLS library's reason.
"""

from __future__ import annotations

import socket
import ssl
import struct

from .client import ssl_context

__all__ = ["diagnose"]

#: ApiVersions v0, correlation id 1, client id "cdiwatch-diagnose" (Kafka protocol framing).
_CLIENT_ID = b"cdiwatch-diagnose"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
_REQUEST = struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS

_NEEDS_CERT = ("CERTIFICATE_REQUIRED", "PEER_DID_NOT_RETURN_A_CERTIFICATE", "HANDSHAKE_FAILURE")


def _servers(settings) -> list[tuple[str, int]]:
    out = []
    for server in settings.bootstrap_servers.split(","):
        host, port = server.rsplit(":", 1)
        out.append((host.strip("[]"), int(port)))
    return out


def _tls_reason(exc: ssl.SSLError, settings) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the broker's TLS certificate was refused ({exc.verify_message}): set CDI_KAFKA_SSL_CAFILE "
                "to the CA that signed it, and use the host name the certificate is for")
    reason = (exc.reason or "").upper()
    if any(word in reason for word in _NEEDS_CERT):
        if settings.kafka_ssl_certfile is None:
            return ("the broker requires a client certificate (mutual TLS): set CDI_KAFKA_SSL_CERTFILE "
                    "and CDI_KAFKA_SSL_KEYFILE")
        return "the broker refused the TLS handshake (is the client certificate one it trusts?)"
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return "the broker does not accept the client certificate (CDI_KAFKA_SSL_CERTFILE): not signed by a CA it trusts"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return "the broker's port does not speak TLS: check CDI_BROKER and CDI_KAFKA_SECURITY_PROTOCOL"
    return f"TLS failed: {exc.reason or type(exc).__name__}"


def diagnose(settings, timeout: float = 3.0) -> str | None:
    """None when a bootstrap server answers ApiVersions; else why the first one does not.

    None also covers what this check cannot see (SASL credentials): the
    caller keeps its general message then.
    """
    try:
        ctx = ssl_context(settings)
    except ValueError:  # KafkaSetupError: reported by the caller as a configuration mistake
        return None
    servers = _servers(settings)
    first = None
    for host, port in servers:
        reason = _check(settings, ctx, host, port, timeout / len(servers))
        if reason is None:
            return None
        first = first or reason
    return first


def _check(settings, ctx: ssl.SSLContext | None, host: str, port: int, timeout: float) -> str | None:
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        return f"unknown host {host!r}: check CDI_BROKER"
    except ConnectionRefusedError:
        return f"nothing listens on {host}:{port}: is the broker running, and is CDI_BROKER right?"
    except (TimeoutError, socket.timeout):
        return f"no answer from {host}:{port} within {timeout:g} s (a firewall, or the wrong address?)"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or type(exc).__name__}"
    try:
        with raw:
            conn = raw
            if ctx is not None:
                try:
                    conn = ctx.wrap_socket(raw, server_hostname=host)
                except (TimeoutError, socket.timeout):
                    return (f"{host}:{port} did not complete a TLS handshake within {timeout:g} s: is it the "
                            "broker's TLS listener? (CDI_BROKER, CDI_KAFKA_SECURITY_PROTOCOL)")
                _early_alert(conn)
            conn.sendall(_REQUEST)
            # TLS 1.3 reports a refused client certificate only now, on the first read.
            answer = conn.recv(4)
            if len(answer) < 4:
                if ctx is None:
                    return ("the broker closed the connection without answering: does it expect TLS or SASL? "
                            "(CDI_KAFKA_SECURITY_PROTOCOL)")
                return "the broker closed the connection without answering"
            (size,) = struct.unpack(">i", answer)
            if not 0 < size < 10_000_000:
                return "the answer is not Kafka's: is CDI_BROKER the broker's address and port?"
            return None
    except ssl.SSLError as exc:
        return _tls_reason(exc, settings)
    except (TimeoutError, socket.timeout):
        return f"{host}:{port} accepted the connection but did not answer within {timeout:g} s"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if ctx is None:
            return (f"the connection to {host}:{port} was closed ({why}): does the broker expect TLS? "
                    "(CDI_KAFKA_SECURITY_PROTOCOL)")
        if settings.kafka_ssl_certfile is None:
            return (f"the broker closed the TLS connection ({why}): if it requires a client certificate "
                    "(mutual TLS), set CDI_KAFKA_SSL_CERTFILE and CDI_KAFKA_SSL_KEYFILE")
        return f"the TLS connection to {host}:{port} failed: {why}"


def _early_alert(conn: ssl.SSLSocket, wait: float = 0.5) -> None:
    """Listen before speaking: with TLS 1.3 a refused client certificate
    arrives as an alert just after the handshake, and a request sent first
    could make the server reset the connection before the alert is read.
    A Kafka broker never speaks first, so silence (the timeout) is the good case."""
    timeout = conn.gettimeout()
    conn.settimeout(wait)
    try:
        data = conn.recv(1)
    except (TimeoutError, socket.timeout):
        return
    finally:
        conn.settimeout(timeout)
    if not data:
        raise ConnectionResetError(0, "closed by the broker after the handshake")
