"""A worker: the faust application that hosts the stream layer, and the facade
its HTTP endpoints ask.

faust runs the process: its worker handles signals and the service tree, and
starts, in order, the processing service (outbox, :class:`~pipeline.stream.runner.Runner`,
the cluster view reader, the broker probe) and the web server
(:class:`~pipeline.stream.web.server.WebServer`). faust's own Kafka consumer,
producer and tables are switched off (``enable_kafka=False``): the runner owns
the consumer group and the changelogs (see :mod:`pipeline.stream.store` for why).

Responsibilities of :class:`Worker`: build and wire the parts from the one
settings object; answer the cluster-wide questions (audit, board pages,
incident detail, readiness) by combining the partitions this worker owns
with the cluster view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter

import faust
from faust.app.base import BootStrategy
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..core.audit import AuditParts, build_audit
from ..core.explain import detail
from ..core.routing import partition_for
from ..core.times import US, format_time, watermark
from ..core.vocabulary import CRIMES, HARM_FLAGS, HIGH_HARM_CATEGORIES, INCIDENTS, LABELS
from ..kafka.client import aiokafka_options, describe
from ..kafka.topics import STAGES, TopicPlan
from . import fetch
from .board import BOARD_STATUSES
from .metrics import Metrics, StateCollector
from .outbox import Outbox
from ..report.data import report_data
from .runner import Runner
from .views import ClusterView, ViewPublisher
from .web.server import WebServer

__all__ = ["Worker"]

logger = logging.getLogger(__name__)

FORWARD_HEADER = "X-Cdiwatch-Forwarded"


class _NoKafka(BootStrategy):
    """faust without its own Kafka clients: the runner has the consumer group."""

    enable_kafka = False


class Worker:
    """One cdiwatch worker process (see the module doc)."""

    def __init__(self, settings) -> None:
        self.settings = s = settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.plan = TopicPlan.from_settings(s)
        self.zone = s.zone
        self.started_at = time.time()
        options = aiokafka_options(s)
        fetch.install()  # every consumer of the process takes a fetch as a list (stream/fetch.py)
        self.metrics = Metrics()
        self.metrics.registry.register(StateCollector(self._owned_state))
        for topic in self.plan.inputs:  # a feed that never delivers must still look silent
            self.metrics.last_received.labels(topic).set(self.started_at)
            self.metrics.input_lost.labels(topic)  # 0 from the start: increase() sees the first loss
        self.outbox = Outbox(options, f"{s.app_id}-{self.worker_id}")
        self.publisher = ViewPublisher(self.plan.views, s.partitions, self.outbox)
        self.view = ClusterView(self.plan.views, s.partitions, options, f"{s.app_id}-{self.worker_id}", self.outbox)
        self.runner = Runner(s, self.metrics, self.outbox, self.publisher, options, self.worker_id)
        self.client_options = options
        self.broker_ok_at = 0.0
        self.app = faust.App(s.app_id, broker=f"kafka://{s.bootstrap_servers}", web_enabled=True,
                             datadir=str(s.data_dir), web_port=s.web_port, web_bind=s.web_host,
                             web_host=s.web_host)
        self.app.boot_strategy = _NoKafka(self.app)
        token = s.http_token.get_secret_value() if s.http_token is not None else None
        self.web = WebServer(self, s.web_host, s.web_port, token)
        self.app.web_server(self.web)
        worker = self

        class Processing(Service):
            """The stream layer's tasks, started once the app runs, stopped gracefully."""

            async def on_start(self) -> None:
                await worker.outbox.start()
                self._tasks = [asyncio.ensure_future(worker.runner.run()),
                               asyncio.ensure_future(worker.view.run()),
                               asyncio.ensure_future(worker._probe())]
                for task in self._tasks:
                    task.add_done_callback(worker._task_done)

            async def on_stop(self) -> None:
                t0 = time.monotonic()
                await worker.runner.stop()
                run, *others = self._tasks
                try:
                    await asyncio.wait_for(asyncio.shield(run), timeout=30)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - stopping anyway
                    run.cancel()
                t1 = time.monotonic()
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)
                try:
                    await worker.outbox.flush()
                finally:
                    await worker.outbox.stop()
                # each step's time, so that a slow stop says where it waited
                logger.info("stopped: the batch in progress and the group left in %.1f s, "
                            "the producer flushed and closed in %.1f s", t1 - t0, time.monotonic() - t1)

        self.app.service(Processing)

    def _task_done(self, task: asyncio.Task) -> None:
        """A stream task that ends on its own is a failure the process cannot heal: stop it."""
        if task.cancelled() or self.runner.stopping:
            return
        exc = task.exception()
        logger.critical("worker task stopped: %s: %s; shutting down so that a restart recovers it",
                        type(exc).__name__ if exc else "ended", exc or "")
        os.kill(os.getpid(), 15)

    async def _probe(self) -> None:
        """Every 2 s: does the broker answer? (``/readyz`` is 503 while it does not.)"""
        from aiokafka.admin import AIOKafkaAdminClient

        from ..kafka.client import reveal

        admin = AIOKafkaAdminClient(**reveal(self.client_options), client_id=f"{self.settings.app_id}-probe",
                                    request_timeout_ms=3000)
        try:
            await admin.start()
        except Exception as exc:  # noqa: BLE001 - keep probing
            logger.warning("broker probe cannot start: %s", type(exc).__name__)
        while True:
            try:
                await asyncio.wait_for(admin.describe_cluster(), timeout=3)
                self.broker_ok_at = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - unreachable is what we measure
                logger.debug("broker probe failed: %s", type(exc).__name__)
            await asyncio.sleep(2)

    # ------------------------------------------------------------------ answers
    def metrics_exposition(self) -> tuple[bytes, str]:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        return generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST

    def cluster_parts(self) -> AuditParts:
        """Every partition's parts: owned ones live, the others from the cluster view."""
        total = AuditParts()
        owned = self.runner.owned
        for stage in STAGES:
            for p in range(self.settings.partitions):
                part = owned.get((stage, p))
                if part is not None:
                    total.add(part.stage.parts())
                else:
                    parts = self.view.parts(stage, p)
                    if parts is not None:
                        total.add(parts)
        return total

    def cluster_audit(self) -> dict:
        return build_audit(self.cluster_parts(), int(self.settings.allowed_lateness * US))

    def report_data(self) -> dict:
        return report_data(self.cluster_parts(), self.settings.core())

    def board_page(self, statuses, district, category, limit, offset, sort):
        return self.view.board.page(statuses, district, category, limit, offset, sort)

    async def incident_detail(self, incident_id: str, request) -> tuple[int, dict]:
        """(HTTP status, document): from the owner of the incident's partition."""
        p = partition_for(incident_id, self.settings.partitions)
        part = self.runner.owned.get(("incident", p))
        if part is not None:
            async with self.runner.lock:
                doc = detail(part.stage.ledger, incident_id)
            return (200, doc) if doc is not None else (404, {"error": "unknown or evicted incident"})
        url = self.view.owner_url("incident", p)
        if url is None or request.headers.get(FORWARD_HEADER):
            return 503, {"error": f"no worker owns partition {p} of the incidents right now; try again"}
        return await self._forward(url, incident_id, request)

    async def _forward(self, url: str, incident_id: str, request) -> tuple[int, dict]:
        from urllib.parse import quote

        import aiohttp

        headers = {FORWARD_HEADER: "1"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(f"{url}/incidents/{quote(incident_id, safe='')}", headers=headers) as resp:
                    return resp.status, await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return 503, {"error": f"the worker that owns this incident did not answer ({type(exc).__name__})"}

    def readiness(self) -> tuple[bool, str]:
        r = self.runner
        if time.monotonic() - self.broker_ok_at > 6:
            return False, "the broker does not answer"
        if r.consumer is None:
            return False, "starting"
        if r.recovering:
            return False, "recovering partition state"
        if not r.joined:
            return False, "joining the consumer group"
        if not self.view.loaded.is_set():
            return False, "reading the cluster view"
        return True, f"owns {len(r.owned)} stage partitions"

    def board_state(self) -> dict:
        """The board's header: clocks, feeds, counts and the words to show."""
        parts = self.cluster_parts()
        w = watermark(parts.max_time, int(self.settings.allowed_lateness * US))
        now = time.time()
        feeds = {}
        for topic in self.plan.inputs:
            times = [at for (t, _p), at in self.view.feeds.items() if t == topic]
            times += [at for (t, _p), at in self.runner.feeds.items() if t == topic]
            feeds[topic] = max(times) if times else None
        board = self.view.board
        return {
            "now": format_time(int(now * US)), "watermark": format_time(w),
            "lag_seconds": None if w is None else round(now - w / US, 1),
            "timezone": self.settings.timezone, "feeds": {t: format_time(int(a * US)) if a else None
                                                          for t, a in feeds.items()},
            # which feed is which (topic names are configurable): the board says "records feed"
            "feed_sides": {self.plan.incidents: INCIDENTS, self.plan.crimes: CRIMES},
            "feed_silent_after_seconds": self.settings.feed_silent_after, "started": format_time(int(self.started_at * US)),
            "counts": {s: board.count(s) for s in BOARD_STATUSES}, "facets": board.facets(),
            "labels": LABELS, "high_harm": list(HIGH_HARM_CATEGORIES), "harm_flags": list(HARM_FLAGS),
            "ready": self.readiness()[0],
        }

    def _owned_state(self) -> tuple[Counter, int | None]:
        agg: Counter = Counter()
        w = None
        for (stage, _p), part in list(self.runner.owned.items()):
            if stage == "incident":
                ledger = part.stage.ledger
                agg.update(ledger.tally.agg)
                if ledger.watermark is not None and (w is None or ledger.watermark > w):
                    w = ledger.watermark
        return agg, w

    def describe(self) -> str:
        return (f"cdiwatch worker {self.worker_id}: broker {describe(self.settings)}, "
                f"web http://{self.settings.web_host}:{self.settings.web_port}/")
