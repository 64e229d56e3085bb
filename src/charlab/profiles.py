"""Params profiles: a partial ``params.yaml`` applied as one DVC experiment.

A profile (``profiles/gpu.yaml``) holds only the keys it changes or adds. ``charlab profile
FILE`` turns it into ``dvc exp run -S '++key=value' ...`` (Hydra's ``++``: set the key, or
add it where params.yaml lacks it, e.g. a new ``train:`` entry), after checking that the
params it would give are valid, so a bad profile fails before DVC changes anything.
Why not a second params file in dvc.yaml: every stage would then track it, and a
profile is an experiment on the one params.yaml, which ``dvc exp show`` then compares.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from charlab.errors import CharlabError
from charlab.params import core
from charlab.params.sections import validate_all


class ProfileError(CharlabError):
    """A profile file is missing, not YAML, or would give invalid params."""


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if not isinstance(key, str) or not key or any(c in key for c in ".=[]{}',\" "):
            raise ProfileError(f"{prefix}{key!r}: profile keys must be plain names")
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def hydra_value(value: Any, where: str = "value") -> str:
    """``value`` in Hydra's override grammar, which ``dvc exp run -S`` parses."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProfileError(f"{where}: {value} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-/]*", value) and value.lower() not in (
                "true", "false", "null", "nan", "inf"):
            return value  # a plain word: Hydra reads it as this string
        # Hydra's quoted string: a backslash escapes a quote, and the backslashes before a
        # quote (or the closing one) are escaped; any other backslash is itself (doubling
        # every one, as before, stored 'a\\b' for a\b)
        return "'" + re.sub(r"(\\*)('|\Z)", lambda m: m.group(1) * 2 + m.group(2).replace(
            "'", "\\'"), value) + "'"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping) and not value:
        return "{}"
    raise ProfileError(f"{where}: cannot express {type(value).__name__} {value!r} as an "
                       "override")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(key path, string) for every string under ``where``."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")


def check_data(profile: Mapping[str, Any], profile_path: str | os.PathLike) -> None:
    """Profile values are data: refuse any ``${`` in them.

    ``dvc exp run -S`` hands each override to Hydra, which resolves ``${...}`` (OmegaConf
    interpolation, ``${oc.env:NAME}`` included) and writes the result into params.yaml:
    a profile could copy an environment secret into a URL the download stage then fetches.
    Refused, not escaped: nothing in charlab's params needs the two characters.
    """
    for path, value in _leaves(profile):
        for where, text in _strings(value, path):
            if "${" in text:
                raise ProfileError(f"{profile_path}: {where}: holds '${{', which DVC would "
                                   "resolve as an interpolation (${oc.env:...} reads the "
                                   "environment); profile values are data, never resolved: "
                                   "remove the ${...}")
            if "\x00" in text:  # (params.yaml itself may hold one, written "\0")
                raise ProfileError(f"{profile_path}: {where}: holds a NUL character, which "
                                   "no command line can carry (dvc exp run -S); set it in "
                                   "params.yaml instead")


def merged(base: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``profile``'s keys set (recursively), as ``++`` overrides set them."""
    out = copy.deepcopy(dict(base))
    for path, value in _leaves(profile):
        node = out
        *parents, last = path.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = copy.deepcopy(value)
    return out


def check(raw: Mapping[str, Any]) -> None:
    """Every section, validated as the pipeline's validate stage will (ParamsError if not)."""
    validate_all(raw)


def overrides(profile_path: str | os.PathLike, params_path: str | os.PathLike = "params.yaml"
              ) -> list[str]:
    """The ``-S`` values that apply the profile, checked against ``params_path``."""
    try:
        profile = core.load(profile_path)
    except core.ParamsError as e:
        raise ProfileError(f"profile {e}") from None
    check_data(profile, profile_path)
    base = core.load(params_path)
    try:
        check(merged(base, profile))
    except core.ParamsError as e:
        raise ProfileError(f"{profile_path} would give invalid params: {e}") from None
    return [f"++{path}={hydra_value(value, path)}" for path, value in _leaves(profile)]


def command(profile_path: str | os.PathLike, params_path: str | os.PathLike = "params.yaml",
            extra: tuple[str, ...] = ()) -> list[str]:
    """``dvc exp run -S ... [extra]`` for the profile."""
    argv = ["dvc", "exp", "run"]
    for o in overrides(profile_path, params_path):
        argv += ["-S", o]
    return argv + list(extra)
