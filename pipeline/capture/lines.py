"""What a capture line is made of, as msgspec types, and the error of a file
that cannot be read.

These are apart from :mod:`.reading` because that module is compiled
(:mod:`pipeline.native`) and a compiled module cannot define a msgspec
``Struct`` (it would lose the class options: ``gc``, ``tag``...).
"""

from __future__ import annotations

import msgspec

__all__ = ["CaptureError", "CaptureMessage", "Line", "Envelope"]


class CaptureError(OSError):
    """A capture file cannot be read at all (missing, a directory, unreadable)."""


class CaptureMessage(msgspec.Struct, gc=False):
    """One message read from a capture file.

    ``payload`` is the exact value bytes (for a bare event: the line without
    its terminator). ``partition``/``offset``/``ts_ms`` are what the envelope
    recorded, for information: nothing may depend on the original partitioning.
    """

    topic: str
    key: bytes | None
    payload: bytes
    partition: int | None
    offset: int | None
    ts_ms: int | None
    line_no: int
    source: str


class Line(msgspec.Struct, gc=False):
    """The fields of a capture line that matter; kcat's others are ignored."""

    topic: object = None
    key: object = None
    payload: object = msgspec.UNSET
    partition: object = None
    offset: object = None
    ts: object = None
    payload_encoding: object = None
    key_encoding: object = None
    schema: object = msgspec.UNSET
    incident_id: object = None
    crime_id: object = None


class Envelope(msgspec.Struct, gc=False):
    """The usual line, typed: msgspec checks it in C (anything else takes the :class:`Line` path)."""

    topic: str
    payload: str
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    ts: int | None = None
    payload_encoding: None = None
    key_encoding: None = None
