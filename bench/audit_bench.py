"""Offline audit speed against the speed of merely parsing the same capture.

Issue 2, item 8: on a simulated capture of about 300,000 messages, the offline
audit (``pipeline.audit.audit_files``: capture reading, validation, both
ledgers, the audit) must run at least a third as fast as parsing every line
with orjson (the envelope, then its payload). Both are measured in the same
run, each in a fresh subprocess (so the peak RSS is the audit's own), the
runs interleaved, and the median of ``--runs`` reported.

Run it through ``bench/run.py`` (``make bench``), or alone:
``python bench/audit_bench.py [--messages N] [--runs 3] [--profile]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"  # git-ignored
MESSAGES_PER_HOUR = 229  # what `cdiwatch simulate` produces at the default (Kent-like) rate
GOAL = 1 / 3

__all__ = ["run", "make_capture", "GOAL"]

# Each measurement runs in its own interpreter and prints one JSON line.
_PARSE = r"""
import json, resource, sys, time
import orjson
path = sys.argv[1]
loads = orjson.loads
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
n = 0
with open(path, "rb") as fh:
    for line in fh:
        obj = loads(line)
        payload = obj.get("payload") if "topic" in obj else None
        if payload is not None:
            try:
                loads(payload)
            except orjson.JSONDecodeError:
                pass  # invalid messages are part of the capture
        n += 1
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "messages": n, "rss_start_kb": rss0,
                  "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

_AUDIT = r"""
import json, resource, sys, time
from pipeline.audit import audit_files
from pipeline.config import Settings
path = sys.argv[1]
settings = Settings()
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
errors = []
t0 = time.perf_counter()
monitor = audit_files([path], settings, errors=errors)
doc = monitor.audit()
dt = time.perf_counter() - t0
ev = doc["events"]
n = sum(sum(c.values()) for c in ev.values()) + len(errors)
print(json.dumps({"seconds": dt, "messages": n, "rss_start_kb": rss0,
                  "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "required": doc["incidents"]["required"], "skipped_lines": len(errors),
                  "held_incidents": len(monitor.incidents.incidents)}))
"""


def make_capture(messages: int, seed: int, out: Path = OUT) -> Path:
    """A simulated capture of about ``messages`` lines (cached in bench/out/)."""
    hours = max(1, round(messages / MESSAGES_PER_HOUR))
    out.mkdir(parents=True, exist_ok=True)
    # A new simulator makes a new capture: its source hash is part of the cache name.
    version = hashlib.sha1((REPO / "pipeline" / "simulate.py").read_bytes()).hexdigest()[:8]
    path = out / f"sim-{hours}h-seed{seed}-{version}.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_suffix(".partial")
        subprocess.run([sys.executable, "-m", "pipeline", "simulate", "--hours", str(hours),
                        "--seed", str(seed), "-o", str(tmp)], cwd=REPO, check=True,
                       stderr=subprocess.DEVNULL)
        tmp.replace(path)
    return path


def _measure(script: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def run(opts: argparse.Namespace) -> list[dict]:
    """Rows for the table: parse rate, audit rate, ratio against the goal, peak RSS."""
    t0 = time.perf_counter()
    path = make_capture(opts.messages, opts.seed)
    lines = _count_lines(path)
    size_mb = path.stat().st_size / 1e6
    gen_s = time.perf_counter() - t0
    parses, audits = [], []
    for _ in range(opts.runs):  # interleaved: both see the same machine conditions
        parses.append(_measure(_PARSE, path))
        audits.append(_measure(_AUDIT, path))
    assert all(p["messages"] == lines for p in parses), "parse did not read every line"
    assert all(a["messages"] == lines for a in audits), "audit lost messages"
    parse_rate = statistics.median(p["messages"] / p["seconds"] for p in parses)
    audit_rate = statistics.median(a["messages"] / a["seconds"] for a in audits)
    ratio = audit_rate / parse_rate
    peak = statistics.median(a["rss_peak_kb"] for a in audits) / 1024
    start = statistics.median(a["rss_start_kb"] for a in audits) / 1024
    runs = f"median of {opts.runs}"
    rows = [
        _row("audit", "capture", f"{lines:,}", "messages",
             f"{path.relative_to(REPO)}, {size_mb:.0f} MB, ready in {gen_s:.1f} s"),
        _row("audit", "orjson parse (envelope + payload)", f"{parse_rate:,.0f}", "msgs/s", runs),
        _row("audit", "offline audit (audit_files)", f"{audit_rate:,.0f}", "msgs/s",
             f"{runs}; {statistics.median(a['seconds'] for a in audits):.2f} s per run"),
        _row("audit", "ratio audit / parse", f"{ratio:.3f}", "",
             f"goal >= {GOAL:.3f}: {'MET' if ratio >= GOAL else 'NOT MET'}"),
        _row("audit", "audit peak RSS", f"{peak:,.0f}", "MiB",
             f"{start:,.0f} MiB after imports; {audits[0]['held_incidents']:,} incidents held at the end"),
    ]
    if opts.profile:
        rows.append(_row("audit", "profile", "", "", profile(path, opts.profile_top)))
    return rows


def _row(bench: str, measure: str, value: str, unit: str, note: str) -> dict:
    return {"benchmark": bench, "measure": measure, "value": value, "unit": unit, "note": note}


def profile(path: Path, top: int = 25) -> str:
    """cProfile of one audit, printed to stderr; returns where the report went."""
    import cProfile
    import pstats

    sys.path.insert(0, str(REPO))
    from pipeline.audit import audit_files
    from pipeline.config import Settings

    prof = cProfile.Profile()
    prof.enable()
    audit_files([str(path)], Settings()).audit()
    prof.disable()
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "audit.prof"
    prof.dump_stats(target)
    stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime")
    stats.print_stats(top)
    return f"cProfile by tottime on stderr; stats in {target.relative_to(REPO)}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=300_000, help="capture size (default 300,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is shown")
    p.add_argument("--profile", action="store_true", help="also cProfile one audit (stderr)")
    p.add_argument("--profile-top", type=int, default=25)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    bench_run.print_table(run(parser.parse_args()))
