"""A capture of many open incidents at once, for the scale benchmark (``cdiwatch replay`` input).

``python bench/open_incidents.py N [--overdue-share 0.75] [--seed S] -o FILE``
writes N crime-related ``opened`` incidents (bare ``incident.v1`` events, one a
line) that no crime record ever names, in ``reported_at`` order, then one
non-crime "clock" incident that sets the watermark. With the default decision
parameters (24 h deadline, 10 min allowed lateness, 4 h at-risk window), once
all are applied:

* ``overdue``: ``round(N * share)`` incidents, reported over the 10 days
  before W - 24 h (deadlines already passed);
* the rest (pending or at risk): reported in the 24 h before W, deadlines
  still ahead (about a sixth within 4 h: at risk);

where W = the clock's ``occurred_at`` - 10 min and the clock is one hour
before ``--now`` (default: the wall clock). Every ``occurred_at`` is in the
past (the clock is the greatest), and everything is within the 30-day state
retention, so nothing is evicted. Districts, categories, channels and flags
are drawn with one ``random.Random(seed)``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.times import format_time  # noqa: E402
from pipeline.core.vocabulary import CHANNELS, CRIME_CATEGORIES, DEFAULT_DISTRICTS, FLAGS  # noqa: E402

S = 1_000_000
MIN = 60 * S
HOUR = 3600 * S
DAY = 24 * HOUR
LATENESS = 10 * MIN
DEADLINE = DAY

__all__ = ["write", "expected_counts"]


def expected_counts(n: int, overdue_share: float = 0.75) -> tuple[int, int]:
    """(overdue, pending + at risk) once the capture is applied."""
    overdue = round(n * overdue_share)
    return overdue, n - overdue


def write(path: str, n: int, overdue_share: float = 0.75, seed: int = 1, now: float | None = None) -> dict:
    """Write the capture; returns what it holds (counts and the watermark, microseconds)."""
    rng = random.Random(seed)
    now_us = int((time.time() if now is None else now) * S)
    clock = now_us - HOUR
    w = clock - LATENESS
    overdue, open_ = expected_counts(n, overdue_share)
    # overdue: deadline (reported + 24 h) at least a minute before W; open: at least a minute after
    old = sorted(rng.randrange(w - DEADLINE - 10 * DAY, w - DEADLINE - MIN) for _ in range(overdue))
    new = sorted(rng.randrange(w - DEADLINE + MIN, w - MIN) for _ in range(open_))
    dumps = orjson.dumps
    at_risk = sum(1 for r in new if r + DEADLINE <= w + 4 * HOUR)
    with open(path, "wb") as fh:
        for i, reported in enumerate(old + new):
            flags = [f for f in FLAGS if rng.random() < 0.05]
            incident_id = f"OPN-{seed}-{i:07d}"
            fh.write(dumps({
                "schema": "incident.v1", "event_id": f"open-{seed}-{i:07d}", "event_type": "opened",
                "incident_id": incident_id, "occurred_at": format_time(reported + rng.randrange(1, 120) * S),
                "reported_at": format_time(reported), "channel": rng.choice(CHANNELS),
                "district": rng.choice(DEFAULT_DISTRICTS), "category": rng.choice(CRIME_CATEGORIES), "flags": flags,
            }))
            fh.write(b"\n")
        fh.write(dumps({
            "schema": "incident.v1", "event_id": f"open-{seed}-clock", "event_type": "opened",
            "incident_id": f"OPN-{seed}-clock", "occurred_at": format_time(clock), "reported_at": format_time(clock),
            "channel": "101", "district": DEFAULT_DISTRICTS[0], "category": "admin", "flags": [],
        }))
        fh.write(b"\n")
    return {"messages": n + 1, "overdue": overdue, "open": open_, "at_risk": at_risk, "watermark": w}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int)
    p.add_argument("--overdue-share", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    got = write(args.output, args.n, args.overdue_share, args.seed)
    print(f"wrote {got['messages']:,} messages: {got['overdue']:,} overdue, {got['open']:,} pending or at risk "
          f"({got['at_risk']:,} at risk), W = {format_time(got['watermark'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
