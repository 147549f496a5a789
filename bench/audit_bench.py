"""Offline audit speed and memory against the floor of merely parsing the same capture.

On a simulated capture of about 300,000 messages,
``cdiwatch audit FILE --json`` (run as a user runs it: a subprocess, from
spawn to exit, its JSON written to a file) must reach at least a third of
the rate of the floor, a fresh interpreter that only parses every line with
orjson (envelope, then payload), timed the same way (spawn to exit). The bar
below which it is a regression: a quarter. Its peak RSS must stay under
150 MiB: the larger of ``ru_maxrss`` of the child (from ``wait4``, as
``/usr/bin/time -v`` reports it; for a command that starts processes of its
own, the largest of them) and the RSS summed over the command's process tree,
sampled every 50 ms from ``/proc/<pid>/status`` (PSS in the note, every
0.5 s: see :func:`common.tree_memory`).

Three measurements per round, rotated round by round (parse, cli, loop;
cli, loop, parse; ...), medians of ``--runs``:

* ``parse``: the floor (spawn to exit; the parse loop alone in the note);
* ``cli``: ``cdiwatch audit FILE --json > bench/out/audit-cli.json``;
* ``loop``: ``pipeline.commands.audit.audit_files`` in a fresh interpreter,
  its own ``OfflineAudit.seconds`` (reading, validation, ledgers, settle;
  no imports, no start-up, no JSON): where the CLI's time goes.

Run it through ``bench/run.py --only audit`` or alone:
``python bench/audit_bench.py [--messages N] [--runs 3] [--profile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import (OUT, PY, REPO, Machine, TreeSampler, count_lines, load_note, make_capture, median, rotations, row,
                    verdict)

BENCH = "audit"
GOAL = 1 / 3
BAR = 1 / 4
RSS_GOAL_MIB = 150

__all__ = ["run", "add_arguments", "GOAL", "BAR"]

_PARSE = r"""
import json, resource, sys, time
import orjson
path = sys.argv[1]
loads, bad = orjson.loads, orjson.JSONDecodeError
t0 = time.perf_counter()
n = 0
with open(path, "rb") as fh:
    for line in fh:
        obj = loads(line)
        payload = obj.get("payload") if "topic" in obj else None
        if payload is not None:
            try:
                loads(payload)
            except bad:
                pass  # invalid messages are part of the capture
        n += 1
print(json.dumps({"loop_seconds": time.perf_counter() - t0, "messages": n}))
"""

_LOOP = r"""
import gc, json, resource, sys, time
from pipeline.commands.audit import audit_files
from pipeline.settings import load_settings
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = audit_files([sys.argv[1]], load_settings())
doc = result.audit()
print(json.dumps({"loop_seconds": result.seconds, "messages": result.messages, "skipped": len(result.skipped),
                  "rss_imports_kb": rss0, "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDI_")}
    env["PYTHONHASHSEED"] = "0"
    return env


def _spawn(cmd: list[str], stdout) -> dict:
    """Run ``cmd``; wall seconds spawn -> exit, the child's rusage (``wait4``: its own and its
    reaped children's CPU; the larger of their peak RSS), and the peak RSS / PSS summed over
    it and any processes it starts (sampled every 50 ms)."""
    machine = Machine()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=stdout, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "rc": proc.returncode, "stderr": stderr, "cpu": cpu, "maxrss_kb": usage.ru_maxrss,
            "tree_rss_kb": sampler.peak_rss, "tree_pss_kb": sampler.peak_pss, "procs": sampler.max_procs,
            "others": machine.others(cpu)}


def _measure(kind: str, path: Path) -> dict:
    if kind == "cli":
        target = OUT / "audit-cli.json"
        with open(target, "wb") as fh:
            got = _spawn([str(Path(PY).with_name("cdiwatch")), "audit", str(path), "--json"], fh)
        if got["rc"] != 0:
            raise RuntimeError(f"cdiwatch audit exited {got['rc']}:\n{got['stderr'][-2000:]}")
        doc = json.loads(target.read_text())
        got["messages"] = sum(sum(c.values()) for c in doc["events"].values())
        got["doc"] = doc
        return got
    script = _PARSE if kind == "parse" else _LOOP
    out = OUT / f"audit-{kind}.out"
    with open(out, "wb") as fh:
        got = _spawn([PY, "-c", script, str(path)], fh)
    if got["rc"] != 0:
        raise RuntimeError(f"{kind} subprocess exited {got['rc']}:\n{got['stderr'][-2000:]}")
    got.update(json.loads(out.read_text().strip().splitlines()[-1]))
    return got


def run(opts: argparse.Namespace) -> list[dict]:
    """Rows: capture, parse floor, the CLI, the ratio against goal and bar, peak RSS, the loop alone."""
    runs = max(1, opts.runs)
    t0 = time.perf_counter()
    path = make_capture(opts.messages, opts.seed)
    lines = count_lines(path)
    size_mb = path.stat().st_size / 1e6
    ready_s = time.perf_counter() - t0
    results: dict[str, list[dict]] = {"parse": [], "cli": [], "loop": []}
    for order in rotations(["parse", "cli", "loop"], runs):
        for kind in order:
            print(f"audit: {kind} ...", file=sys.stderr, flush=True)
            results[kind].append(_measure(kind, path))
            r = results[kind][-1]
            print(f"audit:   {r['wall']:.2f} s wall, {r['maxrss_kb'] / 1024:.0f} MiB, others {r['others']:.2f} cores",
                  file=sys.stderr)
    for kind, rs in results.items():
        for r in rs:
            if r["messages"] != lines:
                raise RuntimeError(f"{kind} accounted for {r['messages']} of {lines} lines")
    parse, cli, loop = results["parse"], results["cli"], results["loop"]
    parse_rate = median(lines / r["wall"] for r in parse)
    cli_rate = median(lines / r["wall"] for r in cli)
    ratio = median(lines / c["wall"] / (lines / p["wall"]) for c, p in zip(cli, parse))  # per round
    ratio_of_medians = cli_rate / parse_rate
    parse_loop_rate = median(lines / r["loop_seconds"] for r in parse)
    loop_rate = median(lines / r["loop_seconds"] for r in loop)
    # the larger of ru_maxrss (exact, per process) and the sampled sum over the process tree
    peak = median(max(r["maxrss_kb"], r["tree_rss_kb"]) for r in cli) / 1024
    procs = max(r["procs"] for r in cli)
    cli_wall = median(r["wall"] for r in cli)
    loop_s = median(r["loop_seconds"] for r in loop)
    startup = cli_wall - loop_s
    med = f"median of {runs}, rounds rotated"
    others = load_note([r["others"] for rs in results.values() for r in rs])
    doc = cli[0]["doc"]
    open_now = sum(doc["incidents"].get(k, 0) for k in ("overdue", "pending", "at_risk"))
    met = "MET" if ratio >= GOAL else ("NOT MET (above the bar)" if ratio >= BAR else "NOT MET (below the bar)")
    return [
        row(BENCH, "capture", f"{lines:,}", "messages",
            f"{path.relative_to(REPO)}, {size_mb:.0f} MB, ready in {ready_s:.1f} s (cached)"),
        row(BENCH, "orjson parse floor (envelope + payload)", f"{parse_rate:,.0f}", "msgs/s",
            f"{med}; fresh interpreter, spawn -> exit {median(r['wall'] for r in parse):.2f} s; "
            f"loop alone {parse_loop_rate:,.0f} msgs/s"),
        row(BENCH, "cdiwatch audit FILE --json", f"{cli_rate:,.0f}", "msgs/s",
            f"{med}; subprocess spawn -> exit {cli_wall:.2f} s, JSON to a file; "
            f"{median(r['cpu'] for r in cli):.2f} s CPU"),
        row(BENCH, "ratio audit / parse floor", f"{ratio:.3f}", "",
            f"{verdict(ratio, GOAL, text='0.33')} (bar {BAR:.2f}: {'above' if ratio >= BAR else 'BELOW'}); "
            f"median of the per-round ratios (ratio of medians {ratio_of_medians:.3f}); {met}"),
        row(BENCH, "audit peak RSS", f"{peak:,.0f}", "MiB",
            f"{verdict(peak, RSS_GOAL_MIB, higher_is_better=False, text=f'{RSS_GOAL_MIB} MiB')}; the larger of "
            f"ru_maxrss (wait4, as /usr/bin/time -v: {median(r['maxrss_kb'] for r in cli) / 1024:.0f} MiB) and the "
            f"peak RSS summed over the {procs} process(es) of the command, sampled every 50 ms "
            f"({median(r['tree_rss_kb'] for r in cli) / 1024:.0f} MiB; PSS "
            f"{median(r['tree_pss_kb'] for r in cli) / 1024:.0f} MiB); {median(r['rss_imports_kb'] for r in loop) / 1024:.0f} MiB after imports; {open_now:,} incidents "
            f"open at the end of the capture"),
        row(BENCH, "audit_files loop alone", f"{loop_rate:,.0f}", "msgs/s",
            f"{med}; OfflineAudit.seconds in a fresh interpreter ({loop_s:.2f} s): the CLI spends "
            f"{startup:.2f} s on start-up, imports and JSON; loop / parse loop = {loop_rate / parse_loop_rate:.3f}"),
        row(BENCH, "machine", "", "", others or "not measured"),
    ] + ([row(BENCH, "profile", "", "", profile(path, opts.profile_top))] if opts.profile else [])


def profile(path: Path, top: int = 25) -> str:
    """cProfile of one in-process audit_files, printed to stderr; returns where the stats went."""
    import cProfile
    import pstats

    from pipeline.commands.audit import audit_files
    from pipeline.settings import load_settings

    prof = cProfile.Profile()
    prof.enable()
    audit_files([str(path)], load_settings()).audit()
    prof.disable()
    target = OUT / "audit.prof"
    prof.dump_stats(target)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(top)
    return f"cProfile by own time on stderr; stats in {target.relative_to(REPO)} (python -m pstats)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=300_000, help="audit capture size (default 300,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="rounds of each measurement; medians shown (default 3)")
    p.add_argument("--profile", action="store_true", help="audit: also cProfile one in-process audit (stderr)")
    p.add_argument("--profile-top", type=int, default=25)


if __name__ == "__main__":
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    bench_run.print_table(run(parser.parse_args()))
