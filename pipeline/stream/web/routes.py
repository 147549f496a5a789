"""The worker's HTTP endpoints (contract §4), as aiohttp handlers.

Each handler parses its request, asks the :class:`~pipeline.stream.app.Worker`
facade, and shapes the answer; nothing here decides anything. Bad queries get
a 400 with one line saying what is wrong.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from ...core.times import format_time
from ..board import BOARD_STATUSES, SORTS

__all__ = ["add_routes", "MAX_LIMIT", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
OPEN = ("overdue", "at_risk", "pending")
_STATIC = {"board.html": "text/html", "board.js": "text/javascript", "board.css": "text/css"}


def entry_json(e) -> dict:
    doc = {"incident_id": e.incident_id, "status": e.status, "category": e.category, "district": e.district,
           "channel": e.channel, "flags": list(e.flags), "required_since": format_time(e.required_since),
           "deadline": format_time(e.deadline)}
    if e.reason is not None:
        doc["reason"] = e.reason
    return doc


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _int(query, name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text[:20]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high:,}")
    return value


def add_routes(app: web.Application, worker) -> None:
    static = {name: resources.files("pipeline.stream.web").joinpath("static", name).read_bytes()
              for name in _STATIC}

    async def metrics(request):
        body, content_type = worker.metrics_exposition()
        return web.Response(body=body, content_type=content_type.split(";")[0])

    async def audit(request):
        return web.json_response(worker.cluster_audit())

    async def report(request):
        return web.json_response(worker.report_data())

    async def incidents(request):
        q = request.query
        status = q.get("status")
        if status is None:
            statuses = OPEN
        elif status in BOARD_STATUSES:
            statuses = (status,)
        else:
            return _bad(f"status must be one of {', '.join(BOARD_STATUSES)}")
        sort = q.get("sort", "deadline")
        if sort not in SORTS:
            return _bad(f"sort must be one of {', '.join(SORTS)}")
        try:
            limit = _int(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            offset = _int(q, "offset", 0, 0, 10**9)
        except ValueError as exc:
            return _bad(str(exc))
        total, page = worker.board_page(statuses, q.get("district"), q.get("category"), limit, offset, sort)
        return web.json_response([entry_json(e) for e in page], headers={"X-Total-Count": str(total)})

    async def incident(request):
        incident_id = request.match_info["incident_id"]
        status, doc = await worker.incident_detail(incident_id, request)
        return web.json_response(doc, status=status)

    async def board_state(request):
        return web.json_response(worker.board_state())

    async def healthz(request):
        return web.json_response({"status": "ok"})

    async def readyz(request):
        ready, why = worker.readiness()
        return web.json_response({"ready": ready, "detail": why}, status=200 if ready else 503)

    def static_file(name):
        async def handler(request):
            return web.Response(body=static[name], content_type=_STATIC[name])
        return handler

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/audit", audit)
    app.router.add_get("/report", report)
    app.router.add_get("/incidents", incidents)
    app.router.add_get("/incidents/{incident_id}", incident)
    app.router.add_get("/board/state", board_state)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", static_file("board.html"))
    for name in _STATIC:
        if name != "board.html":
            app.router.add_get(f"/static/{name}", static_file(name))
