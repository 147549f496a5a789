"""The compiled core (pipeline/native.py): used when it matches its sources,
never when it does not, and the source on request.

In CI the build must be there and in use: a missing compiler is a failure
there, not a silent slow run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.core.incidents
from pipeline import native
from support import ROOT

BUILT = native.MANIFEST.exists() and native._extension(native.COMPILED[0]) is not None
PURE = native.pure_requested()


def test_only_a_set_switch_asks_for_the_source():
    assert not native.pure_requested({}) and not native.pure_requested({"CDIWATCH_PURE": "0"})
    assert not native.pure_requested({"CDIWATCH_PURE": ""})
    assert native.pure_requested({"CDIWATCH_PURE": "1"}) and native.pure_requested({"CDIWATCH_PURE": "yes"})


def test_the_choice():
    assert native.decide(False, None, None, False) == native.Build(False, "no build")
    assert not native.decide(True, "x", "x", True).compiled  # asked for the source
    assert native.decide(True, "x", "y", False) == native.Build(False, "sources changed since the build")
    assert not native.decide(True, None, None, False).compiled  # a build that never finished
    assert native.decide(True, "x", "x", False) == native.Build(True, "compiled")


def test_the_digest_follows_every_compiled_source(tmp_path):
    copy = tmp_path / "pipeline"
    shutil.copytree(ROOT / "pipeline", copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    before = native.source_digest(tmp_path)
    assert before == native.source_digest(ROOT)
    for name in native.COMPILED:
        source = native._source(name, tmp_path)
        text = source.read_bytes()
        source.write_bytes(text + b"\n")
        assert native.source_digest(tmp_path) != before, name
        source.write_bytes(text)


def test_a_compiled_module_no_longer_listed_is_found_for_the_build_to_delete(tmp_path):
    """An in-place build deletes the compiled file of a module that is no longer
    compiled (Python would import it before the source); never a listed one,
    nor the group's shared library."""
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    keep = [tmp_path / "pipeline" / ("_native__mypyc" + suffix),
            tmp_path.joinpath(*native.COMPILED[0].split(".")).with_name(native.COMPILED[0].rsplit(".", 1)[1] + suffix)]
    stale = [tmp_path / "pipeline" / "core" / ("gone" + suffix), tmp_path / "pipeline" / "stream" / ("outbox" + suffix)]
    for path in keep + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (tmp_path / "pipeline" / "core" / "gone.py").write_text("")
    assert native.unlisted(tmp_path) == sorted(stale)
    assert native.unlisted(ROOT) == []  # this checkout has none


def test_the_build_is_in_use_where_it_was_made():
    """CI builds the core (make test), so there it must be what runs."""
    if PURE:
        assert not native.select().compiled
        assert pipeline.core.incidents.__file__.endswith(".py")
        return
    if not BUILT:
        if os.environ.get("CI"):
            pytest.fail("the compiled core was not built (make native): is a C compiler missing?")
        pytest.skip("the core is not compiled here (make native)")
    assert native.select() == native.Build(True, "compiled")
    assert not pipeline.core.incidents.__file__.endswith(".py")


def _load(root: Path, env: dict) -> subprocess.CompletedProcess:
    code = "import pipeline.core.incidents as m, pipeline.native as n; print(n.select().compiled, m.__file__)"
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)


def test_an_edited_source_runs_instead_of_its_stale_build(tmp_path):
    if not BUILT:
        if os.environ.get("CI"):
            pytest.fail("the compiled core was not built (make native)")
        pytest.skip("the core is not compiled here (make native)")
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("CDIWATCH_PURE", "PYTHONPATH")}

    same = _load(tmp_path, env)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("True ") and same.stderr == ""

    pure = _load(tmp_path, {**env, "CDIWATCH_PURE": "1"})
    assert pure.stdout.split() == ["False", str(tmp_path / "pipeline" / "core" / "incidents.py")]
    assert pure.stderr == ""  # asked for: nothing to warn about

    rules = tmp_path / "pipeline" / "core" / "rules.py"
    rules.write_text(rules.read_text() + "\n# edited after the build\n")
    stale = _load(tmp_path, env)
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.split() == ["False", str(tmp_path / "pipeline" / "core" / "incidents.py")]
    assert stale.stderr.strip().splitlines() == [
        "cdiwatch: sources changed since the build: running the core from source (slower); `make` rebuilds it"]


def test_the_installed_command_finds_the_build_from_any_directory(tmp_path):
    """The modules' shared library lives inside the package, so the
    ``cdiwatch`` script (an editable install maps only ``pipeline``) finds it
    wherever it is started (and, asked for the source, runs that quietly)."""
    if not BUILT:
        if os.environ.get("CI"):
            pytest.fail("the compiled core was not built (make native)")
        pytest.skip("the core is not compiled here (make native)")
    from support import SAMPLE

    command = Path(sys.executable).with_name("cdiwatch")
    done = subprocess.run([str(command), "audit", "--json", str(SAMPLE)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "running the core from source" not in done.stderr
