"""The streaming worker on a real Kafka-protocol broker, side by side with its peers.

One local Tansu broker (``LocalBroker``, free port); a simulated
capture of about ``--stream-messages`` messages (100,000) is published to
``cc.incidents`` / ``rms.crimes`` (6 partitions) with ``cdiwatch replay``'s
``replay()`` at max speed *before* anything consumes. Then, in ``--runs``
rounds (3), rotated (A B C D, B C D A, ...), each with its own consumer group
reading the same topics from the start:

* **cdiwatch** -- one ``cdiwatch worker`` (through ``bench/worker_probe.py``,
  which only records when the first input batch reached the runner); from
  that first consumed message until ``/audit`` *equals
  the offline audit* of the same capture as data: every stage, every crime ->
  incident link and seen-notice round trip, every changelog transaction
  (``common.AuditPoller``: the group's committed input offsets are watched on
  the broker, then ``/audit`` is asked whenever the worker has been idle
  for 0.15 s, at least every second);
* **quixstreams** -- ``bench/quix_app.py``: raw bytes, orjson parse, per-key
  count + last event in RocksDB with changelogs; first message -> the end of
  its final checkpoint commit (also reported without it);
* **raw aiokafka + orjson** -- ``bench/raw_consumer.py``: the consume ceiling;
* **straightforward faust** -- ``bench/faust_baseline_app.py``.

Goals (one worker, medians of 3): cdiwatch >= 1.5x quixstreams, and >= 0.25 of
the raw consume ceiling. The alert latency is ``bench/latency_bench.py``.

Run through ``bench/run.py --only stream`` or alone:
``python bench/stream_bench.py [--stream-messages N] [--runs R] [--stream-profile]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time
from pathlib import Path

from common import (LOGS, OUT, PY, REPO, audit_diff, AuditPoller, Children, count_lines, free_port, load_note,
                    Machine, make_capture, median, proc_cpu, proc_mem, read_probe, rotations, row, verdict,
                    wait_ready, worker_cmd, worker_env)
from stream_peers import PARTITIONS, run_faust, run_quix, run_raw

BENCH = "stream"
QUIX_GOAL = 1.5
RAW_GOAL = 0.25
FAUST_GOAL = 5.0  # the first release's goal, kept as information
PEERS = ["cdiwatch", "quixstreams", "raw", "faust"]

__all__ = ["run", "add_arguments", "run_worker_e2e", "prepare_capture"]


def prepare_capture(messages: int, seed: int) -> tuple[Path, int, dict, float]:
    """(path, lines, offline audit, seconds it took) of the stream capture."""
    from pipeline.commands.audit import audit_files
    from pipeline.settings import load_settings

    path = make_capture(messages, seed)
    lines = count_lines(path)
    t0 = time.perf_counter()
    result = audit_files([str(path)], load_settings())
    if result.skipped:
        raise RuntimeError(f"capture has {len(result.skipped)} unreadable lines: {result.skipped[:3]}")
    return path, lines, result.audit(), time.perf_counter() - t0


def run_worker_e2e(children: Children, broker, total: int, expected: dict, app_id: str,
                   profile: bool = False) -> dict:
    """One worker from an empty state over pre-loaded topics: first input batch -> /audit == expected."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    probe = OUT / f"{app_id}-probe.json"
    probe.unlink(missing_ok=True)
    broker_pid = broker._proc.pid  # noqa: SLF001 - read-only, for its CPU seconds
    machine = Machine()
    broker_cpu0 = proc_cpu(broker_pid)
    t_spawn = time.time()
    proc = children.start(app_id, worker_cmd(broker.url, port, OUT / "state" / app_id),
                          worker_env(CDI_APP_ID=app_id, BENCH_PROBE=str(probe)))
    samples: list[tuple[float, float]] = []  # (wall time, worker CPU s)
    t_ready = wait_ready(children, proc, url, timeout=120, interval=0.05)
    spy = None
    if profile:
        spy = children.start(f"{app_id}-py-spy", [str(Path(PY).with_name("py-spy")), "record", "-f", "raw",
                                                   "--threads", "--idle", "-r", "100", "-o",
                                                   str(OUT / "stream-worker.folded"), "--pid", str(proc.pid)])
    poller = AuditPoller(url, expected, broker.bootstrap, f"{app_id}-workers", ["cc.incidents", "rms.crimes"], total,
                         probe)
    deadline = time.monotonic() + max(180.0, total / 500)
    while True:
        done = poller.poll()
        samples.append((time.time(), proc_cpu(proc.pid)))
        if done:
            break
        children.check(proc, "waiting for /audit to equal the offline audit")
        if time.monotonic() > deadline:
            raise RuntimeError(f"/audit did not converge: {audit_diff(poller.doc, expected)}\n{children.tail(proc)}")
        time.sleep(poller.interval())
    poller.close()
    cpu_done = proc_cpu(proc.pid)
    mem = proc_mem(proc.pid)
    broker_cpu = proc_cpu(broker_pid) - broker_cpu0
    others = machine.others(cpu_done + broker_cpu)
    if spy is not None:
        children.stop(spy, timeout=30, sig=signal.SIGINT)  # py-spy writes its file on SIGINT
    children.stop(proc)
    probed = read_probe(probe)
    t_first = probed["first"]
    if t_first is None:
        raise RuntimeError(f"the worker did not record its first batch ({probe})")
    t_done = poller.t_done
    elapsed = t_done - t_first

    def cpu_at(t: float) -> float:  # the last sample at or before t
        return next((cpu for ts, cpu in reversed(samples) if ts <= t), samples[0][1])

    t_applied = poller.t_events or t_done
    t_inputs = poller.t_inputs or t_done
    start = max(t_first, samples[0][0])
    (OUT / f"{app_id}-trace.json").write_text(json.dumps(
        [{"t": round(t - t_first, 2), "differs": d} for t, d in poller.trace], indent=0))
    return {"rate": total / elapsed, "elapsed": elapsed, "startup": t_first - t_spawn,
            "ready_after_first": t_ready - t_first, "applied": t_applied - t_first, "inputs": t_inputs - t_first,
            "seen": poller.t_seen - t_first,
            "incidents_ok": (poller.t_incidents or t_done) - t_first,
            "serving": poller.serving, "polls": poller.polls, "cpu": cpu_done - cpu_at(start),
            "cpu_window": t_done - start,
            "cpu_total": cpu_done, "peak_mib": mem.get("VmHWM", float("nan")) / 1024,
            "rss_mib": mem.get("VmRSS", float("nan")) / 1024, "broker_cpu": broker_cpu, "others": others,
            "in_batches": probed.get("in_batches", float("nan")), "in_batches_cpu": probed.get("in_batches_cpu",
                                                                                             float("nan"))}


def _mid(results: list[dict]) -> dict:
    """The run whose rate is the median (for its notes)."""
    return sorted(results, key=lambda r: r["rate"])[len(results) // 2]


def run(opts: argparse.Namespace) -> list[dict]:
    from pipeline.commands.replay import replay
    from pipeline.kafka.local import LocalBroker
    from pipeline.settings import load_settings

    messages = opts.stream_messages
    runs = max(1, opts.runs)
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path, lines, expected, audit_s = prepare_capture(messages, opts.seed)
    print(f"stream: capture {path.name}: {lines:,} messages; offline audit {audit_s:.1f} s", file=sys.stderr)
    rows = [row(BENCH, "capture", f"{lines:,}", "messages",
                f"{path.relative_to(REPO)}; offline audit in-process {audit_s:.1f} s; ready in "
                f"{time.perf_counter() - t0:.1f} s")]
    children = Children()
    peers = PEERS
    if importlib.util.find_spec("quixstreams") is None:  # the bench extra is missing: run the others
        peers = [p for p in PEERS if p != "quixstreams"]
    results: dict[str, list[dict]] = {name: [] for name in PEERS}
    try:
        with LocalBroker(log_path=str(LOGS / "tansu-stream.log")) as broker:
            settings = load_settings(broker=broker.url, partitions=PARTITIONS)
            report = replay([str(path)], settings)
            if not report.ok or report.total_sent != lines:
                raise RuntimeError(f"replay delivered {report.total_sent} of {lines}:\n{report.render()}")
            rows.append(row(BENCH, "replay to the input topics", f"{lines / report.elapsed:,.0f}", "msgs/s",
                            f"cdiwatch replay (kafka-python, linger 20 ms, acks=all), {report.elapsed:.1f} s, "
                            f"{PARTITIONS} partitions, before anything consumes"))
            for r, order in enumerate(rotations(peers, runs)):
                for name in order:
                    tag = f"{r}"
                    print(f"stream: round {r + 1}/{runs}: {name} ...", file=sys.stderr, flush=True)
                    if name == "cdiwatch":
                        got = run_worker_e2e(children, broker, lines, expected, f"bench-e2e-{tag}",
                                             profile=opts.stream_profile and r == 0)
                    elif name == "quixstreams":
                        got = run_quix(children, broker, lines, tag)
                    elif name == "raw":
                        got = run_raw(children, broker, lines, tag)
                    else:
                        got = run_faust(children, broker, lines, tag)
                    results[name].append(got)
                    print(f"stream:   {got['rate']:,.0f} msg/s in {got['elapsed']:.2f} s "
                          f"(others {got['others']:.2f} cores)", file=sys.stderr, flush=True)
    except BaseException:
        print(f"stream: failed; measured so far: {json.dumps(results, default=str)}", file=sys.stderr)
        raise
    finally:
        children.stop_all()
    (OUT / "stream-results.json").write_text(json.dumps(results, indent=1))
    return rows + _rows(results, runs, lines, opts)


def _rows(results: dict, runs: int, lines: int, opts) -> list[dict]:
    med = f"median of {runs}, rounds rotated" if runs > 1 else "1 run"
    c, q, r, f = (results[n] for n in PEERS)
    c_rate, r_rate, f_rate = (median(x["rate"] for x in res) for res in (c, r, f))
    w = _mid(c)
    vs_raw = c_rate / r_rate
    per_round_r = [a["rate"] / b["rate"] for a, b in zip(c, r)]
    span = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}"  # noqa: E731
    if q:
        q_rate, qm = median(x["rate"] for x in q), _mid(q)
        vs_quix = c_rate / q_rate
        per_round_q = [a["rate"] / b["rate"] for a, b in zip(c, q)]
        quix_rows = [
            row(BENCH, "quixstreams (parse + RocksDB state)", f"{q_rate:,.0f}", "msgs/s",
                f"{med}; first message -> final state save {qm['elapsed']:.2f} s (final checkpoint commit "
                f"{qm['final_save_s']:.2f} s; {qm['commits']} interval commit(s) before, {qm['commit_s']:.2f} s); "
                f"peak RSS {qm['peak_mib']:,.0f} MiB"),
            row(BENCH, "quixstreams without the final save", f"{median(x['rate_no_save'] for x in q):,.0f}",
                "msgs/s", f"{med}; first -> last message processed {qm['no_save']:.2f} s"),
        ]
        quix_ratio = row(BENCH, "ratio cdiwatch / quixstreams", f"{vs_quix:.2f}", "x",
                         f"{verdict(vs_quix, QUIX_GOAL, text='1.5x')}; ratio of the medians (per round "
                         f"{span(per_round_q)}); against quixstreams without its final save "
                         f"{c_rate / median(x['rate_no_save'] for x in q):.2f}x")
    else:
        missing = "quixstreams is not installed: pip install -e '.[bench]'"
        quix_rows = [row(BENCH, "quixstreams (parse + RocksDB state)", "", "", f"(not run) {missing}")]
        quix_ratio = row(BENCH, "ratio cdiwatch / quixstreams", "", "x", f"goal >= 1.5x: not measured ({missing})")
    rows = [
        row(BENCH, "cdiwatch worker end to end", f"{c_rate:,.0f}", "msgs/s",
            f"{med}; 1 worker; first input batch -> end of the last batch before /audit equalled the offline "
            f"audit {w['elapsed']:.2f} s (inputs all consumed and committed at {w['inputs']:.2f} s; /audit seen equal "
            f"at {w['seen']:.2f} s, asked when the worker was idle, {w['polls']} polls answered in {w['serving']:.2f} s "
            f"in all); /readyz 200 {w['ready_after_first']:+.2f} s from the first batch; spawn -> first batch "
            f"{w['startup']:.1f} s"),
        row(BENCH, "cdiwatch worker CPU / peak RSS", f"{w['cpu'] / w['cpu_window']:.2f}", "cores",
            f"{w['cpu']:.1f} s CPU in {w['cpu_window']:.1f} s up to /audit == offline; inside batches "
            f"{w['in_batches']:.2f} s ({w['in_batches_cpu']:.2f} s CPU of the main thread; the rest of that: "
            f"flushes and commits); peak RSS "
            f"{w['peak_mib']:,.0f} MiB (VmHWM); Tansu "
            f"{w['broker_cpu']:.1f} s CPU; a worker is one Python process: ~1 core under the GIL"),
        *quix_rows,
        row(BENCH, "raw aiokafka getmany + orjson", f"{r_rate:,.0f}", "msgs/s",
            f"{med}; consumer group, first -> last message {_mid(r)['elapsed']:.2f} s: the raw consume ceiling"),
        row(BENCH, "straightforward faust (Record + table)", f"{f_rate:,.0f}", "msgs/s",
            f"{med}; bench/faust_baseline_app.py, first -> last message {_mid(f)['elapsed']:.1f} s"),
        quix_ratio,
        row(BENCH, "ratio cdiwatch / raw consume ceiling", f"{vs_raw:.3f}", "",
            f"{verdict(vs_raw, RAW_GOAL, text='0.25')}; ratio of the medians (per round {span(per_round_r)})"),
        row(BENCH, "ratio cdiwatch / straightforward faust", f"{c_rate / f_rate:.1f}", "x",
            f"the first release's goal >= {FAUST_GOAL:g}x: {'MET' if c_rate / f_rate >= FAUST_GOAL else 'NOT MET'}"),
        row(BENCH, "machine", "", "", load_note([x["others"] for res in results.values() for x in res])),
    ]
    if opts.stream_profile:
        from profile_summary import summarize

        rows.append(row(BENCH, "profile of the worker", "", "", summarize(OUT / "stream-worker.folded")))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream-messages", type=int, default=100_000,
                   help="stream capture size (default 100,000; cached in bench/out/)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="rounds of each measurement; medians shown (default 3)")
    p.add_argument("--stream-profile", action="store_true",
                   help="py-spy record the first cdiwatch run (pip install py-spy; bench/out/stream-worker.folded)")


if __name__ == "__main__":
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    bench_run.print_table(run(parser.parse_args()))
