"""How a command says that something is wrong: one line, and an exit code.

Exit codes (README, "Command line"): 0 done; 1 the run failed or found
problems (audit: lines it could not read; replay: messages not delivered; a
broker that stopped answering); 2 a usage or configuration mistake to fix
before running again (a flag, a variable, a file, a busy port); 130 Ctrl-C.
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "RunFailed", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake or a failure the user can act on; printed as one line, never a traceback."""

    exit_code = EXIT_PROBLEMS


class ConfigError(UserError):
    """A flag, variable, file or port that must be fixed first (exit 2)."""

    exit_code = EXIT_USAGE


class RunFailed(UserError):
    """The run could not do what it was asked (exit 1)."""

    exit_code = EXIT_PROBLEMS
