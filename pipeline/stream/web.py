"""HTTP endpoints on the worker's web port (contract §4).

``/metrics`` (Prometheus), ``/audit`` (cluster-wide audit.v1), ``/incidents``
(open incidents, cluster-wide), ``/healthz`` (process alive), ``/readyz``
(partitions assigned, state recovered, consuming) and ``/`` — a small live
page for control-room leads listing overdue and at-risk incidents.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:  # pragma: no cover
    from .app import WorkerApp

__all__ = ["register_views"]

STATUSES = ("overdue", "at_risk", "pending")


def register_views(monitor: "WorkerApp") -> None:
    app = monitor.app
    page_html = resources.files("pipeline.stream").joinpath("page.html").read_bytes()

    @app.page("/metrics")
    async def metrics(web, request):
        ready, _why = monitor.is_ready()
        monitor.metrics.ready.set(1 if ready else 0)
        return web.bytes(generate_latest(monitor.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/audit")
    async def audit(web, request):
        return web.json(monitor.cluster_audit())

    @app.page("/incidents")
    async def incidents(web, request):
        status = request.query.get("status")
        if status is not None and status not in STATUSES:
            return web.json({"error": f"status must be one of {', '.join(STATUSES)}"}, status=400)
        return web.json(monitor.cluster_open(status))

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        ready, why = monitor.is_ready()
        monitor.metrics.ready.set(1 if ready else 0)
        return web.json({"ready": ready, "detail": why}, status=200 if ready else 503)

    @app.page("/")
    async def index(web, request):
        return web.bytes(page_html, content_type="text/html")
