"""Scale and recovery of one worker: a table, not asserts.

On one local broker, with captures from ``bench/open_incidents.py`` (crime-related
``opened`` incidents that no record names, 3 in 4 overdue) replayed with
``cdiwatch replay``'s ``replay()`` into fresh topics while one worker runs:

* **RSS per open incident** at ``--scale-open`` (200,000) open incidents,
  150,000 of them overdue: the worker's ``VmRSS`` (median of 3 samples 0.5 s
  apart) when ready and idle before the replay, and again once ``/audit``
  and the board (``X-Total-Count``) show every incident; the difference over
  the number of incidents. One worker holds everything: the incident ledgers
  of its partitions *and* the cluster view's board index. Goal <= 2 KiB.
* **``GET /incidents`` pages** on that worker: the deep page
  ``status=overdue&limit=500&offset=100000`` and filtered pages; median and
  max of ``--scale-requests`` (7) requests each, from request to the whole
  body read. Contract: within a second.
* **restart to ready** with ``--scale-restart-open`` (100,000) open incidents:
  the audit is read, the worker is stopped gracefully (SIGTERM, timed), and a
  new worker (fresh data directory: its state comes from the changelogs)
  starts on the same broker; from its spawn until ``/readyz`` is 200 *and*
  ``/audit`` equals the audit read before the stop. Median of ``--runs`` (3)
  restarts in a row. Goal <= 30 s. The same at 200,000 as information.

Session timeout 4 s as in the tests (Tansu completes a group join after about
half of it; the product's default of 10 s would add about 3 s to a restart).

Run through ``bench/run.py --only scale`` or alone: ``python bench/scale_bench.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import urlencode

from common import (LOGS, OUT, Children, Machine, free_port, get_json, get_text, get_timed, load_note, median,
                    proc_cpu, proc_mem, row, same_audit, verdict, wait_audit, wait_ready, worker_cmd, worker_env)

BENCH = "scale"
RSS_GOAL_KIB = 2.0
PAGE_GOAL_S = 1.0
RESTART_GOAL_S = 30.0
PARTITIONS = 6

__all__ = ["run", "add_arguments"]


class Scenario:
    """One app id with its own topics, one capture of open incidents, one worker at a time."""

    def __init__(self, children: Children, broker, n: int, seed: int) -> None:
        self.children, self.broker, self.n = children, broker, n
        self.app_id = f"bench-scale-{n // 1000}k"
        self.topics = {"CDI_INCIDENTS_TOPIC": f"{self.app_id}.incidents", "CDI_CRIMES_TOPIC": f"{self.app_id}.crimes",
                       "CDI_ALERTS_TOPIC": f"{self.app_id}.alerts", "CDI_DEADLETTER_TOPIC": f"{self.app_id}.deadletter"}
        self.capture = OUT / f"open-{n}.jsonl"
        self.seed = seed
        self.proc = None
        self.url = ""
        self.starts = 0

    def start(self) -> float:
        """A worker (fresh data directory); the wall time it was spawned."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.starts += 1
        name = f"{self.app_id}-{self.starts}"
        t = time.time()
        self.proc = self.children.start(name, worker_cmd(self.broker.url, port, OUT / "state" / name),
                                        worker_env(CDI_APP_ID=self.app_id, **self.topics))
        return t

    def stop(self) -> float:
        """Graceful stop (SIGTERM); seconds until the process exited."""
        t0 = time.monotonic()
        code = self.children.stop(self.proc, timeout=60)
        if code not in (0, -15):
            raise RuntimeError(f"worker exited {code} on SIGTERM\n{self.children.tail(self.proc)}")
        return time.monotonic() - t0

    def rss_kib(self, samples: int = 3) -> float:
        got = []
        for i in range(samples):
            if i:
                time.sleep(0.5)
            got.append(proc_mem(self.proc.pid).get("VmRSS", float("nan")))
        return median(got)

    def load(self) -> dict:
        """Start a worker, measure its idle RSS, replay the capture, wait for everything; RSS again."""
        from open_incidents import expected_counts, write

        from pipeline.commands.replay import replay
        from pipeline.settings import load_settings

        info = write(str(self.capture), self.n, seed=self.seed)
        overdue, open_ = expected_counts(self.n)
        self.start()
        wait_ready(self.children, self.proc, self.url)
        time.sleep(2.0)
        before = self.rss_kib()
        machine, cpu0 = Machine(), self.accounted_cpu()
        settings = load_settings(broker=self.broker.url, partitions=PARTITIONS,
                                 incidents_topic=self.topics["CDI_INCIDENTS_TOPIC"],
                                 crimes_topic=self.topics["CDI_CRIMES_TOPIC"])
        t0 = time.time()
        report = replay([str(self.capture)], settings)
        if not report.ok or report.total_sent != info["messages"]:
            raise RuntimeError(f"replay delivered {report.total_sent} of {info['messages']}:\n{report.render()}")
        t_audit, audit = wait_audit(self.children, self.proc, self.url,
                                    lambda d: (d["incidents"]["overdue"], d["incidents"]["pending"]) == (overdue, open_),
                                    f"{self.n:,} open incidents in /audit", timeout=600)
        t_board = self._wait_board(overdue)
        time.sleep(2.0)
        after = self.rss_kib()
        return {"before": before, "after": after, "hwm": proc_mem(self.proc.pid).get("VmHWM", float("nan")),
                "others": machine.others(self.accounted_cpu() - cpu0),
                "replay_s": report.elapsed, "audit_s": t_audit - t0, "board_s": t_board - t0, "info": info}

    def _wait_board(self, overdue: int, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _dt, _status, headers, _doc = get_timed(self.url + "/incidents?" + urlencode(
                    {"status": "overdue", "limit": 1}))
                if int(headers.get("X-Total-Count", -1)) == overdue:
                    _dt, _status, headers, _doc = get_timed(self.url + "/incidents?limit=1")
                    if int(headers.get("X-Total-Count", -1)) == self.n:
                        return time.time()
            except OSError:
                pass
            self.children.check(self.proc, "waiting for the board")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the board did not show {self.n:,} open incidents in {timeout:g} s")
            time.sleep(0.3)

    def accounted_cpu(self) -> float:
        """CPU seconds of the broker and the current worker (to tell other users' load apart)."""
        return proc_cpu(self.broker._proc.pid) + proc_cpu(self.proc.pid)  # noqa: SLF001 - read-only

    def restart(self) -> dict:
        """Stop gracefully, start a new worker; spawn -> /readyz 200 -> /audit equal to the audit before."""
        _status, before = get_json(self.url + "/audit", timeout=30)
        stop_s = self.stop()
        machine = Machine()
        broker0 = proc_cpu(self.broker._proc.pid)  # noqa: SLF001
        t_spawn = self.start()
        t_ready = wait_ready(self.children, self.proc, self.url, timeout=300, interval=0.1)
        t_equal, _doc = wait_audit(self.children, self.proc, self.url, lambda d: same_audit(d, before),
                                   "the audit from before the stop", timeout=300, interval=0.1)
        metrics = get_text(self.url + "/metrics") or ""
        recovery = next((float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith("cdi_recovery_seconds ")), float("nan"))
        return {"stop_s": stop_s, "ready_s": t_ready - t_spawn, "equal_s": t_equal - t_spawn,
                "recovery_s": recovery, "others": machine.others(self.accounted_cpu() - broker0)}


def measure_pages(url: str, requests: int) -> list[dict]:
    queries = [
        ("deep page", {"status": "overdue", "limit": 500, "offset": 100_000}),
        ("filtered page (district)", {"status": "overdue", "district": "Medway", "limit": 500, "offset": 5_000}),
        ("filtered page (category, harm order)", {"status": "overdue", "category": "burglary", "sort": "harm",
                                                  "limit": 500, "offset": 5_000}),
        ("all open, harm order, deep", {"sort": "harm", "limit": 500, "offset": 150_000}),
    ]
    out = []
    for label, q in queries:
        times, total, size = [], None, 0
        for _ in range(requests):
            dt, status, headers, doc = get_timed(url + "/incidents?" + urlencode(q))
            if status != 200:
                raise RuntimeError(f"/incidents?{urlencode(q)} answered {status}")
            times.append(dt)
            total, size = headers.get("X-Total-Count"), len(doc)
        out.append({"label": label, "query": urlencode(q), "median": median(times), "max": max(times),
                    "total": total, "size": size})
    return out


def run(opts: argparse.Namespace) -> list[dict]:
    from pipeline.kafka.local import LocalBroker

    runs = max(1, opts.runs)
    children = Children()
    rows = []
    try:
        with LocalBroker(log_path=str(LOGS / "tansu-scale.log")) as broker:
            big = Scenario(children, broker, opts.scale_open, opts.seed)
            print(f"scale: loading {big.n:,} open incidents ...", file=sys.stderr, flush=True)
            loaded = big.load()
            print("scale: /incidents pages ...", file=sys.stderr, flush=True)
            pages = measure_pages(big.url, opts.scale_requests)
            big_restarts = []
            if opts.scale_restart_big:
                print(f"scale: restart with {big.n:,} open ...", file=sys.stderr, flush=True)
                big_restarts.append(big.restart())
            big.stop()
            small = Scenario(children, broker, opts.scale_restart_open, opts.seed + 1)
            print(f"scale: loading {small.n:,} open incidents ...", file=sys.stderr, flush=True)
            small.load()
            restarts = []
            for i in range(runs):
                print(f"scale: restart {i + 1}/{runs} with {small.n:,} open ...", file=sys.stderr, flush=True)
                restarts.append(small.restart())
                print(f"scale:   ready+equal in {restarts[-1]['equal_s']:.1f} s", file=sys.stderr)
            small.stop()
    finally:
        children.stop_all()

    n = big.n
    per = (loaded["after"] - loaded["before"]) / n  # KiB per incident
    info = loaded["info"]
    rows.append(row(BENCH, "worker RSS per open incident", f"{per:.2f}", "KiB",
                    f"{verdict(per, RSS_GOAL_KIB, False, '2 KiB')}; VmRSS {loaded['before'] / 1024:,.0f} MiB ready "
                    f"and idle -> {loaded['after'] / 1024:,.0f} MiB with {n:,} open ({info['overdue']:,} overdue, "
                    f"{info['open'] - info['at_risk']:,} pending, {info['at_risk']:,} at risk), difference / {n:,}; "
                    f"1 worker (ledgers + board index); VmHWM {loaded['hwm'] / 1024:,.0f} MiB; 1 load"))
    rows.append(row(BENCH, f"load {n:,} open incidents", f"{loaded['audit_s']:.1f}", "s",
                    f"replay start -> /audit shows them all (replay itself {loaded['replay_s']:.1f} s); board "
                    f"complete at {loaded['board_s']:.1f} s; others used {loaded['others']:.1f} cores"))
    for p in pages:
        rows.append(row(BENCH, f"GET /incidents {p['label']}", f"{p['median']:.3f}", "s",
                        f"{verdict(p['max'], PAGE_GOAL_S, False, '1 s (max)')}; median of {opts.scale_requests}, "
                        f"max {p['max']:.3f} s; ?{p['query']}; X-Total-Count {p['total']}, {p['size']} rows; "
                        f"{n:,} open, 1 worker"))
    eq = median(r["equal_s"] for r in restarts)
    mid = sorted(restarts, key=lambda r: r["equal_s"])[len(restarts) // 2]
    rows.append(row(BENCH, f"restart to ready, {small.n:,} open", f"{eq:.1f}", "s",
                    f"{verdict(eq, RESTART_GOAL_S, False, '30 s')}; median of {runs} restarts in a row; new worker "
                    f"spawn -> /readyz 200 {mid['ready_s']:.1f} s -> /audit equal to before the stop "
                    f"{mid['equal_s']:.1f} s; partition recovery {mid['recovery_s']:.1f} s (cdi_recovery_seconds); "
                    f"graceful stop before it {mid['stop_s']:.1f} s; "
                    f"{load_note([r['others'] for r in restarts])}"))
    for r in big_restarts:
        rows.append(row(BENCH, f"restart to ready, {n:,} open", f"{r['equal_s']:.1f}", "s",
                        f"information, 1 run: /readyz 200 at {r['ready_s']:.1f} s, recovery {r['recovery_s']:.1f} s, "
                        f"graceful stop {r['stop_s']:.1f} s"))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale-open", type=int, default=200_000, help="open incidents for RSS and pages (200,000)")
    p.add_argument("--scale-restart-open", type=int, default=100_000, help="open incidents for restarts (100,000)")
    p.add_argument("--scale-requests", type=int, default=7, help="requests per /incidents page (7)")
    p.add_argument("--scale-restart-big", action=argparse.BooleanOptionalAction, default=True,
                   help="also restart once at --scale-open (information)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="rounds of each measurement; medians shown (default 3)")


if __name__ == "__main__":
    import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    bench_run.print_table(run(parser.parse_args()))
