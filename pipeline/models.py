"""Pydantic models of every event cdiwatch reads or writes (contract §2, §4).

These are the published contract: ``make schemas`` writes their JSON Schemas
to ``schemas/``. The hot path validates with ``events.Validator`` instead (see
its module doc for why); ``tests/test_models.py`` proves the two agree.
Vocabularies here are the defaults; deployments that configure other
categories validate against their settings at run time.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .config import CRIME_CATEGORIES, NON_CRIME_CATEGORIES
from .events import CANCEL_REASONS, CHANNELS, DISPOSITIONS, FLAGS, REASONS, parse_time

__all__ = [
    "IncidentOpened", "IncidentReclassified", "IncidentClosed", "IncidentEventModel",
    "CrimeRecorded", "CrimeLinked", "CrimeCancelled", "CrimeEventModel",
    "AlertModel", "DeadLetterModel", "AuditModel", "SCHEMA_MODELS",
]

RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def _check_time(value: str) -> str:
    if parse_time(value) is None:
        raise ValueError("not an RFC 3339 date-time with seconds and offset")
    return value


def _lit(values) -> object:
    return Literal[tuple(sorted(values))]  # type: ignore[misc]


DateTime = Annotated[str, StringConstraints(pattern=RFC3339_PATTERN), AfterValidator(_check_time),
                     Field(json_schema_extra={"format": "date-time"})]
Id = Annotated[str, StringConstraints(min_length=1)]
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
    flags: Optional[list[Flag]] = None


class IncidentOpened(_IncidentBase):
    """A call or report logged in command and control; starts the clock."""

    event_type: Literal["opened"]
    reported_at: DateTime
    channel: Channel
    district: Annotated[str, StringConstraints(min_length=1, max_length=40)]
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
    incident_ids: list[Id]
    category: CrimeCategory


class CrimeLinked(_CrimeBase):
    event_type: Literal["linked"]
    incident_ids: Annotated[list[Id], Field(min_length=1)]


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
    """deadletter.v1 on ``cdi.deadletter``: an invalid input message, kept whole."""

    model_config = ConfigDict(extra="forbid")
    schema_: Literal["deadletter.v1"] = Field(alias="schema")
    source_topic: str
    partition: int
    offset: int
    key: Optional[str]
    payload: str
    payload_encoding: Optional[Literal["base64"]] = None
    reason: _lit(REASONS)  # type: ignore[valid-type]
    detail: str
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
