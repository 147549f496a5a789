"""The faust application: topics, tables, agents, timers and signals.

Data flow (README, "How it works"):

    cc.incidents ─┐  intake + ingest   ┌> cdi.deadletter
                  ├> (aiokafka batches,┤
    rms.crimes  ──┘   validate)        └> cdiwatch-event-ops ─> dedupe_stage (EventIds, table "eventids")
                                                                  │ first copies, by incident / crime id
                        ┌─────────────────────────────────────────┴──────────┐
                        v                                                    v
        cdiwatch-incident-ops ─> incident_stage ─> cdi.alerts   cdiwatch-crime-ops ─> crime_stage
          (IncidentLedger, table "incidents")                     (CrimeLedger, table "crimes")
                        ^        └── seen notices ──────────────────────────^      │
                        └──────────────────────────── crime links ─────────────────┘

Audit parts and open-incident lists go to the single-partition GlobalTable
``parts`` so that any worker can answer ``/audit`` for the whole cluster.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import faust
from faust.types import TP

from ..config import Settings
from ..metrics import LedgerCollector, Metrics
from ..summary import AuditParts, build_audit
from .intake import Intake
from .outbox import Outbox, TableWriter
from .tuning import shorten_fetch_wait
from .ingest import IngestStage
from .stages import CrimeStage, DedupeStage, IncidentStage

__all__ = ["WorkerApp"]

logger = logging.getLogger(__name__)


class WorkerApp:
    """One worker's faust app plus the stages it drives.

    Responsibilities: declare topics/tables/agents; route faust callbacks to the
    stages; publish per-partition audit parts; answer cluster-wide queries.
    """

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        shorten_fetch_wait()
        self.metrics = Metrics()
        self.started_at = time.time()
        self.app = app = faust.App(
            s.app_id,
            broker=s.broker,
            store=s.store,
            datadir=s.data_dir,
            web_port=s.web_port,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_in_thread=False,
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            broker_session_timeout=s.session_timeout,
            broker_heartbeat_interval=max(0.5, s.session_timeout / 6),
            broker_rebalance_timeout=max(s.session_timeout * 2, 20.0),
            consumer_auto_offset_reset="earliest",
            producer_linger=0.005,
            stream_buffer_maxsize=max(4096, s.batch_size * 2),
            table_standby_replicas=0,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.event_ops = app.topic(f"{s.app_id}-event-ops", partitions=s.partitions, internal=True,
                                   key_serializer="raw", value_serializer="raw")
        self.incident_ops = app.topic(f"{s.app_id}-incident-ops", partitions=s.partitions, internal=True,
                                      key_serializer="raw", value_serializer="raw")
        self.crime_ops = app.topic(f"{s.app_id}-crime-ops", partitions=s.partitions, internal=True,
                                   key_serializer="raw", value_serializer="raw")
        json_schema = faust.Schema(key_serializer="json", value_serializer="json")
        self.event_table = app.Table("eventids", partitions=s.partitions, schema=json_schema)
        self.incident_table = app.Table("incidents", partitions=s.partitions, schema=json_schema)
        self.crime_table = app.Table("crimes", partitions=s.partitions, schema=json_schema)
        self.parts_table = app.GlobalTable("parts", partitions=1, use_partitioner=True,
                                           recovery_buffer_size=1, schema=json_schema)

        self.outbox = Outbox(s.bootstrap_servers, f"{s.app_id}-outbox")
        self.ingest = IngestStage(s, self.metrics, self._send_event_ops, self._send_incident_ops,
                                  self._send_crime_ops, self._send_deadletter)
        self.dedupe_stage = DedupeStage(s, self.metrics, self.event_table,
                                        TableWriter(self.event_table, self.outbox).write,
                                        self._send_incident_ops, self._send_crime_ops)
        self.incident_stage = IncidentStage(s, self.metrics, self.incident_table,
                                            TableWriter(self.incident_table, self.outbox).write,
                                            self._send_alert, self._send_crime_ops)
        self.crime_stage = CrimeStage(s, self.metrics, self.crime_table,
                                      TableWriter(self.crime_table, self.outbox).write, self._send_incident_ops)
        self.intake = Intake(s, self.ingest, self.outbox.flush)
        self._published: dict[str, object] = {}
        self._last_open_publish = 0.0
        self.metrics.registry.register(LedgerCollector(self._owned_state))
        # A feed that never delivers anything must still look silent to FeedSilent:
        # its last-received time starts at the worker's start.
        for topic in (s.incidents_topic, s.crimes_topic):
            self.metrics.last_received.labels(topic).set(self.started_at)
        self._wire()

    # ------------------------------------------------------------------ sends
    async def _send_event_ops(self, partition: int, value: bytes) -> None:
        await self.outbox.send(self.event_ops.get_topic_name(), value, partition=partition)

    async def _send_incident_ops(self, partition: int, value: bytes) -> None:
        await self.outbox.send(self.incident_ops.get_topic_name(), value, partition=partition)

    async def _send_crime_ops(self, partition: int, value: bytes) -> None:
        await self.outbox.send(self.crime_ops.get_topic_name(), value, partition=partition)

    async def _send_alert(self, key: bytes | None, value: bytes) -> None:
        await self.outbox.send(self.settings.alerts_topic, value, key=key)

    async def _send_deadletter(self, key: bytes | None, value: bytes) -> None:
        await self.outbox.send(self.settings.deadletter_topic, value, key=key)

    # ----------------------------------------------------------------- wiring
    def _wire(self) -> None:
        app, s = self.app, self.settings
        ingest = self.ingest

        @app.task
        async def intake() -> None:
            await self.intake.run()

        async def run_stage(stream, stage) -> None:
            # Batches of op messages, one flush per batch: the stages write
            # their changelogs to explicit partitions, so a batch may mix
            # partitions; faust acks the batch only after the body (and so the
            # flush) is done, which keeps delivery at least once.
            async for events in stream.take_events(256, within=0.01):
                for event in events:
                    stage.apply(event.message.partition, event.message.value)
                await stage.finish(self.outbox.flush)
                await self.outbox.flush()

        @app.agent(self.event_ops, name="dedupe-stage")
        async def dedupe_stage(stream):
            await run_stage(stream, self.dedupe_stage)

        @app.agent(self.incident_ops, name="incident-stage")
        async def incident_stage(stream):
            await run_stage(stream, self.incident_stage)

        @app.agent(self.crime_ops, name="crime-stage")
        async def crime_stage(stream):
            await run_stage(stream, self.crime_stage)

        @app.timer(s.tick_interval)
        async def tick() -> None:
            await ingest.broadcast()
            await self.outbox.flush()
            self.publish_parts()

        @app.on_partitions_revoked.connect
        async def on_revoked(app, revoked: set[TP], **kwargs) -> None:
            self._drop(revoked)

        @app.on_partitions_assigned.connect
        async def on_assigned(app, assigned: set[TP], **kwargs) -> None:
            # Eager rebalancing: every owned partition is reloaded from its
            # recovered table, so a partition that moved away and back is fresh.
            self._drop(assigned)

        from .web import register_views
        register_views(self)

    def _stages(self):
        return ((self.dedupe_stage, self.event_ops), (self.incident_stage, self.incident_ops),
                (self.crime_stage, self.crime_ops))

    def _drop(self, tps: set[TP]) -> None:
        for stage, topic in self._stages():
            name = topic.get_topic_name()
            stage.revoke({tp.partition for tp in tps if tp.topic == name})

    # ----------------------------------------------------------- cluster view
    def publish_parts(self, force_open: bool = False) -> None:
        """Write changed per-partition audit parts (and open lists) to the GlobalTable."""
        now = time.monotonic()
        with_open = force_open or now - self._last_open_publish >= 2.0
        for prefix, stage in (("e", self.dedupe_stage), ("i", self.incident_stage), ("c", self.crime_stage)):
            for p in sorted(stage.dirty & set(stage.ledgers)):
                key = f"{prefix}{p}"
                parts = stage.parts(p).to_json()
                if self._published.get(key) != parts:
                    self.parts_table[key] = parts
                    self._published[key] = parts
                if prefix == "i" and with_open:
                    open_list = stage.open_incidents(p)
                    if self._published.get("open" + key) != open_list:
                        self.parts_table["open" + key] = open_list
                        self._published["open" + key] = open_list
                if prefix != "i" or with_open:
                    stage.dirty.discard(p)
        if with_open:
            self._last_open_publish = now

    def cluster_parts(self) -> AuditParts:
        """Sum of every partition's parts: owned partitions from the live ledgers
        (fresher than the GlobalTable, which lags by its changelog), the others
        from the GlobalTable."""
        total = AuditParts()
        for prefix, stage in (("e", self.dedupe_stage), ("i", self.incident_stage), ("c", self.crime_stage)):
            owned = dict(stage.ledgers)
            for p in range(self.settings.partitions):
                if p in owned:
                    total.add(stage.parts(p))
                else:
                    value = self.parts_table.get(f"{prefix}{p}")
                    if value is not None:
                        total.add(AuditParts.from_json(value))
        return total

    def cluster_audit(self) -> dict:
        return build_audit(self.cluster_parts(), int(self.settings.allowed_lateness * 1_000_000))

    def cluster_open(self, status: str | None) -> list[dict]:
        out = []
        for key, value in list(self.parts_table.items()):
            if key.startswith("openi"):
                out.extend(x for x in value if status is None or x["status"] == status)
        out.sort(key=lambda x: (x["deadline"], x["incident_id"]))
        return out

    def _owned_state(self) -> tuple[Counter, int | None]:
        agg: Counter = Counter()
        watermark = None
        for ledger in list(self.incident_stage.ledgers.values()):
            agg.update(ledger.agg)
            w = ledger.watermark
            if w is not None and (watermark is None or w > watermark):
                watermark = w
        return agg, watermark

    def is_ready(self) -> tuple[bool, str]:
        app = self.app
        try:
            assignment = app.consumer.assignment()
        except Exception:  # consumer not started yet
            return False, "consumer not started"
        if not assignment:
            return False, "no partitions assigned yet"
        if not self.intake.assigned:
            return False, "input consumer has no partitions yet"
        if app.rebalancing:
            return False, "rebalancing"
        if not app.tables.recovery.completed.is_set() or app.in_recovery:
            return False, "recovering table state"
        return True, f"consuming {len(assignment)} partitions"
