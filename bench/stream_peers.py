"""The peers the worker is measured against in ``bench/stream_bench.py``, each a
subprocess on the same broker and the same two input topics, each with its own
consumer group (so each reads the topics from the start):

* :func:`run_quix`: quixstreams, parse + per-key state in RocksDB with changelogs
  (``bench/quix_app.py``), first message -> final state save;
* :func:`run_raw`: aiokafka ``getmany`` + ``orjson.loads`` (``bench/raw_consumer.py``),
  first -> last message: the raw consume ceiling in Python;
* :func:`run_faust`: the straightforward faust app (``bench/faust_baseline_app.py``),
  first -> last message.

Each returns a dict with ``rate`` (msgs/s), ``elapsed`` (s), ``cpu`` (s, whole
process), ``peak_mib`` and ``others`` (cores other users took meanwhile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from common import HERE, OUT, PY, SESSION_TIMEOUT_S, Children, Machine, proc_cpu, proc_mem

__all__ = ["run_quix", "run_raw", "run_faust", "INPUTS", "PARTITIONS"]

INPUTS = "cc.incidents,rms.crimes"
PARTITIONS = 6


def _wait(children: Children, proc: subprocess.Popen, timeout: float, what: str):
    """Wait for a child to exit; its rusage (wait4) and exit code."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            children.stop(proc)
            raise RuntimeError(f"{what} did not finish in {timeout:g} s\n{children.tail(proc)}")
        time.sleep(0.05)


def run_quix(children: Children, broker, total: int, tag: str) -> dict:
    group = f"bench-quix-{tag}"
    state_dir = OUT / "state" / group
    shutil.rmtree(state_dir, ignore_errors=True)
    result = OUT / f"{group}.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ, QUIX_BOOTSTRAP=broker.bootstrap, QUIX_GROUP=group, QUIX_TOPICS=INPUTS,
               QUIX_STATE_DIR=str(state_dir), QUIX_COUNT=str(total), QUIX_RESULT=str(result),
               QUIX_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_S * 1000))
    machine = Machine()
    broker_cpu0 = proc_cpu(broker._proc.pid)  # noqa: SLF001 - read-only
    proc = children.start(group, [PY, "-W", "ignore::DeprecationWarning", str(HERE / "quix_app.py")], env)
    usage = _wait(children, proc, max(180.0, total / 500), "the quixstreams app")
    cpu = usage.ru_utime + usage.ru_stime
    others = machine.others(cpu + proc_cpu(broker._proc.pid) - broker_cpu0)  # noqa: SLF001
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"the quixstreams app exited {proc.returncode}\n{children.tail(proc)}")
    doc = json.loads(result.read_text())
    if doc["count"] < total or doc["final_save"] is None:
        raise RuntimeError(f"quixstreams processed {doc['count']} of {total} messages\n{children.tail(proc)}")
    elapsed = doc["final_save"] - doc["first"]
    no_save = doc["last"] - doc["first"]
    intermediate = [c for c in doc["commits"] if c[1] <= doc["last"]]
    return {"rate": total / elapsed, "elapsed": elapsed, "rate_no_save": total / no_save, "no_save": no_save,
            "final_save_s": doc["final_save"] - doc["last"], "commits": len(intermediate),
            "commit_s": sum(e - s for s, e, _f in intermediate), "startup": doc["first"] - doc["start"],
            "cpu": cpu, "peak_mib": usage.ru_maxrss / 1024, "others": others, "invalid": doc["invalid"]}


def run_raw(children: Children, broker, total: int, tag: str) -> dict:
    group = f"bench-raw-{tag}"
    out = OUT / f"{group}.json"
    machine = Machine()
    broker_cpu0 = proc_cpu(broker._proc.pid)  # noqa: SLF001
    with open(out, "wb") as fh:
        proc = subprocess.Popen([PY, str(HERE / "raw_consumer.py"), broker.bootstrap, group, str(total), INPUTS],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=HERE.parent)
        children.procs.append((group, proc, out))
        usage = _wait(children, proc, 300, "the raw consumer")
    cpu = usage.ru_utime + usage.ru_stime
    others = machine.others(cpu + proc_cpu(broker._proc.pid) - broker_cpu0)  # noqa: SLF001
    if proc.returncode != 0:
        raise RuntimeError(f"raw consumer exited {proc.returncode}:\n{out.read_text()[-3000:]}")
    doc = json.loads(out.read_text().strip().splitlines()[-1])
    if doc["count"] < total:
        raise RuntimeError(f"raw consumer read {doc['count']} of {total} messages")
    elapsed = doc["last"] - doc["first"]
    return {"rate": doc["count"] / elapsed, "elapsed": elapsed, "cpu": cpu, "peak_mib": usage.ru_maxrss / 1024,
            "others": others}


def run_faust(children: Children, broker, total: int, tag: str, poll: float = 0.2) -> dict:
    app_id = f"bench-faust-{tag}"
    progress = OUT / f"{app_id}-progress.json"
    progress.unlink(missing_ok=True)
    data = OUT / "state" / app_id
    shutil.rmtree(data, ignore_errors=True)
    env = dict(os.environ, BASELINE_BROKER=broker.url, BASELINE_APP_ID=app_id, BASELINE_TOPICS=INPUTS,
               BASELINE_PARTITIONS=str(PARTITIONS), BASELINE_SESSION_TIMEOUT=str(SESSION_TIMEOUT_S),
               BASELINE_PROGRESS=str(progress), BASELINE_DATADIR=str(data))
    machine = Machine()
    broker_cpu0 = proc_cpu(broker._proc.pid)  # noqa: SLF001
    proc = children.start(app_id, [PY, str(HERE / "faust_baseline_app.py")], env)
    deadline = time.monotonic() + max(180.0, total / 500)
    state: dict = {}
    try:
        while True:
            time.sleep(poll)
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                pass
            if state.get("count", 0) >= total:
                break
            children.check(proc, "the faust app was consuming")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the faust app consumed {state.get('count', 0)} of {total} in time\n"
                                   f"{children.tail(proc)}")
        cpu = proc_cpu(proc.pid)
        mem = proc_mem(proc.pid)
    finally:
        children.stop(proc)
    others = machine.others(cpu + proc_cpu(broker._proc.pid) - broker_cpu0)  # noqa: SLF001
    elapsed = state["last"] - state["first"]
    return {"rate": state["count"] / elapsed, "elapsed": elapsed, "cpu": cpu,
            "peak_mib": mem.get("VmHWM", float("nan")) / 1024, "others": others}
