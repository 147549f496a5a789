"""``cdiwatch demo``: a broker, a worker and a live simulated control room, on one machine.

The simulated force's clock runs ``--speedup`` times faster than real time
(default 60: a simulated hour a minute). Event times must never be in the
future (the monitor rejects them), so the simulation *ends* at the present:
it covers the last ``--hours`` (default 48) of event time; the first
``--backlog`` hours (default 22) are published at once, as if the monitor had
just been switched on, so at-risk alerts appear straight away and overdue
ones within minutes. Alerts are printed as they arrive on ``cdi.alerts``.
Ctrl-C (or SIGTERM) stops every child process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from .broker import LocalBroker
from .config import Settings
from .simulate import Simulator

__all__ = ["run"]

DEMO_HOURS = 48.0
BACKLOG_HOURS = 22.0


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the worker was not ready after {timeout:g} s")


def _format_alert(a: dict) -> str:
    kind = a["kind"].upper().replace("_", " ")
    extra = f" ({a['timeliness']})" if a.get("timeliness") else ""
    flags = f" [{', '.join(a['flags'])}]" if a.get("flags") else ""
    return (f"{time.strftime('%H:%M:%S')}  {kind:<10} {a['incident_id']}  {a['category']}{flags} in "
            f"{a['district']} via {a['channel']}, deadline {a['deadline'][:16].replace('T', ' ')}{extra}")


async def _print_alerts(bootstrap: str, topic: str, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="cdiwatch-demo-console",
                                auto_offset_reset="earliest", session_timeout_ms=4000,
                                heartbeat_interval_ms=700)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    print(_format_alert(orjson.loads(r.value)), flush=True)
    finally:
        await consumer.stop()


async def _feed(settings: Settings, sim: Simulator, speedup: float, backlog_s: float,
                stop: asyncio.Event) -> None:
    """Publish simulated messages once the accelerated clock reaches their arrival."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        start = sim.start / 1_000_000
        t0 = time.time()
        sent = 0
        announced = False
        for msg in sim:
            while not stop.is_set():
                sim_now = min(start + backlog_s + (time.time() - t0) * speedup, time.time())
                if msg.arrival <= sim_now:
                    break
                if not announced:
                    announced = True
                    print(f"demo: backlog of {sent:,} messages published; now live at {speedup:g}x", flush=True)
                await asyncio.sleep(min(0.5, (msg.arrival - sim_now) / speedup))
            if stop.is_set():
                return
            await producer.send(msg.topic, msg.payload, key=msg.key.encode())
            sent += 1
        await producer.flush()
        print(f"demo: the simulation has reached the present ({sent:,} messages); "
              "the monitor keeps running — Ctrl-C to stop", flush=True)
    finally:
        await producer.stop()


async def _main(settings: Settings, args, web_url: str, worker: subprocess.Popen) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    now = time.time()
    hours = float(args.hours)
    sim = Simulator(hours=hours, seed=args.seed, start=now - hours * 3600,
                    incidents_topic=settings.incidents_topic, crimes_topic=settings.crimes_topic)
    tasks = [asyncio.create_task(_feed(settings, sim, args.speedup, min(args.backlog, hours) * 3600, stop)),
             asyncio.create_task(_print_alerts(settings.bootstrap_servers, settings.alerts_topic, stop))]

    async def watch_worker() -> None:
        while not stop.is_set():
            if worker.poll() is not None:
                print(f"demo: the worker exited ({worker.returncode}); stopping", file=sys.stderr)
                stop.set()
            await asyncio.sleep(1)

    tasks.append(asyncio.create_task(watch_worker()))
    if args.duration:
        loop.call_later(args.duration, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run(args, settings: Settings) -> int:
    web_port = args.web_port or settings.web_port
    log_dir = Path(settings.data_dir) / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    with LocalBroker(port=args.broker_port) as broker:
        settings = settings.with_overrides(broker=broker.url, web_port=web_port)
        env = dict(os.environ, CDI_BROKER=broker.url, CDI_WEB_PORT=str(web_port),
                   CDI_SESSION_TIMEOUT=os.environ.get("CDI_SESSION_TIMEOUT", "4"),
                   CDI_DATA_DIR=str(log_dir / "worker"))
        worker_log = open(log_dir / "worker.log", "ab")
        worker = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env,
                                  stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        web = f"http://{settings.web_host}:{web_port}"
        try:
            print(f"demo: broker {broker.url}; starting the worker (log: {log_dir / 'worker.log'})", flush=True)
            _wait_ready(web, worker)
            print("\ncdiwatch demo is running:\n"
                  f"  live page      {web}/\n"
                  f"  audit          {web}/audit      (or: cdiwatch audit --url {web})\n"
                  f"  open incidents {web}/incidents?status=overdue\n"
                  f"  metrics        {web}/metrics\n"
                  f"  broker         {broker.url}\n"
                  f"Simulating the last {args.hours:g} h of a Kent-like force at {args.speedup:g}x; "
                  "alerts below. Ctrl-C to stop.\n", flush=True)
            asyncio.run(_main(settings, args, web, worker))
        except KeyboardInterrupt:
            pass
        except RuntimeError as exc:
            print(f"demo: {exc}; see {log_dir / 'worker.log'}", file=sys.stderr)
            return 1
        finally:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
            worker_log.close()
            print("demo: stopped the worker and the broker", flush=True)
    return 0
