"""The resume state: what continues an interrupted run bit for bit, and when it may.

One file beside the checkpoint (``<checkpoint>.state``), a :class:`ResumeState` with named
fields saved as a plain dict of tensors, numbers and strings (``charlab.checkpoint`` writes
and reads it, checksummed, ``weights_only``). The policy of :func:`load_resume_state`:
with ``resume: true`` a saved run continues whatever its settings, unless its network shape
or vocabulary changed; without, only an unfinished run with the very same settings does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from charlab import checkpoint as ckpt
from charlab.checkpoint import CheckpointError
from charlab.encoding import Corpus
from charlab.model import Hidden
from charlab.params import TrainParams

# Params that do not change what training computes: a run interrupted under other values
# of these still resumes on its own.
RUN_ONLY_KEYS = ("device", "threads", "resume", "checkpoint_every", "nproc")
# Params that fix the network's shape: `resume: true` refuses to continue if they changed.
MODEL_KEYS = ("cell", "layers", "hidden_size", "embedding_size", "heads", "context")


@dataclass
class Meters:
    """Counters of a run: since the last curve row (the first three and ``row_sec``) and
    over the whole training (``total_sec``, ``elapsed_before``: earlier runs' wall time)."""

    loss_sum: float = 0.0
    loss_count: int = 0
    chars: int = 0
    row_sec: float = 0.0  # optimisation time since the last row
    total_sec: float = 0.0  # optimisation time of every row so far
    elapsed_before: float = 0.0

    def close_row(self) -> None:
        """A curve row took the counts since the last one."""
        self.total_sec += self.row_sec
        self.loss_sum, self.loss_count, self.chars, self.row_sec = 0.0, 0, 0, 0.0


@dataclass
class Best:
    """The best validation row so far, its weights (CPU copies), and the evaluations since
    it (for ``patience``)."""

    val: float = math.inf
    step: int = 0
    weights: dict[str, torch.Tensor] | None = None
    bad_evals: int = 0

    def offer(self, val: float, step: int, weights: dict[str, torch.Tensor]) -> bool:
        """Take row ``step`` if its ``val`` beats the best; whether it did."""
        if val < self.val:
            self.val, self.step, self.bad_evals = val, step, 0
            self.weights = ckpt.to_cpu(weights)  # a copy: it must not follow training
            return True
        self.bad_evals += 1
        return False


@dataclass
class ResumeState:
    """Everything that continues a run bit for bit (field names are the file's keys)."""

    name: str
    model_config: dict[str, Any]
    vocab: list[str]
    params: dict[str, Any]
    precision: str
    corpus: dict[str, Any]  # corpus_id() of the corpus it trained on
    step: int
    complete: bool
    stopped_early: bool
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    world_size: int
    rng_ranks: list[list[Any]]  # per rank: [CPU RNG state, [CUDA RNG state] or []]
    hidden: list[torch.Tensor] | None  # the global batch's carried state, per tensor
    curve: list[dict[str, float]]
    best: Best = field(default_factory=Best)
    meters: Meters = field(default_factory=Meters)
    init: dict[str, Any] | None = None  # the weights a fine-tune started from

    def to_dict(self) -> dict[str, Any]:
        out = _fields(self)
        out["best"], out["meters"] = _fields(self.best), _fields(self.meters)
        return {"format": ckpt.STATE_FORMAT, "version": ckpt.FORMAT_VERSION, **out}

    @classmethod
    def from_dict(cls, obj: dict[str, Any], path: Path) -> ResumeState:
        try:
            values = {f.name: obj[f.name] for f in dataclasses.fields(cls) if f.name in obj}
            values["best"] = Best(**obj["best"])
            values["meters"] = Meters(**obj["meters"])
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: damaged resume state: {e}") from None


def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values as they are (``asdict`` would deep-copy the
    tensors)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def corpus_id(corpus: Corpus) -> dict[str, Any]:
    return {"sha256": corpus.manifest.sha256,
            "splits": {k: list(v) for k, v in corpus.manifest.splits.items()}}


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    # a key added later with a null default (heads, init_from) leaves old states comparable
    return {k: v for k, v in params.items() if k not in RUN_ONLY_KEYS and v is not None}


def load_resume_state(path: Path, cfg: TrainParams, corpus: Corpus) -> ResumeState | None:
    """The resume state to continue from (its tensors on the CPU), or None to start afresh.

    On the CPU whatever the run's device: ``load_state_dict`` moves the model's and Adam's
    tensors where they belong but leaves Adam's ``step`` counters on the CPU, where Adam
    reads them without a host sync (a step counter on the GPU costs one ``.item()`` sync
    per optimizer step), and only the hidden state is moved by hand (:func:`restore_hidden`).
    """
    if not path.is_file():
        if cfg.resume:
            tqdm.write(f"resume: no resume state at {path}; training from scratch")
        return None
    try:
        obj = ckpt.read(path, "cpu")
        if obj["format"] != ckpt.STATE_FORMAT:
            raise CheckpointError(f"{path}: a best-model checkpoint, not a resume state")
        state = ResumeState.from_dict(obj, path)
    except CheckpointError as e:
        if cfg.resume:
            raise
        tqdm.write(f"ignoring unusable resume state: {e}")
        return None
    same_vocab = tuple(state.vocab) == corpus.vocab.chars
    same_data = same_vocab and state.corpus == corpus_id(corpus)
    if cfg.resume:
        changed = [k for k in MODEL_KEYS if state.params.get(k) != getattr(cfg, k)]
        if changed:
            raise CheckpointError(
                f"{path}: resume: true, but the saved run has another network shape "
                f"({', '.join(f'{k}: {state.params.get(k)}' for k in changed)}); delete it "
                "or set resume: false"
            )
        if not same_vocab:
            raise CheckpointError(f"{path}: resume: true, but the saved run used another "
                                  "vocabulary; delete it or set resume: false")
        if not same_data:
            tqdm.write("resume: the corpus changed since the saved run; continuing anyway")
        return state
    # Without `resume: true`, only an unfinished run with the very same settings continues.
    if (not state.complete and same_data
            and _comparable(state.params) == _comparable(dataclasses.asdict(cfg))):
        return state
    return None


def restore_hidden(saved: list[torch.Tensor], rows: range, like: torch.Tensor) -> Hidden:
    """This rank's rows of a saved global hidden state, ready for the next forward.

    Contiguous (cuDNN rejects a strided ``hx``; a slice of the batch dimension is one) and in
    ``like``'s dtype and device: the parameters' dtype, whatever precision saved it.
    """
    h = [t[:, rows.start:rows.stop].to(like.device, like.dtype).contiguous() for t in saved]
    return (h[0], h[1]) if len(h) == 2 else h[0]
