"""A small builder for hand-made scenarios (contract §2-§4 tests).

Times are given in **hours after T0** (floats) and turned into RFC 3339
strings; event ids are generated so every event is unique unless a test
passes ``event_id`` itself. Builders return plain payload dicts, so property
tests can mutate them; :class:`Scenario` feeds them to a
:class:`~pipeline.core.monitor.Monitor` as JSON bytes with a fixed ``now_us``,
exactly as a worker would read them from the topics.

    sc = Scenario()
    sc.opened("I1", at=0, category="theft")
    sc.recorded("C1", ["I1"], at=5)
    assert sc.status("I1") == "on_time"
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import orjson

from pipeline.settings import Settings
from pipeline.core.times import parse_time
from pipeline.core.monitor import Monitor

__all__ = ["T0", "US", "HOUR", "MINUTE", "NOW", "iso", "us", "Scenario",
           "opened", "reclassified", "closed", "recorded", "linked", "cancelled",
           "INCIDENTS", "CRIMES", "payload"]

US = 1_000_000
MINUTE = 60 * US
HOUR = 3600 * US
T0_DT = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
T0 = parse_time("2026-03-01T08:00:00Z")
#: The monitor's wall clock in scenarios: far after every scenario event.
NOW = T0 + 400 * 24 * HOUR
INCIDENTS = "cc.incidents"
CRIMES = "rms.crimes"

_ids = itertools.count(1)


def us(hours: float) -> int:
    """Microseconds since the epoch of ``T0 + hours`` (exact to the µs)."""
    return T0 + round(hours * HOUR)


def iso(hours: float, offset_hours: int = 0) -> str:
    """RFC 3339 for ``T0 + hours``, optionally written with a non-UTC offset."""
    tz = timezone(timedelta(hours=offset_hours))
    dt = (T0_DT + timedelta(microseconds=round(hours * HOUR))).astimezone(tz)
    text = dt.isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z") if offset_hours == 0 else text


def _eid(prefix: str) -> str:
    return f"{prefix}-{next(_ids):06d}"


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not _UNSET}


_UNSET = object()


def opened(incident_id: str, at: float, category: str = "theft", reported_at: float | None = None,
           channel: str = "999", district: str = "Dover", flags: Any = _UNSET,
           event_id: str | None = None, **extra: Any) -> dict:
    """An ``opened`` event; ``reported_at`` defaults to ``at``."""
    return _clean({
        "schema": "incident.v1", "event_id": event_id or _eid("cc"), "event_type": "opened",
        "incident_id": incident_id, "occurred_at": iso(at),
        "reported_at": iso(at if reported_at is None else reported_at),
        "channel": channel, "district": district, "category": category, "flags": flags, **extra,
    })


def reclassified(incident_id: str, at: float, category: str, event_id: str | None = None,
                 **extra: Any) -> dict:
    return {"schema": "incident.v1", "event_id": event_id or _eid("cc"), "event_type": "reclassified",
            "incident_id": incident_id, "occurred_at": iso(at), "category": category, **extra}


def closed(incident_id: str, at: float, disposition: str, event_id: str | None = None,
           **extra: Any) -> dict:
    return {"schema": "incident.v1", "event_id": event_id or _eid("cc"), "event_type": "closed",
            "incident_id": incident_id, "occurred_at": iso(at), "disposition": disposition, **extra}


def recorded(crime_id: str, incident_ids: Iterable[str], at: float, category: str = "theft",
             event_id: str | None = None, **extra: Any) -> dict:
    return {"schema": "crime.v1", "event_id": event_id or _eid("rms"), "event_type": "recorded",
            "crime_id": crime_id, "incident_ids": list(incident_ids), "occurred_at": iso(at),
            "category": category, **extra}


def linked(crime_id: str, incident_ids: Iterable[str], at: float, event_id: str | None = None,
           **extra: Any) -> dict:
    return {"schema": "crime.v1", "event_id": event_id or _eid("rms"), "event_type": "linked",
            "crime_id": crime_id, "incident_ids": list(incident_ids), "occurred_at": iso(at), **extra}


def cancelled(crime_id: str, at: float, reason: Any = _UNSET, event_id: str | None = None,
              **extra: Any) -> dict:
    return _clean({"schema": "crime.v1", "event_id": event_id or _eid("rms"), "event_type": "cancelled",
                   "crime_id": crime_id, "occurred_at": iso(at), "reason": reason, **extra})


def payload(event: dict | bytes | str) -> bytes:
    """An event as the bytes on the topic."""
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return orjson.dumps(event)


def topic_of(event: dict) -> str:
    return INCIDENTS if event.get("schema") == "incident.v1" else CRIMES


class Scenario:
    """A :class:`Monitor` (alerts kept) plus shortcuts that build, feed and inspect."""

    def __init__(self, settings: Settings | None = None, now: int = NOW) -> None:
        self.settings = settings or Settings()
        self.monitor = Monitor(self.settings.core(), keep_alerts=True)
        self.now = now

    # -------------------------------------------------------------- feeding
    def feed(self, event: dict | bytes | str, topic: str | None = None, now: int | None = None):
        """Feed one message; returns the :class:`Rejection` or None."""
        if topic is None:
            if not isinstance(event, dict):
                raise ValueError("raw payloads need an explicit topic")
            topic = topic_of(event)
        return self.monitor.feed(topic, payload(event), self.now if now is None else now)

    def feed_all(self, events: Iterable[dict]) -> None:
        for e in events:
            rejection = self.feed(e)
            assert rejection is None, (e, rejection)

    def _fed(self, event: dict) -> dict:
        rejection = self.feed(event)
        assert rejection is None, (event, rejection)
        return event

    def opened(self, *a, **k) -> dict:
        return self._fed(opened(*a, **k))

    def reclassified(self, *a, **k) -> dict:
        return self._fed(reclassified(*a, **k))

    def closed(self, *a, **k) -> dict:
        return self._fed(closed(*a, **k))

    def recorded(self, *a, **k) -> dict:
        return self._fed(recorded(*a, **k))

    def linked(self, *a, **k) -> dict:
        return self._fed(linked(*a, **k))

    def cancelled(self, *a, **k) -> dict:
        return self._fed(cancelled(*a, **k))

    def tick(self, at: float, incident_id: str = "TICK") -> dict:
        """Move event time (and so the watermark) with an unrelated non-crime incident."""
        return self.opened(f"{incident_id}-{next(_ids)}", at, category="admin")

    # ----------------------------------------------------------- inspecting
    def status(self, incident_id: str) -> str | None:
        """Current status code of an incident held by the ledger (None if absent)."""
        st = self.monitor.incidents.incidents.get(incident_id)
        return None if st is None or st.key is None else st.key[0]

    def state(self, incident_id: str):
        return self.monitor.incidents.incidents[incident_id]

    def assessment(self, incident_id: str):
        return self.monitor.incidents.assess(self.state(incident_id))

    def exempt_reason(self, incident_id: str) -> str | None:
        st = self.monitor.incidents.incidents[incident_id]
        return st.key[4]

    def audit(self) -> dict:
        return self.monitor.audit()

    @property
    def watermark(self) -> int | None:
        return self.monitor.incidents.watermark

    def alerts(self, incident_id: str | None = None) -> list[str]:
        """``alert_id`` of every alert decided so far, in order."""
        return [a.alert_id for a in self.monitor.alerts
                if incident_id is None or a.incident_id == incident_id]

    def alert(self, alert_id: str):
        found = [a for a in self.monitor.alerts if a.alert_id == alert_id]
        assert len(found) == 1, (alert_id, self.alerts())
        return found[0]
