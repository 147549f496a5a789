"""``cdiwatch demo``: a broker, a worker and a live simulated control room, on one machine.

The simulated force's clock is the wall clock: the simulation covers the last
``--hours`` (default 48) up to now, published at once as if the monitor had
just been switched on, and then goes on live, message by message as the
present reaches them (event times can never be in the future: the monitor
rejects them). So the board's event-time clock is the wall clock minus the
allowed lateness, alerts for what went overdue in those hours appear at once
(at risk, overdue, downgraded, resolved), and live ones follow as deadlines
pass. ``--rate`` makes the force busier. Ctrl-C (or SIGTERM) stops everything.
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

from ..kafka.client import aiokafka_options, reveal
from ..kafka.local import BrokerError, BrokerNotInstalled, LocalBroker, die_with_parent, port_in_use
from ..settings import Settings
from ..simulation import Simulator
from .errors import ConfigError, RunFailed

__all__ = ["run"]

LIVE_HOURS = 24.0


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


async def _print_alerts(settings: Settings, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.alerts_topic, **reveal(aiokafka_options(settings)),
                                group_id="cdiwatch-demo-console", auto_offset_reset="earliest",
                                session_timeout_ms=4000, heartbeat_interval_ms=700)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    print(_format_alert(orjson.loads(r.value)), flush=True)
    finally:
        await consumer.stop()


async def _feed(settings: Settings, sim: Simulator, stop: asyncio.Event) -> None:
    """Publish every message whose arrival has come: the past at once, then live."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**reveal(aiokafka_options(settings)), linger_ms=5)
    await producer.start()
    try:
        sent = 0
        live = False
        for msg in sim:
            while not stop.is_set() and msg.arrival > time.time():
                if not live:
                    live = True
                    await producer.flush()
                    print(f"demo: {sent:,} messages of the past {sim.hours - LIVE_HOURS:g} h published; "
                          "now live", flush=True)
                await asyncio.sleep(min(0.5, msg.arrival - time.time()))
            if stop.is_set():
                return
            await producer.send(msg.topic, msg.payload, key=msg.key.encode())
            sent += 1
        await producer.flush()
        print(f"demo: the simulation has ended ({sent:,} messages); the monitor keeps running; Ctrl-C to stop",
              flush=True)
    finally:
        await producer.stop()


async def _main(settings: Settings, args, web_url: str, worker: subprocess.Popen) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    now = time.time()
    hours = float(args.hours)
    sim = Simulator(hours=hours + LIVE_HOURS, seed=args.seed, rate=args.rate, start=now - hours * 3600,
                    incidents_topic=settings.incidents_topic, crimes_topic=settings.crimes_topic)
    tasks = [asyncio.create_task(_feed(settings, sim, stop)),
             asyncio.create_task(_print_alerts(settings, stop))]

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
    if port_in_use(web_port):
        raise ConfigError(f"web port {web_port} is already in use (another worker or demo?): stop it, or pass "
                          "--web-port")
    if args.broker_port and port_in_use(args.broker_port):
        raise ConfigError(f"broker port {args.broker_port} is already in use: stop what uses it, or pass "
                          "another --broker-port (default: a free port)")
    log_dir = Path(settings.data_dir) / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        broker = LocalBroker(port=args.broker_port).start()
    except BrokerNotInstalled as exc:
        raise ConfigError(f"no broker binary ({exc})") from None
    except BrokerError as exc:
        raise RunFailed(str(exc).splitlines()[0]) from None
    try:
        settings = settings.with_overrides(broker=broker.url, web_port=web_port)
        env = dict(os.environ, CDI_BROKER=broker.url, CDI_WEB_PORT=str(web_port),
                   CDI_SESSION_TIMEOUT=os.environ.get("CDI_SESSION_TIMEOUT", "4"),
                   CDI_DATA_DIR=str(log_dir / "worker"))
        log_path = log_dir / "worker.log"
        worker_log = open(log_path, "wb")
        worker = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env,
                                  stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  # killed with the demo, even by SIGKILL: no worker left behind
                                  preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        web = f"http://{settings.web_host}:{web_port}"
        try:
            print(f"demo: broker {broker.url}; starting the worker (log: {log_path})", flush=True)
            try:
                _wait_ready(web, worker)
            except RuntimeError as exc:
                raise RunFailed(f"{exc}: {_last_line(log_path)}") from None
            print("\ncdiwatch demo is running:\n"
                  f"  board          {web}/\n"
                  f"  audit          {web}/audit      (or: cdiwatch audit --url {web})\n"
                  f"  open incidents {web}/incidents?status=overdue\n"
                  f"  report         cdiwatch audit --url {web} --html report.html\n"
                  f"  metrics        {web}/metrics\n"
                  f"  broker         {broker.url}\n"
                  f"A Kent-like force: the last {args.hours:g} h at once, then live. Alerts below (at risk, "
                  "overdue, downgraded, resolved). Ctrl-C to stop.\n", flush=True)
            asyncio.run(_main(settings, args, web, worker))
        except KeyboardInterrupt:
            pass
        finally:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(timeout=10)
            worker_log.close()
    finally:
        broker.stop()
        print("demo: stopped the worker and the broker", flush=True)
    return 0


def _last_line(path: Path) -> str:
    """The worker's own one-line reason, from its log."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "cdiwatch worker:" in line:
            return line.split("cdiwatch worker:", 1)[1].strip()
    return lines[-1][:300] if lines else "the worker wrote nothing"
