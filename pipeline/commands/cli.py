"""``cdiwatch`` command line (contract §5): parsing, settings, and one-line errors.

Only argument parsing and error reporting live here; each command is a
``run(args, settings)`` function in the module named for it, imported lazily
so that offline commands never import faust. Any mistake ends in one line on
stderr and a documented exit code (:mod:`.errors`); ``--debug`` shows the
traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from .. import __version__
from ..settings import Settings, SettingsError, load_settings
from .errors import EXIT_INTERRUPTED, EXIT_PROBLEMS, EXIT_USAGE, UserError

__all__ = ["main", "console_main", "build_parser"]

_COMMANDS = {
    "demo": "pipeline.commands.demo",
    "broker": "pipeline.commands.broker",
    "worker": "pipeline.commands.worker",
    "simulate": "pipeline.commands.simulate",
    "replay": "pipeline.commands.replay",
    "capture": "pipeline.commands.capture",
    "audit": "pipeline.commands.audit",
}
_DEFAULTS = Settings.fields


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (not the usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _positive(kind, also: str = "", most: float | None = None):
    """An argparse type: a positive, finite ``kind`` up to ``most`` (or the word
    ``also``, given as None)."""
    what = f"'{also}' or a positive number" if also else "a positive number"
    if most is not None:
        what += f" up to {most:,}"

    def parse(text: str):
        if also and text == also:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if not (value > 0 and math.isfinite(value)) or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    return parse


# The simulated span and rate: ten years, a thousand times Kent's rate (more
# would not fit the instants of section 2, or would never end).
_HOURS = _positive(float, most=87_600)
_RATE = _positive(float, most=100_000)


_speed = _positive(float, also="max")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, not {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port number 1-65535")
    return value


def _env(name: str) -> str:
    return f"env CDI_{name.upper()}, default {_DEFAULTS[name].default}"


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = _Parser(prog="cdiwatch", formatter_class=fmt,
                description="Crime-data integrity monitor: matches crime-related incidents to crime records "
                            "and alerts when a record is missing or late.",
                epilog="Exit codes: 0 done, 1 the run failed or found problems, 2 a usage or configuration "
                       "mistake, 130 interrupted. Settings: CDI_* variables (README, Configuration).")
    p.add_argument("--version", action="version", version=f"cdiwatch {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", formatter_class=fmt, help="a local broker, a worker and a simulated control room")
    demo.add_argument("--hours", type=_HOURS, default=48.0,
                      help="simulated hours up to now, published at once; then live")
    demo.add_argument("--rate", type=_RATE, default=None, help="incidents per hour (default: Kent-like)")
    demo.add_argument("--web-port", type=_port, default=None, help=_env("web_port"))
    demo.add_argument("--broker-port", type=_port, default=None, help="default: a free port")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--duration", type=_positive(float), default=None, help="stop after this many real seconds")

    broker = sub.add_parser("broker", formatter_class=fmt, help="a local Kafka-protocol broker for development")
    broker.add_argument("--port", type=_port, default=9092)

    worker = sub.add_parser("worker", formatter_class=fmt, help="run the monitor")
    worker.add_argument("--broker", default=None, help=_env("broker"))
    worker.add_argument("--web-port", type=_port, default=None, help=_env("web_port"))
    worker.add_argument("--web-host", default=None, help=_env("web_host"))
    worker.add_argument("--partitions", type=_positive(int), default=None, help=_env("partitions"))
    worker.add_argument("--data-dir", default=None, help=_env("data_dir"))
    worker.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                        help=_env("log_level"))

    sim = sub.add_parser("simulate", formatter_class=fmt, help="synthetic events as capture lines")
    sim.add_argument("--hours", type=_HOURS, default=24.0)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--rate", type=_RATE, default=None, help="incidents per hour (default: Kent-like)")
    sim.add_argument("--start", default=None, help="RFC 3339 start (default: fixed per seed, in the past)")
    sim.add_argument("--format", choices=("envelope", "bare"), default="envelope")
    sim.add_argument("--output", "-o", default="-", help="file to write ('-': standard output)")

    rep = sub.add_parser("replay", formatter_class=fmt, help="publish captured messages to the broker")
    rep.add_argument("files", nargs="+", metavar="FILE")
    rep.add_argument("--broker", default=None, help=_env("broker"))
    rep.add_argument("--speed", type=_speed, default=None, help="'max' or N times event time (default: max)")
    rep.add_argument("--no-progress", action="store_true")

    cap = sub.add_parser("capture", formatter_class=fmt, help="write the input topics' messages of a time range")
    cap.add_argument("--broker", default=None, help=_env("broker"))
    cap.add_argument("--from", dest="start", required=True, metavar="T1", help="RFC 3339, inclusive (broker time)")
    cap.add_argument("--to", dest="end", required=True, metavar="T2", help="RFC 3339, exclusive")
    cap.add_argument("--output", "-o", default="-", help="file to write ('-': standard output)")
    cap.add_argument("--no-progress", action="store_true")

    aud = sub.add_parser("audit", formatter_class=fmt, help="the audit: live (--url) or offline (FILE...)")
    aud.add_argument("files", nargs="*", metavar="FILE")
    aud.add_argument("--url", default=None, help="http(s)://HOST:PORT of a running worker")
    aud.add_argument("--json", action="store_true", help="print audit.v1 JSON")
    aud.add_argument("--html", default=None, metavar="REPORT.html", help="also write the report with charts")
    aud.add_argument("--token-file", default=None, help="file with the HTTP token (default: CDI_HTTP_TOKEN)")
    return p


def _overrides(args) -> dict:
    names = ("broker", "web_port", "web_host", "partitions", "data_dir", "log_level")
    return {name: getattr(args, name, None) for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.error(f"unrecognised argument{'s' if len(extra) > 1 else ''}: {' '.join(extra)}")
        if args.command is None:
            parser.error(f"choose a command: {', '.join(_COMMANDS)}")
    except SystemExit as exc:  # argparse: --help, --version, or a usage mistake already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.debug = debug
    prog = f"cdiwatch {args.command}"
    try:
        settings = load_settings(**_overrides(args))
        module = importlib.import_module(_COMMANDS[args.command])
        return int(module.run(args, settings) or 0)
    except SettingsError as exc:
        print(f"{prog}: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        print(f"{prog}: unexpected failure: {type(exc).__name__}: {str(exc)[:300]} "
              f"(run with --debug for details)", file=sys.stderr)
        return EXIT_PROBLEMS


def console_main() -> None:
    """The ``cdiwatch`` executable: :func:`main`, then the process ends
    (at once when a command kept large state, see :mod:`.process`)."""
    from .process import exit_process
    exit_process(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
