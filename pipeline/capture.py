"""Reading capture files: the one place that knows what a capture line is.

A capture is JSON Lines. Each line is one Kafka message in one of two shapes
(contract §5):

* a kcat ``-J`` **envelope**: ``{"topic", "key", "payload", "partition"?,
  "offset"?, "ts"?}``. ``payload`` is the message value as kcat printed it (a
  JSON string, ``null`` for a tombstone); the extension
  ``"payload_encoding": "base64"`` (and ``"key_encoding": "base64"``) carries
  bytes that are not UTF-8, the same convention as ``deadletter.v1``.
* a **bare event**: the event object itself, recognised by its ``schema`` field
  and routed by it (``incident.v1`` to the incidents topic, keyed by
  ``incident_id``; ``crime.v1`` to the crimes topic, keyed by ``crime_id``).

Both ``replay`` (which publishes the messages) and the offline ``audit`` (which
applies the rules to them without a broker) read captures through
:func:`read_capture`, so they agree on every line by construction.

Speed is a requirement, not a nicety: the offline audit reads ~300k lines at
well over 200k lines/s, so the per-line budget here is about a microsecond.
That is why the file is read in binary, each line is parsed exactly once with
orjson, there are no regular expressions or pydantic models on the hot path,
and a bare event's parsed object is handed on (``CaptureMessage.parsed``) so
the audit never parses it again. A bad line is reported through ``on_error``
and skipped: a capture with a broken line must still be replayable.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Union

import orjson

__all__ = [
    "CaptureMessage",
    "ErrorHandler",
    "read_capture",
    "count_lines",
    "capture_line",
    "write_capture",
    "INCIDENT_SCHEMA",
    "CRIME_SCHEMA",
]

logger = logging.getLogger(__name__)

INCIDENT_SCHEMA = "incident.v1"
CRIME_SCHEMA = "crime.v1"

_MISSING = object()

PathLike = Union[str, "os.PathLike[str]"]
#: ``on_error(path, line_no, reason)``: called for each line that is skipped.
ErrorHandler = Callable[[str, int, str], None]


@dataclass(slots=True)
class CaptureMessage:
    """One message read from a capture file.

    ``payload`` is the exact value bytes to publish (for a bare event: the
    line without its line terminator). ``parsed`` is the already-decoded event
    object for bare events and ``None`` for envelopes, whose payload may be
    anything (including invalid JSON) and is decoded by whoever needs it.
    ``partition``/``offset``/``ts_ms`` are what the envelope recorded, for
    information only: nothing may depend on the original partitioning.
    """

    topic: str
    key: bytes | None
    payload: bytes
    partition: int | None
    offset: int | None
    ts_ms: int | None
    line_no: int
    source: str
    parsed: dict[str, Any] | None = None


def _log_error(path: str, line_no: int, reason: str) -> None:
    logger.warning("%s:%d: skipped: %s", path, line_no, reason)


def _opt_int(value: Any) -> int | None:
    # kcat prints integers; anything else is metadata we cannot trust, not an error.
    return value if type(value) is int else None


def _decode_field(obj: dict[str, Any], name: str, value: Any) -> bytes | None:
    """Envelope ``key``/``payload`` as bytes; raises ValueError with a reason."""
    if value is None:
        return None
    if type(value) is not str:
        raise ValueError(f"envelope {name!r} must be a string or null, not {type(value).__name__}")
    encoding = obj.get(name + "_encoding")
    if encoding is None:
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates escaped in the JSON string
            raise ValueError(f"envelope {name!r} is not encodable as UTF-8: {exc.reason}") from None
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"envelope {name!r} is not valid base64") from None
    raise ValueError(f"unknown {name}_encoding {encoding!r} (only 'base64' is supported)")


def _open(path: PathLike) -> tuple[IO[bytes], str, bool]:
    source = os.fspath(path)
    if source == "-":
        return sys.stdin.buffer, "<stdin>", False
    # A large buffer: few read() calls, so few GIL releases that a busy producer
    # thread (replay) would turn into waits of up to the 5 ms switch interval.
    return open(source, "rb", buffering=1 << 20), source, True


def read_capture(
    paths: PathLike | Iterable[PathLike],
    incidents_topic: str = "cc.incidents",
    crimes_topic: str = "rms.crimes",
    on_error: ErrorHandler | None = None,
) -> Iterator[CaptureMessage]:
    """Yield every message of the capture files, in file order.

    ``paths`` is one path or several (``"-"`` reads standard input). Blank
    lines are skipped silently; a malformed line (not JSON, not an object, an
    envelope without ``topic``/``payload``, a bare event whose ``schema`` is
    not an input schema) is passed to ``on_error(path, line_no, reason)``
    (default: a warning on this module's logger) and skipped, never raised.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    report = on_error or _log_error
    routes = {INCIDENT_SCHEMA: (incidents_topic, "incident_id"), CRIME_SCHEMA: (crimes_topic, "crime_id")}
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    message = CaptureMessage
    for path in paths:
        fh, source, owned = _open(path)
        try:
            line_no = 0
            for raw in fh:
                line_no += 1
                try:
                    obj = loads(raw)
                except decode_error as exc:
                    if raw.strip():
                        report(source, line_no, f"not JSON: {exc}")
                    continue
                if type(obj) is not dict:
                    report(source, line_no, f"not a JSON object (a {type(obj).__name__})")
                    continue
                schema = obj.get("schema", _MISSING)
                if schema is not _MISSING:
                    route = routes.get(schema) if type(schema) is str else None
                    if route is None:
                        report(source, line_no, _bad_schema(schema))
                        continue
                    key = obj.get(route[1])
                    if raw[-1:] == b"\n":
                        raw = raw[:-2] if raw[-2:-1] == b"\r" else raw[:-1]
                    # The key is a routing hint; the monitor validates the payload itself.
                    yield message(
                        route[0], key.encode() if type(key) is str else None, raw,
                        None, None, None, line_no, source, obj,
                    )
                    continue
                # Envelope fast path: string topic, key and payload, no encodings.
                topic = obj.get("topic")
                payload = obj.get("payload", _MISSING)
                key = obj.get("key")
                if (
                    type(topic) is str
                    and topic
                    and type(payload) is str
                    and (key is None or type(key) is str)
                    and "payload_encoding" not in obj
                    and "key_encoding" not in obj
                ):
                    try:
                        payload_bytes = payload.encode()
                        key_bytes = key.encode() if key is not None else None
                    except UnicodeEncodeError:
                        pass  # lone surrogate: let the slow path word the error
                    else:
                        ts = obj.get("ts")
                        partition = obj.get("partition")
                        offset = obj.get("offset")
                        yield message(
                            topic,
                            key_bytes,
                            payload_bytes,
                            partition if type(partition) is int else None,
                            offset if type(offset) is int else None,
                            ts if type(ts) is int else None,
                            line_no,
                            source,
                            None,
                        )
                        continue
                msg = _envelope(obj, line_no, source, report)
                if msg is not None:
                    yield msg
        finally:
            if owned:
                fh.close()


def _bad_schema(schema: Any) -> str:
    return f"bare event with schema {schema!r}: neither {INCIDENT_SCHEMA} nor {CRIME_SCHEMA}"


def _envelope(obj: dict[str, Any], line_no: int, source: str, report: ErrorHandler) -> CaptureMessage | None:
    topic = obj.get("topic")
    if type(topic) is not str or not topic:
        report(source, line_no, "envelope without a 'topic' string (and no 'schema': not a bare event either)")
        return None
    if "payload" not in obj:
        report(source, line_no, "envelope without 'payload'")
        return None
    try:
        key = _decode_field(obj, "key", obj.get("key"))
        payload = _decode_field(obj, "payload", obj["payload"])
    except ValueError as exc:
        report(source, line_no, str(exc))
        return None
    return CaptureMessage(
        topic,
        key,
        payload if payload is not None else b"",
        _opt_int(obj.get("partition")),
        _opt_int(obj.get("offset")),
        _opt_int(obj.get("ts")),
        line_no,
        source,
        None,
    )


def count_lines(paths: PathLike | Iterable[PathLike]) -> int:
    """Number of non-empty-terminated lines in the files (for progress bars).

    Counts newline bytes in 1 MiB blocks (about 1 GB/s), plus a final line
    without a newline. Standard input cannot be counted twice: it counts 0.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    total = 0
    for path in paths:
        if os.fspath(path) == "-":
            continue
        last = b"\n"
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                total += block.count(b"\n")
                last = block[-1:]
        if last != b"\n":
            total += 1
    return total


def _text_field(env: dict[str, Any], name: str, value: bytes | str | None) -> None:
    if value is None or type(value) is str:
        env[name] = value
        return
    try:
        env[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        env[name] = base64.b64encode(value).decode("ascii")
        env[name + "_encoding"] = "base64"


def capture_line(
    topic: str, key: bytes | str | None, payload: bytes, ts_ms: int | None = None, fmt: str = "envelope"
) -> bytes:
    """One capture line (newline included) that :func:`read_capture` reads back exactly.

    ``fmt="envelope"``: a kcat ``-J`` envelope ``{"topic","key","payload","ts"}``;
    bytes that are not UTF-8 cannot be a JSON string, so they are written
    base64-encoded with ``"payload_encoding":"base64"`` (resp. ``key_encoding``).
    ``fmt="bare"``: the payload itself, routed later by its ``schema``.
    """
    if fmt == "bare":
        return payload + b"\n"
    env: dict[str, Any] = {"topic": topic}
    _text_field(env, "key", key)
    _text_field(env, "payload", payload)
    if ts_ms is not None:
        env["ts"] = ts_ms
    return orjson.dumps(env, option=orjson.OPT_APPEND_NEWLINE)


def write_capture(
    messages: Iterable[tuple[str, bytes | str | None, bytes, int | None]],
    out: PathLike | IO[bytes],
    fmt: str = "envelope",
) -> Counter[str]:
    """Write ``(topic, key, payload, ts_ms)`` messages as capture lines; count per topic.

    ``out`` is a path (``"-"``: standard output) or a binary file object.
    Lines are joined and written in blocks: one ``write`` per line would cost
    more than formatting it.
    """
    if isinstance(out, (str, os.PathLike)):
        if os.fspath(out) == "-":
            return write_capture(messages, sys.stdout.buffer, fmt)
        with open(out, "wb") as fh:
            return write_capture(messages, fh, fmt)
    counts: Counter[str] = Counter()
    buf: list[bytes] = []
    for topic, key, payload, ts_ms in messages:
        counts[topic] += 1
        buf.append(capture_line(topic, key, payload, ts_ms, fmt))
        if len(buf) >= 4096:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.flush()
    return counts
