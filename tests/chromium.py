"""Headless Chromium for the browser tests: Debian's chromium driven by Playwright.

Playwright never downloads a browser here (no network, and CI installs
Debian's ``chromium``): it drives the system binary. Without the binary or the
``playwright`` package the browser tests are skipped on a developer machine
and fail in CI (env ``CI``), like every other integration test.

Screenshots: a test passes its PNG name to :func:`screenshot_path`; it lands
in the test's temporary directory, and in ``docs/img/`` when
``CDI_UPDATE_SCREENSHOTS=1`` (so a normal run never dirties the worktree).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from support import ROOT, require_binary

__all__ = ["chromium", "screenshot_path", "LAUNCH_ARGS", "DOCS_IMG"]

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS_IMG = ROOT / "docs" / "img"


@contextmanager
def chromium() -> Iterator[object]:
    """A Playwright ``Browser`` on the system Chromium (skip, or fail in CI, when missing)."""
    binary = require_binary("chromium", "chromium-browser", package="chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "playwright is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(tmp: Path, name: str) -> list[Path]:
    """Where to write screenshot ``name``: the temporary dir, plus docs/img when updating."""
    paths = [tmp / name]
    if os.environ.get("CDI_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        paths.append(DOCS_IMG / name)
    return paths
