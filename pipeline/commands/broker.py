"""``cdiwatch broker [--port 9092]``: a local Kafka-protocol broker (Tansu) in the foreground.

Memory storage, loopback only, no authentication: for development and the
demo, never for police data.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from ..kafka.local import INSTALL_HINT, BrokerError, BrokerNotInstalled, LocalBroker
from .errors import ConfigError, RunFailed

__all__ = ["run"]


def run(args: Any, settings: Any) -> int:
    broker = LocalBroker(port=args.port)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            broker.start()
        except BrokerNotInstalled as exc:
            raise ConfigError(f"no broker binary ({exc}); install it with: {INSTALL_HINT}") from None
        except BrokerError as exc:
            message = str(exc).splitlines()[0]
            raise (ConfigError if "in use" in message else RunFailed)(message) from None
        print(f"broker ready: {broker.url}", flush=True)
        print(f"  memory storage (topics are lost when it stops); log: {broker.log_path}\n  Ctrl-C to stop.",
              file=sys.stderr, flush=True)
        while not stop.is_set():
            if broker.wait(timeout=0.5) is not None:
                raise RunFailed(f"the broker exited unexpectedly; see {broker.log_path}")
        print("stopping broker", file=sys.stderr)
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
