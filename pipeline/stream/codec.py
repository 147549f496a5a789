"""How the workers' internal records are encoded: stage message batches,
changelog values, and the records of the views topic.

Stage messages travel in batches: one Kafka record carries every message for
one target partition of one processed batch, as msgpack, decoded straight back
to the core's types (:mod:`pipeline.core.events`) in C (by a worker that did
not write it: the writer applies its own from memory, :mod:`pipeline.stream.loopback`).
Each batch also carries
``t``, the greatest ``occurred_at`` its sender has seen: the watermark source,
which is how one busy partition moves the event-time clock everywhere.
Output records for people and other systems (alerts, dead letters) are JSON.
"""

from __future__ import annotations

from typing import Any, Optional

import msgspec

from ..core.crimes import CrimeState
from ..core.events import Alert, IncidentEvent, Op
from ..core.incident import IncidentState
from ..core.times import format_time
from ..core.vocabulary import ALERT_SCHEMA

__all__ = ["OpBatch", "encode_batch", "decode_batch", "encode_incident", "decode_incident", "encode_crime",
           "decode_crime", "encode_ids", "decode_ids", "encode_json", "decode_json", "alert_record"]


class OpBatch(msgspec.Struct, array_like=True, gc=False):
    """One record of an ops topic: the watermark source and the messages."""

    t: Optional[int]
    ops: list[Op]


_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(OpBatch)


def encode_batch(t: int | None, ops: list) -> bytes:
    return _batch_encoder.encode(OpBatch(t, ops))


def decode_batch(data: bytes) -> OpBatch:
    return _batch_decoder.decode(data)


# ------------------------------------------------------------------ changelog values
_IncidentTuple = tuple[list[IncidentEvent], list[str], dict[str, Optional[int]], list[str]]
_CrimeTuple = tuple[list[str], Optional[int], list[str], list[str], bool, bool, int]
_encoder = msgspec.msgpack.Encoder()
_incident_decoder = msgspec.msgpack.Decoder(_IncidentTuple)
_crime_decoder = msgspec.msgpack.Decoder(_CrimeTuple)
_ids_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, int]])


def encode_incident(st: IncidentState) -> bytes:
    return _encoder.encode(st.persisted())


def decode_incident(data: bytes) -> IncidentState:
    return IncidentState.restore(_incident_decoder.decode(data))


def encode_crime(st: CrimeState) -> bytes:
    return _encoder.encode(st.persisted())


def decode_crime(data: bytes) -> CrimeState:
    return CrimeState.restore(_crime_decoder.decode(data))


def encode_ids(ids: list[tuple[str, str, int]]) -> bytes:
    return _encoder.encode(ids)


def decode_ids(data: bytes) -> list[tuple[str, str, int]]:
    return _ids_decoder.decode(data)


_json_encoder = msgspec.json.Encoder()


def encode_json(value: Any) -> bytes:
    return _json_encoder.encode(value)


def decode_json(data: bytes) -> Any:
    return msgspec.json.decode(data)


def alert_record(a: Alert) -> bytes:
    """``alert.v1`` (contract §4)."""
    doc = {"schema": ALERT_SCHEMA, "alert_id": a.alert_id, "kind": a.kind, "incident_id": a.incident_id,
           "category": a.category, "district": a.district, "channel": a.channel, "flags": list(a.flags),
           "required_since": format_time(a.required_since), "deadline": format_time(a.deadline),
           "watermark": format_time(a.watermark), "crime_ids": list(a.crime_ids)}
    if a.timeliness is not None:
        doc["timeliness"] = a.timeliness
    return _json_encoder.encode(doc)
