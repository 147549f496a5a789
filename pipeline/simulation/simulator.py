"""A simulated force (Kent-like) producing ``incident.v1`` and ``crime.v1`` messages.

Why a simulator: real control-room and crime-recording feeds are confidential,
yet the monitor has to be exercised on their shape and on their mess. This
module plays both source systems over a span of event time and yields the
messages in *arrival* order, as a capture holds them (``cdiwatch simulate``)
or a live feed delivers them (the demo, the benchmarks).

Proportions follow domain.md: about 2,500 incidents a day, ~80% not
crime-related, ~18-20% crime-related (some only after a reclassification),
~10% of crimes recorded with no incident, most records within hours, some late,
some never. The mess of real feeds is there on purpose: the records feed lags
and catches up after outages, ~1.5% of messages are resent, ~1% are invalid,
online reports are logged hours after they were made, some ``opened`` events
are lost, crimes arrive before their incidents, links arrive later.

Determinism: one ``random.Random(seed)`` drives everything, so a seed is a
reproducible capture. Times are integer microseconds (exact). An event never
*arrives* before it occurred and nothing arrives after the span, so a span
that ends before the wall clock never carries a future ``occurred_at``.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, Iterator

import orjson

from ..core.vocabulary import CRIME_CATEGORIES, DEFAULT_DISTRICTS, NON_CRIME_CATEGORIES

__all__ = ["SimMessage", "Simulator", "generate", "default_start"]


S = 1_000_000  # microseconds per second
H = 3600 * S
DEFAULT_RATE = 2500 / 24  # incidents per hour, Kent-like
_BASE_START = datetime(2026, 1, 5, tzinfo=timezone.utc)

Table = tuple[tuple[str, ...], list[float]]


def _table(values: tuple[str, ...], weights: tuple[float, ...]) -> Table:
    """Values with cumulative weights, for :meth:`Simulator._pick` (bisect beats random.choices)."""
    return tuple(values), list(accumulate(weights))


CHANNELS = _table(("999", "101", "online", "walk_in", "public_protection", "partner_agency", "other"),
                  (38, 37, 14, 3, 3, 3, 2))
CRIMES = _table(CRIME_CATEGORIES, (10, 14, 13, 1.5, 2.5, 1, 5, 5, 17, 10, 9, 1.5, 3.5, 4, 3))
NON_CRIMES = _table(NON_CRIME_CATEGORIES, (16, 22, 6, 10, 10, 8, 9, 9))
DISTRICTS = _table(DEFAULT_DISTRICTS, (135, 165, 115, 117, 110, 107, 180, 280, 120, 155, 140, 135, 115))
# Probability that a report on a channel is crime-related when it is opened.
P_CRIME = {"999": .17, "101": .14, "online": .26, "walk_in": .22,
           "public_protection": .40, "partner_agency": .12, "other": .08}
DIURNAL = (.75, .6, .5, .4, .35, .35, .45, .65, .85, 1.0, 1.05, 1.1,
           1.15, 1.15, 1.2, 1.3, 1.4, 1.45, 1.45, 1.4, 1.3, 1.2, 1.05, .9)  # by UTC hour
# Fate of a crime-related incident (cumulative probabilities); public protection
# referrals are the ones most often never recorded (domain.md).
FATES = (("downgrade", .025), ("exempt", .055), ("overdue", .11), ("late", .135), ("on_time", 1.0))
FATES_PP = (("downgrade", .03), ("exempt", .06), ("overdue", .20), ("late", .23), ("on_time", 1.0))
FLAGS = ("domestic_abuse", "vulnerable_victim", "repeat_victim", "hate")
_DOMESTIC = {"violence_with_injury", "violence_without_injury", "stalking_harassment",
             "domestic_non_crime", "rape", "sexual_offence"}
_VULNERABLE = {"concern_for_safety", "missing_person", "rape", "sexual_offence"}
FLAG_ODDS = {c: (.35 if c in _DOMESTIC else .04, .25 if c in _VULNERABLE else .06, .05,
                 .08 if c in ("public_order", "violence_without_injury") else .005)
             for c in CRIME_CATEGORIES + NON_CRIME_CATEGORIES}
CANCEL_REASONS = ("additional_verifiable_information", "outside_jurisdiction", "duplicate", "recorded_in_error")
INVALID_KINDS = ("truncated", "bad_json", "non_utf8", "wrong_schema", "unknown_event_type",
                 "missing_field", "bad_value", "bad_timestamp")
BAD_VALUES: dict[str, Any] = {"category": "alien_abduction", "channel": "carrier_pigeon",
                              "disposition": "solved", "incident_ids": "KNT-1", "event_id": 42}
P_RESEND, P_INVALID, P_LOST_OPENED = .015, .01, .004
P_UPGRADE, P_CRIME_RECLASS, P_STANDALONE = .025, .05, .10


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One simulated Kafka message: arrival time (epoch seconds), topic, key, value bytes."""

    arrival: float
    topic: str
    key: str
    payload: bytes

    @property
    def ts_ms(self) -> int:
        return int(self.arrival * 1000)


def default_start(seed: int, hours: float, now: datetime | None = None) -> datetime:
    """2026-01-05 + (seed mod 7) days, moved back when the span would end less
    than an hour before ``now``: simulated events must never come from the future."""
    start = _BASE_START + timedelta(days=seed % 7)
    now = now or datetime.now(timezone.utc)
    if start + timedelta(hours=hours) > now - timedelta(hours=1):
        start = (now - timedelta(hours=hours + 25)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start


def _start_us(start: datetime | str | float | None, seed: int, hours: float) -> int:
    if start is None:
        start = default_start(seed, hours)
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00").replace("z", "+00:00"))
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start needs an offset (e.g. 2026-01-05T00:00:00Z)")
        return int(round(start.timestamp() * S))
    return int(round(float(start) * S))


class Simulator:
    """Plays the command-and-control and crime-recording systems of one force.

    Responsible for: drawing reports over the span (Poisson with a daily cycle);
    planning each incident's life (category, reclassifications, closure, crime
    records and their timeliness); each feed's delivery (latency, outages,
    resends, corrupt messages); yielding messages in arrival order; ``stats``.
    Iterating again replays the same messages.
    """

    def __init__(self, hours: float, seed: int, rate: float | None = None,
                 start: datetime | str | float | None = None,
                 incidents_topic: str = "cc.incidents", crimes_topic: str = "rms.crimes") -> None:
        self.rate = DEFAULT_RATE if rate is None else float(rate)
        if not (0 < hours < math.inf and 0 < self.rate < math.inf):
            raise ValueError("hours and rate must be positive and finite")
        self.seed, self.hours = seed, hours
        self.start = _start_us(start, seed, hours)
        self.end = self.start + int(hours * H)
        self.cc, self.rms = incidents_topic, crimes_topic
        self.stats: Counter[str] = Counter()

    def _reset(self) -> None:
        self.stats.clear()
        self._rng = random.Random(self.seed)
        self._heap: list[tuple[int, int, str, str, bytes]] = []
        self._seq = 0
        self._ids: Counter[str] = Counter()
        self._days: dict[int, str] = {}
        self._outages = self._plan_outages()
        self._outage_starts = [down for down, _ in self._outages]

    # --- ids and timestamps -------------------------------------------------
    def _date(self, us: int) -> str:
        """``YYYY-MM-DD`` (UTC), cached per day: strftime is slow."""
        day = us // (86400 * S)
        text = self._days.get(day)
        if text is None:
            text = self._days[day] = datetime.fromtimestamp(day * 86400, timezone.utc).strftime("%Y-%m-%d")
        return text

    def _ts(self, us: int) -> str:
        """RFC 3339 as source systems write it: mostly µs and ``Z``, some ms, some ``+01:00``."""
        r = self._rng.random()
        suffix = "Z"
        if r < .1:
            us, suffix = us + H, "+01:00"
        sod, frac = divmod(us % (86400 * S), S)
        hh, rem = divmod(sod, 3600)
        hms = f"{self._date(us)}T{hh:02d}:{rem // 60:02d}:{rem % 60:02d}"
        if r < .7:
            return f"{hms}.{frac:06d}{suffix}"
        return f"{hms}.{frac // 1000:03d}{suffix}" if r < .97 else hms + suffix

    def _next_id(self, counter: str) -> int:
        self._ids[counter] += 1
        return self._ids[counter]

    def _pick(self, table: Table) -> str:
        values, cum = table
        return values[bisect_right(cum, self._rng.random() * cum[-1])]

    def _category(self, crime: bool) -> str:
        return self._pick(CRIMES if crime else NON_CRIMES)

    # --- delivery -------------------------------------------------------------
    def _plan_outages(self) -> list[tuple[int, int]]:
        """Records-feed outages: every ~30 h, 1-6 h long; the backlog then drains 50x fast."""
        out, t, rng = [], self.start, self._rng
        while t < self.end:
            t += int(rng.expovariate(1 / 30) * H)
            down = int(rng.uniform(1, 6) * H)
            out.append((t, t + down))
            t += down
        return out

    def _push(self, arrival: int, topic: str, key: str, payload: bytes, what: str | None = None) -> None:
        if arrival < self.end:  # the capture stops at the end of the span
            self._seq += 1
            heapq.heappush(self._heap, (arrival, self._seq, topic, key, payload))
            if what:
                self.stats[what] += 1

    def _emit(self, source: str, key: str, etype: str, at: int, fields: dict[str, Any]) -> None:
        """Build one event and deliver it through its feed: latency, outages, resends, corruption."""
        if at >= self.end:
            return
        rng, cc = self._rng, source == "cc"
        obj = {"schema": "incident.v1" if cc else "crime.v1",
               "event_id": f"{source}-{self.seed}-{self._next_id(source):08d}-{rng.getrandbits(24):06x}",
               "event_type": etype, "incident_id" if cc else "crime_id": key,
               "occurred_at": self._ts(at), **fields}
        topic = self.cc if cc else self.rms
        if cc:
            arrival = at + int(rng.uniform(.05, 2) * S)
            if rng.random() < .01:  # stuck in a queue for a while
                arrival += int(rng.uniform(120, 2400) * S)
        else:
            arrival = at + int(rng.uniform(.5, 30) * S)
            i = bisect_right(self._outage_starts, arrival) - 1
            if i >= 0 and arrival < self._outages[i][1]:
                down, up = self._outages[i]
                arrival = up + (arrival - down) // 50
        payload = orjson.dumps(obj)
        self._push(arrival, topic, key, payload)
        if rng.random() < P_RESEND:
            delay = rng.uniform(1, 120) if rng.random() < .7 else rng.uniform(600, 6 * 3600)
            self._push(arrival + int(delay * S), topic, key, payload, "resent")
        if rng.random() < P_INVALID:
            kind = INVALID_KINDS[int(rng.random() * len(INVALID_KINDS))]
            self._push(arrival + int(rng.uniform(.01, 60) * S), topic, key, self._corrupt(kind, obj, payload),
                       "invalid_" + kind)

    def _corrupt(self, kind: str, obj: dict[str, Any], payload: bytes) -> bytes:
        """An invalid variant of a valid event, one for each way real feeds go wrong."""
        rng, bad = self._rng, dict(obj)
        if kind == "truncated":
            return payload[: int(len(payload) * rng.uniform(.3, .9))]
        if kind == "bad_json":
            return payload[:-1] + rng.choice((b',"score":NaN}', b",}"))
        if kind == "non_utf8":
            return payload[:-1] + b',"note":"caf\xe9"}'
        if kind == "wrong_schema":  # the other input schema, or a version nobody reads
            other = "crime.v1" if obj["schema"] == "incident.v1" else "incident.v1"
            bad["schema"] = rng.choice((other, obj["schema"][:-1] + "2"))
        elif kind == "unknown_event_type":
            bad["event_type"] = rng.choice(("teleported", "vanished", "updated"))
        elif kind == "missing_field":
            del bad[rng.choice([k for k in obj if k not in ("schema", "flags", "reason")])]
        elif kind == "bad_value":
            name = rng.choice([k for k in BAD_VALUES if k in obj])
            bad[name] = BAD_VALUES[name]
        else:  # bad_timestamp
            bad["occurred_at"] = rng.choice(("2026-02-30T25:61:00Z", obj["occurred_at"][:19], "yesterday"))
        return orjson.dumps(bad)

    # --- the force --------------------------------------------------------------
    def _incident(self, t_rep: int, companion: tuple[str, str] | None = None) -> str:
        """Plan one incident's whole life from its report time and emit its events."""
        rng, r = self._rng, self._rng.random
        day = self._date(t_rep).replace("-", "")
        iid = f"KNT-{day}-{self._next_id(day):06d}"  # Storm-like, numbered per day
        self.stats["incidents"] += 1
        if companion:  # a second caller about the same crime
            channel, (category, district), crime = rng.choice(("999", "101")), companion, True
        else:
            channel, district = self._pick(CHANNELS), self._pick(DISTRICTS)
            crime = r() < P_CRIME[channel]
            category = self._category(crime)
        if channel == "online":  # logged hours after the report was made
            t_open = t_rep + int(min(max(rng.lognormvariate(math.log(3), .8), .3), 16) * H)
        else:
            t_open = t_rep + int((rng.uniform(2, 90) if channel == "999" else rng.uniform(20, 900)) * S)
        flags = [flag for flag, p in zip(FLAGS, FLAG_ODDS[category]) if r() < p]
        if r() < P_LOST_OPENED:
            self.stats["unopened"] += 1
        else:
            opened = {"reported_at": self._ts(t_rep), "channel": channel, "district": district,
                      "category": category}
            if flags or r() < .9:
                opened["flags"] = flags
            self._emit("cc", iid, "opened", t_open, opened)
        t, since = t_open, t_rep
        if not crime:
            if r() >= P_UPGRADE:
                u = r()  # most non-crime incidents are closed within hours; some stay open
                if u < .9:
                    disposition = "other" if u < .84 else ("duplicate", "transferred", "no_crime")[int((u - .84) / .02)]
                    self._emit("cc", iid, "closed", t + int(rng.lognormvariate(math.log(1.5), .9) * H),
                               {"disposition": disposition})
                return iid
            t = since = t_open + int(rng.uniform(.3, 18) * H)  # the facts later show a crime
            category = self._category(True)
            self._emit("cc", iid, "reclassified", t, {"category": category})
            self.stats["upgraded"] += 1
        self.stats["crime_related"] += 1
        if r() < P_CRIME_RECLASS:
            t += int(rng.uniform(.1, 6) * H)
            category = self._category(True)
            self._emit("cc", iid, "reclassified", t, {"category": category})
        u = r()
        fate = "companion" if companion else next(
            name for name, p in (FATES_PP if channel == "public_protection" else FATES) if u < p)
        self.stats["fate_" + fate] += 1
        if fate == "downgrade":
            t += int(rng.uniform(.5, 12) * H)
            self._emit("cc", iid, "reclassified", t, {"category": self._category(False)})
            if r() < .8:
                self._emit("cc", iid, "closed", t + int(rng.uniform(.1, 4) * H),
                           {"disposition": rng.choice(("other", "no_crime"))})
        elif fate == "exempt":
            self._emit("cc", iid, "closed", t + int(rng.uniform(.3, 20) * H),
                       {"disposition": rng.choice(("no_crime", "transferred", "duplicate"))})
        elif fate == "overdue":
            if r() < .7:  # sometimes the force's own flag says "recorded": judge from the feeds
                self._emit("cc", iid, "closed", t + int(rng.uniform(1, 20) * H),
                           {"disposition": rng.choice(("other", "crime_recorded", "other"))})
        elif fate == "companion":
            self._emit("cc", iid, "closed", t_open + int(rng.uniform(.2, 2) * H), {"disposition": "duplicate"})
        else:
            if fate == "late":
                t_rec = since + int(rng.uniform(24.5, 96) * H)
            else:
                t_rec = since + int(min(max(rng.lognormvariate(math.log(2), 1.1), .03), 23) * H)
            t_rec = max(t_rec, t + S)
            self._record_crimes(iid, t_rep, t_rec, category, district)
            self._emit("cc", iid, "closed", t_rec + int(rng.uniform(.1, 8) * H),
                       {"disposition": "crime_recorded" if r() < .93 else "other"})
        return iid

    def _record_crimes(self, iid: str, t_rep: int, t_rec: int, category: str, district: str) -> None:
        """One crime per victim (sometimes two or three); sometimes a second caller's incident too."""
        rng, r = self._rng, self._rng.random
        n = 1 + (r() < .06) + (r() < .01)
        other = self._incident(t_rep + int(rng.uniform(60, 1800) * S), (category, district)) if r() < .03 else None
        for i in range(n):
            ids, later = [iid], []
            if i == 0 and other:  # the second caller's incident: named at once, or linked later
                (ids if r() < .5 else later).append(other)
            if r() < .05:  # recorded first, linked to its incident(s) later
                ids, later = [], ids + later
            at = t_rec + (int(rng.uniform(60, 3 * 3600) * S) if i else 0)
            self._crime(at, category if i == 0 or r() < .7 else self._category(True), ids, later)

    def _crime(self, at: int, category: str, ids: list[str], later: list[str]) -> None:
        rng, r = self._rng, self._rng.random
        yy = self._date(at)[2:4]
        cid = f"46/{self._next_id(yy):06d}/{yy}"  # Kent (force 46) crime reference
        self.stats["crimes"] += 1
        self._emit("rms", cid, "recorded", at, {"incident_ids": ids, "category": category})
        if later:
            self._emit("rms", cid, "linked", at + int(rng.uniform(.2, 30) * H), {"incident_ids": later})
        if r() < .012:
            fields = {} if r() < .35 else {"reason": rng.choice(CANCEL_REASONS)}
            self._emit("rms", cid, "cancelled", at + int(rng.uniform(2, 96) * H), fields)
            self.stats["cancelled"] += 1

    # --- driving --------------------------------------------------------------
    def __iter__(self) -> Iterator[SimMessage]:
        self._reset()
        rng, heap = self._rng, self._heap
        diurnal = [w * 24 / sum(DIURNAL) for w in DIURNAL]
        peak = max(diurnal)
        # ~10% of all crimes are recorded straight from the public, with no incident.
        standalone = self.rate * (.195 * .88 * 1.08) * P_STANDALONE / (1 - P_STANDALONE)
        candidates_per_us = (self.rate + standalone) * peak / H
        p_standalone = standalone / (self.rate + standalone)
        t = float(self.start)
        while True:
            t += rng.expovariate(candidates_per_us)
            now = int(t)
            if now >= self.end:
                break
            if rng.random() * peak >= diurnal[(now // H) % 24]:
                continue  # thinning: fewer reports at night
            if rng.random() < p_standalone:
                self.stats["standalone_crimes"] += 1
                self._crime(now, self._category(True), [], [])
            else:
                self._incident(now)
            while heap and heap[0][0] <= now:  # nothing planned from now on can arrive earlier
                arrival, _, topic, key, payload = heapq.heappop(heap)
                yield SimMessage(arrival / S, topic, key, payload)
        while heap:
            arrival, _, topic, key, payload = heapq.heappop(heap)
            yield SimMessage(arrival / S, topic, key, payload)


def generate(hours: float, seed: int, rate: float | None = None,
             start: datetime | str | float | None = None, **topics: str) -> Iterator[SimMessage]:
    """Messages of a simulated force over ``hours`` of event time, in arrival order.

    ``rate`` is incidents per hour (default Kent-like, ~104); ``start`` an aware
    datetime, RFC 3339 text or epoch seconds (default :func:`default_start`);
    ``topics``: ``incidents_topic``/``crimes_topic``. For a live feed, pace by
    ``arrival``: every event has ``occurred_at <= arrival``, so releasing a
    message no earlier than its arrival on the wall clock never sends one from
    the future (a speed-up > 1 with a recent ``start`` would).
    """
    return iter(Simulator(hours, seed, rate, start, **topics))
