"""The user-facing error type, and the guard that turns it into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class CharlabError(Exception):
    """A problem with the user's input or environment, stated so they can fix it."""


class ParamsError(CharlabError, ValueError):
    """A params value is missing, unknown, of the wrong type or out of range."""


class TrainingError(CharlabError):
    """Training cannot start or cannot go on (data too short, loss diverged, ...)."""


def run_main(main: Callable[[], object]) -> None:
    """Run a stage or CLI entry point; user errors print one line, no traceback."""
    try:
        main()
    except CharlabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
