"""Reading capture files: the one place that knows what a capture line is.

A capture is JSON Lines, one Kafka message a line, in one of two shapes (contract §5):

* a kcat ``-J`` **envelope**: ``{"topic", "key", "payload", "partition"?,
  "offset"?, "ts"?, ...}``. ``payload`` is the value as kcat printed it (a
  string; ``null`` for a tombstone). kcat writes bytes that are not UTF-8 as
  they are, inside the JSON string, so such a line is not UTF-8 itself: it is
  read byte for byte and the payload keeps its exact bytes (the monitor then
  counts it invalid, as a worker would). ``"payload_encoding": "base64"``
  (and ``key_encoding``) is the other way to carry such bytes, the one
  ``cdiwatch capture`` and dead letters use.
* a **bare event**: the event itself, recognised by ``schema`` and routed by
  it (``incident.v1`` -> the incidents topic keyed by ``incident_id``,
  ``crime.v1`` -> the crimes topic keyed by ``crime_id``).

``replay``, the offline ``audit`` and ``capture`` all read through
:func:`read_capture`, so they agree on every line. Lines are decoded by
msgspec in C (the offline audit reads hundreds of thousands a second). A line
that is not a message at all is reported through ``on_error`` and skipped,
never raised. So is a line too long to be one (:func:`max_line_bytes`): it is
skipped unread, a bounded piece at a time, so that no file (a disk image given
by mistake, a file with no newline) can take the memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from typing import Callable, Final, IO, Iterable, Iterator, Union

import msgspec

from ..core.vocabulary import CRIME_SCHEMA, INCIDENT_SCHEMA, MAX_MESSAGE_BYTES
from .lines import CaptureError, CaptureMessage, Envelope, Line

__all__ = ["CaptureMessage", "ErrorHandler", "read_capture", "read_payloads", "count_lines", "CaptureError",
           "max_line_bytes"]

PathLike = Union[str, "os.PathLike[str]"]
#: ``on_error(path, line_no, reason)``: called for each line that is skipped.
ErrorHandler = Callable[[str, int, str], None]


def check_capture_files(paths: PathLike | Iterable[PathLike]) -> list[str]:
    """The capture files a command was given, as text, each checked before any
    work starts: one clear :class:`CaptureError` for a missing, unreadable or
    directory path (``-`` is standard input)."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    texts = [os.fspath(path) for path in given]
    for path in texts:
        if path == "-":
            continue
        if os.path.isdir(path):
            raise CaptureError(f"{path} is a directory, not a capture file (give the .jsonl files in it)")
        if not os.path.exists(path):
            raise CaptureError(f"no such file: {path} (a capture file was expected)")
        if not os.access(path, os.R_OK):
            raise CaptureError(f"cannot read {path}: permission denied")
    return texts


_decode_line = msgspec.json.Decoder(Line).decode
_decode_envelope = msgspec.json.Decoder(Envelope).decode
_ROUTE: Final = {INCIDENT_SCHEMA: "incident_id", CRIME_SCHEMA: "crime_id"}


def _field_bytes(name: str, value: object, encoding: object) -> bytes | None:
    """Envelope ``key``/``payload`` as bytes; ValueError with the reason."""
    if value is None:
        return None
    if type(value) is not str:
        raise ValueError(f"envelope {name!r} must be a string or null, not {type(value).__name__}")
    if encoding is None:
        return value.encode("utf-8", "surrogateescape")
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"envelope {name!r} is not valid base64") from None
    raise ValueError(f"unknown {name}_encoding {str(encoding)[:20]!r} (only 'base64' is supported)")


def _opt_int(value: object) -> int | None:
    return value if type(value) is int else None


def _slow_line(raw: bytes) -> Line:
    """A line msgspec refused: raw non-UTF-8 bytes inside strings (kcat -J).

    Python's json reads the line decoded with ``surrogateescape``, so every
    byte that is not UTF-8 survives as a surrogate and is restored exactly
    when the payload is encoded back.
    """
    obj = json.loads(raw.decode("utf-8", "surrogateescape"))
    if type(obj) is not dict:
        raise ValueError(f"not a JSON object (a {type(obj).__name__})")
    return msgspec.convert({k: v for k, v in obj.items() if k in Line.__struct_fields__}, Line)


def _message(line: Line, raw: bytes, line_no: int, source: str, routes: dict) -> CaptureMessage:
    """The message a decoded line carries; ValueError with the reason when it carries none."""
    if line.schema is not msgspec.UNSET and line.topic is None:
        schema = line.schema
        topic = routes.get(schema) if type(schema) is str else None
        if topic is None:
            raise ValueError(f"bare event with schema {str(schema)[:40]!r}: neither {INCIDENT_SCHEMA} "
                             f"nor {CRIME_SCHEMA}")
        key = line.incident_id if schema == INCIDENT_SCHEMA else line.crime_id
        payload = raw.rstrip(b"\r\n")
        return CaptureMessage(topic, key.encode("utf-8", "surrogateescape") if type(key) is str else None,
                              payload, None, None, None, line_no, source)
    topic = line.topic
    if type(topic) is not str or not topic:
        raise ValueError("envelope without a 'topic' string (and no 'schema': not a bare event either)")
    if line.payload is msgspec.UNSET:
        raise ValueError("envelope without 'payload'")
    body = _field_bytes("payload", line.payload, line.payload_encoding)
    key = _field_bytes("key", line.key, line.key_encoding)
    return CaptureMessage(topic, key, body if body is not None else b"", _opt_int(line.partition),
                          _opt_int(line.offset), _opt_int(line.ts), line_no, source)


def _open(path: PathLike) -> tuple[IO[bytes], str, bool]:
    source = os.fspath(path)
    if source == "-":
        return sys.stdin.buffer, "<stdin>", False
    if os.path.isdir(source):
        raise CaptureError(f"{source} is a directory, not a capture file (give the .jsonl files in it)")
    try:
        # A large buffer: few read() calls (a busy producer thread waits on each GIL release).
        return open(source, "rb", buffering=1 << 20), source, True
    except FileNotFoundError:
        raise CaptureError(f"no such file: {source} (a capture file was expected)") from None
    except OSError as exc:
        raise CaptureError(f"cannot read {source}: {exc.strerror or exc}") from None


def max_line_bytes(max_message_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """The longest capture line read, newline included: room for the largest
    message the monitor accepts written the longest way JSON allows (every
    byte a six-byte ``\\u00XX`` escape), and for messages several times too
    large, which are counted invalid (``too_large``) as a worker counts them.
    At least 64 MiB."""
    return max(64 << 20, 8 * max_message_bytes)


def _lines(fh: IO[bytes], source: str, limit: int, report: ErrorHandler) -> Iterator[tuple[int, bytes]]:
    """The numbered lines of one file. A line longer than ``limit`` bytes is
    reported and skipped, never held whole."""
    readline = fh.readline
    line_no = 0
    while raw := readline(limit):
        line_no += 1
        if len(raw) == limit and raw[-1] != 10:  # no newline within the limit
            rest = readline(1 << 20)
            if rest:  # not the file's last line, exactly the limit long: skip the rest, a MiB at a time
                size = limit + len(rest)
                while rest[-1] != 10 and (rest := readline(1 << 20)):
                    size += len(rest)
                report(source, line_no, f"{size:,} bytes, over the {limit:,}-byte limit of a line: skipped unread")
                continue
        yield line_no, raw


def _files(paths: Iterable[PathLike]) -> Iterator[tuple[IO[bytes], str]]:
    """Each file opened in turn (closed when done), for the caller's loop over
    its :func:`_lines`."""
    for path in paths:
        fh, source, owned = _open(path)
        try:
            yield fh, source
        finally:
            if owned:
                fh.close()


def _general(raw: bytes, line_no: int, source: str, routes: dict, report: ErrorHandler) -> CaptureMessage | None:
    """Any line the typed fast path did not take: bare events, encodings, odd bytes, mistakes."""
    try:
        try:
            line = _decode_line(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            if not raw.strip():
                return None
            line = _slow_line(raw)
        return _message(line, raw, line_no, source, routes)
    except (ValueError, msgspec.ValidationError, RecursionError) as exc:
        report(source, line_no, _reason(exc))
        return None


def read_capture(paths: PathLike | Iterable[PathLike], incidents_topic: str = "cc.incidents",
                 crimes_topic: str = "rms.crimes", on_error: ErrorHandler | None = None,
                 max_line: int | None = None) -> Iterator[CaptureMessage]:
    """Every message of the capture files, in file order (``"-"``: standard input).

    Blank lines are skipped silently; a line that carries no message, or is
    longer than ``max_line`` bytes (default :func:`max_line_bytes`), is passed
    to ``on_error(path, line_no, reason)`` (default: a line on stderr) and
    skipped. Raises :class:`CaptureError` when a file cannot be opened.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    report = on_error or _print_error
    routes = {INCIDENT_SCHEMA: incidents_topic, CRIME_SCHEMA: crimes_topic}
    limit = max_line or max_line_bytes()
    fast = _decode_envelope
    for fh, source in _files(paths):
        for line_no, raw in _lines(fh, source, limit, report):
            try:
                env = fast(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                msg = _general(raw, line_no, source, routes, report)
                if msg is not None:
                    yield msg
                continue
            key = env.key
            yield CaptureMessage(env.topic, None if key is None else key.encode("utf-8", "surrogateescape"),
                                 env.payload.encode("utf-8", "surrogateescape"), env.partition, env.offset,
                                 env.ts, line_no, source)


def read_payloads(paths: PathLike | Iterable[PathLike], incidents_topic: str, crimes_topic: str,
                  on_error: ErrorHandler, max_line: int | None = None) -> Iterator[tuple[str, bytes]]:
    """``(topic, payload)`` of every message of an input topic, in file order:
    :func:`read_capture` without the message objects, for the offline audit's
    hot loop. A message of another topic is reported through ``on_error``."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    routes = {INCIDENT_SCHEMA: incidents_topic, CRIME_SCHEMA: crimes_topic}
    inputs = (incidents_topic, crimes_topic)
    limit = max_line or max_line_bytes()
    fast = _decode_envelope
    for fh, source in _files(paths):
        for line_no, raw in _lines(fh, source, limit, on_error):
            try:
                env = fast(raw)
                topic, payload = env.topic, env.payload.encode("utf-8", "surrogateescape")
            except (msgspec.DecodeError, UnicodeDecodeError):
                msg = _general(raw, line_no, source, routes, on_error)
                if msg is None:
                    continue
                topic, payload = msg.topic, msg.payload
            if topic in inputs:
                yield topic, payload
            else:
                on_error(source, line_no, f"topic {topic[:60]!r} is not an input topic")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)[:200]


def _print_error(path: str, line_no: int, reason: str) -> None:
    print(f"{path}:{line_no}: skipped: {reason}", file=sys.stderr)


def count_lines(paths: PathLike | Iterable[PathLike]) -> int:
    """Lines in the files (for progress bars): newline bytes in 1 MiB blocks,
    plus a last line without one. Standard input counts 0 (it cannot be read twice)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    total = 0
    for path in paths:
        if os.fspath(path) == "-":
            continue
        fh, _source, _owned = _open(path)
        with fh:
            last = b"\n"
            while block := fh.read(1 << 20):
                total += block.count(b"\n")
                last = block[-1:]
        if last != b"\n":
            total += 1
    return total
