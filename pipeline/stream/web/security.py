"""HTTP security of the worker (contract §7): bearer token and response headers.

- With a token configured (``CDI_HTTP_TOKEN`` / ``CDI_HTTP_TOKEN_FILE``), every
  data endpoint needs ``Authorization: Bearer <token>`` (compared in constant
  time) and answers 401 without it. ``/healthz`` and ``/readyz`` are open (a
  load balancer probes them), and so are the board's own static files, which
  hold no data: a browser must load the page before it can ask for the token.
- Every response carries ``Content-Security-Policy`` (scripts, styles and
  connections from the worker only; no framing), ``X-Content-Type-Options:
  nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and
  ``Cache-Control: no-store`` for data.
"""

from __future__ import annotations

import hmac

from aiohttp import web

__all__ = ["security_middleware", "OPEN_PATHS", "SECURITY_HEADERS"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def security_middleware(token: str | None):
    """aiohttp middleware: the token check (when ``token``) and the headers, on every response."""
    expected = ("Bearer " + token).encode("utf-8") if token else None

    @web.middleware
    async def middleware(request: web.Request, handler):
        path = request.path
        if expected is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                response = web.json_response({"error": "unauthorized: send Authorization: Bearer <token>"},
                                             status=401, headers={"WWW-Authenticate": 'Bearer realm="cdiwatch"'})
                _secure(response, data=True)
                return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = web.json_response({"error": exc.reason}, status=exc.status)
        _secure(response, data=not path.startswith(OPEN_PREFIXES) and path != "/")
        return response

    return middleware


def _secure(response: web.StreamResponse, data: bool) -> None:
    response.headers.update(SECURITY_HEADERS)
    if data:
        response.headers["Cache-Control"] = "no-store"
