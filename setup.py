"""Builds cdiwatch with its core compiled by mypyc (see pipeline/native.py).

``pyproject.toml`` holds the project's metadata; this file adds only the
compiled modules. The build is optional: with ``CDIWATCH_PURE=1``, or when
mypyc or a C compiler is missing, the package is plain Python and runs the
same, slower (a warning says why). ``make`` builds a checkout in place:
``python setup.py build_ext --inplace``.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
native = runpy.run_path(str(HERE / "pipeline" / "native.py"))  # stdlib only: no dependency needed yet
COMPILED, MANIFEST = native["COMPILED"], native["MANIFEST"]


def _warn(why: str) -> None:
    print(f"cdiwatch: building without the compiled core ({why}): it runs from source, slower",
          file=sys.stderr)


class BuildNative(build_ext):
    """Compile, then write the manifest that says which sources were compiled.
    A failed compile leaves no manifest, so the sources run (never a stale build)."""

    def run(self) -> None:
        # In place (make), the manifest is the checkout's; for a wheel, the one
        # beside the wheel's modules: a wheel built from a checkout never vouches
        # for the checkout's own (perhaps older) compiled modules.
        manifest = MANIFEST if self.inplace else Path(self.build_lib) / "pipeline" / MANIFEST.name
        manifest.unlink(missing_ok=True)
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the pure package still works
            if os.environ.get("CI"):
                raise
            _warn(f"{type(exc).__name__}: {exc}")
            return
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(native["source_digest"](HERE) + "\n")
        if self.inplace:
            _remove_unlisted()


def _remove_unlisted() -> None:
    """Delete compiled modules left in the checkout by an earlier build of a
    module no longer listed (``native.unlisted``): Python would import one before its source."""
    for so in native["unlisted"](HERE):
        so.unlink()
        print(f"cdiwatch: removed {so.relative_to(HERE)}: that module is no longer compiled", file=sys.stderr)


def _extensions() -> list:
    if native["pure_requested"]():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    paths = [str(Path(*name.split(".")).with_suffix(".py")) for name in COMPILED]
    # msgspec and orjson have no stubs in a build's own environment: their values are Any there.
    # Imported modules are analysed for their types, their own errors not reported: the stream
    # modules import the settings, whose fields pydantic makes at run time (mypy sees none).
    # group_name: the modules' shared library is pipeline/_native__mypyc*.so, inside the package, so
    # that whatever finds the package finds it (an editable install maps only ``pipeline``)
    return mypycify(["--ignore-missing-imports", "--follow-imports=silent", *paths], opt_level="3", group_name="pipeline._native")


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNative})
