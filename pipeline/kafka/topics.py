"""Every topic cdiwatch uses, its name and how it is created: the one topic plan.

Inputs and outputs keep what a Kafka user expects (a week, ``delete``). The
internal topics are named after the app id:

- ``{app}-event-ops``, ``{app}-incident-ops``, ``{app}-crime-ops``: the messages
  between the stages (keyed by the stage's own id; ``delete``, a week);
- ``{app}-{stage}-changelog``: each stage's state, one partition per stage
  partition (``compact``, kept forever; a record is not compacted within an
  hour of being written, so a crashed writer's last, uncommitted records
  cannot hide the committed values they would replace);
- ``{app}-views``: what every worker needs of every partition, for ``/audit``
  and ``/incidents`` (``compact``): audit parts per partition, open incidents,
  partition owners.

All get explicit ``cleanup.policy``, ``retention.ms`` and ``retention.bytes``
(the test broker reports configs only when they were set at creation).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicPlan", "STAGES", "WEEK_MS"]

WEEK_MS = 7 * 86400 * 1000
#: The stages, by the name of their ops topic and changelog.
STAGES = ("event", "incident", "crime")

_DELETE = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS), "retention.bytes": "-1"}
_COMPACT = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1",
            "min.compaction.lag.ms": str(3600 * 1000)}


@dataclass(frozen=True)
class TopicPlan:
    """Topic names and creation configs for one cdiwatch deployment (one app id)."""

    incidents: str = "cc.incidents"
    crimes: str = "rms.crimes"
    alerts: str = "cdi.alerts"
    deadletter: str = "cdi.deadletter"
    app_id: str = "cdiwatch"
    partitions: int = 6
    replication: int = 1

    @classmethod
    def from_settings(cls, s) -> "TopicPlan":
        return cls(s.incidents_topic, s.crimes_topic, s.alerts_topic, s.deadletter_topic, s.app_id,
                   s.partitions, s.replication_factor)

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.incidents, self.crimes)

    def ops(self, stage: str) -> str:
        """The topic a stage reads its messages from."""
        return f"{self.app_id}-{stage}-ops"

    def changelog(self, stage: str) -> str:
        return f"{self.app_id}-{stage}-changelog"

    @property
    def views(self) -> str:
        return f"{self.app_id}-views"

    @property
    def group(self) -> str:
        """The consumer group of the workers."""
        return f"{self.app_id}-workers"

    def stage_of(self, ops_topic: str) -> str | None:
        for stage in STAGES:
            if ops_topic == self.ops(stage):
                return stage
        return None

    def configs(self) -> dict[str, dict[str, str]]:
        """Topic name -> creation configs, for every topic a worker uses."""
        plan = {t: dict(_DELETE) for t in (self.incidents, self.crimes, self.alerts, self.deadletter)}
        for stage in STAGES:
            plan[self.ops(stage)] = dict(_DELETE)
            plan[self.changelog(stage)] = dict(_COMPACT)
        plan[self.views] = dict(_COMPACT)
        return plan
