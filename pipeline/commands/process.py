"""How a command's process ends.

An offline audit of a long capture builds millions of small objects; freeing
them one by one when the command returns costs about a second per 300,000
messages, after the answer is already written. A command hands such state to
:func:`keep_until_exit`, and :func:`exit_process` then ends the process at
once (``os._exit``) after flushing standard output and error: the operating
system takes the memory back in one step. Commands that keep nothing exit the
ordinary way (``atexit`` handlers, buffered files), so only a command that
asked for it skips them, and it must have closed its own files first.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

__all__ = ["keep_until_exit", "exit_process"]

_kept: list[Any] = []


def keep_until_exit(state: Any) -> None:
    """Hold ``state`` until the process ends, so that it is never freed piecemeal."""
    _kept.append(state)


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``: at once when a command kept state, else normally."""
    if not _kept:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
