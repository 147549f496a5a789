"""``make bench``: run every benchmark and print ONE table at the end.

Each benchmark is a function ``(options) -> list[row]`` in :data:`BENCHMARKS`;
a row is a dict with ``benchmark``, ``measure``, ``value``, ``unit`` and
``note``. Benchmarks live in their own modules next to this file and are
imported lazily, so one that is missing or broken is reported as a row and the
others still run. ``--only audit`` (or ``--only audit,stream``) picks some.

See bench/README.md for what each measures and how to read it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

Row = dict
Benchmark = Callable[[argparse.Namespace], list]

__all__ = ["BENCHMARKS", "print_table", "main"]


def _from_module(module: str, name: str) -> Benchmark:
    """A benchmark whose code is ``bench/<module>.py:run(options)``."""

    def bench(opts: argparse.Namespace) -> list:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            return [{"benchmark": name, "measure": "(not run)", "value": "", "unit": "",
                     "note": f"bench/{module}.py does not exist yet"}]
        return mod.run(opts)

    bench.__name__ = f"bench_{name}"
    bench.module = module  # type: ignore[attr-defined]  (build_parser asks it for options)
    return bench


#: (name, function) in the order they run and appear in the table.
BENCHMARKS: list[tuple[str, Benchmark]] = [
    ("audit", _from_module("audit_bench", "audit")),
    ("stream", _from_module("stream_bench", "stream")),
    ("latency", _from_module("latency_bench", "latency")),
    ("scale", _from_module("scale_bench", "scale")),
    ("month", _from_module("month_bench", "month")),
]


def print_table(rows: list[Row], stream=sys.stdout) -> None:
    cols = ("benchmark", "measure", "value", "unit", "note")
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
    right = {"value"}

    def fmt(r: Row) -> str:
        return "  ".join(str(r.get(c, "")).rjust(widths[c]) if c in right else str(r.get(c, "")).ljust(widths[c])
                         for c in cols).rstrip()

    print(fmt({c: c for c in cols}), file=stream)
    print("  ".join("-" * widths[c] for c in cols), file=stream)
    for r in rows:
        print(fmt(r), file=stream)


def build_parser() -> argparse.ArgumentParser:
    """Common options plus each benchmark module's own (``add_arguments(parser)``, optional)."""
    p = argparse.ArgumentParser(description="cdiwatch benchmarks (one table at the end)",
                                conflict_handler="resolve")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of: {', '.join(n for n, _ in BENCHMARKS)}")
    for _name, bench in BENCHMARKS:
        module = getattr(bench, "module", None)
        if module is None:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    return p


def _compile_package() -> None:
    """Bytecode for the package before anything is timed, as a user's second
    run has it: under ``PYTHONDONTWRITEBYTECODE`` (or a read-only checkout)
    every command would otherwise compile its modules at start-up (~10 ms of
    the CLI's ~0.13 s), which the parse floor, importing only orjson, never does."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "pipeline"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    names = [n for n, _ in BENCHMARKS]
    wanted = names if not opts.only else [n.strip() for n in opts.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}",
              file=sys.stderr)
        return 2
    _compile_package()
    rows: list[Row] = []
    failed = False
    for name, bench in BENCHMARKS:
        if name not in wanted:
            continue
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            rows.extend(bench(opts))
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            failed = True
            traceback.print_exc()
            rows.append({"benchmark": name, "measure": "(failed)", "value": "", "unit": "",
                         "note": f"{type(exc).__name__}: {exc}"[:120]})
        print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print()
    print(f"the core: {_core_build()}")
    print_table(rows)
    return 1 if failed else 0


def _core_build() -> str:
    """Whether the commands measured ran the compiled core (pipeline/native.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline import native

    build = native.select()
    return "compiled (mypyc)" if build.compiled else f"from source ({build.reason})"


if __name__ == "__main__":
    sys.exit(main())
