"""Quiet incidents' events, packed: what the offline audit's memory is mostly made of.

The deferred ledger (the offline audit) holds each incident for its retention
after its last activity, 30 days of event time by default: 75,000 incidents
at the end of the 300k bench capture, nine in ten of them *quiet*, with
nothing left to happen but their eviction (``IncidentState.evicts``). Their
events are most of what they cost: two :class:`~pipeline.core.events.IncidentEvent`
objects with their ids and instants take about 530 bytes; packed as one
msgpack ``bytes``, about 200. So the deferred ledger packs a quiet incident's
events after evaluating it, and unpacks them before anything reads them again
(an input for the incident, an assessment). Its eviction needs only its
counted keys, which stay unpacked.

Workers (eager mode) never pack: they read their incidents' events for the
board and explanations, persist them, and hold only the open ones.
"""

from __future__ import annotations

import msgspec

from .events import IncidentEvent

__all__ = ["pack", "unpack"]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[IncidentEvent]).decode


def pack(events: list[IncidentEvent]) -> bytes:
    """The events as one bytes object (order kept)."""
    return _encode(events)


def unpack(blob: bytes) -> list[IncidentEvent]:
    """The events :func:`pack` was given, equal and in the same order."""
    return _decode(blob)
