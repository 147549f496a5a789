"""Pydantic models of every event cdiwatch reads or writes (contract §2, §4).

These are the published contract: ``make schemas`` writes their JSON Schemas
to ``schemas/``, whose descriptions point to ``docs/contract.md``. The hot
path validates with :class:`pipeline.core.validation.Validator` (compiled,
one per process); ``tests/test_contract_models.py`` proves both accept and
reject the same inputs. Vocabularies here are the defaults; deployments that
configure other categories are validated against their settings at run time.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..core.times import RFC3339, parse_time
from ..core.vocabulary import (
    CANCEL_REASONS, CHANNELS, CRIME_CATEGORIES, DEADLETTER_DETAIL_CHARS, DISPOSITIONS, FLAGS,
    MAX_DISTRICT_CHARS, MAX_FLAGS, MAX_ID_CHARS, MAX_INCIDENT_IDS, NON_CRIME_CATEGORIES, REASONS,
)

__all__ = [
    "IncidentOpened", "IncidentReclassified", "IncidentClosed", "IncidentEventModel",
    "CrimeRecorded", "CrimeLinked", "CrimeCancelled", "CrimeEventModel",
    "AlertModel", "DeadLetterModel", "AuditModel", "SCHEMA_MODELS",
]

def _check_time(value: str) -> str:
    if parse_time(value) is None:
        raise ValueError("not an RFC 3339 date-time with seconds and offset, between years 1 and 9999 in UTC")
    return value


def _lit(values) -> object:
    return Literal[tuple(sorted(values))]  # type: ignore[misc]


DateTime = Annotated[str, StringConstraints(pattern=RFC3339), AfterValidator(_check_time),
                     Field(json_schema_extra={"format": "date-time"})]
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Category = _lit(CRIME_CATEGORIES + NON_CRIME_CATEGORIES)
CrimeCategory = _lit(CRIME_CATEGORIES)
Channel = _lit(CHANNELS)
Disposition = _lit(DISPOSITIONS)
Flag = _lit(FLAGS)
CancelReason = _lit(CANCEL_REASONS)


def _has_non_finite(value: object) -> bool:
    if type(value) is float:
        return not math.isfinite(value)
    if type(value) is dict:
        return any(_has_non_finite(v) for v in value.values())
    if type(value) is list:
        return any(_has_non_finite(v) for v in value)
    return False


class _Event(BaseModel):
    """Common fields; unknown fields are ignored (contract §2)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    event_id: Id
    occurred_at: DateTime

    @model_validator(mode="before")
    @classmethod
    def _rfc8259_numbers(cls, data):
        # RFC 8259 has no NaN/Infinity, and a number too large for a double is not
        # accepted either (the Validator's orjson rejects both, even in ignored fields).
        if _has_non_finite(data):
            raise ValueError("not RFC 8259 JSON: NaN, Infinity or a number out of range")
        return data


class _IncidentBase(_Event):
    schema_: Literal["incident.v1"] = Field(alias="schema")
    incident_id: Id
    flags: Optional[Annotated[list[Flag], Field(max_length=MAX_FLAGS)]] = None


class IncidentOpened(_IncidentBase):
    """A call or report logged in command and control; starts the clock."""

    event_type: Literal["opened"]
    reported_at: DateTime
    channel: Channel
    district: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DISTRICT_CHARS)]
    category: Category

    @model_validator(mode="after")
    def _reported_not_after_occurred(self):
        if parse_time(self.reported_at) > parse_time(self.occurred_at):
            raise ValueError("reported_at is after occurred_at")
        return self


class IncidentReclassified(_IncidentBase):
    event_type: Literal["reclassified"]
    category: Category


class IncidentClosed(_IncidentBase):
    event_type: Literal["closed"]
    disposition: Disposition


IncidentEventModel = Annotated[Union[IncidentOpened, IncidentReclassified, IncidentClosed],
                               Field(discriminator="event_type")]


class _CrimeBase(_Event):
    schema_: Literal["crime.v1"] = Field(alias="schema")
    crime_id: Id


class CrimeRecorded(_CrimeBase):
    """A crime recorded in the records management system."""

    event_type: Literal["recorded"]
    incident_ids: Annotated[list[Id], Field(max_length=MAX_INCIDENT_IDS)]
    category: CrimeCategory


class CrimeLinked(_CrimeBase):
    event_type: Literal["linked"]
    incident_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_INCIDENT_IDS)]


class CrimeCancelled(_CrimeBase):
    event_type: Literal["cancelled"]
    reason: Optional[CancelReason] = None


CrimeEventModel = Annotated[Union[CrimeRecorded, CrimeLinked, CrimeCancelled],
                            Field(discriminator="event_type")]


class AlertModel(BaseModel):
    """alert.v1 on ``cdi.alerts``; ``alert_id`` = ``{incident_id}:{kind}``."""

    model_config = ConfigDict(extra="forbid")
    schema_: Literal["alert.v1"] = Field(alias="schema")
    alert_id: str
    kind: Literal["at_risk", "overdue", "resolved", "downgraded"]
    incident_id: str
    category: Optional[str]
    district: Optional[str]
    channel: Optional[str]
    flags: list[str]
    required_since: DateTime
    deadline: DateTime
    watermark: Optional[DateTime]
    crime_ids: list[str]
    timeliness: Optional[Literal["on_time", "late"]] = None


class DeadLetterModel(BaseModel):
    """deadletter.v1 on ``cdi.deadletter``: an input message that was not applied, and why.

    A record stays small whatever it carries: ``detail`` is at most 500
    characters; a payload over 65,536 bytes is cut to at most its first
    65,536 bytes so that its text here (JSON-escaped, or base64) is at most
    65,536 characters (``payload_truncated``, ``payload_size``); a key over
    256 bytes is cut likewise (``key_truncated``); the original stays
    findable by ``source_topic``, ``partition``, ``offset``.
    """

    model_config = ConfigDict(extra="forbid")
    schema_: Literal["deadletter.v1"] = Field(alias="schema")
    source_topic: str
    partition: int
    offset: int
    key: Optional[str]
    key_encoding: Optional[Literal["base64"]] = None
    key_truncated: Optional[Literal[True]] = None
    payload: str
    payload_encoding: Optional[Literal["base64"]] = None
    payload_truncated: Optional[Literal[True]] = None
    payload_size: Optional[Annotated[int, Field(ge=0)]] = None
    reason: _lit(REASONS)  # type: ignore[valid-type]
    detail: Annotated[str, StringConstraints(max_length=DEADLETTER_DETAIL_CHARS)]
    received_at: DateTime


class _Counts(BaseModel):
    valid: int
    duplicate: int
    invalid: int


class _StatusCounts(BaseModel):
    required: int
    recorded_on_time: int
    recorded_late: int
    overdue: int
    pending: int
    at_risk: int
    exempt: int
    downgraded: int


class _IncidentCounts(_StatusCounts):
    seen: int
    unopened: int


class _Rate(BaseModel):
    value: Optional[float]
    low: Optional[float]
    high: Optional[float]


class AuditModel(BaseModel):
    """audit.v1 from ``GET /audit`` and ``cdiwatch audit --json``."""

    schema_: Literal["audit.v1"] = Field(alias="schema")
    watermark: Optional[DateTime]
    events: dict[Literal["incidents", "crimes"], _Counts]
    incidents: _IncidentCounts
    by_category: dict[str, _StatusCounts]
    crimes: dict[Literal["recorded", "without_incident", "cancelled", "cancelled_without_reason"], int]
    recording_rate: _Rate


SCHEMA_MODELS = {
    "incident.v1": IncidentEventModel,
    "crime.v1": CrimeEventModel,
    "alert.v1": AlertModel,
    "deadletter.v1": DeadLetterModel,
    "audit.v1": AuditModel,
}
