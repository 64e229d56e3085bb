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
from charlab.ngram_choices import (
    ADD_K_RANGE,
    DISCOUNT_MAX,
    MAX_ORDER,
    MIN_DISCOUNT,
    MIN_ORDER,
    Smoothing,
)

T = TypeVar("T")

# numpy and torch take integers as int64: a larger one (a seed of 2**63) fails deep inside
INT_MAX = 2**63 - 1
# socket timeouts above ~1e10 s overflow the C time type; a day per read is already generous
MAX_TIMEOUT = 86_400.0
# YAML 1.1 (PyYAML) reads `1e-3` and `1.0e3` (no dot, or no exponent sign) as strings; for a
# number key such a string is the number the user meant
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
URL_SCHEMES = ("http", "https", "file")
# torch takes thread counts as C ints; the n-gram bounds are in charlab.ngram_choices
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
    smoothing: Smoothing = "kn"
    add_k: float = field(default=0.01)
    # null: one discount per order, D = n1 / (n1 + 2 n2) (Ney et al.)
    discount: float | None = None

    def validate(self, path: str) -> None:
        if not self.orders:
            raise ParamsError(f"{path}.orders: must list at least one order")
        for i, o in enumerate(self.orders):
            if o < MIN_ORDER:
                raise ParamsError(f"{path}.orders[{i}]: must be >= {MIN_ORDER}, got {o}")
            if o > MAX_ORDER:
                raise ParamsError(f"{path}.orders[{i}]: must be at most {MAX_ORDER} (the table "
                                  f"grows with the order), got {o}")
        lo, hi = ADD_K_RANGE
        if not lo <= self.add_k <= hi:
            raise ParamsError(f"{path}.add_k: must be in [{lo:g}, {hi:g}] (beyond, probabilities "
                              f"underflow or the model is uniform), got {self.add_k}")
        if len(set(self.orders)) != len(self.orders):
            raise ParamsError(f"{path}.orders: must not repeat an order, got {self.orders}")
        # why these bounds, and why narrower than the library's: charlab.ngram_choices
        if self.discount is not None and not MIN_DISCOUNT <= self.discount < DISCOUNT_MAX:
            raise ParamsError(f"{path}.discount: must be in [{MIN_DISCOUNT:g}, "
                              f"{DISCOUNT_MAX:g}) or null, got {self.discount}")


@dataclass(frozen=True)
class TrainParams:
    # rnn, lstm, gru: CharRNN; gpt: a decoder-only Transformer (charlab.gpt)
    cell: Literal["rnn", "lstm", "gru", "gpt"] = "rnn"
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
    # what the recurrent layers and the output layer compute in (charlab.runtime): fp32;
    # tf32 (CUDA, compute capability >= 8.0); bf16; auto: tf32 on such a GPU, bf16 on a CPU
    # with native bf16 (AMX/AVX512-BF16), else fp32
    precision: Literal["fp32", "tf32", "bf16", "auto"] = "fp32"
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
    # gpt only (required there): attention heads, and the window of characters it reads;
    # a GPT trains on windows of `context` characters (its seq_length is context)
    heads: int | None = field(default=None, metadata=_check(positive))
    context: int | None = field(default=None, metadata=_check(positive))
    # finetune: entries only: start from this checkpoint, models/<init_from>.pt (another
    # entry's, or one imported there); the library also takes a .pt path
    init_from: str | None = None

    def check_given(self, given: set[str], path: str) -> None:
        """Keys of the other family of networks are errors, not silently ignored."""
        # a key at its neutral value (a saved entry's own, as dataclasses.asdict writes it)
        # says nothing: null for the GPT's keys, the default (seq_length: context) for RNNs'
        neutral = {f.name: f.default for f in dataclasses.fields(self)}
        neutral["seq_length"] = self.context
        if self.cell == "gpt":
            for key in RNN_ONLY_KEYS:
                if key in given and getattr(self, key) != neutral[key]:
                    raise ParamsError(
                        f"{path}.{key}: not a key of cell: gpt ({RNN_ONLY_KEYS[key]}); "
                        f"a gpt entry has {', '.join(GPT_ONLY_KEYS)} instead")
            for key in GPT_ONLY_KEYS:
                if getattr(self, key) is None:
                    raise ParamsError(f"{path}.{key}: missing (required for cell: gpt, "
                                      f"{GPT_ONLY_KEYS[key]})")
        else:
            for key in GPT_ONLY_KEYS:
                if key in given and getattr(self, key) is not None:
                    raise ParamsError(f"{path}.{key}: only a cell: gpt entry has this key "
                                      f"({GPT_ONLY_KEYS[key]}); this entry is cell: "
                                      f"{self.cell}")

    def validate(self, path: str) -> None:
        if self.cell == "gpt":
            assert self.heads is not None and self.context is not None
            if self.hidden_size % self.heads:
                raise ParamsError(
                    f"{path}.hidden_size: {self.hidden_size} must be a multiple of "
                    f"{path}.heads ({self.heads}): each head gets hidden_size / heads")
            # a GPT reads windows of `context` characters: the batches' length
            object.__setattr__(self, "seq_length", self.context)
        if self.init_from is not None and not self.init_from:
            raise ParamsError(f"{path}.init_from: must be a .pt path, an entry name, or null")
        if self.batch_size % self.nproc:
            raise ParamsError(
                f"{path}.nproc: {self.nproc} processes must share batch_size "
                f"{self.batch_size} evenly (each trains on batch_size / nproc streams); use "
                "a batch_size that is a multiple of nproc"
            )


RNN_ONLY_KEYS = {"embedding_size": "an RNN's input embedding; a GPT always embeds",
                 "seq_length": "an RNN's truncated-BPTT length; a GPT trains on windows of "
                               "context characters"}
GPT_ONLY_KEYS = {"heads": "attention heads, dividing hidden_size",
                 "context": "characters a GPT reads before each prediction"}


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


@dataclass(frozen=True)
class AnalyzeParams:
    # test characters shown in the PNG excerpts (the HTML pages hold the whole text)
    excerpt_chars: int = field(default=1200, metadata=_check(positive))
    # test characters the recurrent units are read on (from the start of the split)
    cells_chars: int = field(default=10000, metadata=_check(positive))
    # contexts listed where each model of a pair wins most, and characters shown before each
    top_contexts: int = field(default=20, metadata=_check(positive))
    context_chars: int = field(default=40, metadata=_check(positive))
    # more [model_a, model_b] pairs to compare; the best trained model against the best
    # n-gram is always compared
    pairs: list[list[str]] = field(default_factory=list)
    # 0: OMP_NUM_THREADS if set, else every core
    threads: int = field(default=0, metadata=_check(non_negative))

    def validate(self, path: str) -> None:
        for i, pair in enumerate(self.pairs):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ParamsError(f"{path}.pairs[{i}]: must name two different models, "
                                  f"got {pair!r}")

    def check_models(self, path: str, names: list[str]) -> None:
        """Every model a pair names must be one of the pipeline's ``names``."""
        for i, pair in enumerate(self.pairs):
            for j, name in enumerate(pair):
                if name not in names:
                    raise ParamsError(f"{path}.pairs[{i}][{j}]: unknown model {name!r}; "
                                      f"the models are {', '.join(names)}")


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
    check_given = getattr(obj, "check_given", None)
    if check_given is not None:
        check_given(set(raw), path)
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
    length = "context" if cfg.cell == "gpt" else "seq_length"
    if n_train < window:
        raise ParamsError(
            f"{key}.{length}: {cfg.seq_length} is too long for the train split of {n_train} "
            f"characters (each step reads {length} + 1 = {window}); use at most "
            f"{n_train - 1}, or a longer corpus"
        )
    if n_train // cfg.batch_size < window:
        raise ParamsError(
            f"{key}.batch_size: {cfg.batch_size} streams of {length} + 1 = {window} "
            f"characters need {cfg.batch_size * window}, the train split has {n_train}; use "
            f"batch_size <= {n_train // window} or a shorter {key}.{length}"
        )


MODEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _entries(raw: Any, section: str, out: dict[str, TrainParams]) -> None:
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{section}: must map each model name to its settings")
    for name, entry in raw.items():
        # the name becomes a DVC stage (train@<name>), a command-line argument and a file
        # name (models/<name>.pt): nothing that could be read as a path or split in two
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise ParamsError(f"{section}.{shown(name)}: model names must be letters, digits, "
                              "_ or - (starting with a letter or _)")
        key = f"{section}.{name}"
        if re.fullmatch(r"ngram\d+", name):
            raise ParamsError(f"{key}: names ngram<order> are reserved for n-gram models")
        if name in out:
            raise ParamsError(f"{key}: train.{name} has this name already; model names are "
                              "shared by train: and finetune:")
        cfg = parse(TrainParams, entry, key)
        if section == "train" and cfg.init_from is not None:
            raise ParamsError(
                f"{key}.init_from: a fine-tune is an entry of finetune:, not train: (its "
                f"stage, finetune@{name}, depends on the init checkpoint); move it there")
        if section == "finetune":
            if cfg.init_from is None:
                raise ParamsError(f"{key}.init_from: missing (required in finetune:, the "
                                  "checkpoint to start from)")
            if init_entry(cfg) is None:
                raise ParamsError(
                    f"{key}.init_from: must name a checkpoint in models/ (another entry, or "
                    f"one imported there: dvc import <repo> <path> -o models/<name>.pt), "
                    f"got {cfg.init_from!r}")
        out[name] = cfg


def train_models(params: Mapping) -> dict[str, TrainParams]:
    """Every trained model: the entries of ``train:``, then those of ``finetune:`` (optional;
    each starts from the checkpoint ``init_from`` names); keys are the model names."""
    raw = params.get("train")
    if not isinstance(raw, Mapping):
        raise ParamsError("train: must map each model name to its settings")
    if not raw:
        raise ParamsError("train: lists no model; add at least one entry (name: settings), "
                          "e.g. from the default params.yaml")
    out: dict[str, TrainParams] = {}
    _entries(raw, "train", out)
    _entries(params.get("finetune") or {}, "finetune", out)
    for name in out:
        seen = [name]
        while (init := init_entry(out[seen[-1]])) is not None and init in out:
            if init in seen:
                raise ParamsError(f"finetune.{seen[-1]}.init_from: a cycle of fine-tunes: "
                                  f"{' -> '.join([*seen, init])}")
            seen.append(init)
    return out


def section_of(params: Mapping, name: str) -> str:
    """``train`` or ``finetune``: where model ``name`` is defined (for key paths)."""
    return "finetune" if name in (params.get("finetune") or {}) else "train"


def init_entry(cfg: TrainParams) -> str | None:
    """The model name ``init_from`` gives (its checkpoint is ``models/<name>.pt``: another
    entry's, or one imported there), or None: no init, or a ``.pt`` path (library use)."""
    init = cfg.init_from
    if init is None or init.endswith(".pt") or "/" in init or "\\" in init:
        return None
    return init


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
    # train: and finetune: are checked together (names are shared, fine-tunes name other
    # entries): see validate_all
    "train": lambda raw, path: raw,
    "finetune": lambda raw, path: raw,
    "sample": _dataclass_section(SampleParams),
    "evaluate": _dataclass_section(EvaluateParams),
    "analyze": _dataclass_section(AnalyzeParams),
}
# sections params.yaml may leave out
OPTIONAL_SECTIONS = ("finetune",)


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
            if name in OPTIONAL_SECTIONS:
                continue
            raise ParamsError(f"{name}: section missing from params")
        out[name] = check(params[name], name)
    models = train_models(params)
    for name in ("train", "finetune"):
        out[name] = {m: cfg for m, cfg in models.items() if section_of(params, m) == name}
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
        return cls(tuple(sorted(checked["ngram"].orders)),
                   tuple(checked["train"]) + tuple(checked["finetune"]))

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

