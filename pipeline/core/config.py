"""What the core is configured with: plain values, no environment, no pydantic.

The shell's one settings object (:mod:`pipeline.settings`) builds these with
:meth:`~pipeline.settings.Settings.core`; tests build them directly. Times are
integer microseconds, like every instant in the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .times import HOUR, MINUTE, DAY
from .vocabulary import (
    CRIME_CATEGORIES, CRIMES, DEFAULT_DISTRICTS, INCIDENTS, MAX_MESSAGE_BYTES, NON_CRIME_CATEGORIES,
)

__all__ = ["Params", "Vocabulary", "Limits", "InputTopics", "CoreConfig"]


@dataclass(frozen=True, slots=True)
class Params:
    """The decision parameters of contract §3, in microseconds."""

    recording_deadline: int = 24 * HOUR
    allowed_lateness: int = 10 * MINUTE
    at_risk_window: int = 4 * HOUR
    state_retention: int = 30 * DAY

    @property
    def id_retention(self) -> int:
        """How long an event id is remembered after its ``occurred_at``: longer
        than the incident it belongs to lives without later activity, so a late
        copy of an evicted incident's event is still a duplicate."""
        return self.recording_deadline + 2 * self.state_retention


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The configurable vocabularies of §2 and §6."""

    crime_categories: tuple[str, ...] = CRIME_CATEGORIES
    non_crime_categories: tuple[str, ...] = NON_CRIME_CATEGORIES
    districts: tuple[str, ...] = DEFAULT_DISTRICTS

    @property
    def categories(self) -> tuple[str, ...]:
        return self.crime_categories + self.non_crime_categories


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits that are configuration: the future-timestamp tolerance and the size limit."""

    future_tolerance: int = 15 * MINUTE
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class InputTopics:
    """The names of the two input feeds: which topic carries which side (and so which schema)."""

    incidents: str = "cc.incidents"
    crimes: str = "rms.crimes"

    def side_of(self, topic: str) -> str | None:
        """``incidents``, ``crimes``, or None for a topic that is not an input."""
        if topic == self.incidents:
            return INCIDENTS
        if topic == self.crimes:
            return CRIMES
        return None

    def topic_of(self, side: str) -> str:
        return self.incidents if side == INCIDENTS else self.crimes


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything the decision core is configured with."""

    params: Params = field(default_factory=Params)
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    limits: Limits = field(default_factory=Limits)
    topics: InputTopics = field(default_factory=InputTopics)
