"""The checks a params key can carry, shared by the params sections and the model families'
keys: each returns an error message or None (:func:`charlab.params.core.parse` runs them
after the value's type is checked). It imports nothing of charlab, so a family's keys do
not depend on the params package that reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def probability(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def shown(v: object) -> str:
    """A user's key or string as an error message shows it: as written when it is printable,
    else quoted and escaped, so a control character never breaks the one line."""
    return v if isinstance(v, str) and v.isprintable() else repr(v)


def at_most(limit: float, why: str) -> Callable[[Any], str | None]:
    """``v <= limit`` (and the caller's other checks); ``why`` is said with the limit."""
    def check(v: Any) -> str | None:
        return None if v <= limit else f"must be at most {limit:g} ({why})"
    return check


def both(*checks: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return next((p for p in (c(v) for c in checks) if p), None)
    return check


def check(fn: Callable[[Any], str | None], help: str = "") -> dict:
    """A dataclass field's metadata: the check its value must pass (after the type's), and
    what the key means (said in errors about the key)."""
    return {"check": fn, "help": help}
