"""Talking to the cluster as an administrator: is a broker there, and create the topics.

Both go through the client library's own bootstrap (kafka-python's admin
client), so TLS, SASL and protocol-version negotiation come with it; options
from :mod:`pipeline.kafka.client`.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Mapping

from .client import describe, kafka_python_options, reveal

__all__ = ["BrokerUnreachable", "TopicError", "admin_client", "wait_for_broker", "ensure_topics"]

logger = logging.getLogger(__name__)


class BrokerUnreachable(RuntimeError):
    """No broker answered at the configured address (and security settings) in time.

    ``reason``: what :func:`~pipeline.kafka.diagnose.diagnose` found (already in
    the message), or None when it found nothing more specific than a timeout.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class TopicError(RuntimeError):
    """The broker refused to create a topic the monitor needs."""


def admin_client(settings, timeout: float = 10.0, client_id: str = "cdiwatch-admin"):
    """A connected kafka-python admin client; :class:`BrokerUnreachable` after ``timeout`` s.

    First waits until a bootstrap server answers a request of ours
    (:func:`~pipeline.kafka.diagnose.diagnose`), for two reasons: the error can
    say why it does not (nothing listening, TLS refused, client certificate
    missing...), and kafka-python's bootstrap never returns when a TLS
    handshake is left unanswered (a TLS client at a plaintext port), which
    would hang a command instead of failing it.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from .diagnose import diagnose

    deadline = time.monotonic() + timeout
    where = f"no Kafka broker answered at {describe(settings)} within {timeout:.3g} s"
    while True:
        reason = diagnose(settings, timeout=min(3.0, max(2.0, deadline - time.monotonic())))
        if reason is None:
            break
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(f"{where}: {reason}", reason)
        time.sleep(0.2)
    ms = max(3000, int((deadline - time.monotonic()) * 1000))
    try:
        return KafkaAdminClient(client_id=client_id, request_timeout_ms=ms, bootstrap_timeout_ms=ms,
                                **reveal(kafka_python_options(settings)))
    except KafkaError as exc:
        hint = " (are the SASL mechanism, user and password right?)" if settings.kafka_sasl_mechanism else ""
        raise BrokerUnreachable(f"{where} ({type(exc).__name__}){hint}") from None


def wait_for_broker(settings, timeout: float = 10.0) -> None:
    """Return once a broker answers; :class:`BrokerUnreachable` (with the reason) after ``timeout`` s."""
    admin_client(settings, timeout).close()


def ensure_topics(settings, topics: Mapping[str, Mapping[str, str]] | Iterable[str], partitions: int,
                  replication: int = 1, timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; the names created.

    ``topics``: name -> creation configs (or names, with Kafka's delete/week
    defaults). A topic that exists (also one created meanwhile by another
    worker) is left as it is.
    """
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if not isinstance(topics, Mapping):
        topics = {name: {"cleanup.policy": "delete", "retention.ms": str(7 * 86400 * 1000),
                         "retention.bytes": "-1"} for name in topics}
    admin = admin_client(settings, timeout)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topics if name not in existing]
        if not missing:
            return []
        new = {name: {"num_partitions": partitions, "replication_factor": replication,
                      "configs": dict(topics[name])} for name in missing}
        try:
            result = admin.create_topics(new, timeout_ms=int(timeout * 1000), raise_errors=False)
        except KafkaError as exc:
            raise TopicError(f"could not create topics {missing}: {type(exc).__name__}: {exc}") from None
        created = []
        for name, code, message in _topic_errors(result):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise TopicError(f"could not create topic {name!r}: error {code} {message or ''}".rstrip())
        if created:
            logger.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()


def _topic_errors(result: dict) -> list[tuple[str, int, str | None]]:
    """(name, error code, message) per topic of a CreateTopics response."""
    return [(t["name"], t.get("error_code", 0), t.get("error_message")) for t in result.get("topics", [])]
