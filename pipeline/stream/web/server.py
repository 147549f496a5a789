"""The worker's HTTP server: an aiohttp application run as the faust app's web server.

faust's own web stack would also serve its built-in pages (``/table/...``,
``/router/``, ``/stats/``), which hand out table contents; cdiwatch registers
this service with ``App.web_server`` instead, so exactly the endpoints of
contract §4 exist (``tests/test_http_security.py`` checks it).
"""

from __future__ import annotations

import errno
import logging

from aiohttp import web
from mode import Service

from .routes import add_routes
from .security import security_middleware

__all__ = ["WebServer", "WebPortBusy"]

logger = logging.getLogger(__name__)


class WebPortBusy(OSError):
    """The web port cannot be bound (another process has it)."""


class WebServer(Service):
    """Serves the worker's endpoints on ``host:port`` while the worker runs."""

    def __init__(self, worker, host: str, port: int, token: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.worker = worker
        self.host, self.port = host, port
        self.application = web.Application(middlewares=[security_middleware(token)],
                                           client_max_size=64 * 1024)
        add_routes(self.application, worker)
        self._runner: web.AppRunner | None = None

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self.application, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise WebPortBusy(exc.errno, f"cannot listen on {self.host}:{self.port}: "
                                             f"{exc.strerror.lower() if exc.strerror else exc}") from None
            raise
        logger.info("web: http://%s:%d/", self.host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
