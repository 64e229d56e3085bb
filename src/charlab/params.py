"""Typed, validated params: one dataclass per ``params.yaml`` section.

Every error names the key path (``train.rnn3.hidden_size``) and what is allowed, and is
raised before a stage does any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from charlab.errors import CharlabError
from charlab.io import read_yaml
from charlab.ngram_choices import (
    DISCOUNT_MAX,
    DISCOUNT_MIN,
    MIN_ORDER,
    Smoothing,
    discount_in_range,
)

T = TypeVar("T")


class ParamsError(CharlabError, ValueError):
    """A params value is missing, unknown, of the wrong type or out of range."""


# --- checks: each returns an error message or None ---------------------------------------

def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def probability(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


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
    timeout: float = field(default=30.0, metadata=_check(positive))
    retries: int = field(default=3, metadata=_check(non_negative))


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
    add_k: float = field(default=0.01, metadata=_check(positive))
    # null: one discount per order, D = n1 / (n1 + 2 n2) (Ney et al.)
    discount: float | None = None

    def validate(self, path: str) -> None:
        if not self.orders:
            raise ParamsError(f"{path}.orders: must list at least one order")
        for i, o in enumerate(self.orders):
            if o < MIN_ORDER:
                raise ParamsError(f"{path}.orders[{i}]: must be >= {MIN_ORDER}, got {o}")
        if len(set(self.orders)) != len(self.orders):
            raise ParamsError(f"{path}.orders: must not repeat an order, got {self.orders}")
        # the open interval: why, in charlab.ngram_choices
        if self.discount is not None and not discount_in_range(self.discount,
                                                               open_interval=True):
            raise ParamsError(f"{path}.discount: must be in ({DISCOUNT_MIN:g}, "
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
    threads: int = field(default=0, metadata=_check(non_negative))
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
    nproc: int = field(default=1, metadata=_check(positive))
    # gpt only (required there): attention heads, and the window of characters it reads;
    # a GPT trains on windows of `context` characters (its seq_length is context)
    heads: int | None = field(default=None, metadata=_check(positive))
    context: int | None = field(default=None, metadata=_check(positive))
    # finetune: entries only: start from this checkpoint, models/<init_from>.pt (another
    # entry's, or one imported there); the library also takes a .pt path
    init_from: str | None = None

    def check_given(self, given: set[str], path: str) -> None:
        """Keys of the other family of networks are errors, not silently ignored."""
        if self.cell == "gpt":
            for key in RNN_ONLY_KEYS:
                if key in given:
                    raise ParamsError(
                        f"{path}.{key}: not a key of cell: gpt ({RNN_ONLY_KEYS[key]}); "
                        f"a gpt entry has {', '.join(GPT_ONLY_KEYS)} instead")
            for key in GPT_ONLY_KEYS:
                if getattr(self, key) is None:
                    raise ParamsError(f"{path}.{key}: missing (required for cell: gpt, "
                                      f"{GPT_ONLY_KEYS[key]})")
        else:
            for key in GPT_ONLY_KEYS:
                if key in given:
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
    threads: int = field(default=0, metadata=_check(non_negative))


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
            except ParamsError:
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
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ParamsError(f"{path}: must be {_type_name(tp)}, got {value!r}")


def parse(cls: type[T], raw: Any, path: str) -> T:
    """Build dataclass ``cls`` from a params mapping, validating every key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: must be a mapping of keys to values, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"{path}.{unknown[0]}: unknown key; allowed keys: {', '.join(fields)}"
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


def _entries(raw: Any, section: str, out: dict[str, TrainParams]) -> None:
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{section}: must map each model name to its settings")
    for name, entry in raw.items():
        key = f"{section}.{name}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(name)):
            raise ParamsError(f"{key}: model names must be letters, digits, _ or -")
        if re.fullmatch(r"ngram\d+", str(name)):
            raise ParamsError(f"{key}: names ngram<order> are reserved for n-gram models")
        if str(name) in out:
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
        out[str(name)] = cfg


def train_models(params: Mapping) -> dict[str, TrainParams]:
    """Every trained model: the entries of ``train:``, then those of ``finetune:`` (optional;
    each starts from the checkpoint ``init_from`` names); keys are the model names."""
    raw = params.get("train")
    if not isinstance(raw, Mapping) or not raw:
        raise ParamsError("train: must map each model name to its settings")
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


def stage_parser(doc: str | None, *paths: str, corpus: bool = False) -> argparse.ArgumentParser:
    """The command line every stage script shares: ``--params`` and the paths dvc.yaml hands
    it (each required); ``corpus`` adds the encoded corpus: ``--vocab --tokens --splits``."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml", help="(default: params.yaml)")
    for name in (("vocab", "tokens", "splits") if corpus else ()) + paths:
        ap.add_argument(f"--{name}", required=True)
    return ap

