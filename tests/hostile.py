"""A capture of hostile messages: what an attacker or a broken upstream system sends.

Every kind the monitor must survive (issue 8), between valid events so the
audit still means something. Returned as capture lines (bytes), some of them
not UTF-8 (kcat ``-J`` writes raw bytes inside the JSON string).
"""

from __future__ import annotations

import base64

import orjson

VALID_OPENED = {"schema": "incident.v1", "event_id": "h-1", "event_type": "opened", "incident_id": "H1",
                "occurred_at": "2026-03-01T09:00:00Z", "reported_at": "2026-03-01T08:00:00Z",
                "channel": "999", "district": "Dover", "category": "rape"}
VALID_RECORDED = {"schema": "crime.v1", "event_id": "h-2", "event_type": "recorded", "crime_id": "HC1",
                  "occurred_at": "2026-03-01T10:00:00Z", "incident_ids": ["H1"], "category": "rape"}


def _env(topic: str, payload: bytes | None, key: bytes | str | None = "k") -> bytes:
    """A kcat -J envelope; bytes that are not UTF-8 go in raw, as kcat writes them."""
    doc = {"topic": topic, "key": key}
    if isinstance(key, bytes):
        doc["key"], doc["key_encoding"] = base64.b64encode(key).decode(), "base64"
    doc["payload"] = None
    line = orjson.dumps(doc)
    if payload is None:
        return line + b"\n"
    escaped = orjson.dumps(payload.decode("utf-8", "surrogateescape"), option=orjson.OPT_PASSTHROUGH_SUBCLASS) \
        if payload.isascii() or _utf8(payload) else _raw_json_string(payload)
    return line[:-len(b"null}")] + escaped + b"}\n"


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _raw_json_string(b: bytes) -> bytes:
    """A JSON string holding raw bytes as they are (only quote, backslash and controls escaped)."""
    out = bytearray(b'"')
    for c in b:
        if c == 0x22:
            out += b'\\"'
        elif c == 0x5C:
            out += b"\\\\"
        elif c < 0x20:
            out += b"\\u%04x" % c
        else:
            out.append(c)
    return bytes(out + b'"')


def hostile_lines() -> list[bytes]:
    inc, cri = "cc.incidents", "rms.crimes"
    o = lambda **kw: orjson.dumps({**VALID_OPENED, **kw})  # noqa: E731
    r = lambda **kw: orjson.dumps({**VALID_RECORDED, **kw})  # noqa: E731
    lines = [
        _env(inc, o()),                                                         # valid
        _env(inc, o(event_id="x1", occurred_at="9999-12-31T23:59:59-23:59")),   # year 10000 in UTC
        _env(inc, o(event_id="x2", reported_at="0001-01-01T00:00:00+00:01")),   # before year 1 in UTC
        _env(inc, o(event_id="x3", incident_id="i" * 300_000)),                 # an id far past 256
        _env(inc, o(event_id="x3b", incident_id="i" * (1 << 20))),              # a MiB id: too large
        _env(cri, r(event_id="x4", incident_ids=[f"I{n:07d}" for n in range(50_000)])),  # 50k links
        _env(cri, r(event_id="x5", incident_ids=["I"] * 101)),                  # one past the limit
        _env(inc, b'{"schema":"incident.v1","x":"' + b"y" * (1 << 20) + b'"}'),  # 1 MiB + a bit: too large
        _env(inc, o(event_id="x6")[:-1] + b',"note":"caf\xe9"}'),               # not UTF-8 (raw in the line)
        _env(inc, b"\xff\xfe\x00garbage"),                                      # binary
        _env(inc, o(event_id="x7")[:-1] + b',"n":NaN}'),
        _env(inc, o(event_id="x8")[:-1] + b',"n":1e400}'),
        _env(inc, o(event_id="x9")[:-1] + b',"s":"\\ud800"}'),                  # a lone surrogate
        _env(inc, b'{"a":' * 50_000 + b"1" + b"}" * 50_000),                    # deep nesting
        _env(inc, b"\xef\xbb\xbf" + o(event_id="x10")),                         # a byte order mark
        _env(inc, b""),                                                         # empty
        _env(inc, None),                                                        # a tombstone
        _env(inc, b"[" + o(event_id="x11") + b"]"),                             # an array
        _env(inc, o(event_id="x12", schema="crime.v1")),                        # the other feed's schema
        _env(inc, o(event_id="x13")[:-1] + b',"event_id":"x13-again","event_id":5}'),  # repeated member, bad last
        _env(inc, o(event_id="x14", flags=["hate"] * 17)),
        _env(inc, o(event_id="x15", district="d" * 41)),
        _env(inc, o(event_id="x16", occurred_at="2999-01-01T00:00:00Z", reported_at="2999-01-01T00:00:00Z")),
        _env(inc, o(event_id="x17"), key=b"\xff" * 200_000),                    # a 200 kB key, not UTF-8
        _env(cri, r()),                                                         # valid
        _env(cri, r()),                                                         # a duplicate
        _env(inc, o(event_id="h-3", incident_id="H2", category="theft")[:-1] + b',"incident_id":"H3"}'),  # last wins
        b'{"topic":"rms.crimes","key":"k","payload":"' + base64.b64encode(b"\x00\x01\x02") + b'",'
        b'"payload_encoding":"base64"}\n',                                      # base64 binary envelope
    ]
    return lines
