"""The words of the contract: schemas, feeds, vocabularies, statuses, limits.

Every other module takes these names from here, so a reader who wants to
know what ``at_risk`` or ``downgraded`` means, which dispositions exempt an
incident, or how long an id may be, finds it once (contract §2-§4).
Labels and the harm order are here too: the board and the registrar's report
show the same words and sort the same way.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "INCIDENT_SCHEMA", "CRIME_SCHEMA", "ALERT_SCHEMA", "DEADLETTER_SCHEMA", "AUDIT_SCHEMA",
    "INCIDENTS", "CRIMES", "SIDES", "SCHEMA_OF_SIDE",
    "CRIME_CATEGORIES", "NON_CRIME_CATEGORIES", "DEFAULT_DISTRICTS", "CHANNELS", "DISPOSITIONS",
    "FLAGS", "CANCEL_REASONS", "INCIDENT_TYPES", "CRIME_TYPES", "REASONS",
    "UNOPENED", "NOT_REQUIRED", "ON_TIME", "LATE", "EXEMPT", "OVERDUE", "PENDING", "AT_RISK",
    "OPEN_STATUSES", "RECORDED_STATUSES", "REQUIRED_STATUSES",
    "EXEMPT_DISPOSITIONS", "DOWNGRADE_REASONS", "RECLASSIFIED_NON_CRIME", "ALERT_KINDS",
    "MAX_ID_CHARS", "MAX_INCIDENT_IDS", "MAX_FLAGS", "MAX_DISTRICT_CHARS", "MAX_MESSAGE_BYTES",
    "DEADLETTER_DETAIL_CHARS", "DEADLETTER_PAYLOAD_BYTES", "MAX_EVENTS_PER_INCIDENT", "MAX_EVENTS_PER_CRIME",
    "MAX_LINKS_PER_CRIME", "StateLimit",
    "HIGH_HARM_CATEGORIES", "HARM_FLAGS", "harm_rank", "LABELS", "label",
]

# ------------------------------------------------------------------ schemas and feeds (§1)
INCIDENT_SCHEMA: Final = "incident.v1"
CRIME_SCHEMA: Final = "crime.v1"
ALERT_SCHEMA: Final = "alert.v1"
DEADLETTER_SCHEMA: Final = "deadletter.v1"
AUDIT_SCHEMA: Final = "audit.v1"

#: The two input feeds, by the name the audit uses for them ("events.incidents").
INCIDENTS: Final = "incidents"
CRIMES: Final = "crimes"
SIDES = (INCIDENTS, CRIMES)
SCHEMA_OF_SIDE: Final = {INCIDENTS: INCIDENT_SCHEMA, CRIMES: CRIME_SCHEMA}

# ------------------------------------------------------------------ vocabularies (§2, §6)
CRIME_CATEGORIES: tuple[str, ...] = (
    "violence_with_injury", "violence_without_injury", "stalking_harassment", "rape",
    "sexual_offence", "robbery", "burglary", "vehicle_offence", "theft",
    "criminal_damage_arson", "public_order", "weapons", "drugs", "fraud", "other_crime",
)
NON_CRIME_CATEGORIES: tuple[str, ...] = (
    "asb", "concern_for_safety", "missing_person", "road_traffic_collision",
    "suspicious_activity", "domestic_non_crime", "admin", "other_non_crime",
)
DEFAULT_DISTRICTS: tuple[str, ...] = (
    "Ashford", "Canterbury", "Dartford", "Dover", "Folkestone and Hythe", "Gravesham",
    "Maidstone", "Medway", "Sevenoaks", "Swale", "Thanet", "Tonbridge and Malling",
    "Tunbridge Wells",
)
CHANNELS = ("999", "101", "online", "walk_in", "public_protection", "partner_agency", "other")
DISPOSITIONS = ("crime_recorded", "no_crime", "transferred", "duplicate", "other")
FLAGS = ("domestic_abuse", "vulnerable_victim", "repeat_victim", "hate")
CANCEL_REASONS = ("additional_verifiable_information", "outside_jurisdiction", "duplicate",
                  "recorded_in_error")
INCIDENT_TYPES = ("opened", "reclassified", "closed")
CRIME_TYPES = ("recorded", "linked", "cancelled")
#: Dead-letter reasons, in the order validation checks them (§2).
REASONS = ("too_large", "invalid_json", "unknown_schema", "schema_violation", "future_timestamp",
           "processing_error")

# ------------------------------------------------------------------ limits (§2, revision 2)
MAX_ID_CHARS: Final = 256
MAX_INCIDENT_IDS: Final = 100
MAX_FLAGS: Final = 16
MAX_DISTRICT_CHARS: Final = 40
MAX_MESSAGE_BYTES: Final = 1024 * 1024
DEADLETTER_DETAIL_CHARS: Final = 500
DEADLETTER_PAYLOAD_BYTES: Final = 65_536
#: What one incident or crime may hold: far beyond any real one, and small
#: enough that its state always fits in one Kafka record. An event beyond
#: these is not applied; it is dead-lettered as a ``processing_error``.
MAX_EVENTS_PER_INCIDENT: Final = 1000
MAX_EVENTS_PER_CRIME: Final = 1000
MAX_LINKS_PER_CRIME: Final = 1000

# ------------------------------------------------------------------ statuses (§3)
UNOPENED: Final = "unopened"          # events but no ``opened``: not seen
NOT_REQUIRED: Final = "not_required"  # seen, never crime-related
ON_TIME: Final = "on_time"
LATE: Final = "late"
EXEMPT: Final = "exempt"
OVERDUE: Final = "overdue"
PENDING: Final = "pending"
AT_RISK: Final = "at_risk"            # a pending incident inside the at-risk window

OPEN_STATUSES = (OVERDUE, AT_RISK, PENDING)
RECORDED_STATUSES: Final = frozenset({ON_TIME, LATE})
REQUIRED_STATUSES: Final = frozenset({ON_TIME, LATE, EXEMPT, OVERDUE, PENDING, AT_RISK})

RECLASSIFIED_NON_CRIME: Final = "reclassified_non_crime"
EXEMPT_DISPOSITIONS: Final = frozenset({"no_crime", "transferred", "duplicate"})
#: Exemptions that are downgrades: the way under-recording hides (§3).
DOWNGRADE_REASONS: Final = frozenset({RECLASSIFIED_NON_CRIME, "no_crime"})
ALERT_KINDS = ("at_risk", "overdue", "resolved", "downgraded")

# ------------------------------------------------------------------ harm and labels (board, report)
#: Categories a control room acts on first (HMICFRS grades violence, sexual
#: offences and rape separately); in this order.
HIGH_HARM_CATEGORIES = ("rape", "sexual_offence", "violence_with_injury", "stalking_harassment",
                        "robbery", "violence_without_injury", "weapons", "burglary")
#: Flags that raise an incident's priority: a vulnerable victim or domestic abuse.
HARM_FLAGS = ("vulnerable_victim", "domestic_abuse")


def harm_rank(category: str | None, flags=()) -> tuple[int, int]:
    """Sort key, most harmful first: harm flags, then the category's place.

    ``(0, i)`` for a high-harm category with a harm flag, ``(1, i)`` for one
    without, ``(2, i)`` for anything else (``i`` its place in the order).
    """
    try:
        place = HIGH_HARM_CATEGORIES.index(category)  # type: ignore[arg-type]
    except ValueError:
        place = len(HIGH_HARM_CATEGORIES)
    flagged = any(f in HARM_FLAGS for f in flags)
    if place < len(HIGH_HARM_CATEGORIES):
        return (0 if flagged else 1, place)
    return (1 if flagged else 2, place)


LABELS: Final[dict[str, str]] = {
    "violence_with_injury": "Violence with injury", "violence_without_injury": "Violence without injury",
    "stalking_harassment": "Stalking and harassment", "rape": "Rape", "sexual_offence": "Sexual offence",
    "robbery": "Robbery", "burglary": "Burglary", "vehicle_offence": "Vehicle offence", "theft": "Theft",
    "criminal_damage_arson": "Criminal damage and arson", "public_order": "Public order",
    "weapons": "Possession of weapons", "drugs": "Drug offence", "fraud": "Fraud",
    "other_crime": "Other crime", "asb": "Anti-social behaviour", "concern_for_safety": "Concern for safety",
    "missing_person": "Missing person", "road_traffic_collision": "Road traffic collision",
    "suspicious_activity": "Suspicious activity", "domestic_non_crime": "Domestic (non-crime)",
    "admin": "Administrative", "other_non_crime": "Other (non-crime)",
    "999": "999 call", "101": "101 call", "online": "Online report", "walk_in": "Walk-in",
    "public_protection": "Public protection referral", "partner_agency": "Partner agency", "other": "Other",
    "domestic_abuse": "Domestic abuse", "vulnerable_victim": "Vulnerable victim",
    "repeat_victim": "Repeat victim", "hate": "Hate",
    "crime_recorded": "Crime recorded", "no_crime": "No crime", "transferred": "Transferred",
    "duplicate": "Duplicate", RECLASSIFIED_NON_CRIME: "Reclassified as non-crime",
    ON_TIME: "Recorded on time", LATE: "Recorded late", EXEMPT: "Exempt", OVERDUE: "Overdue",
    PENDING: "Pending", AT_RISK: "At risk", NOT_REQUIRED: "No record required", UNOPENED: "Not opened",
}


def label(code: str | None) -> str:
    """A human label for a code of the vocabulary (the code itself when unknown)."""
    if code is None:
        return ""
    return LABELS.get(code, code.replace("_", " ").capitalize())


class StateLimit(ValueError):
    """An incident or crime would grow beyond what one of them may hold."""
