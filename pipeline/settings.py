"""The one settings object of every cdiwatch process.

Every knob is a typed, range-checked field here, so operators find them in
one table (README, "Configuration"). Values come from the defaults, then the
``CDI_*`` environment variables, then command-line flags (keyword arguments).
Durations accept ``90s``, ``10m``, ``24h``, ``30d`` or seconds; lists are
comma-separated. Secrets are :class:`~pydantic.SecretStr` (never printed,
logged or shown in an error) and can come from files (``CDI_..._FILE``),
read once at start. :func:`load_settings` turns any mistake into one line
that names the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator,
)

from .core.config import CoreConfig, InputTopics, Limits, Params, Vocabulary
from .core.times import US
from .core.vocabulary import CRIME_CATEGORIES, DEFAULT_DISTRICTS, MAX_MESSAGE_BYTES, NON_CRIME_CATEGORIES

__all__ = ["Settings", "SettingsError", "load_settings", "parse_duration", "parse_broker"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class SettingsError(ValueError):
    """A configuration mistake, worded for the user (one line per problem)."""


def parse_duration(value: Any) -> float:
    """Seconds from ``"24h"``, ``"10m"``, ``"30d"``, ``"1.5s"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {str(value)[:40]!r} (use e.g. 90s, 10m, 24h, 30d)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_broker(value: str) -> str:
    """``kafka://HOST:PORT[,HOST:PORT...]`` (or without ``kafka://``) -> ``HOST:PORT,...``.

    Any other scheme is refused, never dropped: TLS and SASL are chosen with
    ``CDI_KAFKA_SECURITY_PROTOCOL``, not with the URL.
    """
    text = value.strip()
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme != "kafka":
            raise ValueError(f"unsupported scheme {scheme + '://'!r}: use kafka://HOST:PORT "
                             "(TLS and SASL are set with CDI_KAFKA_SECURITY_PROTOCOL)")
    servers = [part.strip() for part in re.split(r"[;,]", text.rstrip("/")) if part.strip()]
    if not servers:
        raise ValueError("no broker address: use kafka://HOST:PORT")
    for server in servers:
        m = _HOST_PORT.match(server)
        if not m:
            raise ValueError(f"{server!r} is not HOST:PORT (e.g. kafka://127.0.0.1:9092)")
        if not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"port {m.group(2)} of {server!r} is not 1-65535")
    return ",".join(servers)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Names = Annotated[tuple[str, ...], BeforeValidator(_split)]
Port = Annotated[int, Field(ge=1, le=65535)]


_ENV_PREFIX = "CDI_"


def _environment(fields) -> dict[str, str]:
    """The ``CDI_<FIELD>`` variables set (names in any case), as field -> text.

    Read here rather than through pydantic-settings: these dozen lines are all
    of it that cdiwatch used, and that library (it imports asyncio, ssl and
    email) made importing the command line take 0.17-0.18 s instead of
    0.13-0.14 s, and each process 3 MiB larger (the offline audit runs two).
    Other ``CDI_*`` names are not fields and are ignored, as before.
    """
    out = {}
    for key, value in os.environ.items():
        upper = key.upper()
        if upper.startswith(_ENV_PREFIX):
            name = upper[len(_ENV_PREFIX):].lower()
            if name in fields:
                out[name] = value
    return out


class Settings(BaseModel):
    """Configuration of the monitor, its command line and its tests (README: "Configuration")."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, hide_input_in_errors=True)

    def __init__(self, **values: Any) -> None:
        """The defaults, then the ``CDI_*`` environment, then ``values`` (flags, tests)."""
        super().__init__(**{**_environment(type(self).model_fields), **values})

    # --- Kafka: where, and how securely (contract §7)
    broker: str = Field("kafka://127.0.0.1:9092", description="bootstrap servers, kafka://HOST:PORT[,HOST:PORT]")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # --- topics and state
    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")] = "cdiwatch"
    incidents_topic: str = "cc.incidents"
    crimes_topic: str = "rms.crimes"
    alerts_topic: str = "cdi.alerts"
    deadletter_topic: str = "cdi.deadletter"
    partitions: Annotated[int, Field(ge=1, le=1000)] = 6
    replication_factor: Annotated[int, Field(ge=1, le=100)] = 1
    data_dir: Path = Path("./data")
    session_timeout: Duration = 10.0
    # --- HTTP (contract §4, §7)
    web_host: str = "127.0.0.1"
    web_port: Port = 6066
    web_url: str | None = Field(None, description="URL other workers reach this one at (default from host and port)")
    http_token: SecretStr | None = None
    http_token_file: Path | None = None
    http_allow_anonymous: bool = False
    timezone: str = "Europe/London"
    feed_silent_after: Duration = 30 * 60.0
    # --- decision parameters (contract §3)
    recording_deadline: Duration = 24 * 3600.0
    allowed_lateness: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 10 * 60.0
    at_risk_window: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 4 * 3600.0
    state_retention: Duration = 30 * 86400.0
    future_tolerance: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 15 * 60.0
    max_message_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = MAX_MESSAGE_BYTES
    # --- vocabularies (contract §2, §6)
    districts: Names = DEFAULT_DISTRICTS
    crime_categories: Names = CRIME_CATEGORIES
    non_crime_categories: Names = NON_CRIME_CATEGORIES
    # --- stream tuning
    tick_interval: Duration = 0.5
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # --- for the crash tests only: die at POINT of batch N (pipeline/stream/faults.py)
    test_fault: Annotated[str, Field(pattern=r"^(before_outputs|after_outputs|mid_checkpoint|after_checkpoint)@[0-9]+$")] | None = None

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/London)") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """``CDI_KAFKA_SASL_PASSWORD_FILE`` / ``CDI_HTTP_TOKEN_FILE``: read once, at start."""
        if not isinstance(data, dict):
            return data
        for secret in ("kafka_sasl_password", "http_token"):
            path = data.get(f"{secret}_file")
            if path and not data.get(secret):
                try:
                    data[secret] = Path(path).read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
                    raise ValueError(f"CDI_{secret.upper()}_FILE: cannot read {path}: {reason}") from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.kafka_security_protocol.startswith("SASL"):
            if not self.kafka_sasl_mechanism or not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError("CDI_KAFKA_SECURITY_PROTOCOL=" + self.kafka_security_protocol +
                                 " needs CDI_KAFKA_SASL_MECHANISM, CDI_KAFKA_SASL_USERNAME and "
                                 "CDI_KAFKA_SASL_PASSWORD (or CDI_KAFKA_SASL_PASSWORD_FILE)")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("CDI_KAFKA_SSL_CERTFILE and CDI_KAFKA_SSL_KEYFILE go together (mutual TLS)")
        overlap = set(self.crime_categories) & set(self.non_crime_categories)
        if overlap:
            raise ValueError(f"categories both crime and non-crime: {', '.join(sorted(overlap))}")
        if not self.crime_categories:
            raise ValueError("CDI_CRIME_CATEGORIES is empty")
        return self

    # ------------------------------------------------------------------ derived
    @property
    def bootstrap_servers(self) -> str:
        """``HOST:PORT[,HOST:PORT]`` for Kafka clients."""
        return parse_broker(self.broker)

    @property
    def web_loopback(self) -> bool:
        """True when the web port is bound to a loopback address only."""
        if self.web_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.web_host).is_loopback
        except ValueError:
            return False

    @property
    def advertised_url(self) -> str:
        """The URL other workers use to forward a request here."""
        if self.web_url:
            return self.web_url.rstrip("/")
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            import socket
            host = socket.gethostname()
        return f"http://{host}:{self.web_port}"

    @property
    def categories(self) -> tuple[str, ...]:
        return self.crime_categories + self.non_crime_categories

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with some fields changed (None = unchanged), validated again."""
        values = self.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return type(self).model_validate(values)

    def core(self) -> CoreConfig:
        """The decision core's configuration (plain values, microseconds)."""
        return CoreConfig(
            params=Params(int(self.recording_deadline * US), int(self.allowed_lateness * US),
                          int(self.at_risk_window * US), int(self.state_retention * US)),
            vocabulary=Vocabulary(self.crime_categories, self.non_crime_categories, self.districts),
            limits=Limits(int(self.future_tolerance * US), self.max_message_bytes),
            topics=InputTopics(self.incidents_topic, self.crimes_topic),
        )


_SECRETS = frozenset({"kafka_sasl_password", "http_token"})


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``overrides`` (flags; None = not given).

    Raises :class:`SettingsError` with one line per problem, naming the
    variable and what to do; never a value of a secret.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            where = f"--{field.replace('_', '-')} / CDI_{field.upper()}" if field in given else f"CDI_{field.upper()}"
            value = err.get("input")
            if field and field not in _SECRETS and isinstance(value, (str, int, float)) and "got" not in msg:
                msg += f" (got {str(value)[:40]!r})"
            lines.append(f"{where}: {msg}" if field else msg)
        raise SettingsError("; ".join(lines)) from None

