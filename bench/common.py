"""What every benchmark module shares: paths, captures, child processes, /proc
readings, HTTP helpers, the machine's load, rows and verdicts.

Nothing here times anything by itself; each ``*_bench.py`` says what it
measures. Generated files go to ``bench/out/`` (git-ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "bench" / "out"  # git-ignored
LOGS = OUT / "logs"
PY = sys.executable
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

#: The group timeouts of tests/support.worker_env(): Tansu completes a consumer-group
#: join only after about half the session timeout, so every consumer here uses 4 s.
SESSION_TIMEOUT_S = 4
KENT_RATE = 2500 / 24  # incidents per hour, the simulator's default
MESSAGES_PER_HOUR = 229  # what `cdiwatch simulate` writes per simulated hour at the default rate

__all__ = ["HERE", "REPO", "OUT", "LOGS", "PY", "SESSION_TIMEOUT_S", "KENT_RATE", "row", "verdict", "median",
           "pct", "rotations", "make_capture", "count_lines", "Children", "proc_cpu", "proc_mem", "Machine",
           "tree_memory", "TreeSampler",
           "load_note", "get_json", "get_timed", "get_text", "same_audit", "audit_diff", "AuditPoller",
           "read_probe", "free_port", "worker_env", "worker_cmd", "wait_ready", "wait_audit"]


# ------------------------------------------------------------------ table rows
def row(bench: str, measure: str, value: str, unit: str, note: str) -> dict:
    return {"benchmark": bench, "measure": measure, "value": value, "unit": unit, "note": note}


def verdict(value: float, goal: float, higher_is_better: bool = True, text: str | None = None) -> str:
    """``goal >= 1.5x: MET`` (or NOT MET)."""
    ok = value >= goal if higher_is_better else value <= goal
    sign = ">=" if higher_is_better else "<="
    return f"goal {sign} {text or f'{goal:g}'}: {'MET' if ok else 'NOT MET'}"


def median(values) -> float:
    return statistics.median(list(values))


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def rotations(names: list[str], rounds: int) -> list[list[str]]:
    """Round r runs ``names`` rotated by r: A B C, B C A, C A B, ..."""
    n = len(names)
    return [[names[(r + i) % n] for i in range(n)] for r in range(rounds)]


# -------------------------------------------------------------------- captures
def _source_hash() -> str:
    return hashlib.sha1((REPO / "pipeline" / "simulation" / "simulator.py").read_bytes()).hexdigest()[:8]


def make_capture(messages: int | None = None, seed: int = 1, *, hours: float | None = None,
                 rate: float | None = None) -> Path:
    """A simulated capture (``cdiwatch simulate``), cached in bench/out/.

    Either about ``messages`` lines at Kent's rate, or ``hours`` at ``rate``
    incidents per hour. A changed simulator makes a new file (its source
    hash is in the name). The simulator puts its default start in the past,
    moved so that the span ends at least an hour before now.
    """
    if hours is None:
        hours = max(1, round(messages / MESSAGES_PER_HOUR))
    OUT.mkdir(parents=True, exist_ok=True)
    rate_tag = "" if rate is None else f"-rate{rate:g}"
    path = OUT / f"sim-{hours:g}h{rate_tag}-seed{seed}-{_source_hash()}.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_suffix(".partial")
        cmd = [PY, "-m", "pipeline", "simulate", "--hours", f"{hours:g}", "--seed", str(seed), "-o", str(tmp)]
        if rate is not None:
            cmd += ["--rate", f"{rate:g}"]
        subprocess.run(cmd, cwd=REPO, check=True, stderr=subprocess.DEVNULL)
        tmp.replace(path)
    return path


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


# ------------------------------------------------------------------- processes
def _preexec():
    # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: main thread only.
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        from pipeline.kafka.local import die_with_parent

        return die_with_parent
    return None


class Children:
    """Subprocesses started by a benchmark, each with a log in bench/out/logs/;
    :meth:`stop_all` (in a ``finally``) stops every one still running, by its own pid."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = LOGS / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=REPO, preexec_fn=_preexec())
        self.procs.append((name, proc, log))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc, _log in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def check(self, proc: subprocess.Popen, what: str) -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{self.name_of(proc)} exited with {proc.returncode} while {what}\n{self.tail(proc)}")

    def name_of(self, proc: subprocess.Popen) -> str:
        return next((n for n, p, _l in self.procs if p is proc), "?")

    def tail(self, proc: subprocess.Popen, lines: int = 25) -> str:
        for name, p, log in self.procs:
            if p is proc:
                text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                return f"--- {name} ({log}):\n" + "\n".join(text)
        return ""


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_mem(pid: int) -> dict[str, float]:
    """``VmRSS`` / ``VmHWM`` (and the anonymous part, ``RssAnon``) in KiB from /proc/<pid>/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:", "RssAnon:")):
                    key, value = line.split(":", 1)
                    out[key] = float(value.split()[0])
    except OSError:
        pass
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (``/proc/<pid>/task/<tid>/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def tree_memory(pid: int, pss: bool = True) -> tuple[float, float, int]:
    """(RSS, PSS) in KiB summed over ``pid`` and its descendants, and how many processes.

    RSS comes from ``/proc/<p>/status`` (a counter the kernel keeps: cheap);
    PSS only when asked, from ``smaps_rollup``, which walks every page table
    of the process (4-10 ms for the audit's 170 MB, under the lock its page
    faults need): sampled every 50 ms it took 7% of a core from a command
    that uses both."""
    rss = pss_kb = 0.0
    pids = tree_pids(pid)
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += float(line.split()[1])
                        break
            if pss:
                with open(f"/proc/{p}/smaps_rollup") as fh:
                    for line in fh:
                        if line.startswith("Pss:"):
                            pss_kb += float(line.split()[1])
                            break
        except OSError:
            pass
    return rss, pss_kb, len(pids)


class TreeSampler(threading.Thread):
    """Samples :func:`tree_memory` of a process every ``interval`` s until
    :meth:`stop`: the peak memory of a command that may start processes of its
    own. RSS every sample; PSS (costly to read) every ``pss_every`` samples."""

    def __init__(self, pid: int, interval: float = 0.05, pss_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        self.peak_rss = self.peak_pss = 0.0
        self.max_procs = 0
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            rss, pss, procs = tree_memory(self.pid, pss=n % self.pss_every == 0)
            n += 1
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, procs)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Machine:
    """How busy the machine was over an interval, from /proc/stat (all cores), minus
    the CPU of the processes a benchmark accounts for: what *other* people ran."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.self0 = self._self_cpu()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _self_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    def others(self, accounted_cpu: float = 0.0) -> float:
        """Average cores used by everything except this process and ``accounted_cpu`` s."""
        wall = max(1e-9, time.monotonic() - self.t0)
        busy = self._busy() - self.busy0
        mine = self._self_cpu() - self.self0
        return max(0.0, (busy - mine - accounted_cpu) / wall)


def load_note(others: list[float]) -> str:
    """``others 0.1-0.6 cores (busy)``: the load of other users across runs."""
    if not others:
        return ""
    lo, hi = min(others), max(others)
    busy = " (machine BUSY)" if hi >= 0.5 else ""
    return f"others used {lo:.1f}-{hi:.1f} of {os.cpu_count()} cores{busy}"


# ------------------------------------------------------------------------ HTTP
def get_json(url: str, timeout: float = 10.0):
    """(status, document) or (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return None, None


def get_timed(url: str, timeout: float = 30.0) -> tuple[float, int, dict, object]:
    """(seconds until the whole body was read, status, headers, document)."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
        dt = time.perf_counter() - t0
        return dt, resp.status, dict(resp.headers), json.loads(body)


def get_text(url: str, timeout: float = 10.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None


def same_audit(got, expected: dict) -> bool:
    """Equal as data: the watermark as an instant, floats within 1e-9 (as tests/support.py)."""
    from pipeline.core.times import parse_time

    if not isinstance(got, dict) or set(got) != set(expected):
        return False
    if parse_time(got["watermark"]) != parse_time(expected["watermark"]):
        return False
    if any(got[k] != expected[k] for k in expected if k not in ("watermark", "recording_rate")):
        return False
    for k, v in expected["recording_rate"].items():
        g = got["recording_rate"].get(k)
        if (v is None) != (g is None) or (v is not None and abs(g - v) > 1e-9):
            return False
    return True


def read_probe(path: Path) -> dict:
    """What bench/worker_probe.py wrote: ``first`` (first input batch) and ``ends`` (batch ends)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"first": None, "ends": [], "batches": 0}


class AuditPoller:
    """Finds when a worker has done all the work a capture asks for, disturbing it as little as possible.

    Serving ``/audit`` folds every partition's audit parts: the more days of
    state, the longer (~0.1-0.2 s after a simulated month, during which the
    worker's one thread does nothing else), so polling it often would slow down
    the worker it times. So: first the worker's consumer group is watched on the
    broker (its committed offsets on the input topics, every 50 ms: no work for
    the worker) until every input message is consumed and committed; then the
    probe file (``$BENCH_PROBE`` of bench/worker_probe.py) is read every 50 ms,
    and ``/audit`` is asked only when the worker is in no batch and has
    finished none for :attr:`QUIET` seconds (or :attr:`INTERVAL_AUDIT` after the last answer),
    until it equals ``expected``: while the stages work off their backlog the
    worker is left alone. The end of the work is then the end of the last
    batch the worker processed before that answer: exact, whatever the polls.
    Also kept: when the inputs were committed, when the event and incident
    counts matched, and how long ``/audit`` took to answer.
    """

    INTERVAL_INPUTS, INTERVAL_AUDIT, QUIET = 0.05, 2.0, 0.15

    def __init__(self, url: str, expected: dict, bootstrap: str, group: str, topics: list[str],
                 input_messages: int, probe: Path) -> None:
        self.url, self.expected, self.probe = url, expected, probe
        self.bootstrap, self.group, self.topics, self.inputs = bootstrap, group, topics, input_messages
        self.t_inputs = self.t_events = self.t_incidents = self.t_seen = self.t_done = None
        self.serving = 0.0  # seconds spent waiting for /audit answers
        self.polls = 0
        self.trace: list[tuple[float, list[str]]] = []
        self.doc = None
        self._admin = None
        self._last_poll = 0.0

    def committed(self) -> int:
        """Input messages the group has committed (offsets are contiguous: fresh topics, no transactions)."""
        from kafka.admin import KafkaAdminClient

        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-progress",
                                           request_timeout_ms=5000)
        got = self._admin.list_group_offsets({self.group: None}).get(self.group, {})
        return sum(o.offset for tp, o in got.items() if tp.topic in self.topics and o.offset > 0)

    def poll(self) -> bool:
        """One look; True once ``/audit`` equals the expectation. Sleep :meth:`interval` between calls."""
        if self.t_inputs is None:
            try:
                if self.committed() < self.inputs:
                    return False
            except Exception:  # noqa: BLE001 - no group yet, or a broker hiccup: look again
                return False
            self.t_inputs = self._last_poll = time.time()
        probed = read_probe(self.probe)
        ends, now = probed["ends"], time.time()
        working = probed.get("busy") or (ends and now - ends[-1] < self.QUIET)
        if working and now - self._last_poll < self.INTERVAL_AUDIT:
            return False  # a batch in progress or just done: look again later
        self._last_poll = now
        t0 = time.perf_counter()
        _status, doc = get_json(self.url + "/audit", timeout=30)
        self.serving += time.perf_counter() - t0
        self.polls += 1
        now = time.time()
        self.doc = doc
        exp = self.expected
        self.trace.append((now, [k for k in exp if not isinstance(doc, dict) or doc.get(k) != exp[k]]))
        if isinstance(doc, dict):
            if self.t_events is None and doc.get("events") == exp["events"]:
                self.t_events = now
            if self.t_incidents is None and doc.get("incidents") == exp["incidents"]:
                self.t_incidents = now
            if same_audit(doc, exp):
                self.t_seen = now
                ends = [t for t in read_probe(self.probe)["ends"] if t <= now]
                self.t_done = max(ends) if ends else now
                return True
        return False

    def interval(self) -> float:
        return self.INTERVAL_INPUTS

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def audit_diff(got, expected: dict) -> str:
    if not isinstance(got, dict):
        return f"no audit ({got!r})"
    keys = [k for k in expected if got.get(k) != expected[k]]
    return "; ".join(f"{k}: got {json.dumps(got.get(k))[:300]} want {json.dumps(expected[k])[:300]}" for k in keys)


# --------------------------------------------------------------------- workers
def free_port() -> int:
    from pipeline.kafka.local import free_port as _free

    return _free()


def worker_env(**extra: str) -> dict[str, str]:
    """Like tests/support.worker_env() (short group timeouts, info logging), but the
    product's default tick interval (0.5 s): latencies must be the ones users get."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("CDI_"):
            del env[name]
    env.update({"CDI_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S), "CDI_LOG_LEVEL": "info"})
    env.update(extra)
    return env


def worker_cmd(broker_url: str, port: int, data_dir: Path, fetch_cap_ms: int | None = None) -> list[str]:
    """``cdiwatch worker`` through bench/worker_probe.py: the same process, plus batch
    times written to ``$BENCH_PROBE`` (and an optional fetch-wait cap, a what-if).
    See that file."""
    import shutil

    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [PY, str(HERE / "worker_probe.py")]
    if fetch_cap_ms is not None:
        cmd += ["--fetch-cap-ms", str(fetch_cap_ms)]
    return cmd + ["worker", "--broker", broker_url, "--web-port", str(port), "--data-dir", str(data_dir)]


def wait_ready(children: Children, proc: subprocess.Popen, url: str, timeout: float = 120.0,
               interval: float = 0.1) -> float:
    """Poll ``/readyz``; the wall time it first answered 200."""
    deadline = time.monotonic() + timeout
    while True:
        status, _doc = get_json(url + "/readyz", timeout=2)
        now = time.time()
        if status == 200:
            return now
        children.check(proc, "waiting for /readyz")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready after {timeout:g} s\n{children.tail(proc)}")
        time.sleep(interval)


def wait_audit(children: Children, proc: subprocess.Popen, url: str, check, what: str,
               timeout: float = 300.0, interval: float = 0.2) -> tuple[float, dict]:
    """Poll ``/audit`` until ``check(doc)``; (wall time, document)."""
    deadline = time.monotonic() + timeout
    doc = None
    while True:
        _status, doc = get_json(url + "/audit", timeout=15)
        now = time.time()
        if isinstance(doc, dict) and check(doc):
            return now, doc
        children.check(proc, f"waiting for {what}")
        if time.monotonic() > deadline:
            got = json.dumps(doc.get("incidents")) if isinstance(doc, dict) else repr(doc)
            raise RuntimeError(f"no {what} after {timeout:g} s (incidents: {got})\n{children.tail(proc)}")
        time.sleep(interval)
