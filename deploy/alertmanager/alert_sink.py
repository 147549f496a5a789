#!/usr/bin/env python3
"""A tiny Alertmanager webhook receiver: logs each notification, keeps the last ones.

Responsible for:
- accepting Alertmanager webhook POSTs (any path; the path names the receiver),
- printing one JSON line per alert to stdout (``docker compose logs alert-sink``),
- keeping the received notifications in memory for tests (``AlertSink.received``).

Standard library only, so it runs in a bare ``python:3.11-slim`` container::

    python alert_sink.py --host 0.0.0.0 --port 9095

``GET /`` returns the notifications received so far as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["AlertSink", "main"]


class AlertSink:
    """Webhook receiver on ``host:port``; ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, echo: bool = False) -> None:
        self.received: list[dict] = []  # {"path": ..., "body": <webhook JSON>}
        self._lock = threading.Lock()
        self._echo = echo
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send_error(400, "not JSON")
                    return
                sink._record(self.path, body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                data = json.dumps(sink.notifications()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep stderr quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, path: str, body: dict) -> None:
        with self._lock:
            self.received.append({"path": path, "body": body})
        if self._echo:
            for alert in body.get("alerts", []):
                line = {"receiver": body.get("receiver"), "path": path, "status": alert.get("status"),
                        "labels": alert.get("labels"), "summary": alert.get("annotations", {}).get("summary")}
                print(json.dumps(line, sort_keys=True), flush=True)

    def notifications(self) -> list[dict]:
        with self._lock:
            return list(self.received)

    def alerts(self) -> list[dict]:
        """Every alert of every notification received, each with its receiver and path."""
        out = []
        for n in self.notifications():
            for alert in n["body"].get("alerts", []):
                out.append({**alert, "receiver": n["body"].get("receiver"), "path": n["path"]})
        return out

    def start(self) -> "AlertSink":
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "AlertSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="log Alertmanager webhook notifications")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=9095)
    args = ap.parse_args(argv)
    sink = AlertSink(args.host, args.port, echo=True)
    print(f"alert-sink listening on {sink.url}", flush=True)
    try:
        sink._server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
