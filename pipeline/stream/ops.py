"""Messages on the internal topics, and the partitioning that routes them.

Why batches: faust spends most of its per-message time in its own consumer
and changelog paths (see ../shared/faust-notes.md), so the ingest stage packs
every op for one target partition into one Kafka message. A stage-2 message
is therefore ``{"t": max_event_time_us|null, "ops": [op, ...]}``; ops are
JSON arrays whose first item names them:

- ``["i", event_id, kind, incident_id, at, category, disposition, reported_at,
  channel, district, flags]`` — a valid incident event;
- ``["c", event_id, kind, crime_id, at, incident_ids, category, reason]`` —
  a valid crime event;
- ``["l", incident_id, crime_id, recorded_at]`` — a crime's recording time for
  an incident it links (crime stage -> incident stage);
- ``["s", crime_id, incident_id]`` — the incident is seen (incident stage ->
  crime stage), for ``crimes.without_incident``;
- ``["x", count]`` — invalid messages counted by the ingest stage, so the
  count is persisted with the partition's other counts.

``t`` carries the event-time watermark source: the greatest ``occurred_at``
the sender has seen. Every partition of both stage-2 topics receives it,
which is how one worker's progress moves the watermark everywhere.
"""

from __future__ import annotations

from collections import defaultdict

import zlib

import orjson

from ..events import CrimeEvent, IncidentEvent

__all__ = ["partition_for", "encode_incident", "decode_incident", "encode_crime", "decode_crime",
           "OpBatcher", "dumps", "loads"]

dumps = orjson.dumps
loads = orjson.loads


def partition_for(key: str, partitions: int) -> int:
    """Stage-2 partition of an incident or crime id.

    Internal topics only, so any stable hash will do: CRC-32 is in C (the
    Java-compatible murmur2 is pure Python in kafka-python and cost 3% of
    the worker). Changing it needs a fresh state (changelogs are placed by it).
    """
    return zlib.crc32(key.encode("utf-8")) % partitions


def encode_incident(e: IncidentEvent) -> list:
    return ["i", *e]  # the NamedTuple's field order is the op layout


def decode_incident(op: list) -> IncidentEvent:
    return IncidentEvent._make(op[1:])


def encode_crime(e: CrimeEvent) -> list:
    return ["c", *e]


def decode_crime(op: list) -> CrimeEvent:
    return CrimeEvent._make(op[1:])


class OpBatcher:
    """Collects ops per target partition and encodes one message per partition."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.by_partition: dict[int, list] = defaultdict(list)

    def add(self, key: str, op: list) -> None:
        self.by_partition[partition_for(key, self.partitions)].append(op)

    def add_to(self, partition: int, op: list) -> None:
        self.by_partition[partition].append(op)

    def messages(self, max_time: int | None, all_partitions: bool = False) -> list[tuple[int, bytes]]:
        """``(partition, value)`` pairs; with ``all_partitions`` every partition gets ``t``."""
        targets = range(self.partitions) if all_partitions else sorted(self.by_partition)
        out = [(p, dumps({"t": max_time, "ops": self.by_partition.get(p, [])})) for p in targets]
        self.by_partition.clear()
        return out

    def __bool__(self) -> bool:
        return bool(self.by_partition)
