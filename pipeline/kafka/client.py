"""Kafka client settings, in one place: how every client of every command
reaches the broker (contract §7).

The worker's consumer and producer (aiokafka), its admin client, replay and
capture (kafka-python) and the demo all take their options from here, so
TLS, mutual TLS and SASL reach each of them the same way. The SASL password
stays a :class:`~pipeline.settings.Secret` in these options, however long a worker
keeps them: it is unwrapped by :func:`reveal` in the very call that builds a
client (``AIOKafkaConsumer(**reveal(options), ...)``), so no options dict,
repr or log line can show it; nor do :func:`describe` and the errors.
"""

from __future__ import annotations

import ssl
from typing import Any

from ..settings import Secret

__all__ = ["aiokafka_options", "kafka_python_options", "reveal", "ssl_context", "describe", "KafkaSetupError"]


class KafkaSetupError(ValueError):
    """The Kafka security settings cannot be used (a file missing, a bad certificate)."""


def _uses_tls(s) -> bool:
    return s.kafka_security_protocol in ("SSL", "SASL_SSL")


def ssl_context(s) -> ssl.SSLContext | None:
    """The TLS context for ``SSL``/``SASL_SSL``: the CA to trust (system CAs by
    default) and, for mutual TLS, the client certificate and key."""
    if not _uses_tls(s):
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
        if s.kafka_ssl_certfile is not None:
            ctx.load_cert_chain(str(s.kafka_ssl_certfile), str(s.kafka_ssl_keyfile))
    except FileNotFoundError as exc:
        raise KafkaSetupError(f"Kafka TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise KafkaSetupError(f"Kafka TLS files unusable (CDI_KAFKA_SSL_CAFILE/CERTFILE/KEYFILE): "
                              f"{getattr(exc, 'reason', None) or exc.strerror or type(exc).__name__}") from None
    return ctx


def _sasl(s) -> dict[str, Any]:
    if not s.kafka_security_protocol.startswith("SASL"):
        return {}
    return {"sasl_mechanism": s.kafka_sasl_mechanism, "sasl_plain_username": s.kafka_sasl_username,
            "sasl_plain_password": s.kafka_sasl_password}


def reveal(options: dict[str, Any]) -> dict[str, Any]:
    """The options with secrets unwrapped: only as the arguments of a client's constructor."""
    return {k: v.get_secret_value() if isinstance(v, Secret) else v for k, v in options.items()}


def _options(s, bootstrap_servers: Any) -> dict[str, Any]:
    """The security options both client libraries take under the same names."""
    opts: dict[str, Any] = {"bootstrap_servers": bootstrap_servers,
                            "security_protocol": s.kafka_security_protocol}
    ctx = ssl_context(s)
    if ctx is not None:
        opts["ssl_context"] = ctx
    opts.update(_sasl(s))
    return opts


def aiokafka_options(s) -> dict[str, Any]:
    """Options for aiokafka's consumer, producer and admin client (pass them through :func:`reveal`)."""
    return _options(s, s.bootstrap_servers)


def kafka_python_options(s) -> dict[str, Any]:
    """Options for kafka-python's producer, consumer and admin client (pass them through :func:`reveal`)."""
    return _options(s, s.bootstrap_servers.split(","))


def describe(s) -> str:
    """Where and how this process connects, for logs and errors: never a secret."""
    text = f"kafka://{s.bootstrap_servers}"
    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return text
    extra = protocol
    if protocol.startswith("SASL"):
        extra += f", {s.kafka_sasl_mechanism} as {s.kafka_sasl_username!r}"
    if _uses_tls(s) and s.kafka_ssl_certfile is not None:
        extra += ", client certificate"
    return f"{text} ({extra})"
