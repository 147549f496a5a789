"""``deadletter.v1`` records (contract §2): an input message that was not applied, and why.

A dead letter stays small whatever it carries, so that it always fits in a
Kafka record: ``detail`` at most 500 characters; a payload over 65,536 bytes
cut to its first 65,536 bytes (before base64) with ``payload_truncated`` and
``payload_size``; a key over 1,024 bytes cut likewise (``key_truncated``, a
cdiwatch extension). The original stays findable by ``source_topic``,
``partition`` and ``offset``. The largest possible record is under 90 KB.
"""

from __future__ import annotations

import base64

from ..core.times import format_time
from ..core.validation import clip
from ..core.vocabulary import DEADLETTER_DETAIL_CHARS, DEADLETTER_PAYLOAD_BYTES, DEADLETTER_SCHEMA
from .codec import encode_json

__all__ = ["deadletter_record", "MAX_KEY_BYTES", "MAX_RECORD_BYTES"]

MAX_KEY_BYTES = 1024
#: An upper bound of :func:`deadletter_record`'s size (base64 of the largest payload and key, plus fields).
MAX_RECORD_BYTES = 4 * DEADLETTER_PAYLOAD_BYTES // 3 + 4 * MAX_KEY_BYTES // 3 + 6 * DEADLETTER_DETAIL_CHARS + 4096


def _text(doc: dict, name: str, data: bytes) -> None:
    try:
        doc[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        doc[name] = base64.b64encode(data).decode("ascii")
        doc[name + "_encoding"] = "base64"


def deadletter_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                      reason: str, detail: str, received_at: int) -> tuple[bytes | None, bytes]:
    """(record key, record value) of the dead letter for one input message."""
    doc: dict = {"schema": DEADLETTER_SCHEMA, "source_topic": topic, "partition": partition, "offset": offset}
    if key is None:
        doc["key"] = None
    else:
        if len(key) > MAX_KEY_BYTES:
            key = key[:MAX_KEY_BYTES]
            doc["key_truncated"] = True
        _text(doc, "key", key)
    value = value or b""
    size = len(value)
    if size > DEADLETTER_PAYLOAD_BYTES:
        value = value[:DEADLETTER_PAYLOAD_BYTES]
        doc["payload_truncated"] = True
        doc["payload_size"] = size
    _text(doc, "payload", value)
    doc["reason"] = reason
    doc["detail"] = clip(detail, DEADLETTER_DETAIL_CHARS)
    doc["received_at"] = format_time(received_at)
    return key, encode_json(doc)
