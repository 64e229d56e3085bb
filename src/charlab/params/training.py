"""The training sections of params.yaml: ``train:`` and ``finetune:``, an entry per model.

An entry's keys are of two kinds: the keys every entry has (:class:`TrainParams`: the
optimiser, the schedule, the batch, the device...) and the keys of its ``cell``'s family
(:mod:`charlab.families`: the network's shape, e.g. ``layers``, ``hidden_size``), which the
family declares and checks. The file format is one flat mapping per entry.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from charlab import families
from charlab.families.base import Family
from charlab.params.core import (
    MAX_THREADS,
    ParamsError,
    at_most,
    both,
    check,
    non_negative,
    parse,
    positive,
    probability,
    shown,
)

# A model name becomes a DVC stage (train@<name>), words of a command line that a shell
# runs (dvc.yaml's `--model ${key}`, `--init models/${item.init_from}.pt`) and file names
# (models/<name>.pt): nothing a shell or a path could read as more than one plain word.
MODEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
NAME_RULE = "letters, digits, _ or - (starting with a letter or _)"
# A file name has at most 255 bytes (NAME_MAX; a name is ASCII, a byte per character). The
# longest built from model names is the analysis page of a pair, compare_<a>_vs_<b>.html
# (analysis.py; the others: models/<m>.pt and .pt.state, metrics/train/<m>.csv,
# metrics/runs/<m>.json, samples/<m>.txt, cells_<m>.html/.png, saturation_<m>.png), while
# DVC checks it out as <file>.<22 characters>.tmp (charlab.io's temp, .<file>.XXXXXXXX.tmp,
# is shorter): 2 * 105 + 17 + 27 = 254.
NAME_MAX = 255
MAX_NAME_LENGTH = (NAME_MAX - len("compare__vs_.html") - len(".0123456789abcdefghijkl.tmp")) // 2


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a model name (completing "must be ..."), or None."""
    if not MODEL_NAME.fullmatch(name):
        return NAME_RULE
    if len(name) > MAX_NAME_LENGTH:
        return (f"at most {MAX_NAME_LENGTH} characters (file names are built from them, the "
                "longest compare_<a>_vs_<b>.html and its temporary copies, and a file name has "
                f"at most {NAME_MAX} bytes), got {len(name)}")
    return None
TRAINED_SECTIONS = ("train", "finetune")


@dataclass(frozen=True)
class TrainParams:
    """One entry of ``train:`` or ``finetune:``: the keys every entry has, and ``net``, the
    keys its cell's family owns (build it with :func:`parse_entry`)."""

    net: Any = None  # the family's keys, e.g. RecurrentKeys; not a params key itself
    cell: str = "rnn"  # which network: charlab.families.CELLS
    batch_size: int = field(default=64, metadata=check(positive))
    lr: float = field(default=2e-3, metadata=check(positive))
    max_steps: int = field(default=1000, metadata=check(positive))
    eval_every: int = field(default=100, metadata=check(positive))
    seed: int = field(default=1337, metadata=check(non_negative))
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # 0: OMP_NUM_THREADS if set, else every core
    threads: int = field(default=0, metadata=check(both(
        non_negative, at_most(MAX_THREADS, "torch threads per process"))))
    grad_clip: float = field(default=1.0, metadata=check(non_negative))
    # what the network's matrix products compute in (charlab.runtime): fp32; tf32 (CUDA,
    # compute capability >= 8.0); bf16; auto: tf32 on such a GPU, bf16 on a CPU with native
    # bf16 (AMX/AVX512-BF16), else fp32
    precision: Literal["fp32", "tf32", "bf16", "auto"] = "fp32"
    # learning rate: linear warmup, then constant or cosine down to lr * min_lr_ratio
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = field(default=0, metadata=check(non_negative))
    min_lr_ratio: float = field(default=0.1, metadata=check(probability))
    # resume state written every this many steps; 0: at every evaluation row
    checkpoint_every: int = field(default=0, metadata=check(non_negative))
    # true: continue from the resume state even if that run finished (e.g. more max_steps)
    resume: bool = False
    # stop after this many evaluations without a new best val loss; 0: never
    patience: int = field(default=0, metadata=check(non_negative))
    # > 1: `dvc repro` trains under torchrun with this many data-parallel processes (DDP),
    # each on batch_size / nproc of the streams
    nproc: int = field(default=1, metadata=check(both(
        positive, at_most(MAX_THREADS, "processes on this node"))))
    # finetune: entries only: start from this checkpoint, models/<init_from>.pt (another
    # entry's, or one imported there); the library also takes a .pt path
    init_from: str | None = None

    @property
    def family(self) -> Family:
        return families.by_cell(self.cell)

    @property
    def seq_length(self) -> int:
        """Characters per training chunk (an RNN's ``seq_length``, a GPT's ``context``)."""
        return self.family.window(self.net)

    def network_config(self, vocab_size: int) -> Any:
        """The config of the network this entry trains, for ``vocab_size`` characters."""
        return self.family.config(self.cell, self.net, vocab_size)

    def to_dict(self) -> dict[str, Any]:
        """The entry as params.yaml writes it: one flat mapping (checkpoints keep it)."""
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("net", "cell")}
        return {"cell": self.cell, **dataclasses.asdict(self.net), **common}

    def validate(self, path: str) -> None:
        if self.init_from is not None and not self.init_from:
            raise ParamsError(f"{path}.init_from: must be a .pt path, an entry name, or null")
        if self.batch_size % self.nproc:
            raise ParamsError(
                f"{path}.nproc: {self.nproc} processes must share batch_size "
                f"{self.batch_size} evenly (each trains on batch_size / nproc streams); use "
                "a batch_size that is a multiple of nproc"
            )


COMMON_KEYS = tuple(f.name for f in dataclasses.fields(TrainParams) if f.name != "net")


def _cell(raw: Mapping, path: str) -> str:
    cell = raw.get("cell", "rnn")
    if not isinstance(cell, str) or cell not in families.CELLS:
        raise ParamsError(f"{path}.cell: must be one of "
                          f"{', '.join(repr(c) for c in families.CELLS)}, got {cell!r}")
    return cell


def _foreign_key(key: str, cell: str, path: str) -> ParamsError:
    """The error for a key of an entry of ``cell`` that its family does not have."""
    owners = [f for f in families.FAMILIES if key in f.own_keys()]
    if not owners:
        allowed = ("cell", *families.by_cell(cell).own_keys(), *COMMON_KEYS[1:])
        return ParamsError(f"{path}.{shown(key)}: unknown key; allowed keys: "
                           f"{', '.join(allowed)}")
    cells = [c for f in owners for c in f.cells]
    which = ", ".join(cells[:-1]) + " or " + cells[-1] if len(cells) > 1 else cells[0]
    return ParamsError(f"{path}.{key}: only a cell: {which} entry has this key "
                       f"({owners[0].key_help(key)}); this entry is cell: {cell}")


def parse_entry(raw: Any, path: str) -> TrainParams:
    """A ``train:`` / ``finetune:`` entry, every key checked; ``path`` (``train.rnn3``)
    starts every error message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: must be a mapping of keys to values, got {raw!r}")
    cell = _cell(raw, path)
    family = families.by_cell(cell)
    own = family.own_keys()
    for key in sorted(raw, key=str):
        if key not in own and key not in COMMON_KEYS:
            raise _foreign_key(key, cell, path)
    for f in dataclasses.fields(family.Keys):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and raw.get(f.name) is None:
            raise ParamsError(f"{path}.{f.name}: missing (required for cell: {cell}, "
                              f"{family.key_help(f.name)})")
    net = parse(family.Keys, {k: v for k, v in raw.items() if k in own}, path)
    common = parse(TrainParams, {k: v for k, v in raw.items() if k in COMMON_KEYS}, path)
    return dataclasses.replace(common, net=net)


def _entries(raw: Any, section: str, out: dict[str, TrainParams]) -> None:
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{section}: must map each model name to its settings")
    for name, entry in raw.items():
        problem = name_problem(name) if isinstance(name, str) else NAME_RULE
        if problem:
            raise ParamsError(f"{section}.{shown(name)}: model names must be {problem}")
        key = f"{section}.{name}"
        if re.fullmatch(r"ngram\d+", name):
            raise ParamsError(f"{key}: names ngram<order> are reserved for n-gram models")
        if name in out:
            raise ParamsError(f"{key}: train.{name} has this name already; model names are "
                              "shared by train: and finetune:")
        cfg = parse_entry(entry, key)
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
            problem = name_problem(cfg.init_from)
            if problem == NAME_RULE:
                # dvc.yaml interpolates it into the stage's command, which a shell runs
                raise ParamsError(f"{key}.init_from: must be a model name: {NAME_RULE}, as "
                                  f"dvc.yaml puts it in a command line; got {cfg.init_from!r}")
            if problem:
                raise ParamsError(f"{key}.init_from: must be a model name: {problem}")
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


def entry_key(params: Mapping, name: str) -> str:
    """The key path of model ``name``'s entry: ``train.<name>`` or ``finetune.<name>``."""
    return f"{section_of(params, name)}.{name}"


def init_entry(cfg: TrainParams) -> str | None:
    """The model name ``init_from`` gives (its checkpoint is ``models/<name>.pt``: another
    entry's, or one imported there), or None: no init, or a ``.pt`` path (library use)."""
    init = cfg.init_from
    if init is None or init.endswith(".pt") or "/" in init or "\\" in init:
        return None
    return init
