"""Writing capture files that :func:`~pipeline.capture.reading.read_capture` reads back exactly.

Envelopes are kcat ``-J`` shaped: ``{"topic","partition","offset","key","payload","ts"}``
(``partition``/``offset`` when known). Bytes that are not UTF-8 cannot be a
JSON string, so they are written base64-encoded with ``"payload_encoding":
"base64"`` (resp. ``key_encoding``): the convention of ``deadletter.v1``.
"""

from __future__ import annotations

import base64
import os
import sys
from collections import Counter
from typing import IO, Any, Iterable, Union

import orjson

__all__ = ["capture_line", "write_capture", "CaptureRecord"]

PathLike = Union[str, "os.PathLike[str]"]
#: (topic, key, payload, ts_ms) or (topic, key, payload, ts_ms, partition, offset)
CaptureRecord = tuple


def _text(env: dict[str, Any], name: str, value: bytes | str | None) -> None:
    if value is None or isinstance(value, str):
        env[name] = value
        return
    try:
        env[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        env[name] = base64.b64encode(value).decode("ascii")
        env[name + "_encoding"] = "base64"


def capture_line(topic: str, key: bytes | str | None, payload: bytes, ts_ms: int | None = None,
                 fmt: str = "envelope", partition: int | None = None, offset: int | None = None) -> bytes:
    """One capture line, newline included. ``fmt="bare"``: the payload itself."""
    if fmt == "bare":
        return payload + b"\n"
    env: dict[str, Any] = {"topic": topic}
    if partition is not None:
        env["partition"] = partition
    if offset is not None:
        env["offset"] = offset
    _text(env, "key", key)
    _text(env, "payload", payload)
    if ts_ms is not None:
        env["ts"] = ts_ms
    return orjson.dumps(env, option=orjson.OPT_APPEND_NEWLINE)


def write_capture(records: Iterable[CaptureRecord], out: PathLike | IO[bytes], fmt: str = "envelope") -> Counter:
    """Write records as capture lines; the count per topic.

    ``out``: a path (``"-"``: standard output) or a binary file. Lines are
    joined and written in blocks: a ``write`` per line would cost more than
    formatting it.
    """
    if isinstance(out, (str, os.PathLike)):
        if os.fspath(out) == "-":
            return write_capture(records, sys.stdout.buffer, fmt)
        with open(out, "wb") as fh:
            return write_capture(records, fh, fmt)
    counts: Counter = Counter()
    buf: list[bytes] = []
    for record in records:
        topic, key, payload, ts_ms = record[:4]
        partition, offset = (record[4], record[5]) if len(record) > 4 else (None, None)
        counts[topic] += 1
        buf.append(capture_line(topic, key, payload, ts_ms, fmt, partition, offset))
        if len(buf) >= 4096:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.flush()
    return counts
