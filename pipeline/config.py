"""One settings object for every cdiwatch process.

Every knob lives here so that operators find them in one table (README,
"Configuration"). Values come from defaults, then ``CDI_*`` environment
variables, then command-line flags (``Settings.with_overrides``). The decision
parameters of contract §3 and the vocabularies of §2 are part of it because
the contract says they are configuration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

__all__ = ["Settings", "parse_duration", "DEFAULT_DISTRICTS", "CRIME_CATEGORIES", "NON_CRIME_CATEGORIES"]

DEFAULT_DISTRICTS: tuple[str, ...] = (
    "Ashford", "Canterbury", "Dartford", "Dover", "Folkestone and Hythe", "Gravesham",
    "Maidstone", "Medway", "Sevenoaks", "Swale", "Thanet", "Tonbridge and Malling",
    "Tunbridge Wells",
)
CRIME_CATEGORIES: tuple[str, ...] = (
    "violence_with_injury", "violence_without_injury", "stalking_harassment", "rape",
    "sexual_offence", "robbery", "burglary", "vehicle_offence", "theft",
    "criminal_damage_arson", "public_order", "weapons", "drugs", "fraud", "other_crime",
)
NON_CRIME_CATEGORIES: tuple[str, ...] = (
    "asb", "concern_for_safety", "missing_person", "road_traffic_collision",
    "suspicious_activity", "domestic_non_crime", "admin", "other_non_crime",
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``"24h"``, ``"10m"``, ``"30d"``, ``"1.5s"`` or a bare number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 10m, 24h, 30d)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Configuration for the monitor, its CLI and its tests.

    Durations are seconds (floats); environment variables accept ``24h`` forms.
    """

    # --- Kafka
    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "cdiwatch"
    incidents_topic: str = "cc.incidents"
    crimes_topic: str = "rms.crimes"
    alerts_topic: str = "cdi.alerts"
    deadletter_topic: str = "cdi.deadletter"
    partitions: int = 6
    replication_factor: int = 1
    store: str = "memory://"
    data_dir: str = "./data"
    session_timeout: float = 10.0
    # --- web
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # --- decision parameters (contract §3)
    recording_deadline: float = 24 * 3600.0
    allowed_lateness: float = 10 * 60.0
    at_risk_window: float = 4 * 3600.0
    state_retention: float = 30 * 86400.0
    future_tolerance: float = 15 * 60.0
    max_message_bytes: int = 1024 * 1024
    # --- vocabularies (contract §2, §6)
    districts: tuple[str, ...] = DEFAULT_DISTRICTS
    crime_categories: tuple[str, ...] = CRIME_CATEGORIES
    non_crime_categories: tuple[str, ...] = NON_CRIME_CATEGORIES
    # --- stream layer tuning
    tick_interval: float = 0.5
    batch_size: int = 2000
    log_level: str = "info"

    _DURATIONS = ("session_timeout", "recording_deadline", "allowed_lateness", "at_risk_window",
                  "state_retention", "future_tolerance", "tick_interval")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then ``CDI_<FIELD>`` variables, then explicit overrides (flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("CDI_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = cls._coerce(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def _coerce(cls, name: str, raw: str) -> Any:
        default = getattr(cls, name)
        if name in cls._DURATIONS:
            return parse_duration(raw)
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return _split_list(raw)
        return raw

    def with_overrides(self, **overrides: Any) -> "Settings":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` from ``kafka://host:port[;host:port]``."""
        text = self.broker
        if "://" in text:
            text = text.split("://", 1)[1]
        return ",".join(part for part in re.split(r"[;,]", text) if part)

    @property
    def categories(self) -> tuple[str, ...]:
        return self.crime_categories + self.non_crime_categories
