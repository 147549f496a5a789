"""``cdiwatch simulate``: a capture of a simulated force, and a summary of what was written."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

from ..capture import write_capture
from ..simulation import Simulator
from .errors import ConfigError

__all__ = ["run"]


def _check_output(path: str) -> None:
    if path == "-":
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory: give a file name with -o")
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {path}: no permission to write in {parent}")


def run(args: Any, settings: Any) -> int:
    try:
        sim = Simulator(args.hours, args.seed, args.rate, args.start,
                        incidents_topic=settings.incidents_topic, crimes_topic=settings.crimes_topic)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_output(args.output or "-")
    t0 = time.perf_counter()
    try:
        counts = write_capture(((m.topic, m.key, m.payload, m.ts_ms) for m in sim), args.output or "-", args.format)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    dt, total, st = time.perf_counter() - t0, sum(counts.values()), sim.stats
    invalid = sum(v for k, v in st.items() if k.startswith("invalid_"))
    start = datetime.fromtimestamp(sim.start / 1e6, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = "standard output" if (args.output or "-") == "-" else args.output
    lines = [f"simulate: wrote {total:,} messages to {where} in {dt:.1f} s, seed {args.seed}, "
             f"{args.hours:g} h from {start}"]
    lines += [f"  {topic:<16} {n:>10,}" for topic, n in sorted(counts.items())]
    lines.append(f"  of them {st['resent']:,} resent copies and {invalid:,} invalid messages; the events of "
                 f"{st['incidents']:,} incidents and {st['crimes']:,} crimes begun in the span")
    print("\n".join(lines), file=sys.stderr)
    return 0
