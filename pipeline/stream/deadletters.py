"""``deadletter.v1`` records (contract §2): an input message that was not applied, and why.

A dead letter stays small whatever it carries, so that it always fits in a
Kafka record and stays under 70 KB: ``detail`` at most 500 characters; a
payload over 65,536 bytes cut to at most its first 65,536 bytes, so that its
text in the record (escaped JSON text, or base64 for bytes that are not
UTF-8) is at most 65,536 characters, with ``payload_truncated`` and
``payload_size`` (the original size); a key over 256 bytes cut likewise
(``key_truncated``, a cdiwatch extension). The original stays findable by
``source_topic``, ``partition`` and ``offset``.
"""

from __future__ import annotations

import base64

import orjson

from ..core.times import format_time
from ..core.validation import clip
from ..core.vocabulary import DEADLETTER_DETAIL_CHARS, DEADLETTER_PAYLOAD_BYTES, DEADLETTER_SCHEMA
from .codec import encode_json

__all__ = ["deadletter_record", "MAX_KEY_BYTES", "MAX_RECORD_BYTES", "fit"]

MAX_KEY_BYTES = 256
#: An upper bound of a dead letter's size: the payload text, the key's, the detail's and the fields.
MAX_RECORD_BYTES = DEADLETTER_PAYLOAD_BYTES + 6 * MAX_KEY_BYTES + 6 * DEADLETTER_DETAIL_CHARS + 1024


def _escaped_len(text: str) -> int:
    return len(orjson.dumps(text)) - 2


def fit(data: bytes, limit: int) -> tuple[str, bool]:
    """(text, is_base64) of the longest prefix of ``data`` whose text is at most ``limit`` characters.

    UTF-8 stays text (cut at a character boundary, escaping counted); other
    bytes become base64 (3 bytes -> 4 characters).
    """
    head = data[:limit]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(data) > limit and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            text = head[:exc.start].decode("utf-8")  # a character cut in two at the limit
        else:
            return base64.b64encode(data[: limit // 4 * 3]).decode("ascii"), True
    if _escaped_len(text) <= limit:
        return text, False
    lo, hi = 0, len(text)  # the longest prefix whose escaped form fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _escaped_len(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], False


def _field(doc: dict, name: str, data: bytes, limit: int) -> None:
    text, is_b64 = fit(data, limit)
    doc[name] = text
    if is_b64:
        doc[name + "_encoding"] = "base64"
    cut = len(base64.b64decode(text)) if is_b64 else len(text.encode("utf-8"))
    if cut < len(data):
        doc[name + "_truncated"] = True
        doc[name + "_size"] = len(data)


def deadletter_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                      reason: str, detail: str, received_at: int) -> tuple[bytes | None, bytes]:
    """(record key, record value) of the dead letter for one input message."""
    doc: dict = {"schema": DEADLETTER_SCHEMA, "source_topic": topic, "partition": partition, "offset": offset}
    if key is None:
        doc["key"] = None
    else:
        key = key[:MAX_KEY_BYTES * 4]
        _field(doc, "key", key, MAX_KEY_BYTES)
        doc.pop("key_size", None)
        key = key[:MAX_KEY_BYTES]
    _field(doc, "payload", value or b"", DEADLETTER_PAYLOAD_BYTES)
    doc["reason"] = reason
    doc["detail"] = clip(detail, DEADLETTER_DETAIL_CHARS)
    doc["received_at"] = format_time(received_at)
    return key, encode_json(doc)
