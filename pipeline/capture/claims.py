"""What the offline audit's reader sends the ledgers: the stage messages of
its event stage, and the few of its own (:mod:`.validated` says which).

These are apart from :mod:`.validated` because that module is compiled
(:mod:`pipeline.native`) and a compiled module cannot define a msgspec
``Struct`` (it would lose the class options: ``tag``, ``array_like``...).
"""

from __future__ import annotations

from typing import Union

import msgspec

from ..core.events import CrimeEvent, IncidentEvent, Stale

__all__ = ["Invalid", "Skipped", "Claimed", "Failed", "Claim", "decode_claims"]


class Invalid(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="v"):
    """A message its validation rejected."""

    side: str
    reason: str


class Skipped(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="k"):
    """A capture line that carries no message."""

    source: str
    line_no: int
    reason: str


class Claimed(msgspec.Struct, array_like=True, frozen=True, tag="m"):
    """The reader's event stage at the end: its :meth:`~pipeline.core.stages.EventStage.meta`."""

    meta: dict


class Failed(msgspec.Struct, array_like=True, frozen=True, tag="f"):
    """The reader could not read a file (the parent raises it as a :class:`CaptureError`)."""

    message: str


Claim = Union[IncidentEvent, CrimeEvent, Stale, Invalid, Skipped, Claimed]
#: A frame of the pipe: claims, or one :class:`Failed`.
decode_claims = msgspec.msgpack.Decoder(list[Union[IncidentEvent, CrimeEvent, Stale, Invalid, Skipped, Claimed, Failed]]).decode
