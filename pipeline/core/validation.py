"""Input validation (contract §2): raw bytes in, a valid event or a rejection out.

One validator, compiled: the field rules of §2 (types, vocabularies, required
fields per ``event_type``, the revision-2 limits on ids, lists and district)
are declared once as msgspec types (:func:`wire_types`) and checked in C while
the JSON is decoded. What a type cannot say is checked here, on the decoded
values only: the instants (:mod:`~pipeline.core.times`: one by one in
:meth:`Validator.validate`, a batch by the compiled reader of
:func:`~pipeline.core.times.parse_times` in :meth:`Validator.validate_many`,
which the offline reader and the workers' intake use), ``reported_at`` not after
``occurred_at``, and the future-timestamp rule, which needs the wall clock
*when the monitor reads the message* (passed in as ``now``: the core reads no clock).

Order of the checks, and so the reason a message gets: ``too_large``, then
``invalid_json`` (not UTF-8, not RFC 8259 JSON: no NaN, no number a double
cannot hold, no lone surrogate), then ``unknown_schema`` (not an object
carrying its topic's ``schema``: a JSON value that is not an object is a
``schema_violation``), then ``schema_violation``, then ``future_timestamp``.
A repeated member: the last one counts. ``null`` for an optional field is absence.

The published JSON Schemas come from the pydantic models in
:mod:`pipeline.contract.models`; property tests prove both accept and reject
the same inputs (``tests/test_contract_models.py``).
"""

import math
import re
from typing import Annotated, Any, Final, Literal, Optional, Union

import msgspec
import orjson

from .config import Limits, Vocabulary
from .events import CrimeEvent, IncidentEvent, Rejection
from .times import RFC3339_STRICT, format_time, parse_checked, parse_times
from .vocabulary import (
    CANCEL_REASONS, CHANNELS, CRIME_SCHEMA, CRIMES, DEADLETTER_DETAIL_CHARS, DISPOSITIONS, FLAGS,
    INCIDENT_SCHEMA, INCIDENTS, MAX_DISTRICT_CHARS, MAX_FLAGS, MAX_ID_CHARS, MAX_INCIDENT_IDS,
)

__all__ = ["Validator", "wire_types", "clip"]

_Time = str  # checked in Python (_instant): a pattern in msgspec calls Python's re anyway, slower
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Ids = Annotated[list[_Id], msgspec.Meta(max_length=MAX_INCIDENT_IDS)]
_LinkIds = Annotated[list[_Id], msgspec.Meta(min_length=1, max_length=MAX_INCIDENT_IDS)]
_District = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DISTRICT_CHARS)]
_Flags = Optional[Annotated[list[Literal[FLAGS]], msgspec.Meta(max_length=MAX_FLAGS)]]  # type: ignore[valid-type]

_RFC3339: Final = re.compile(RFC3339_STRICT)


def clip(text: str, limit: int = 300) -> str:
    """A detail fit for a dead letter: one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wire_types(vocabulary: Vocabulary, forbid_unknown_fields: bool = False) -> dict[str, tuple[type, ...]]:
    """The msgspec types per side (one per ``event_type``), for these vocabularies.

    Decoded as a tagged union on ``event_type``: msgspec picks the type from
    the tag and then checks that type's fields, in C. Each type's ``kind``
    class attribute is its tag. ``forbid_unknown_fields`` makes the fast
    decoder of :class:`Validator`, which sends a message with extra fields
    to the lenient one.
    """
    category = Literal[tuple(vocabulary.categories)]  # type: ignore[valid-type]
    crime_category = Literal[tuple(vocabulary.crime_categories)]  # type: ignore[valid-type]

    def struct(name, fields, tag):
        cls = msgspec.defstruct(name, fields, tag_field="event_type", tag=tag, kw_only=True,
                                frozen=True, gc=False, forbid_unknown_fields=forbid_unknown_fields)
        cls.kind = tag
        return cls

    incident_common = [("schema", Literal[INCIDENT_SCHEMA]), ("event_id", _Id), ("incident_id", _Id),
                       ("occurred_at", _Time), ("flags", _Flags, None)]
    crime_common = [("schema", Literal[CRIME_SCHEMA]), ("event_id", _Id), ("crime_id", _Id),
                    ("occurred_at", _Time)]
    incident = (
        struct("Opened", incident_common + [("reported_at", _Time), ("channel", Literal[CHANNELS]),
                                            ("district", _District), ("category", category)], "opened"),
        struct("Reclassified", incident_common + [("category", category)], "reclassified"),
        struct("Closed", incident_common + [("disposition", Literal[DISPOSITIONS])], "closed"),
    )
    crime = (
        struct("Recorded", crime_common + [("incident_ids", _Ids), ("category", crime_category)], "recorded"),
        struct("Linked", crime_common + [("incident_ids", _LinkIds)], "linked"),
        struct("Cancelled", crime_common + [("reason", Optional[Literal[CANCEL_REASONS]], None)], "cancelled"),
    )
    return {INCIDENTS: incident, CRIMES: crime}


class _Invalid(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


def _instant(name: str, text: str) -> int:
    us = parse_checked(text) if _RFC3339.match(text) else None
    if us is None:
        raise _Invalid(f"'{name}' {clip(text, 40)!r} is not a valid instant between years 1 and 9999 "
                       "(in UTC, once its offset is applied)")
    return us


def _instants(w) -> tuple[int, int | None]:
    """A wire event's ``occurred_at`` and (``opened``) ``reported_at``, one by
    one; :class:`_Invalid` names the first that is not an instant."""
    at = _instant("occurred_at", w.occurred_at)
    return at, (_instant("reported_at", w.reported_at) if w.kind == "opened" else None)


def _incident(w, at: int, reported: int | None) -> IncidentEvent:
    kind, flags = w.kind, w.flags
    flags = () if flags is None else tuple(flags)
    if kind == "opened":
        assert reported is not None  # _instants reads it for every opened event
        if reported > at:
            raise _Invalid("'reported_at' is after 'occurred_at'")
        return IncidentEvent(at, w.event_id, kind, w.incident_id, w.category, None, reported,
                             w.channel, w.district, flags)
    if kind == "reclassified":
        return IncidentEvent(at, w.event_id, kind, w.incident_id, w.category, flags=flags)
    return IncidentEvent(at, w.event_id, kind, w.incident_id, disposition=w.disposition, flags=flags)


def _crime(w, at: int, _reported: int | None) -> CrimeEvent:
    kind = w.kind
    if kind == "recorded":
        return CrimeEvent(at, w.event_id, kind, w.crime_id, tuple(w.incident_ids), w.category)
    if kind == "linked":
        return CrimeEvent(at, w.event_id, kind, w.crime_id, tuple(w.incident_ids))
    return CrimeEvent(at, w.event_id, kind, w.crime_id, reason=w.reason)


def _event(incidents: bool, w, at: int, reported: int | None) -> IncidentEvent | CrimeEvent:
    """The core's event of a decoded wire message (``incidents``: of the incidents feed).
    Compiled, both converters are native calls (a table of them would not be)."""
    return _incident(w, at, reported) if incidents else _crime(w, at, reported)


class Validator:
    """Turns one raw message of an input feed into an event or a :class:`Rejection`.

    Responsibilities: hold the decoders for the configured vocabularies and
    limits; give every rejection one reason of §2 and a short, single-line
    detail that never repeats a large value. It never raises for any input.
    """

    def __init__(self, vocabulary: Vocabulary | None = None, limits: Limits | None = None) -> None:
        vocabulary = vocabulary or Vocabulary()
        limits = limits or Limits()
        self.future_tolerance = limits.future_tolerance
        self.max_bytes = limits.max_message_bytes
        # Two decoders per side. The strict one refuses unknown fields, so that
        # for the usual message every value has been checked by msgspec; a
        # message with extra fields takes the lenient one, and then orjson
        # reads it too: msgspec skips an ignored value without converting it,
        # so only orjson sees a number a double cannot hold (1e400) there.
        self._strict = {side: msgspec.json.Decoder(Union[t])
                        for side, t in wire_types(vocabulary, forbid_unknown_fields=True).items()}
        self._lenient = {side: msgspec.json.Decoder(Union[t]) for side, t in wire_types(vocabulary).items()}

    def validate(self, side: str, raw: bytes, now: int) -> IncidentEvent | CrimeEvent | Rejection:
        """Validate ``raw`` read from the ``side`` feed (``incidents``/``crimes``) at wall time ``now``."""
        wire = self._wire(side, raw)
        if type(wire) is Rejection:
            return wire
        try:
            at, reported = _instants(wire)
            event = _event(side == INCIDENTS, wire, at, reported)
        except _Invalid as exc:
            return Rejection("schema_violation", exc.detail)
        return self._in_time(event, now)

    def validate_many(self, side: str, raws: list[bytes], now: int) -> list[IncidentEvent | CrimeEvent | Rejection]:
        """:meth:`validate` of each of ``raws`` (one feed), the same results:
        the batch's instants are parsed together (:func:`~pipeline.core.times.parse_times`).
        A message with an instant that is not one takes :meth:`validate`, for its detail."""
        wire_of, decode, max_bytes = self._wire, self._strict[side].decode, self.max_bytes
        wires: list[Any] = []
        keep = wires.append
        for raw in raws:  # the usual message inline (one call fewer); anything else as _wire says
            if len(raw) <= max_bytes and raw.isascii():
                try:
                    keep(decode(raw))
                    continue
                except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                    pass
            keep(wire_of(side, raw))
        texts: list[str] = []  # the instants _instants reads, in its order; the loop below takes them back the same way
        add = texts.append
        for w in wires:
            if type(w) is not Rejection:
                add(w.occurred_at)
                if w.kind == "opened":
                    add(w.reported_at)
        instants = iter(parse_times(texts))
        incidents, in_time = side == INCIDENTS, self._in_time
        out: list = []
        put = out.append
        for w, raw in zip(wires, raws):
            if type(w) is Rejection:
                put(w)
                continue
            at = next(instants)
            if w.kind == "opened":
                reported = next(instants)
                if reported is None:
                    at = None
            else:
                reported = None
            if at is None:
                put(self.validate(side, raw, now))
                continue
            try:
                event = _event(incidents, w, at, reported)
            except _Invalid as exc:
                put(Rejection("schema_violation", exc.detail))
                continue
            put(in_time(event, now))
        return out

    def _wire(self, side: str, raw: bytes):
        """The message decoded by the types of its ``event_type`` (instants still text), or its :class:`Rejection`."""
        size = len(raw)
        if size > self.max_bytes:
            return Rejection("too_large", f"message is {size:,} bytes, the limit is {self.max_bytes:,}")
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejection("invalid_json", f"not UTF-8: byte {exc.start} is {raw[exc.start]:#04x}")
        try:
            return self._strict[side].decode(raw)
        except msgspec.ValidationError as exc:
            if "unknown field" not in str(exc):
                return self._classify(side, raw, str(exc))
            return self._lenient_decode(side, raw)
        except msgspec.DecodeError as exc:
            return self._malformed(raw, str(exc))
        except RecursionError:
            return Rejection("invalid_json", "JSON nested too deeply")

    def _in_time(self, event, now: int):
        """The future-timestamp rule, last of §2."""
        if event.at > now + self.future_tolerance:
            return Rejection("future_timestamp",
                             f"occurred_at {format_time(event.at)} is more than "
                             f"{self.future_tolerance // 60_000_000} minutes after the monitor's clock "
                             f"({format_time(now)})")
        return event

    def _lenient_decode(self, side: str, raw: bytes):
        """A message with fields §2 does not list: they are ignored, but must be JSON."""
        try:
            wire = self._lenient[side].decode(raw)
        except msgspec.ValidationError as exc:
            return self._classify(side, raw, str(exc))
        except msgspec.DecodeError as exc:
            return self._malformed(raw, str(exc))
        except RecursionError:
            return Rejection("invalid_json", "JSON nested too deeply")
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Rejection("invalid_json", clip(f"not RFC 8259 JSON: {exc}"))
        except RecursionError:
            return Rejection("invalid_json", "JSON nested too deeply")
        return wire

    @staticmethod
    def _malformed(raw: bytes, detail: str) -> Rejection:
        try:  # orjson words syntax errors better ("unexpected character at line 1 column 9")
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            detail = str(exc)
        except RecursionError:
            detail = "JSON nested too deeply"
        if not raw.strip():
            detail = "empty message"
        return Rejection("invalid_json", clip(f"not RFC 8259 JSON: {detail}"))

    def _classify(self, side: str, raw: bytes, detail: str) -> Rejection:
        """A type error: say which rule of §2 it breaks, in the contract's order."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Rejection("invalid_json", clip(f"not RFC 8259 JSON: {exc}"))
        except RecursionError:
            return Rejection("invalid_json", "JSON nested too deeply")
        if type(obj) is not dict:
            return Rejection("schema_violation", f"a JSON {_json_type(obj)} is not an event object")
        expected = INCIDENT_SCHEMA if side == INCIDENTS else CRIME_SCHEMA
        got = obj.get("schema")
        if got != expected:
            shown = "missing" if got is None else clip(repr(got), 60)
            return Rejection("unknown_schema", f"schema {shown} is not {expected!r}, the schema of this topic")
        return Rejection("schema_violation", clip(detail))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if not (isinstance(value, float) and math.isnan(value)) else "NaN"
    names: dict[type, str] = {str: "string", list: "array"}
    return names.get(type(value), type(value).__name__)


assert DEADLETTER_DETAIL_CHARS >= 300  # clip()'s default keeps details inside the dead-letter limit
