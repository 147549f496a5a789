"""Event time: RFC 3339 text <-> integer microseconds, and the watermark.

Inside the core every instant is an ``int`` of microseconds since the Unix
epoch, UTC: exact (a float would round), cheap to compare, and JSON-friendly,
so a watermark survives a round trip through Kafka unchanged.

The one definition of the watermark lives here (:func:`watermark`); every
ledger, the audit and the stream layer call it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Final

import msgspec

__all__ = ["US", "MINUTE", "HOUR", "DAY", "MIN_US", "MAX_US", "RFC3339", "RFC3339_STRICT", "parse_time",
           "parse_checked", "parse_times", "format_time",
           "watermark", "day_of"]

US: Final = 1_000_000
MINUTE: Final = 60 * US
HOUR: Final = 3600 * US
DAY: Final = 86400 * US

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US: Final = timedelta(microseconds=1)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
#: The instants the contract admits once the offset is applied (§2, revision 2).
MIN_US: Final = (datetime(1, 1, 1, tzinfo=timezone.utc) - _EPOCH) // _ONE_US
MAX_US: Final = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - _EPOCH) // _ONE_US

#: RFC 3339 ``date-time``: seconds required, fraction optional, ``Z`` or ``±hh:mm``
#: with minutes 00-59 (``fromisoformat`` alone would read ``+01:60`` as ``+02:00``).
#: ASCII digits only. This spelling (``$``) is for JSON Schema; Python checks use
#: :data:`RFC3339_STRICT`, whose ``\Z`` does not let a trailing newline through.
RFC3339: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-5][0-9])$"
RFC3339_STRICT: Final = RFC3339[:-1] + r"\Z"
_RFC3339: Final = re.compile(RFC3339_STRICT)
_fromiso = datetime.fromisoformat


def parse_time(value: object) -> int | None:
    """RFC 3339 ``date-time`` -> microseconds since the epoch, or None if invalid.

    Fractions beyond microseconds are truncated; leap seconds (``:60``) and
    instants outside years 1-9999 once the offset is applied are invalid.
    """
    if type(value) is not str or not _RFC3339.match(value):
        return None
    return parse_checked(value)


def parse_checked(value: str) -> int | None:
    """:func:`parse_time` for text that already matched :data:`RFC3339`."""
    try:
        dt = _fromiso(value.upper() if "t" in value or "z" in value else value)
    except ValueError:  # a day or hour out of range
        return None
    us = (dt - _EPOCH) // _ONE_US
    if us < MIN_US or us > MAX_US:
        return None
    return us


_AWARE = list[Annotated[datetime, msgspec.Meta(tz=True)]]
_convert = msgspec.convert
_ValidationError = msgspec.ValidationError
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
#: Every shape of :data:`RFC3339` (digits as ``0``) whose fraction has at most six digits.
_SHAPES: Final = frozenset(b"0000-00-00" + sep + b"00:00:00" + fraction + offset
                    for sep in (b"T", b"t")
                    for fraction in [b""] + [b"." + b"0" * n for n in range(1, 7)]
                    for offset in (b"Z", b"z", b"+00:00", b"-00:00"))
_AT_INDEX: Final = re.compile(r"`\$\[(\d+)\]`$")
#: Texts of a valid shape that §2 refuses for their values: for such texts
#: parse_times relies on msgspec's value checks, so they must refuse these too.
_REFUSED_VALUES: Final = ("2026-01-01T23:59:60Z", "2026-01-01T24:00:00Z", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
                   "0000-01-01T00:00:00Z", "2026-01-01T00:00:00+01:60", "2026-01-01T00:00:00-24:00")
_CHUNK: Final = 1024   # texts per msgspec call
_RETRIES: Final = 8    # invalid texts a chunk may have before the rest is parsed one by one


def _msgspec_agrees() -> bool:
    """Whether this msgspec refuses every one of :data:`_REFUSED_VALUES` (checked once, at import)."""
    for text in _REFUSED_VALUES:
        try:
            _convert([text], _AWARE)
        except _ValidationError:
            continue
        return False
    return True


#: False: parse_times parses one by one (a msgspec whose datetime values differ from §2's).
BATCH_PARSER = _msgspec_agrees()


def parse_times(texts: list[str]) -> list[int | None]:
    """:func:`parse_time` of each of ``texts`` (strings), the same results, a batch at a time.

    Why: a message carries one or two instants, and parsing them one by one
    in Python (the pattern, then ``fromisoformat``) was the largest cost of
    validation (~0.9 us each in the offline audit's reader). Here msgspec's C
    parser reads the whole batch in one call (~0.03 us each; the subtraction
    that makes microseconds of each costs ~0.17 us more).

    msgspec reads a little more than :data:`RFC3339` (a space for the ``T``,
    an offset without its colon) and rounds fractions beyond microseconds,
    where §2 truncates. So its results are taken only when every text of the
    batch has a shape of :data:`RFC3339` with at most six fraction digits,
    checked on the joined text in C (:func:`_checked`); otherwise the batch is
    parsed one by one, as is a text msgspec refuses (its error gives where).
    For a text of a valid shape, msgspec's own checks of the values (month,
    day, hour, offset minutes...) stand for ``fromisoformat``'s and the
    pattern's: :data:`BATCH_PARSER` is False, and every text parsed one by
    one, with a msgspec that accepts a value §2 refuses. The range check of §2
    applies to every result. ``tests/test_validation.py``
    proves it gives what :func:`parse_time` gives, batch for batch.
    """
    if not BATCH_PARSER:
        return list(map(parse_time, texts))
    out: list[int | None] = []
    for i in range(0, len(texts), _CHUNK):
        _parse_chunk(texts[i:i + _CHUNK], out)
    return out


def _parse_chunk(texts: list[str], out: list) -> None:
    """:func:`parse_times` of at most :data:`_CHUNK` texts. After each invalid
    text the rest is parsed again, so a chunk gets a few of those before the
    rest of it goes one by one: the work stays linear whatever a feed sends."""
    start, n, retries = 0, len(texts), _RETRIES
    while start < n:
        part = texts[start:] if start else texts
        try:
            dts = _convert(part, _AWARE)
        except _ValidationError as exc:
            m = _AT_INDEX.search(str(exc))
            bad = int(m.group(1)) if m else -1
            if not 0 <= bad < len(part) or not retries:  # no position given, or many invalid: one by one
                out.extend(map(parse_time, part))
                return
            if bad:
                _checked(part[:bad], _convert(part[:bad], _AWARE), out)
            out.append(parse_time(part[bad]))
            start += bad + 1
            retries -= 1
            continue
        _checked(part, dts, out)
        return


def _checked(texts: list[str], dts: list[datetime], out: list) -> None:
    """The instants msgspec parsed, once every text has one of the shapes of
    :data:`RFC3339` with at most six fraction digits (:data:`_SHAPES`, digits
    read as ``0``); otherwise the texts one by one."""
    if not _SHAPES.issuperset("|".join(texts).encode().translate(_DIGITS_AS_ZERO).split(b"|")):
        out.extend(map(parse_time, texts))
        return
    epoch = _EPOCH
    instants = [(d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds for d in [dt - epoch for dt in dts]]
    if instants and (min(instants) < MIN_US or max(instants) > MAX_US):
        out.extend([us if MIN_US <= us <= MAX_US else None for us in instants])
    else:
        out.extend(instants)


def format_time(us: int | None) -> str | None:
    """Microseconds since the epoch -> RFC 3339 in UTC with ``Z``, microsecond precision.

    Defined for every instant :func:`parse_time` accepts (years 1-9999).
    """
    if us is None:
        return None
    # isoformat (C) rather than an f-string of the fields: 0.9 us against 1.4 (three per alert)
    return (_NAIVE_EPOCH + us * _ONE_US).isoformat(timespec="microseconds") + "Z"


def watermark(max_event_time: int | None, allowed_lateness: int) -> int | None:
    """W = the greatest valid ``occurred_at`` seen minus ``allowed_lateness`` (§3).

    Callers keep ``max_event_time`` monotonic, so W never moves backwards.
    """
    return None if max_event_time is None else max_event_time - allowed_lateness


def day_of(us: int) -> int:
    """The UTC day number (days since 1970-01-01) of an instant."""
    return us // DAY
