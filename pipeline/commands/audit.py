"""``cdiwatch audit``: the audit, offline from capture files or live from a cluster,
as the registrar's table, as JSON (``audit.v1``), or as a page with charts.

Offline, capture lines go through :class:`~pipeline.core.monitor.Monitor`,
the same validation and stage classes the workers run, with ``now`` = the
wall clock for the future-timestamp rule. No faust import, no broker. The
table is the same both ways: live, it comes from the cluster's ``/report``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, TextIO

from ..capture import CaptureError, check_capture_files
from ..capture.validated import Claimed, Invalid, Skipped, claimed_batches
from ..core.monitor import Monitor
from ..report.data import report_data
from ..report.table import render_table
from .errors import ConfigError, RunFailed
from .process import keep_until_exit

__all__ = ["run", "audit_files", "OfflineAudit"]


@dataclass
class OfflineAudit:
    """The outcome of auditing capture files: the monitor, and what could not be read."""

    monitor: Monitor
    messages: int = 0
    skipped: list = field(default_factory=list)  # (path, line_no, reason)
    seconds: float = 0.0

    def audit(self) -> dict:
        return self.monitor.audit()

    def report(self) -> dict:
        return report_data(self.monitor.parts(), self.monitor.config)


class _Progress:
    """A one-line progress report on stderr for long audits (on a terminal only)."""

    def __init__(self, stream: TextIO, total_bytes: int) -> None:
        self.stream, self.enabled, self.total = stream, stream.isatty() and total_bytes > 50_000_000, total_bytes
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            self.stream.write(f"\r  audited {n:,} messages ({n / max(now - self.start, 1e-9):,.0f}/s)")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.last != self.start:
            self.stream.write("\n")


def audit_files(paths: Iterable[str], settings, now_us: int | None = None, progress: bool = False,
                jobs: int = 2) -> OfflineAudit:
    """Run capture files through a fresh deferred :class:`Monitor`.

    Lines that carry no message (and messages of topics that are not inputs)
    are collected in :attr:`OfflineAudit.skipped`, never raised. ``jobs=2``
    reads, validates and claims event ids in a second process (:mod:`pipeline.capture.validated`).
    """
    try:
        paths = check_capture_files(paths)
    except CaptureError as exc:
        raise ConfigError(str(exc)) from None
    now = time.time_ns() // 1000 if now_us is None else now_us
    config = settings.core()
    monitor = Monitor(config, deferred=True)
    result = OfflineAudit(monitor)
    skipped = result.skipped
    forward_many, rejections = monitor.forward_many, monitor.rejections
    bar = _Progress(sys.stderr, sum(os.path.getsize(p) for p in paths if p != "-") if progress else 0)
    # The ledgers hold millions of small objects and make no reference cycles:
    # the cyclic collector would rescan them again and again (a quarter of the
    # run time); reference counting frees everything here.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    t0 = time.perf_counter()
    n = 0
    try:
        for batch in claimed_batches(paths, config, now, jobs):
            for item in forward_many(batch):
                t = type(item)
                if t is Invalid:
                    rejections[(item.side, item.reason)] += 1
                elif t is Skipped:
                    skipped.append((item.source, item.line_no, item.reason))
                elif t is Claimed:
                    monitor.claimed(item.meta)
            monitor.settle_if_due()
            n += len(batch)
            bar.update(n)
        monitor.settle()
    except CaptureError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        if gc_was_enabled:
            # What the loop built would otherwise all sit in the youngest
            # generation: the first allocation after enable() would traverse
            # every object of the ledgers (0.15 s for 300,000 messages), and
            # later collections again. It is acyclic, so the cyclic collector
            # never needs to see it; reference counting still frees it.
            gc.freeze()
            gc.enable()
        bar.done()
    n = sum(sum(counts.values()) for counts in monitor.events.parts().events.values())
    result.messages = n
    result.seconds = time.perf_counter() - t0
    return result


def _fetch(url: str, path: str, token: str | None) -> dict:
    # imported here: urllib.request brings http, ssl and email (~11 ms and ~2 MiB
    # of every offline audit's start-up, in both its processes)
    import urllib.error
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"--url {url!r} is not an http(s)://HOST:PORT address of a worker")
    target = url.rstrip("/") + path
    request = urllib.request.Request(target, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ConfigError(f"{target} needs the HTTP token: set CDI_HTTP_TOKEN or --token-file") from None
        raise RunFailed(f"{target} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RunFailed(f"cannot read {target}: {reason}") from None


def _token(args, settings) -> str | None:
    if args.token_file:
        try:
            return open(args.token_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
    return settings.http_token.get_secret_value() if settings.http_token is not None else None


def _write_html(path: str, report: dict, source: str) -> None:
    from ..report.html import render_html

    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(render_html(report, source))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"cdiwatch audit: report written to {path}", file=sys.stderr)


def run(args, settings) -> int:
    if args.url and args.files:
        raise ConfigError("give either --url or capture files, not both")
    if not args.url and not args.files:
        raise ConfigError("give capture files, or --url http://HOST:PORT of a running worker")
    if args.url:
        token = _token(args, settings)
        doc = _fetch(args.url, "/audit", token) if args.json else None
        report = _fetch(args.url, "/report", token) if (not args.json or args.html) else None
        source, problems = args.url, 0
    else:
        result = audit_files(args.files, settings, progress=True)
        keep_until_exit(result)  # freeing the ledgers object by object would cost seconds
        names = ", ".join(args.files)
        if result.messages == 0:
            first = f"; line {result.skipped[0][1]}: {result.skipped[0][2][:80]}" if result.skipped else ""
            raise RunFailed(f"no capture message could be read from {names} ({len(result.skipped):,} lines "
                            f"skipped{first}): give a capture, JSON Lines of kcat -J envelopes or events")
        for path, line_no, why in result.skipped[:20]:
            print(f"{path}:{line_no}: skipped: {why}", file=sys.stderr)
        if len(result.skipped) > 20:
            print(f"... and {len(result.skipped) - 20:,} more", file=sys.stderr)
        errors = result.monitor.processing_errors
        for event_id, detail in errors[:5]:
            print(f"processing error (a worker dead-letters it): event {event_id}: {detail}", file=sys.stderr)
        print(f"cdiwatch audit: read {result.messages + len(result.skipped):,} lines: {result.messages:,} "
              f"messages, {len(result.skipped):,} skipped", file=sys.stderr)
        doc = result.audit() if args.json else None
        report = result.report() if (not args.json or args.html) else None
        source, problems = names, len(result.skipped)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(render_table(report))
    if args.html:
        _write_html(args.html, report, source)
    return 1 if problems else 0
