"""``cdiwatch audit``: the audit.v1 summary, offline from capture files or live
from a running cluster, as JSON or as a table a crime registrar can read.

Offline, capture lines go through :class:`~pipeline.monitor.Monitor` — the same
validation and ledgers the workers use — with ``now`` = the wall clock for the
future-timestamp rule. No faust import, no broker.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Iterable, TextIO

import orjson

from .capture import read_capture
from .config import Settings
from .monitor import Monitor
from .rules import AT_RISK, DOWNGRADE_REASONS, EXEMPT, LATE, NOT_REQUIRED, ON_TIME, OVERDUE, UNOPENED, wilson_interval

__all__ = ["run", "audit_files", "render_table"]


class _Progress:
    """A one-line progress report on stderr for long audits (TTY only)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            rate = n / max(now - self.start, 1e-9)
            self.stream.write(f"\r  audited {n:,} messages ({rate:,.0f}/s)")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.last != self.start:
            self.stream.write("\n")


def audit_files(paths: Iterable[str], settings: Settings, now_us: int | None = None,
                errors: list | None = None, progress: bool = False) -> Monitor:
    """Run capture files through a fresh :class:`Monitor`; return it for inspection.

    Malformed lines (and lines for topics that are not inputs) are appended to
    ``errors`` as ``(path, line_no, reason)`` and skipped.
    """
    if now_us is None:
        now_us = time.time_ns() // 1000
    errors = [] if errors is None else errors
    monitor = Monitor(settings, deferred=True)
    bar = _Progress(sys.stderr, progress and sys.stderr.isatty())
    # The ledgers hold millions of small tuples and make no reference cycles:
    # the cyclic collector would rescan them all again and again (a quarter of
    # the run time); plain reference counting frees everything here.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _feed_all(paths, settings, monitor, now_us, errors, bar)
        monitor.settle()
    finally:
        if gc_was_enabled:
            gc.enable()
    return monitor


def _feed_all(paths, settings: Settings, monitor: Monitor, now_us: int, errors: list, bar: "_Progress") -> None:
    schema_for = monitor.schema_for
    feed = monitor.feed
    n = 0
    for msg in read_capture(list(paths), settings.incidents_topic, settings.crimes_topic,
                            on_error=lambda p, ln, why: errors.append((p, ln, why))):
        if schema_for(msg.topic) is None:
            errors.append((msg.source, msg.line_no, f"topic {msg.topic!r} is not an input topic"))
            continue
        feed(msg.topic, msg.payload, now_us, msg.parsed)
        n += 1
        if not n & 0xFFFF:
            bar.update(n)
    bar.done()


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def _rate_row(name: str, recorded: int, overdue: int, late: int, downgraded: int, pending: int) -> str:
    value, low, high = wilson_interval(recorded, recorded + overdue)
    interval = "" if value is None else f"{_pct(low)} – {_pct(high)}"
    return (f"  {name:<26} {_pct(value)}  {interval:<17} {recorded:>8} {overdue:>7} {late:>6}"
            f" {downgraded:>6} {pending:>7}")


def render_table(doc: dict, by_channel: dict | None = None) -> str:
    """Human summary of an audit.v1 document (and optional per-channel counts)."""
    inc, ev, cr = doc["incidents"], doc["events"], doc["crimes"]
    rate = doc["recording_rate"]
    lines = [
        "cdiwatch audit",
        f"  watermark (event time): {doc['watermark'] or 'none yet'}",
        "",
    ]
    if rate["value"] is None:
        lines.append("  Recording rate: no incident has been recorded or gone overdue yet")
    else:
        lines.append(f"  Recording rate: {_pct(rate['value']).strip()}  "
                     f"(95% interval {_pct(rate['low']).strip()} – {_pct(rate['high']).strip()})")
    lines += [
        f"  Crime-related incidents: {inc['required']}  on time {inc['recorded_on_time']}, "
        f"late {inc['recorded_late']}, overdue {inc['overdue']}, pending {inc['pending']} "
        f"(at risk {inc['at_risk']}), exempt {inc['exempt']} (downgrades {inc['downgraded']})",
        f"  Incidents seen: {inc['seen']}  (plus {inc['unopened']} with no 'opened' event)",
        f"  Crimes recorded: {cr['recorded']}  without an incident {cr['without_incident']}, "
        f"cancelled {cr['cancelled']} ({cr['cancelled_without_reason']} without a reason)",
        f"  Events: incidents {ev['incidents']['valid']} valid, {ev['incidents']['duplicate']} duplicate, "
        f"{ev['incidents']['invalid']} invalid; crimes {ev['crimes']['valid']} valid, "
        f"{ev['crimes']['duplicate']} duplicate, {ev['crimes']['invalid']} invalid",
        "",
        f"  {'category':<26} {'rate':>6}  {'95% interval':<17} {'recorded':>8} {'overdue':>7} {'late':>6}"
        f" {'downgr':>6} {'pending':>7}",
    ]
    for name, c in doc["by_category"].items():
        rec = c["recorded_on_time"] + c["recorded_late"]
        lines.append(_rate_row(name, rec, c["overdue"], c["recorded_late"], c["downgraded"], c["pending"]))
    if by_channel:
        lines += ["", f"  {'channel':<26} {'rate':>6}  {'95% interval':<17} {'recorded':>8} {'overdue':>7}"
                  f" {'late':>6} {'downgr':>6} {'pending':>7}"]
        for name, c in sorted(by_channel.items()):
            rec = c[ON_TIME] + c[LATE]
            lines.append(_rate_row(name, rec, c[OVERDUE], c[LATE], c["downgraded"], c["pending"]))
    return "\n".join(lines)


def by_channel(incident_keys: Counter) -> dict[str, Counter]:
    """Per-channel status counts from contribution keys (for the table)."""
    out: dict[str, Counter] = {}
    for (status, _cat, _district, channel, reason), n in incident_keys.items():
        if status in (UNOPENED, NOT_REQUIRED) or not n:
            continue
        c = out.setdefault(channel, Counter())
        if status in (AT_RISK, "pending"):
            c["pending"] += n
        else:
            c[status] += n
        if status == EXEMPT and reason in DOWNGRADE_REASONS:
            c["downgraded"] += n
    return out


def _fetch(url: str) -> dict:
    target = url.rstrip("/") + "/audit"
    try:
        with urllib.request.urlopen(target, timeout=10) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"cdiwatch audit: cannot read {target}: {exc}")


def run(args, settings: Settings) -> int:
    if args.url and args.files:
        print("cdiwatch audit: give either --url or capture files, not both", file=sys.stderr)
        return 2
    if not args.url and not args.files:
        print("cdiwatch audit: give capture files or --url http://HOST:PORT", file=sys.stderr)
        return 2
    if args.url:
        doc = _fetch(args.url)
        channels = None
    else:
        errors: list = []
        try:
            monitor = audit_files(args.files, settings, errors=errors, progress=True)
        except FileNotFoundError as exc:
            print(f"cdiwatch audit: no such file: {exc.filename}", file=sys.stderr)
            return 2
        for path, line_no, why in errors[:20]:
            print(f"{path}:{line_no}: skipped: {why}", file=sys.stderr)
        if len(errors) > 20:
            print(f"... and {len(errors) - 20} more malformed lines", file=sys.stderr)
        if errors:
            print(f"cdiwatch audit: {len(errors)} capture line(s) skipped", file=sys.stderr)
        doc = monitor.audit()
        channels = by_channel(monitor.incidents.agg)
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_table(doc, channels))
    return 0
