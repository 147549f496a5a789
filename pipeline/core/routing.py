"""Co-location: which partition of a stage owns a message (contract §1).

The monitor never relies on how producers partitioned its inputs. Each stage
is partitioned by *its own* key: the event stage by ``event_id`` (duplicates
are found wherever copies land), the incident stage by ``incident_id``, the
crime stage by ``crime_id``. Crime links travel to the incidents they name;
*seen* notices travel back to the crimes.

The hash is CRC-32 (in C; any stable hash would do: these partitions are
internal). Changing it, or the partition count, needs fresh internal topics.
"""

from __future__ import annotations

from zlib import crc32

from .events import Arrival, CrimeEvent, IncidentEvent, Invalid, Link, Notice, Stale

__all__ = ["partition_for", "key_of"]


def partition_for(key: str, partitions: int) -> int:
    """The stage partition that owns ``key`` (an event, incident or crime id)."""
    if partitions == 1:
        return 0
    try:
        raw = key.encode()  # the common case, compiled to one C call
    except UnicodeEncodeError:  # a lone surrogate: no id should hold one, but no input may stop us
        raw = key.encode("utf-8", "surrogatepass")
    return crc32(raw) % partitions


def key_of(op) -> str:
    """The routing key of a stage message: the id its target stage is keyed by."""
    t = type(op)
    if t is IncidentEvent or t is Link:
        return op.incident_id
    if t is CrimeEvent or t is Notice:
        return op.crime_id
    if t is Stale:
        return key_of(op.event)
    if t is Arrival:
        return op.event.event_id
    if t is Invalid:  # every message of one source partition to one event-stage partition, in order
        return f"{op.side}:{op.partition}"
    raise TypeError(f"not a stage message: {t.__name__}")
