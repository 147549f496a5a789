"""``cdiwatch`` command line (contract §5).

Only argument parsing lives here; each command is a ``run(args, settings)``
function in the module named for it, imported lazily so that offline commands
(``audit FILE``, ``simulate``) never import faust.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import Settings

__all__ = ["main", "build_parser"]


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be 'max' or a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cdiwatch", description="Crime-data integrity monitor.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="broker + worker + simulated control room, all local")
    demo.add_argument("--speedup", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    demo.add_argument("--hours", type=float, default=48.0, help="simulated hours, ending now (default 48)")
    demo.add_argument("--backlog", type=float, default=22.0,
                      help="simulated hours published at once at start (default 22)")
    demo.add_argument("--web-port", type=int, default=None)
    demo.add_argument("--broker-port", type=int, default=None, help="default: a free port")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")

    broker = sub.add_parser("broker", help="run a local Kafka-protocol broker (Tansu)")
    broker.add_argument("--port", type=int, default=9092)

    worker = sub.add_parser("worker", help="run the monitor (a faust worker)")
    worker.add_argument("--broker", default=None, help="kafka://HOST:PORT (env CDI_BROKER)")
    worker.add_argument("--web-port", type=int, default=None)
    worker.add_argument("--web-host", default=None)
    worker.add_argument("--partitions", type=int, default=None)
    worker.add_argument("--data-dir", default=None)
    worker.add_argument("--log-level", default=None)

    sim = sub.add_parser("simulate", help="synthetic events as capture lines on stdout")
    sim.add_argument("--hours", type=float, default=24.0)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--rate", type=float, default=None, help="incidents per hour (default: Kent-like)")
    sim.add_argument("--start", default=None, help="RFC 3339 start time (default: fixed per seed)")
    sim.add_argument("--format", choices=("envelope", "bare"), default="envelope")
    sim.add_argument("--output", "-o", default="-", help="file to write (default stdout)")

    rep = sub.add_parser("replay", help="publish captured events to the broker")
    rep.add_argument("files", nargs="+", metavar="FILE")
    rep.add_argument("--broker", default=None)
    rep.add_argument("--speed", type=_speed, default=None, help="'max' (default) or N x event time")
    rep.add_argument("--no-progress", action="store_true")

    aud = sub.add_parser("audit", help="audit summary: live (--url) or offline (FILE...)")
    aud.add_argument("files", nargs="*", metavar="FILE")
    aud.add_argument("--url", default=None, help="http://HOST:PORT of a running worker")
    aud.add_argument("--json", action="store_true", help="print audit.v1 JSON")
    return p


_COMMANDS = {
    "demo": "pipeline.demo",
    "broker": "pipeline.broker",
    "worker": "pipeline.worker",
    "simulate": "pipeline.simulate",
    "replay": "pipeline.replay",
    "audit": "pipeline.audit",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        "broker": getattr(args, "broker", None),
        "web_port": getattr(args, "web_port", None),
        "web_host": getattr(args, "web_host", None),
        "partitions": getattr(args, "partitions", None),
        "data_dir": getattr(args, "data_dir", None),
        "log_level": getattr(args, "log_level", None),
    }
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"cdiwatch: bad configuration: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(_COMMANDS[args.command])
    try:
        return int(module.run(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
