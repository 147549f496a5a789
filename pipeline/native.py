"""The compiled core: which modules mypyc compiles, and whether they are used.

The decision rules and the capture reader run on every message, so they are
compiled to C by mypyc when the package is built (``setup.py``; ``make``
does it for a checkout). They stay plain Python source, type-checked
(``tests/test_layering.py``), and run the same without the build: mypyc
compiles what the annotations say, and checks them at run time.

A build is used only while it matches its sources: the build writes
:data:`MANIFEST`, a digest of the sources it compiled, and on import
:func:`select` compares it with the sources now there. When it does not
match (a source was edited since, or the build failed half way) the whole
package runs from source and says so once on stderr: a stale build never
runs code that is no longer in the files. ``CDIWATCH_PURE=1`` asks for the
source too (the tests of the core run both ways). All or nothing: compiled
modules call each other directly, so a mix would hold two copies of a class.

Modules that define msgspec ``Struct`` classes are never compiled (mypyc would
lose the class options such as ``tag``), nor are the ones read once a run.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import zlib
from pathlib import Path
from typing import NamedTuple

__all__ = ["COMPILED", "MANIFEST", "Build", "pure_requested", "source_digest", "unlisted", "decide", "select"]

#: The modules mypyc compiles: the per-message path of the workers and of the offline audit.
COMPILED = tuple(f"pipeline.{name}" for name in (
    "core.config", "core.crimes", "core.eventids", "core.explain", "core.incident", "core.incidents", "core.keys",
    "core.monitor", "core.packed", "core.routing", "core.rules", "core.stages", "core.tally", "core.timers",
    "core.times", "core.validation", "core.vocabulary",
    "capture.reading", "capture.validated", "capture.writing",
    "stream.fetched", "stream.idlog", "stream.intake", "stream.partitions", "stream.transport",
))

_ROOT = Path(__file__).resolve().parent.parent  # where the ``pipeline`` directory is
#: Written by the build beside the compiled modules: the digest of the sources compiled.
MANIFEST = Path(__file__).resolve().parent / "native.manifest"
_PURE_ENV = "CDIWATCH_PURE"


class Build(NamedTuple):
    """What :func:`select` chose: ``compiled``, or why the source runs."""

    compiled: bool
    reason: str  # "compiled", "no build", "asked for (CDIWATCH_PURE=1)", "sources changed since the build"


def pure_requested(environ: os._Environ | dict = os.environ) -> bool:
    """``CDIWATCH_PURE`` set (and not ``0``): build nothing, run the source."""
    return environ.get(_PURE_ENV, "") not in ("", "0")


def _source(name: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*name.split(".")).with_suffix(".py")


def _extension(name: str, root: Path = _ROOT) -> Path | None:
    base = root.joinpath(*name.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = base.with_name(base.name + suffix)
        if path.exists():
            return path
    return None


def source_digest(root: Path = _ROOT) -> str:
    """A digest of the compiled modules' names and sources: their CRC-32 and
    length. It tells an edited source from the one compiled, which is all it is
    for (whoever can write the files can change the build too); hashlib would
    load OpenSSL into every process, 3.5 MB."""
    crc, size = 0, 0
    for name in COMPILED:
        data = name.encode() + b"\0" + _source(name, root).read_bytes() + b"\0"
        crc, size = zlib.crc32(data, crc), size + len(data)
    return f"crc32 {crc:08x} bytes {size}"


def unlisted(root: Path = _ROOT) -> list[Path]:
    """Compiled modules under ``root/pipeline`` of modules no longer in
    :data:`COMPILED` (left by an earlier in-place build): Python would import
    one before its source, so the build deletes them. The group's shared
    library (``pipeline/_native__mypyc*``) is not a module."""
    listed = {Path(*name.split(".")) for name in COMPILED}
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)  # the longest that fits
    out = []
    for path in sorted((root / "pipeline").rglob("*.*")):
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is None:
            continue
        module = path.relative_to(root).with_name(path.name[: -len(suffix)])
        if module.name != "_native__mypyc" and module not in listed:
            out.append(path)
    return out


def decide(built: bool, manifest: str | None, digest: str | None, pure: bool) -> Build:
    """The choice, from what is on disk (``digest`` None: not computed, as not needed)."""
    if not built:
        return Build(False, "no build")
    if pure:
        return Build(False, f"asked for ({_PURE_ENV}=1)")
    if manifest is None or manifest != digest:
        return Build(False, "sources changed since the build")
    return Build(True, "compiled")


class _SourceFirst:
    """A meta-path finder: the compiled modules from their ``.py`` sources."""

    def __init__(self, names: tuple[str, ...], root: Path) -> None:
        self.names = frozenset(names)
        self.root = root

    def find_spec(self, name, path=None, target=None):
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(name, _source(name, self.root))


_chosen: Build | None = None


def select() -> Build:
    """Choose once per process, before any compiled module is imported
    (``pipeline/__init__.py`` calls it)."""
    global _chosen
    if _chosen is not None:
        return _chosen
    built = _extension(COMPILED[0]) is not None
    pure = pure_requested()
    manifest = MANIFEST.read_text().strip() if built and MANIFEST.exists() else None
    digest = source_digest() if built and not pure and manifest is not None else None
    _chosen = decide(built, manifest, digest, pure)
    if built and not _chosen.compiled:
        sys.meta_path.insert(0, _SourceFirst(COMPILED, _ROOT))
        if not pure:
            print(f"cdiwatch: {_chosen.reason}: running the core from source (slower); `make` rebuilds it",
                  file=sys.stderr)
    return _chosen
