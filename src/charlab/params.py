"""Typed, validated params: one dataclass per ``params.yaml`` section.

Every error names the key path (``train.rnn3.hidden_size``) and what is allowed, and is
raised before a stage does any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from charlab.errors import CharlabError
from charlab.io import read_json, read_yaml

T = TypeVar("T")

# numpy and torch take integers as int64: a larger one (a seed of 2**63) fails deep inside
INT_MAX = 2**63 - 1
# socket timeouts above ~1e10 s overflow the C time type; a day per read is already generous
MAX_TIMEOUT = 86_400.0
# YAML 1.1 (PyYAML) reads `1e-3` and `1.0e3` (no dot, or no exponent sign) as strings; for a
# number key such a string is the number the user meant
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
URL_SCHEMES = ("http", "https", "file")
# Bounds that keep the later stages' arithmetic finite and their sizes sane (issue 12): an
# n-gram table grows with the order and a history of 64 characters is practically never
# seen twice; add-k beyond 1e6 is already a uniform model (and k * vocab overflows near
# 1e300), below 1e-10 an unseen character's probability underflows to 0 on a large corpus;
# a Kneser-Ney discount below 1e-3 multiplies down to 0 over ten back-off levels; torch
# takes thread counts as C ints.
MAX_ORDER = 64
ADD_K_RANGE = (1e-10, 1e6)
MIN_DISCOUNT = 1e-3
MAX_THREADS = 4096


class ParamsError(CharlabError, ValueError):
    """A params value is missing, unknown, of the wrong type or out of range."""


class _WrongType(ParamsError):
    """The value is not of the key's type (a union tries its next type)."""


# --- checks: each returns an error message or None ---------------------------------------

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


def timeout_seconds(v: Any) -> str | None:
    if v <= 0:
        return "must be > 0"
    return None if v <= MAX_TIMEOUT else f"must be at most {MAX_TIMEOUT:g} seconds (a day)"


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a corpus source (http, https, file:// or a local path),
    or None. Parsing only: nothing is fetched."""
    got = shown(url)
    if not url.strip():
        return "must name a file or an http(s) URL, got an empty string"
    try:
        parsed = urllib.parse.urlparse(url)
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        return f"not a valid URL: {e} (got {got})"
    scheme = parsed.scheme
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a path (C:\\ on Windows)
        return None
    if scheme not in URL_SCHEMES:
        return (f"scheme {scheme!r} is not allowed; use one of {', '.join(URL_SCHEMES)} or "
                f"a local path (got {got})")
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return (f"a file:// URL names a file on this machine: host {parsed.netloc!r} is "
                    f"not allowed (use file:///path or file://localhost/path; got {got})")
        if not parsed.path:
            return f"a file:// URL needs a path (got {got})"
    elif not parsed.hostname:
        return f"an {scheme} URL needs a host (got {got})"
    return None


def at_most(limit: float, why: str) -> Callable[[Any], str | None]:
    """``v <= limit`` (and the caller's other checks); ``why`` is said with the limit."""
    def check(v: Any) -> str | None:
        return None if v <= limit else f"must be at most {limit:g} ({why})"
    return check


def both(*checks: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return next((p for p in (c(v) for c in checks) if p), None)
    return check


def sha256_hex(v: Any) -> str | None:
    if v is None or re.fullmatch(r"[0-9a-fA-F]{64}", v):
        return None
    return "must be 64 hex digits, or null to skip verification"


def _check(fn: Callable[[Any], str | None]) -> dict:
    return {"check": fn}


# --- sections ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadParams:
    url: str
    sha256: str | None = field(default=None, metadata=_check(sha256_hex))
    timeout: float = field(default=30.0, metadata=_check(timeout_seconds))
    retries: int = field(default=3, metadata=_check(non_negative))

    def validate(self, path: str) -> None:
        problem = url_problem(self.url)
        if problem:
            raise ParamsError(f"{path}.url: {problem}")


@dataclass(frozen=True)
class EncodeParams:
    val_fraction: float = field(default=0.05, metadata=_check(fraction))
    test_fraction: float = field(default=0.05, metadata=_check(fraction))

    def validate(self, path: str) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise ParamsError(
                f"{path}.val_fraction + {path}.test_fraction: must sum to < 1 (leaving a train "
                f"split), got {self.val_fraction} + {self.test_fraction}"
            )
        for key in ("val_fraction", "test_fraction"):
            if getattr(self, key) <= 0:
                raise ParamsError(f"{path}.{key}: must be > 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class NgramParams:
    orders: list[int] = field(default_factory=lambda: [4, 10])
    # kn: interpolated Kneser-Ney; mkn: modified KN (3 discounts); addk: add-k
    smoothing: Literal["kn", "mkn", "addk"] = "kn"
    add_k: float = field(default=0.01)
    # null: one discount per order, D = n1 / (n1 + 2 n2) (Ney et al.)
    discount: float | None = None

    def validate(self, path: str) -> None:
        if not self.orders:
            raise ParamsError(f"{path}.orders: must list at least one order")
        for i, o in enumerate(self.orders):
            if o < 0:
                raise ParamsError(f"{path}.orders[{i}]: must be >= 0, got {o}")
            if o > MAX_ORDER:
                raise ParamsError(f"{path}.orders[{i}]: must be at most {MAX_ORDER} (the table "
                                  f"grows with the order), got {o}")
        lo, hi = ADD_K_RANGE
        if not lo <= self.add_k <= hi:
            raise ParamsError(f"{path}.add_k: must be in [{lo:g}, {hi:g}] (beyond, probabilities "
                              f"underflow or the model is uniform), got {self.add_k}")
        if len(set(self.orders)) != len(self.orders):
            raise ParamsError(f"{path}.orders: must not repeat an order, got {self.orders}")
        if self.discount is not None and not MIN_DISCOUNT <= self.discount < 1:
            raise ParamsError(f"{path}.discount: must be in [{MIN_DISCOUNT:g}, 1) or null, got "
                              f"{self.discount}")


@dataclass(frozen=True)
class TrainParams:
    cell: Literal["rnn", "lstm", "gru"] = "rnn"
    layers: int = field(default=1, metadata=_check(positive))
    hidden_size: int = field(default=512, metadata=_check(positive))
    dropout: float = field(default=0.1, metadata=_check(fraction))
    batch_size: int = field(default=64, metadata=_check(positive))
    seq_length: int = field(default=100, metadata=_check(positive))
    lr: float = field(default=2e-3, metadata=_check(positive))
    max_steps: int = field(default=1000, metadata=_check(positive))
    eval_every: int = field(default=100, metadata=_check(positive))
    seed: int = field(default=1337, metadata=_check(non_negative))
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # 0: OMP_NUM_THREADS if set, else every core
    threads: int = field(default=0, metadata=_check(both(
        non_negative, at_most(MAX_THREADS, "torch threads per process"))))
    grad_clip: float = field(default=1.0, metadata=_check(non_negative))
    # 0: one-hot input, as in the lecture; else a learned embedding of this size
    embedding_size: int = field(default=0, metadata=_check(non_negative))
    # bf16: GEMMs in bfloat16 (fast on GPUs and on CPUs with AMX/AVX512-BF16, slow on
    # others); auto: bf16 where the device does it natively, else fp32
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # learning rate: linear warmup, then constant or cosine down to lr * min_lr_ratio
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = field(default=0, metadata=_check(non_negative))
    min_lr_ratio: float = field(default=0.1, metadata=_check(probability))
    # resume state written every this many steps; 0: at every evaluation row
    checkpoint_every: int = field(default=0, metadata=_check(non_negative))
    # true: continue from the resume state even if that run finished (e.g. more max_steps)
    resume: bool = False
    # stop after this many evaluations without a new best val loss; 0: never
    patience: int = field(default=0, metadata=_check(non_negative))
    # > 1: `dvc repro` trains under torchrun with this many data-parallel processes (DDP),
    # each on batch_size / nproc of the streams
    nproc: int = field(default=1, metadata=_check(both(
        positive, at_most(MAX_THREADS, "processes on this node"))))

    def validate(self, path: str) -> None:
        if self.batch_size % self.nproc:
            raise ParamsError(
                f"{path}.nproc: {self.nproc} processes must share batch_size "
                f"{self.batch_size} evenly (each trains on batch_size / nproc streams); use "
                "a batch_size that is a multiple of nproc"
            )


@dataclass(frozen=True)
class SampleParams:
    length: int = field(default=1000, metadata=_check(positive))
    prime: str = ""
    temperature: float = field(default=0.8, metadata=_check(non_negative))
    top_k: int | None = None
    seed: int = field(default=1337, metadata=_check(non_negative))

    def validate(self, path: str) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ParamsError(f"{path}.top_k: must be >= 1 or null, got {self.top_k}")


@dataclass(frozen=True)
class EvaluateParams:
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # 0: OMP_NUM_THREADS if set, else every core
    threads: int = field(default=0, metadata=_check(both(
        non_negative, at_most(MAX_THREADS, "torch threads per process"))))


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
    """Build dataclass ``cls`` from a params mapping, validating every key."""
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
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
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


def check_train_split(cfg: TrainParams, name: str, n_train: int) -> None:
    """Before training: the train split must hold ``batch_size`` streams of ``seq_length + 1``
    characters (the split is cut into that many contiguous streams)."""
    key = f"train.{name}"
    window = cfg.seq_length + 1
    if n_train < window:
        raise ParamsError(
            f"{key}.seq_length: {cfg.seq_length} is too long for the train split of {n_train} "
            f"characters (each step reads seq_length + 1 = {window}); use at most "
            f"{n_train - 1}, or a longer corpus"
        )
    if n_train // cfg.batch_size < window:
        raise ParamsError(
            f"{key}.batch_size: {cfg.batch_size} streams of seq_length + 1 = {window} "
            f"characters need {cfg.batch_size * window}, the train split has {n_train}; use "
            f"batch_size <= {n_train // window} or a shorter {key}.seq_length"
        )


MODEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def train_models(params: Mapping) -> dict[str, TrainParams]:
    """Every entry of ``train:``, validated; keys are the model names."""
    raw = params.get("train")
    if not isinstance(raw, Mapping):
        raise ParamsError("train: must map each model name to its settings")
    if not raw:
        raise ParamsError("train: lists no model; add at least one entry (name: settings), "
                          "e.g. from the default params.yaml")
    out = {}
    for name, entry in raw.items():
        # the name becomes a DVC stage (train@<name>), a command-line argument and a file
        # name (models/<name>.pt): nothing that could be read as a path or split in two
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise ParamsError(f"train.{shown(name)}: model names must be letters, digits, _ or - "
                              "(starting with a letter or _)")
        if re.fullmatch(r"ngram\d+", name):
            raise ParamsError(f"train.{name}: names ngram<order> are reserved for n-gram models")
        out[name] = parse(TrainParams, entry, f"train.{name}")
    return out


# --- every section at once: the `validate` stage -----------------------------------------

def _dataclass_section(cls: type) -> Callable[[Any, str], Any]:
    return lambda raw, path: parse(cls, raw, path)


# Every top-level section of params.yaml and the function that checks it (raw value, key
# path) -> parsed value. The validate stage runs them all before any other stage, so that a
# params error stops `dvc repro` before DVC deletes any output. A new section is one line.
SECTIONS: dict[str, Callable[[Any, str], Any]] = {
    "download": _dataclass_section(DownloadParams),
    "encode": _dataclass_section(EncodeParams),
    "ngram": _dataclass_section(NgramParams),
    "train": lambda raw, path: train_models({path: raw}),
    "sample": _dataclass_section(SampleParams),
    "evaluate": _dataclass_section(EvaluateParams),
}


def register_section(name: str, cls: type | Callable[[Any, str], Any]) -> None:
    """Add a section to what :func:`validate_all` checks: a params dataclass, or a function
    (raw value, key path) -> parsed value that raises :class:`ParamsError`."""
    SECTIONS[name] = _dataclass_section(cls) if dataclasses.is_dataclass(cls) else cls


def validate_all(params: Mapping) -> dict[str, Any]:
    """Every section of loaded params, parsed and checked: section name -> parsed value.
    A section params.yaml lacks, or one no stage knows (a typo), is an error too."""
    unknown = sorted((k for k in params if k not in SECTIONS), key=str)
    if unknown:
        raise ParamsError(f"{shown(unknown[0])}: unknown section; allowed sections: "
                          f"{', '.join(SECTIONS)}")
    out = {}
    for name, check in SECTIONS.items():
        if name not in params:
            raise ParamsError(f"{name}: section missing from params")
        out[name] = check(params[name], name)
    return out


# The validate stage's first output: constant, so that no stage reruns because validation
# ran again; only a failed validation (no file) stops the stages that depend on it.
PARAMS_OK = "every params section is valid\n"


class ModelSetError(CharlabError):
    """The model-set file (data/models.json) is missing or damaged."""


@dataclass(frozen=True)
class ModelSet:
    """Which models the pipeline has: the n-gram orders and the names of the train: entries.
    The validate stage writes it; sample, evaluate and report depend on it, so adding or
    removing a model reruns them (and only a change of the set does)."""

    ngram_orders: tuple[int, ...]
    trained: tuple[str, ...]

    @classmethod
    def from_params(cls, checked: Mapping[str, Any]) -> ModelSet:
        """From :func:`validate_all`'s result."""
        return cls(tuple(sorted(checked["ngram"].orders)), tuple(checked["train"]))

    def to_json(self) -> dict:
        return {"ngram_orders": list(self.ngram_orders), "trained": list(self.trained)}

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelSet:
        try:
            obj = read_json(path)
        except FileNotFoundError:
            raise ModelSetError(f"{path}: missing (the validate stage writes it: "
                                "`dvc repro validate`)") from None
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError
            raise ModelSetError(f"{path}: not a model-set file: {e}") from None
        orders, trained = (obj.get(k) if isinstance(obj, dict) else None
                           for k in ("ngram_orders", "trained"))
        if not (isinstance(orders, list) and all(type(o) is int for o in orders)
                and isinstance(trained, list) and all(isinstance(t, str) for t in trained)):
            raise ModelSetError(f"{path}: not a model-set file: expected "
                                '{"ngram_orders": [int, ...], "trained": [name, ...]}')
        return cls(tuple(orders), tuple(trained))


def stage_parser(doc: str | None, *paths: str, corpus: bool = False) -> argparse.ArgumentParser:
    """The command line every stage script shares: ``--params`` and the paths dvc.yaml hands
    it (each required); ``corpus`` adds the encoded corpus: ``--vocab --tokens --splits``."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml", help="(default: params.yaml)")
    for name in (("vocab", "tokens", "splits") if corpus else ()) + paths:
        ap.add_argument(f"--{name}", required=True)
    return ap

