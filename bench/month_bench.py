"""Throughput at the start and at the end of a simulated month.

A capture of 720 simulated hours at 4x Kent's rate (``cdiwatch simulate --hours
720 --rate 416.667``, i.e. ``Simulator(hours=720, seed, rate=4 * 2500 / 24)``;
cached in bench/out/) is cut, in arrival order, into its first tenth, the
middle eight tenths and its last tenth. The question: is the worker as fast
with a month of state (ledgers at 30 days' retention, event ids, the board)
as with none? Goal: the end within 20% of the start (end / start >= 0.8).

How, on one broker of its own (the capture's envelopes name ``cc.incidents`` /
``rms.crimes``), with ``--runs`` (3) workers, each its own app id:

1. the first tenth is replayed; each worker starts from an empty state and is
   timed from its first input batch (``bench/worker_probe.py``) until
   ``/audit`` equals the offline audit of the first tenth: **start rate**;
   then it is stopped gracefully;
2. the middle is replayed; each worker is started again (its state recovered
   from its changelogs), runs until ``/audit`` equals the offline audit of the
   first nine tenths, and is stopped gracefully (not timed);
3. the last tenth is replayed; each worker is started again and timed from
   its first input batch (after its recovery) until ``/audit`` equals the
   offline audit of the whole month: **end rate**.

Convergence is watched by ``common.AuditPoller``: the group's committed input
offsets on the broker until every input message is in, then ``/audit`` once
the worker has finished no batch for 0.15 s (at least every second): with a
month of state one ``/audit`` folds a lot of audit parts (polling it at 10 Hz
throughout took 13% of the worker's thread in the last tenth).
Offline audits are ``cdiwatch audit PARTS... --json``
subprocesses. Why not
sample ``cdi_events_total`` while one worker runs through the whole month:
that counter moves at the first stage; with the capture pre-loaded the first
stage runs ahead of the incident and crime stages early on and the backlog is
paid for at the end, so such a start looks faster and such an end slower than
either is (tried: 70,000 vs 21,500 msgs/s for a worker whose whole-month rate
was 34,000). Timing each tenth to a converged audit charges each its own work.

Run through ``bench/run.py --only month`` or alone: ``python bench/month_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import (KENT_RATE, LOGS, OUT, PY, REPO, audit_diff, AuditPoller, Children, count_lines, free_port,
                    get_text, load_note, Machine, make_capture, median, proc_cpu, proc_mem, read_probe, row, verdict,
                    wait_ready, worker_cmd, worker_env)

BENCH = "month"
GOAL = 0.8
PARTITIONS = 6

__all__ = ["run", "add_arguments"]


def split(path: Path) -> list[Path]:
    """The first tenth, the middle, the last tenth of a capture (by line, i.e. in arrival order)."""
    lines = path.read_bytes().splitlines(keepends=True)
    n = len(lines)
    cuts = [0, n // 10, n - n // 10, n]
    out = []
    for i, name in enumerate(("first", "middle", "last")):
        part = OUT / f"{path.stem}.{name}.jsonl"
        part.write_bytes(b"".join(lines[cuts[i]:cuts[i + 1]]))
        out.append(part)
    return out


def offline_audit(parts: list[Path], name: str) -> dict:
    out = OUT / f"month-offline-{name}.json"
    with open(out, "wb") as fh:
        subprocess.run([str(Path(PY).with_name("cdiwatch")), "audit", *map(str, parts), "--json"], cwd=REPO,
                       stdout=fh, stderr=subprocess.DEVNULL, check=True)
    return json.loads(out.read_text())


def recovery_seconds(url: str) -> float:
    text = get_text(url + "/metrics") or ""
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith("cdi_recovery_seconds ")),
                float("nan"))


def phase(children: Children, broker, app_id: str, start_no: int, expected: dict, messages: int,
          inputs: int, profile: Path | None = None) -> dict:
    """Start the app's worker; first input batch -> /audit == expected; stop it gracefully.
    ``profile``: py-spy records the worker from /readyz 200 to convergence into that file."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    probe = OUT / f"{app_id}-{start_no}-probe.json"
    probe.unlink(missing_ok=True)
    machine = Machine()
    broker_cpu0 = proc_cpu(broker._proc.pid)  # noqa: SLF001 - read-only
    name = f"{app_id}-{start_no}"
    proc = children.start(name, worker_cmd(broker.url, port, OUT / "state" / name),
                          worker_env(CDI_APP_ID=app_id, BENCH_PROBE=str(probe)))
    t_spawn = time.time()
    t_ready = wait_ready(children, proc, url, timeout=300, interval=0.05)
    cpu_ready = proc_cpu(proc.pid), proc_cpu(broker._proc.pid)  # noqa: SLF001 - read-only
    spy = None
    if profile is not None:
        spy = children.start(f"{name}-py-spy", [str(Path(PY).with_name("py-spy")), "record", "-f", "raw", "--threads",
                                                "--idle", "-r", "100", "-o", str(profile), "--pid", str(proc.pid)])
    deadline = time.monotonic() + max(300.0, messages / 1000)
    poller = AuditPoller(url, expected, broker.bootstrap, f"{app_id}-workers", ["cc.incidents", "rms.crimes"],
                         inputs, probe)
    while not poller.poll():
        children.check(proc, f"{app_id} converging")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app_id}: /audit never equalled the offline audit: "
                               f"{audit_diff(poller.doc, expected)}\n{children.tail(proc)}")
        time.sleep(poller.interval())
    poller.close()
    t_done = poller.t_done
    cpu_done = proc_cpu(proc.pid), proc_cpu(broker._proc.pid)  # noqa: SLF001 - read-only
    if spy is not None:
        children.stop(spy, timeout=30, sig=signal.SIGINT)  # py-spy writes its file on SIGINT
    recovery = recovery_seconds(url)
    mem = proc_mem(proc.pid)
    others = machine.others(proc_cpu(proc.pid) + proc_cpu(broker._proc.pid) - broker_cpu0)  # noqa: SLF001
    code = children.stop(proc, timeout=60)
    if code not in (0, -15):
        raise RuntimeError(f"{name} exited {code} on SIGTERM\n{children.tail(proc)}")
    probed = read_probe(probe)
    t_first = probed["first"]
    elapsed = t_done - t_first
    ends, gcs = probed["ends"], probed.get("gc", [])
    gc_s = gcs[ends.index(t_done)] - probed["gc_first"] if t_done in ends and len(gcs) == len(ends) else float("nan")
    return {"rate": messages / elapsed, "elapsed": elapsed, "gc": gc_s, "ready": t_ready - t_spawn, "recovery": recovery,
            "peak_mib": mem.get("VmHWM", float("nan")) / 1024, "rss_mib": mem.get("VmRSS", float("nan")) / 1024,
            "others": others, "serving": poller.serving, "polls": poller.polls, "seen": poller.t_seen - t_first,
            "inputs": poller.t_inputs - t_first,
            # CPU seconds from /readyz 200 to convergence (a little past the window's end)
            "worker_cpu": cpu_done[0] - cpu_ready[0], "broker_cpu": cpu_done[1] - cpu_ready[1]}


def run(opts: argparse.Namespace) -> list[dict]:
    from pipeline.commands.replay import replay
    from pipeline.kafka.local import LocalBroker
    from pipeline.settings import load_settings

    runs = max(1, opts.runs)
    rate = 4 * KENT_RATE
    path = make_capture(seed=opts.seed, hours=opts.month_hours, rate=rate)
    parts = split(path)
    sizes = [count_lines(p) for p in parts]
    total = sum(sizes)
    print(f"month: {path.name}: {total:,} messages ({sizes[0]:,} / {sizes[1]:,} / {sizes[2]:,}); offline audits ...",
          file=sys.stderr, flush=True)
    audits = [offline_audit(parts[:1], "first"), offline_audit(parts[:2], "nine-tenths"),
              offline_audit(parts, "month")]
    apps = [f"bench-month-{i}" for i in range(runs)]
    children = Children()
    got: dict[str, list[dict]] = {"start": [], "middle": [], "end": []}
    replays = []
    try:
        with LocalBroker(log_path=str(LOGS / "tansu-month.log")) as broker:
            settings = load_settings(broker=broker.url, partitions=PARTITIONS)
            for i, (key, part, expected) in enumerate(zip(("start", "middle", "end"), parts, audits)):
                print(f"month: replay the {part.stem.rsplit('.', 1)[1]} part ...", file=sys.stderr, flush=True)
                report = replay([str(part)], settings)
                if not report.ok or report.total_sent != sizes[i]:
                    raise RuntimeError(f"replay delivered {report.total_sent} of {sizes[i]}:\n{report.render()}")
                replays.append(sizes[i] / report.elapsed)
                for app_id in apps:
                    print(f"month: {key}: {app_id} ...", file=sys.stderr, flush=True)
                    spy = OUT / f"month-{key}.folded" if opts.month_profile and key != "middle" and app_id == apps[0] \
                        else None
                    got[key].append(phase(children, broker, app_id, i, expected, sizes[i], sum(sizes[:i + 1]), spy))
                    r = got[key][-1]
                    print(f"month:   {r['rate']:,.0f} msgs/s in {r['elapsed']:.1f} s (recovery {r['recovery']:.1f} s, "
                          f"others {r['others']:.2f} cores)", file=sys.stderr, flush=True)
    finally:
        children.stop_all()
    (OUT / "month-results.json").write_text(json.dumps(got, indent=1))
    start = median(r["rate"] for r in got["start"])
    end = median(r["rate"] for r in got["end"])
    mid = median(r["rate"] for r in got["middle"])
    ratio = end / start
    e = sorted(got["end"], key=lambda r: r["rate"])[len(got["end"]) // 2]
    s = sorted(got["start"], key=lambda r: r["rate"])[len(got["start"]) // 2]
    med = f"median of {runs} workers" if runs > 1 else "1 worker"
    open_end = audits[2]["incidents"]["overdue"] + audits[2]["incidents"]["pending"]
    profiles = []
    if opts.month_profile:
        from profile_summary import summarize

        profiles = [row(BENCH, f"profile, {k} tenth", "", "", summarize(OUT / f"month-{k}.folded"))
                    for k in ("start", "end")]
    return [
        row(BENCH, "capture", f"{total:,}", "messages",
            f"{path.relative_to(REPO)}; {opts.month_hours:g} simulated hours at {rate:.1f} incidents/h (4x Kent); "
            f"tenths of {sizes[0]:,} messages; replayed at {median(replays):,.0f} msgs/s before each phase"),
        row(BENCH, "first tenth (empty state)", f"{start:,.0f}", "msgs/s",
            f"{med}; first input batch -> /audit == offline audit of the first tenth {s['elapsed']:.2f} s "
            f"(seen at {s['seen']:.2f} s; garbage collection {s['gc']:.2f} s of it); "
            f"peak RSS {s['peak_mib']:,.0f} MiB"),
        row(BENCH, "last tenth (a month of state)", f"{end:,.0f}", "msgs/s",
            f"{med}; restarted worker (recovery {e['recovery']:.1f} s, not timed), first input batch -> /audit == "
            f"offline audit of the month {e['elapsed']:.2f} s (the end of the last batch before /audit was seen "
            f"equal at {e['seen']:.2f} s; inputs committed at {e['inputs']:.2f} s; {e['polls']} /audit polls answered "
            f"in {e['serving']:.2f} s; garbage collection {e['gc']:.2f} s); peak RSS {e['peak_mib']:,.0f} MiB; "
            f"middle eight tenths {mid:,.0f} msgs/s"),
        row(BENCH, "end / start", f"{ratio:.2f}", "",
            f"{verdict(ratio, GOAL, text='0.80 (end within 20% of the start)')}; {open_end:,} open at the end; "
            f"{load_note([r['others'] for rs in got.values() for r in rs])}"),
    ] + profiles


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--month-hours", type=float, default=720, help="simulated hours (default 720: a month)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="rounds of each measurement; medians shown (default 3)")
    p.add_argument("--month-profile", action="store_true",
                   help="py-spy record the first worker's first and last tenth (bench/out/month-*.folded; "
                        "pip install py-spy; slows those runs a little)")


if __name__ == "__main__":
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    bench_run.print_table(run(parser.parse_args()))
