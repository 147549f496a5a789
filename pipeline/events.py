"""Input validation (contract §2): raw bytes in, a typed event or a rejection out.

Why a hand-written validator next to the pydantic models in ``models.py``:
validation runs once per message on the hot path (offline audits of tens of
millions of lines, replays), and a generic model costs several microseconds
per message. The pydantic models stay the published contract (``schemas/``)
and ``tests/test_events.py`` proves both accept and reject the same inputs.

Every rejection carries one deadletter ``reason`` code and a human ``detail``.
Events inside the core are NamedTuples holding integer microseconds
since the Unix epoch (exact, unlike floats, so watermarks round-trip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, NamedTuple

import orjson

__all__ = [
    "IncidentEvent", "CrimeEvent", "Rejection", "Validator",
    "INCIDENT_SCHEMA", "CRIME_SCHEMA", "REASONS", "CHANNELS", "DISPOSITIONS",
    "FLAGS", "CANCEL_REASONS", "parse_time", "format_time",
]

INCIDENT_SCHEMA = "incident.v1"
CRIME_SCHEMA = "crime.v1"
REASONS = ("invalid_json", "unknown_schema", "schema_violation", "future_timestamp", "too_large")
CHANNELS = frozenset({"999", "101", "online", "walk_in", "public_protection", "partner_agency", "other"})
DISPOSITIONS = frozenset({"crime_recorded", "no_crime", "transferred", "duplicate", "other"})
FLAGS = frozenset({"domestic_abuse", "vulnerable_victim", "repeat_victim", "hate"})
CANCEL_REASONS = frozenset({
    "additional_verifiable_information", "outside_jurisdiction", "duplicate", "recorded_in_error",
})
INCIDENT_TYPES = ("opened", "reclassified", "closed")
CRIME_TYPES = ("recorded", "linked", "cancelled")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Offset minutes are 00-59 (RFC 3339 time-minute): fromisoformat alone would read "+01:60" as +02:00.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:[0-5]\d)\Z", re.ASCII
)


def parse_time(value: object) -> int | None:
    """RFC 3339 date-time -> microseconds since the epoch, or None if invalid.

    Seconds and an offset are required (contract §2); fractions beyond
    microseconds are truncated. Leap seconds (``:60``) are rejected.
    """
    if type(value) is not str or not _RFC3339.match(value):
        return None
    try:
        dt = datetime.fromisoformat(value.upper() if ("t" in value or "z" in value) else value)
    except ValueError:
        return None
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_time(us: int | None) -> str | None:
    """Microseconds since the epoch -> RFC 3339 in UTC with ``Z`` (microsecond precision)."""
    if us is None:
        return None
    seconds, micros = divmod(us, 1_000_000)
    dt = datetime.fromtimestamp(seconds, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


class IncidentEvent(NamedTuple):
    """A valid ``incident.v1`` event. ``at`` is ``occurred_at`` in µs.

    A NamedTuple (one is made per event, on every stage): its field order is
    also the layout of the internal op message (``stream/ops.py``).
    """

    event_id: str
    kind: str  # opened | reclassified | closed
    incident_id: str
    at: int
    category: str | None = None
    disposition: str | None = None
    reported_at: int | None = None
    channel: str | None = None
    district: str | None = None
    flags: tuple[str, ...] = ()


class CrimeEvent(NamedTuple):
    """A valid ``crime.v1`` event. ``at`` is ``occurred_at`` in µs (op layout as above)."""

    event_id: str
    kind: str  # recorded | linked | cancelled
    crime_id: str
    at: int
    incident_ids: tuple[str, ...] = ()
    category: str | None = None
    reason: str | None = None


@dataclass(slots=True, frozen=True)
class Rejection:
    """Why a message is invalid: one deadletter ``reason`` code and a human detail."""

    reason: str
    detail: str


class _Invalid(Exception):
    def __init__(self, detail: str, reason: str = "schema_violation") -> None:
        self.reason = reason
        self.detail = detail


def _get(obj: dict, name: str):
    """An optional field: ``null`` counts as absent (contract §2)."""
    return obj.get(name)


def _req_str(obj: dict, name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise _Invalid(f"missing required field '{name}'")
    if type(value) is not str:
        raise _Invalid(f"'{name}' must be a string, got {type(value).__name__}")
    if not value:
        raise _Invalid(f"'{name}' must not be empty")
    return value


def _req_vocab(obj: dict, name: str, vocab: frozenset[str] | set[str]) -> str:
    value = obj.get(name)
    if value is None:
        raise _Invalid(f"missing required field '{name}'")
    if type(value) is not str:
        raise _Invalid(f"'{name}' must be a string, got {type(value).__name__}")
    if value not in vocab:
        raise _Invalid(f"'{name}' value {value!r} is not in its vocabulary")
    return value


def _req_time(obj: dict, name: str) -> int:
    value = obj.get(name)
    if value is None:
        raise _Invalid(f"missing required field '{name}'")
    us = parse_time(value)
    if us is None:
        raise _Invalid(f"'{name}' is not an RFC 3339 date-time with seconds and offset: {str(value)[:64]!r}")
    return us


def _id_list(obj: dict, name: str, non_empty: bool) -> tuple[str, ...]:
    value = obj.get(name)
    if value is None:
        raise _Invalid(f"missing required field '{name}'")
    if type(value) is not list:
        raise _Invalid(f"'{name}' must be a list of ids")
    for item in value:
        if type(item) is not str or not item:
            raise _Invalid(f"'{name}' items must be non-empty strings")
    if non_empty and not value:
        raise _Invalid(f"'{name}' must not be empty")
    return tuple(value)


class Validator:
    """Turns one raw message into an event or a :class:`Rejection` (contract §2).

    Holds the configured vocabularies and limits; ``now_us`` is passed per call
    because the future-timestamp rule compares with the wall clock *when the
    monitor reads the message*, and the core never reads a clock itself.
    """

    def __init__(self, crime_categories: Iterable[str], non_crime_categories: Iterable[str],
                 future_tolerance_s: float = 900.0, max_bytes: int = 1024 * 1024) -> None:
        self.crime_categories = frozenset(crime_categories)
        self.categories = self.crime_categories | frozenset(non_crime_categories)
        self.future_tolerance_us = int(future_tolerance_s * 1_000_000)
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings) -> "Validator":
        return cls(settings.crime_categories, settings.non_crime_categories,
                   settings.future_tolerance, settings.max_message_bytes)

    def validate(self, schema: str, raw: bytes | str, now_us: int,
                 parsed: object = None) -> IncidentEvent | CrimeEvent | Rejection:
        """Validate a message read from the topic that carries ``schema``.

        ``parsed`` lets a caller that already decoded the JSON skip a second parse.
        """
        if len(raw) > self.max_bytes:
            return Rejection("too_large", f"message is {len(raw)} bytes, the limit is {self.max_bytes}")
        if parsed is None:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return Rejection("invalid_json", f"not UTF-8 JSON (RFC 8259): {exc}"[:300])
        if type(parsed) is not dict:
            return Rejection("schema_violation", f"a JSON {type(parsed).__name__} is not an event object")
        got = parsed.get("schema")
        if got != schema:
            return Rejection("unknown_schema", f"schema {str(got)[:64]!r} is not {schema!r}, the schema of this topic")
        try:
            if schema == INCIDENT_SCHEMA:
                event = self._incident(parsed)
            else:
                event = self._crime(parsed)
        except _Invalid as exc:
            return Rejection(exc.reason, exc.detail)
        if event.at > now_us + self.future_tolerance_us:
            return Rejection("future_timestamp",
                             f"occurred_at {format_time(event.at)} is more than "
                             f"{self.future_tolerance_us // 60_000_000} minutes after the monitor's clock")
        return event

    def _incident(self, o: dict) -> IncidentEvent:
        event_id = _req_str(o, "event_id")
        kind = _req_vocab(o, "event_type", INCIDENT_TYPES)
        incident_id = _req_str(o, "incident_id")
        at = _req_time(o, "occurred_at")
        flags = _get(o, "flags")
        if flags is None:
            flags = ()
        else:
            if type(flags) is not list or any(type(f) is not str or f not in FLAGS for f in flags):
                raise _Invalid(f"'flags' must be a list drawn from {sorted(FLAGS)}")
            flags = tuple(flags)
        if kind == "opened":
            reported_at = _req_time(o, "reported_at")
            if reported_at > at:
                raise _Invalid("'reported_at' is after 'occurred_at'")
            district = _req_str(o, "district")
            if len(district) > 40:
                raise _Invalid("'district' is longer than 40 characters")
            return IncidentEvent(event_id, kind, incident_id, at,
                                 category=_req_vocab(o, "category", self.categories),
                                 reported_at=reported_at,
                                 channel=_req_vocab(o, "channel", CHANNELS),
                                 district=district, flags=flags)
        if kind == "reclassified":
            return IncidentEvent(event_id, kind, incident_id, at,
                                 category=_req_vocab(o, "category", self.categories), flags=flags)
        return IncidentEvent(event_id, kind, incident_id, at,
                             disposition=_req_vocab(o, "disposition", DISPOSITIONS), flags=flags)

    def _crime(self, o: dict) -> CrimeEvent:
        event_id = _req_str(o, "event_id")
        kind = _req_vocab(o, "event_type", CRIME_TYPES)
        crime_id = _req_str(o, "crime_id")
        at = _req_time(o, "occurred_at")
        if kind == "recorded":
            return CrimeEvent(event_id, kind, crime_id, at,
                              incident_ids=_id_list(o, "incident_ids", non_empty=False),
                              category=_req_vocab(o, "category", self.crime_categories))
        if kind == "linked":
            return CrimeEvent(event_id, kind, crime_id, at,
                              incident_ids=_id_list(o, "incident_ids", non_empty=True))
        reason = _get(o, "reason")
        if reason is not None and (type(reason) is not str or reason not in CANCEL_REASONS):
            raise _Invalid(f"'reason' {str(reason)[:64]!r} is not in {sorted(CANCEL_REASONS)}")
        return CrimeEvent(event_id, kind, crime_id, at, reason=reason)
