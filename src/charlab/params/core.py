"""The params machinery every section uses: parse a mapping into a typed dataclass, with
every error naming the key path (``train.rnn3.hidden_size``) and what is allowed, raised
before a stage does any work.

The sections themselves live with their owners (:mod:`charlab.params.data`,
:mod:`charlab.params.training`, :mod:`charlab.params.readers`), so a stage depends on this
module and its own section only: editing a reader's defaults reruns no training.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from charlab.checks import (  # noqa: F401 (the checks a section's fields use)
    at_most,
    both,
    check,
    fraction,
    non_negative,
    positive,
    probability,
    shown,
)
from charlab.errors import ParamsError
from charlab.io import read_yaml

T = TypeVar("T")

# numpy and torch take integers as int64: a larger one (a seed of 2**63) fails deep inside
INT_MAX = 2**63 - 1
# YAML 1.1 (PyYAML) reads `1e-3` and `1.0e3` (no dot, or no exponent sign) as strings; for a
# number key such a string is the number the user meant
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# torch takes thread counts as C ints
MAX_THREADS = 4096


class _WrongType(ParamsError):
    """The value is not of the key's type (a union tries its next type)."""


# --- the machinery -----------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, path)
            except _WrongType:  # a value of the right type but out of range stops here
                continue
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > INT_MAX:
                raise ParamsError(f"{path}: must fit in 64 bits (between -(2**63 - 1) and "
                                  f"2**63 - 1 = {INT_MAX}), got {value}")
            return value
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            raise _WrongType(f"{path}: must be an integer, got the string {value!r} (write "
                             "digits only, without quotes, a dot or an exponent)")
    elif tp is float:
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                or isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
            # a string here is YAML's reading of `1e-3`: the number the user meant
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range
                number = math.inf
            if not math.isfinite(number):
                raise ParamsError(f"{path}: must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise _WrongType(f"{path}: must be {_type_name(tp)}, got {value!r}")


def parse(cls: type[T], raw: Any, path: str) -> T:
    """Build dataclass ``cls`` from a params mapping, validating every key; then its
    ``validate(path)`` method, if it has one, checks the keys together."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: must be a mapping of keys to values, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in raw if k not in fields), key=str)
    if unknown:
        raise ParamsError(
            f"{path}.{shown(unknown[0])}: unknown key; allowed keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{path}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{key}: missing (required, {_type_name(hints[name])})")
            continue
        value = _coerce(raw[name], hints[name], key)
        check_value = f.metadata.get("check")
        if check_value is not None and value is not None:
            problem = check_value(value)
            if problem:
                raise ParamsError(f"{key}: {problem}, got {value!r}")
        values[name] = value
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def load(path: str | os.PathLike = "params.yaml") -> dict:
    """Read params.yaml (safe_load only) and check that it is a mapping."""
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except Exception as e:  # yaml.YAMLError carries the line and column
        detail = " ".join(str(e).split())  # one line: YAML puts the position on its own
        raise ParamsError(f"{path}: not valid YAML: {detail}") from None
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: must hold a mapping of sections, got {type(raw).__name__}")
    return dict(raw)


def section(params: Mapping, name: str, cls: type[T]) -> T:
    """Parse top-level section ``name`` of loaded params into ``cls``."""
    if name not in params:
        raise ParamsError(f"{name}: section missing from params")
    return parse(cls, params[name], name)


def stage_parser(doc: str | None, *paths: str, corpus: bool = False) -> argparse.ArgumentParser:
    """The command line every stage script shares: ``--params`` and the paths dvc.yaml hands
    it (each required); ``corpus`` adds the encoded corpus: ``--vocab --tokens --splits``."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml", help="(default: params.yaml)")
    for name in (("vocab", "tokens", "splits") if corpus else ()) + paths:
        ap.add_argument(f"--{name}", required=True)
    return ap

