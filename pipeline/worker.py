"""``cdiwatch worker``: run one monitor process (a faust worker).

Creates the topics it needs when missing (partitions from settings), sets up
logging itself (faust's own setup makes every debug call build a record and
draws a spinner), then hands the process to faust's worker until Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import gc
import logging
import sys

from .config import Settings

__all__ = ["run", "topic_plan"]

logger = logging.getLogger(__name__)

# Kafka defaults a user of Kafka would expect: inputs and outputs keep a week,
# internal op topics a day (they are replayable from the inputs), changelogs compact.
WEEK_MS = 7 * 86400 * 1000


def topic_plan(s: Settings) -> dict[str, dict[str, str]]:
    """Topic name -> creation configs, for every topic the worker uses."""
    delete = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS), "retention.bytes": "-1"}
    compact = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
    plan = {t: dict(delete) for t in (s.incidents_topic, s.crimes_topic, s.alerts_topic, s.deadletter_topic,
                                      f"{s.app_id}-event-ops", f"{s.app_id}-incident-ops",
                                      f"{s.app_id}-crime-ops")}
    for table in ("eventids", "incidents", "crimes"):
        plan[f"{s.app_id}-{table}-changelog"] = dict(compact)
    return plan


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # aiokafka and faust are chatty at INFO during rebalances; keep them at WARNING
    # unless asked for debug.
    if level.lower() != "debug":
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)


def ensure_worker_topics(s: Settings) -> None:
    from .broker import ensure_topics

    plan = topic_plan(s)
    by_configs: dict[tuple, list[str]] = {}
    for name, configs in plan.items():
        by_configs.setdefault(tuple(sorted(configs.items())), []).append(name)
    for configs, names in by_configs.items():
        ensure_topics(s.bootstrap_servers, names, s.partitions, s.replication_factor, dict(configs))


def run(args, settings: Settings) -> int:
    import faust  # noqa: F401  (import here: offline commands never pay for it)

    from .stream.app import WorkerApp

    _configure_logging(settings.log_level)
    try:
        ensure_worker_topics(settings)
    except Exception as exc:  # unreachable broker, bad address...
        print(f"cdiwatch worker: cannot prepare topics on {settings.broker}: {exc}", file=sys.stderr)
        return 2
    monitor = WorkerApp(settings)
    # The ledgers keep hundreds of thousands of small long-lived objects; with
    # the default thresholds the cyclic collector rescans them over and over.
    # Collect young objects less often (cycles are still collected).
    gc.set_threshold(50_000, 20, 100)
    worker = faust.Worker(monitor.app, loglevel=settings.log_level.upper(), quiet=True,
                          override_logging=False)
    worker.spinner = None
    print(f"cdiwatch worker: broker {settings.broker}, web http://{settings.web_host}:{settings.web_port}/ "
          f"(metrics /metrics, audit /audit)", file=sys.stderr, flush=True)
    worker.execute_from_commandline()
    return 0
