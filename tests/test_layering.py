"""The architecture holds: the core is pure, modules stay small (issue 7).

- ``pipeline.core`` imports nothing of cdiwatch outside itself, and no Kafka,
  Prometheus, pydantic, HTTP or faust library, no clock and no file access;
- the offline commands never import the stream layer;
- no module is over 400 lines;
- no module imports a name it does not use, or uses one it never defined (pyflakes);
- the core and the offline reader type-check (mypy), and the compiled stream modules are
  fully annotated.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from support import ROOT

PACKAGE = ROOT / "pipeline"
CORE = PACKAGE / "core"
FORBIDDEN = {"faust", "aiokafka", "kafka", "prometheus_client", "pydantic", "pydantic_settings", "aiohttp",
             "urllib", "http", "socket", "requests", "mode", "time", "os", "pathlib", "io", "random"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                out.add(".".join(base + ((node.module,) if node.module else ())))
            else:
                out.add(node.module)
    return out


def test_the_core_imports_nothing_but_itself_the_standard_library_msgspec_and_orjson():
    for path in CORE.glob("*.py"):
        for name in imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            if top == "pipeline":
                assert name.startswith("pipeline.core"), f"{path.name} imports {name}"


def loaded(statements: str, prefixes: tuple[str, ...]) -> str:
    """The modules starting with ``prefixes`` a fresh interpreter has loaded after ``statements`` (a list's repr)."""
    code = f"import sys; {statements}; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_offline_commands_do_not_load_the_stream_layer():
    assert loaded("import pipeline.commands.audit, pipeline.commands.simulate, pipeline.commands.replay, "
                  "pipeline.commands.capture", ("faust", "pipeline.stream", "aiohttp")) == "[]"


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_command_line_and_the_offline_audit_do_not_import_pydantic():
    """pydantic and the settings model it built took ~85 ms of every command's
    start; the settings are checked with msgspec, and pydantic is left to the
    published models (``pipeline.contract``)."""
    assert loaded("import pipeline.commands.cli, pipeline.commands.audit; "
                  "from pipeline.settings import load_settings; load_settings()", ("pydantic",)) == "[]"


def test_no_unused_imports_or_undefined_names():
    """pyflakes over the package, the tests and the benchmarks: an import left
    behind by a move is a wrong signpost for the next reader."""
    done = subprocess.run([sys.executable, "-m", "pyflakes", str(PACKAGE), str(ROOT / "tests"), str(ROOT / "bench")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_core_and_the_offline_reader_type_check():
    """mypy over the decision rules and the capture reader: what their
    annotations say (an int, never None, past this check) is what the code
    does, so a reader may trust them."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", "/dev/null", "--ignore-missing-imports",
                           "--no-error-summary", str(CORE), str(PACKAGE / "capture")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compiled_stream_modules_are_fully_annotated():
    """The stream modules mypyc compiles: every function annotated, every body
    checked. mypyc checks at run time what a declaration says, and takes an
    attribute set to None in ``__init__`` with no annotation to be None forever."""
    from pipeline.native import COMPILED

    stream = [str(ROOT / Path(*name.split(".")).with_suffix(".py")) for name in COMPILED if ".stream." in name]
    assert stream
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", "/dev/null", "--ignore-missing-imports",
                           "--follow-imports=silent", "--check-untyped-defs", "--disallow-untyped-defs",
                           "--disallow-incomplete-defs", "--no-error-summary", *stream],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
