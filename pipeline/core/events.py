"""The core's named data: valid events and the messages the stages exchange.

Valid events are what :mod:`~pipeline.core.validation` returns and what the
ledgers keep. They are msgspec ``Struct``\\ s, not dicts or positional tuples:

- cheap to make (one is made per message) and small (``gc=False``: they hold
  only strings, ints and tuples, so the cyclic collector can skip them);
- ``order=True`` with ``at`` and ``event_id`` first, so an incident's events
  sort in decision order (contract §3: by ``occurred_at``, then ``event_id``)
  and the ledger stores the event itself as its entry;
- ``array_like`` with a tag, so the stream layer encodes a batch of them in
  one C call and decodes it back to these same types.

The stage messages (:class:`Arrival`, :class:`Invalid`, :class:`Stale`,
:class:`Link`, :class:`Notice`) are the arrows of the data-flow picture in the
README; :mod:`~pipeline.core.stages` says what each one does. A
:class:`Rewind` is rare: an input partition read again from the start of a
log made again.
All instants are integer microseconds since the epoch (:mod:`~pipeline.core.times`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Union

import msgspec

from .vocabulary import CANCEL_REASONS, CHANNELS, CRIME_TYPES, DISPOSITIONS, FLAGS, INCIDENT_TYPES

# The fixed vocabularies as msgspec ``Literal`` types: decoding one (a stage
# message, a changelog state, the offline reader's batches) returns the one
# interned string of the vocabulary instead of a new copy per event, which is
# most of the strings an incident's events hold. (Categories and districts are
# configuration, so they stay ``str``.)
_Kind = Literal[INCIDENT_TYPES]  # type: ignore[valid-type]
_CrimeKind = Literal[CRIME_TYPES]  # type: ignore[valid-type]
_Channel = Literal[CHANNELS]  # type: ignore[valid-type]
_Disposition = Literal[DISPOSITIONS]  # type: ignore[valid-type]
_Flag = Literal[FLAGS]  # type: ignore[valid-type]
_Reason = Literal[CANCEL_REASONS]  # type: ignore[valid-type]

__all__ = ["IncidentEvent", "CrimeEvent", "Event", "Rejection", "Source", "Arrival", "Invalid",
           "Stale", "Link", "Notice", "Rewind", "Op", "Alert"]


class IncidentEvent(msgspec.Struct, array_like=True, frozen=True, gc=False, order=True, tag="i"):
    """A valid ``incident.v1`` event. ``kind`` is its ``event_type``."""

    at: int  # occurred_at
    event_id: str
    kind: _Kind  # opened | reclassified | closed
    incident_id: str
    category: str | None = None
    disposition: _Disposition | None = None
    reported_at: int | None = None
    channel: _Channel | None = None
    district: str | None = None
    flags: tuple[_Flag, ...] = ()


class CrimeEvent(msgspec.Struct, array_like=True, frozen=True, gc=False, order=True, tag="c"):
    """A valid ``crime.v1`` event. ``kind`` is its ``event_type``."""

    at: int  # occurred_at
    event_id: str
    kind: _CrimeKind  # recorded | linked | cancelled
    crime_id: str
    incident_ids: tuple[str, ...] = ()
    category: str | None = None
    reason: _Reason | None = None


Event = Union[IncidentEvent, CrimeEvent]


class Rejection(NamedTuple):
    """Why a message is invalid: one dead-letter ``reason`` (§2) and a human ``detail``."""

    reason: str
    detail: str


class Source(NamedTuple):
    """Where a message was read: its input feed (``incidents``/``crimes``), partition and offset."""

    side: str
    partition: int
    offset: int


class Arrival(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="a"):
    """intake -> event stage: a valid message, to be claimed by its ``event_id``."""

    event: Event
    partition: int  # of the input topic
    offset: int


class Invalid(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="x"):
    """intake -> event stage: an invalid message, counted once per source
    position, its dead-letter record published once (``None`` offline)."""

    side: str
    partition: int
    offset: int
    reason: str
    key: bytes | None = None
    deadletter: bytes | None = None


class Stale(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="s"):
    """event stage -> incident/crime stage: a first copy whose ``event_id`` may
    have been forgotten (older than the id retention): the ledger that owns it
    decides whether it is a duplicate."""

    event: Event


class Link(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="l"):
    """crime stage -> incident stage: a crime links the incident, with its recording time."""

    incident_id: str
    crime_id: str
    recorded_at: int | None


class Notice(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="n"):
    """incident stage -> crime stage: a linked incident is seen (for ``crimes.without_incident``)."""

    crime_id: str
    incident_id: str


class Rewind(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="r"):
    """intake -> every event-stage partition: the input partition is read again
    from ``offset`` because its log no longer reaches the position read before
    (the topic was made again, or truncated). The records from there on are
    new to the event stage, not copies already read: without this their
    offsets, below the ones applied, would drop them."""

    side: str
    partition: int  # of the input topic
    offset: int


#: Every message a stage can receive.
Op = Union[IncidentEvent, CrimeEvent, Arrival, Invalid, Stale, Link, Notice, Rewind]


class Alert(NamedTuple):
    """An ``alert.v1`` decided by the incident ledger (§4); the shell publishes it."""

    kind: str  # at_risk | overdue | resolved | downgraded
    incident_id: str
    category: str | None
    district: str | None
    channel: str | None
    flags: tuple[str, ...]
    required_since: int
    deadline: int
    watermark: int | None
    crime_ids: tuple[str, ...]
    timeliness: str | None = None  # on_time | late, for "resolved"

    @property
    def alert_id(self) -> str:
        """``{incident_id}:{kind}``: the same on every repeat, so consumers drop repeats."""
        return f"{self.incident_id}:{self.kind}"
