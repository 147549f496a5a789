"""The one settings object of every cdiwatch process.

Every knob is a typed, range-checked field here (:data:`FIELDS`), so
operators find them in one table (README, "Configuration"). Values come from
the defaults, then the ``CDI_*`` environment variables, then command-line
flags (keyword arguments). Durations accept ``90s``, ``10m``, ``24h``, ``30d``
or seconds; lists are comma-separated. Secrets are :class:`Secret` (never
printed, logged or shown in an error) and can come from files
(``CDI_..._FILE``), read once at start. Any mistake becomes one line per
problem that names the variable (:class:`SettingsError`).

Checked with msgspec one field at a time (every mistake is reported), not a
pydantic model: importing pydantic and building the model took ~85 ms of every
command's start (~7% of an offline audit of 300,000 messages). pydantic stays
for the published event models (:mod:`pipeline.contract`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, NamedTuple

import msgspec
from msgspec import Meta

from .core.config import CoreConfig, InputTopics, Limits, Params, Vocabulary
from .core.times import US
from .core.vocabulary import CRIME_CATEGORIES, DEFAULT_DISTRICTS, MAX_MESSAGE_BYTES, NON_CRIME_CATEGORIES

__all__ = ["Settings", "SettingsError", "Secret", "FIELDS", "load_settings", "parse_duration", "parse_broker"]

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


_BOOLEANS = {**dict.fromkeys(("1", "true", "yes", "on", "y", "t"), True),
             **dict.fromkeys(("0", "false", "no", "off", "n", "f"), False)}


def _boolean(value: Any) -> Any:
    """``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0`` (any case), as operators write them."""
    if isinstance(value, str):
        if value.strip().lower() not in _BOOLEANS:
            raise ValueError(f"not true or false: {value[:40]!r}")
        return _BOOLEANS[value.strip().lower()]
    return value


class Secret:
    """A secret setting (a password, a token): ``repr``, ``str``, dumps and
    errors show ``**********``; :meth:`get_secret_value` gives it to the one
    place that needs it (the Kafka client, the HTTP check)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    __hash__ = None  # type: ignore[assignment]


class Field(NamedTuple):
    """One setting: what it holds (a type msgspec checks, with its ``Meta``
    limits), its default, and what turns the text of a variable into it first."""

    type: Any
    default: Any
    before: Callable[[Any], Any] | None = None


Duration = Annotated[float, Meta(gt=0)]
Lasting = Annotated[float, Meta(ge=0)]  # a duration that may be 0
Port = Annotated[int, Meta(ge=1, le=65535)]
Names = tuple[str, ...]

#: Every setting, in the README's order: ``CDI_<NAME>`` sets it.
FIELDS: dict[str, Field] = {
    # --- Kafka: where, and how securely (contract §7)
    "broker": Field(str, "kafka://127.0.0.1:9092"),  # bootstrap servers, kafka://HOST:PORT[,HOST:PORT]
    "kafka_security_protocol": Field(Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], "PLAINTEXT"),
    "kafka_sasl_mechanism": Field(Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None, None),
    "kafka_sasl_username": Field(str | None, None),
    "kafka_sasl_password": Field(Secret | None, None),
    "kafka_sasl_password_file": Field(Path | None, None),
    "kafka_ssl_cafile": Field(Path | None, None),
    "kafka_ssl_certfile": Field(Path | None, None),
    "kafka_ssl_keyfile": Field(Path | None, None),
    # --- topics and state
    "app_id": Field(Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,100}$")], "cdiwatch"),
    "incidents_topic": Field(str, "cc.incidents"),
    "crimes_topic": Field(str, "rms.crimes"),
    "alerts_topic": Field(str, "cdi.alerts"),
    "deadletter_topic": Field(str, "cdi.deadletter"),
    "partitions": Field(Annotated[int, Meta(ge=1, le=1000)], 6),
    "replication_factor": Field(Annotated[int, Meta(ge=1, le=100)], 1),
    "data_dir": Field(Path, Path("./data")),
    "session_timeout": Field(Duration, 10.0, parse_duration),
    # --- HTTP (contract §4, §7)
    "web_host": Field(str, "127.0.0.1"),
    "web_port": Field(Port, 6066),
    "web_url": Field(str | None, None),  # the URL other workers reach this one at (default: host and port)
    "http_token": Field(Secret | None, None),
    "http_token_file": Field(Path | None, None),
    "http_allow_anonymous": Field(bool, False, _boolean),
    "timezone": Field(str, "Europe/London"),
    "feed_silent_after": Field(Duration, 30 * 60.0, parse_duration),
    # --- decision parameters (contract §3)
    "recording_deadline": Field(Duration, 24 * 3600.0, parse_duration),
    "allowed_lateness": Field(Lasting, 10 * 60.0, parse_duration),
    "at_risk_window": Field(Lasting, 4 * 3600.0, parse_duration),
    "state_retention": Field(Duration, 30 * 86400.0, parse_duration),
    "future_tolerance": Field(Lasting, 15 * 60.0, parse_duration),
    "max_message_bytes": Field(Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)], MAX_MESSAGE_BYTES),
    # --- vocabularies (contract §2, §6)
    "districts": Field(Names, DEFAULT_DISTRICTS, _split),
    "crime_categories": Field(Names, CRIME_CATEGORIES, _split),
    "non_crime_categories": Field(Names, NON_CRIME_CATEGORIES, _split),
    # --- stream tuning
    "tick_interval": Field(Duration, 0.5, parse_duration),
    "batch_size": Field(Annotated[int, Meta(ge=1, le=100_000)], 5000),
    "log_level": Field(Literal["debug", "info", "warning", "error"], "info",
                       lambda v: v.lower() if isinstance(v, str) else v),
    # --- for the crash tests only: die at POINT of batch N (pipeline/stream/faults.py)
    "test_fault": Field(Annotated[str, Meta(pattern=r"^(before_outputs|after_outputs|mid_checkpoint|after_checkpoint)"
                                            r"@[0-9]+$")] | None, None),
}

_ENV_PREFIX = "CDI_"
_SECRETS = frozenset({"kafka_sasl_password", "http_token"})


def _environment() -> dict[str, str]:
    """``CDI_<FIELD>`` variables set (any case), field -> text; other ``CDI_*`` names are ignored."""
    out = {}
    for key, value in os.environ.items():
        upper = key.upper()
        if upper.startswith(_ENV_PREFIX):
            name = upper[len(_ENV_PREFIX):].lower()
            if name in FIELDS:
                out[name] = value
    return out


def _dec_hook(kind: type, value: Any) -> Any:
    """The types msgspec does not know: paths and secrets, from text."""
    if kind is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    if kind is Secret and isinstance(value, (str, Secret)):
        return value if isinstance(value, Secret) else Secret(value)
    raise ValueError(f"Expected `{kind.__name__.lower()}`, got `{type(value).__name__}`")


_WORDS = (("Expected `int`", "must be a whole number"), ("Expected `float`", "must be a number"),
          ("Expected `str`", "must be text"), ("Expected `bool`", "must be true or false"),
          ("Expected `array`", "must be a comma-separated list"), ("Expected `null`", "must be empty"))


def _problem(name: str, exc: Exception) -> str:
    """msgspec's words for a mistake in one field, for operators."""
    text = str(exc).split(" - at `", 1)[0].split(", got `", 1)[0]  # the value is shown by the caller
    if text.startswith("Invalid enum value"):
        allowed = getattr(FIELDS[name].type, "__args__", ())
        values = [a for arg in allowed for a in (getattr(arg, "__args__", None) or (arg,)) if isinstance(a, str)]
        return f"must be one of {', '.join(values)}"
    for machine, human in _WORDS:
        if text.startswith(machine):
            return human + text[len(machine):]
    return text


def _check(name: str, value: Any) -> Any:
    """One field's value from what was given (text of a variable, or a value)."""
    field = FIELDS[name]
    if field.before is not None:
        value = field.before(value)
    elif isinstance(value, str) and name not in _SECRETS:
        value = value.strip()  # "6 " from a shell or a compose file means 6
    value = msgspec.convert(value, field.type, strict=False, dec_hook=_dec_hook)
    if name == "broker":
        parse_broker(value)
    elif name == "timezone":
        _zone(value)
    return value


def _zone(name: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # here: 3 ms of every start otherwise

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/London)") from None


def _read_secret_files(data: dict) -> None:
    """``CDI_KAFKA_SASL_PASSWORD_FILE`` / ``CDI_HTTP_TOKEN_FILE``: read once, at start."""
    for secret in _SECRETS:
        path = data.get(f"{secret}_file")
        if path and not data.get(secret):
            try:
                data[secret] = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the name
                reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else
                          "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not a file name")
                raise SettingsError(f"CDI_{secret.upper()}_FILE: cannot read {str(path)[:200]!r}: {reason}") from None


class Settings:
    """Configuration of the monitor, its command line and its tests (README: "Configuration").

    ``Settings(**values)``: the defaults, then the ``CDI_*`` environment, then
    ``values`` (flags, tests), every field checked; raises
    :class:`SettingsError` with one line per problem. Frozen: a changed copy
    is :meth:`with_overrides`.
    """

    __slots__ = tuple(FIELDS)
    fields = FIELDS

    def __init__(self, **values: Any) -> None:
        data = {**_environment(), **values}
        _read_secret_files(data)
        self._fill(data, values)

    def _fill(self, data: dict, flags: dict) -> None:
        """Every field from ``data`` (or its default), checked; the fields in
        ``flags`` are named as flags too in a mistake's line."""
        problems = [f"{name}: not a setting" for name in sorted(set(data) - set(FIELDS))]
        for name, field in FIELDS.items():
            if name not in data:
                object.__setattr__(self, name, field.default)
                continue
            given = data[name]
            try:
                object.__setattr__(self, name, _check(name, given))
            except (ValueError, TypeError, msgspec.ValidationError) as exc:
                where = f"--{name.replace('_', '-')} / CDI_{name.upper()}" if name in flags else f"CDI_{name.upper()}"
                msg = _problem(name, exc)
                shown = repr(str(given)[:40])
                if name not in _SECRETS and isinstance(given, (str, int, float)) and shown not in msg:
                    msg += f" (got {shown})"
                problems.append(f"{where}: {msg}")
        if problems:
            raise SettingsError("; ".join(problems))
        self._consistent()

    def _consistent(self) -> None:
        if self.kafka_security_protocol.startswith("SASL"):
            if not self.kafka_sasl_mechanism or not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise SettingsError("CDI_KAFKA_SECURITY_PROTOCOL=" + self.kafka_security_protocol +
                                    " needs CDI_KAFKA_SASL_MECHANISM, CDI_KAFKA_SASL_USERNAME and "
                                    "CDI_KAFKA_SASL_PASSWORD (or CDI_KAFKA_SASL_PASSWORD_FILE)")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise SettingsError("CDI_KAFKA_SSL_CERTFILE and CDI_KAFKA_SSL_KEYFILE go together (mutual TLS)")
        overlap = set(self.crime_categories) & set(self.non_crime_categories)
        if overlap:
            raise SettingsError(f"categories both crime and non-crime: {', '.join(sorted(overlap))}")
        if not self.crime_categories:
            raise SettingsError("CDI_CRIME_CATEGORIES is empty")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are frozen: use with_overrides({name}=...)")

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{name}={getattr(self, name)!r}' for name in FIELDS)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def as_dict(self) -> dict[str, Any]:
        """Every field's value (secrets stay :class:`Secret`)."""
        return {name: getattr(self, name) for name in FIELDS}

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
    def zone(self):
        """The time zone of reports and the board (checked here too: a default is not checked at start)."""
        try:
            return _zone(self.timezone)
        except ValueError as exc:
            raise SettingsError(f"CDI_TIMEZONE: {exc}") from None

    @property
    def categories(self) -> tuple[str, ...]:
        return self.crime_categories + self.non_crime_categories

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with some fields changed (None = unchanged), checked again."""
        given = {k: v for k, v in overrides.items() if v is not None}
        new = object.__new__(Settings)
        new._fill({**self.as_dict(), **given}, given)
        return new

    def core(self) -> CoreConfig:
        """The decision core's configuration (plain values, microseconds)."""
        return CoreConfig(
            params=Params(int(self.recording_deadline * US), int(self.allowed_lateness * US),
                          int(self.at_risk_window * US), int(self.state_retention * US)),
            vocabulary=Vocabulary(self.crime_categories, self.non_crime_categories, self.districts),
            limits=Limits(int(self.future_tolerance * US), self.max_message_bytes),
            topics=InputTopics(self.incidents_topic, self.crimes_topic),
        )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``overrides`` (flags; None = not given);
    a mistake is a :class:`SettingsError`, a line per problem, never a secret's value."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
