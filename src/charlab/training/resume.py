"""The resume state: what continues an interrupted run bit for bit, and when it may.

One file beside the checkpoint (``<checkpoint>.state``), a :class:`ResumeState` with named
fields saved as a plain dict of tensors, numbers and strings (``charlab.checkpoint`` writes
and reads it, checksummed, ``weights_only``). The policy of :func:`load_resume_state`:
with ``resume: true`` a saved run continues whatever its settings, unless its network shape
or vocabulary changed; without, only an unfinished run with the very same settings does.
:func:`capture` and :func:`restore` move a run's :class:`TrainState` to and from it, every
rank's part included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from charlab import checkpoint as ckpt
from charlab.checkpoint import CheckpointError, to_cpu
from charlab.encoding import Corpus
from charlab.families import by_cell, from_config_dict
from charlab.families.base import State, state_from_tensors, state_tensors
from charlab.params.training import TrainParams
from charlab.training import distributed as ddp
from charlab.training.plan import RunPlan
from charlab.training.state import Best, Meters, TrainState

# Params that do not change what training computes: a run interrupted under other values
# of these still resumes on its own.
RUN_ONLY_KEYS = ("device", "threads", "resume", "checkpoint_every", "nproc")


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
    # a key added later with a null default (init_from) leaves old states comparable
    return {k: v for k, v in params.items() if k not in RUN_ONLY_KEYS and v is not None}


def _shape_change(saved: dict[str, Any], config: Any) -> list[str]:
    """The shape keys in which a saved network config differs from ``config``, shown as the
    saved run had them (a damaged or foreign config differs in all)."""
    family = by_cell(config.cell)
    try:
        saved_family, saved_config = from_config_dict(saved)
    except ValueError:
        return [f"{k}: ?" for k in family.shape_keys]
    mine, theirs = family.shape(config), saved_family.shape(saved_config)
    keys = dict.fromkeys([*theirs, *mine])
    return [f"{k}: {theirs.get(k)}" for k in keys if theirs.get(k) != mine.get(k)]


def load_resume_state(path: Path, cfg: TrainParams, corpus: Corpus,
                      config: Any) -> ResumeState | None:
    """The resume state to continue from (its tensors on the CPU), or None to start afresh.
    ``config``: this run's network config, whose shape a ``resume: true`` must keep.

    On the CPU whatever the run's device: ``load_state_dict`` moves the model's and Adam's
    tensors where they belong but leaves Adam's ``step`` counters on the CPU, where Adam
    reads them without a host sync (a step counter on the GPU costs one ``.item()`` sync
    per optimizer step), and only the carried state is moved by hand (:func:`restore_hidden`).
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
        changed = _shape_change(state.model_config, config)
        if changed:
            raise CheckpointError(
                f"{path}: resume: true, but the saved run has another network shape "
                f"({', '.join(changed)}); delete it or set resume: false")
        if not same_vocab:
            raise CheckpointError(f"{path}: resume: true, but the saved run used another "
                                  "vocabulary; delete it or set resume: false")
        if not same_data:
            tqdm.write("resume: the corpus changed since the saved run; continuing anyway")
        return state
    # Without `resume: true`, only an unfinished run with the very same settings continues.
    if (not state.complete and same_data
            and _comparable(state.params) == _comparable(cfg.to_dict())):
        return state
    return None


def restore_hidden(saved: list[torch.Tensor], rows: range, like: torch.Tensor) -> State:
    """This rank's rows of a saved global carried state, ready for the next forward.

    Contiguous (cuDNN rejects a strided ``hx``; a slice of the batch dimension is one) and in
    ``like``'s dtype and device: the parameters' dtype, whatever precision saved it.
    """
    return state_from_tensors([t[:, rows.start:rows.stop].to(like.device, like.dtype)
                               .contiguous() for t in saved])


def derived_seed(*ints: int) -> int:
    return int(np.random.default_rng(list(ints)).integers(2**62))


def seed_rank(plan: RunPlan, step: int = 0) -> None:
    """Rank r > 0 draws its own dropout masks (rank 0 keeps the one-process stream)."""
    if plan.world.rank:
        torch.manual_seed(derived_seed(plan.cfg.seed, plan.world.rank, step))


def capture(plan: RunPlan, s: TrainState, corpus: Corpus) -> ResumeState:
    """The resume state; a collective: every rank calls it, rank 0 gets the whole."""
    world, device = plan.world, plan.device
    mine = to_cpu(state_tensors(s.hidden)) if s.hidden is not None else None
    # this rank's GPU only: a resume may see another number of GPUs per node
    rng_cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
    ranks = ddp.gather(world, (mine, torch.get_rng_state(), rng_cuda))
    if ranks[0][0] is None:
        hidden_all = None
    else:  # the global batch's carried state: rank shares joined along the batch
        hidden_all = [torch.cat([r[0][i] for r in ranks], dim=1) for i in range(len(mine))]
    # the loss and character counts since the last curve row, of the global batch
    m = s.meters
    loss_sum, loss_count, chars = ddp.sum_all(world, [m.loss_sum, m.loss_count, m.chars],
                                              device)
    meters = dataclasses.replace(m, loss_sum=loss_sum, loss_count=int(loss_count),
                                 chars=int(chars), elapsed_before=s.elapsed())
    return ResumeState(
        name=plan.name, model_config=s.model.config.to_dict(),
        vocab=list(corpus.vocab.chars), params=plan.cfg.to_dict(),
        precision=plan.precision.name, corpus=corpus_id(corpus), step=s.step,
        complete=s.complete, stopped_early=s.stopped_early,
        model=to_cpu(s.model.state_dict()), optimizer=to_cpu(s.opt.state_dict()),
        world_size=world.size, rng_ranks=[[r[1], r[2]] for r in ranks], hidden=hidden_all,
        curve=list(s.curve), best=s.best, meters=meters, init=s.init)


def restore(plan: RunPlan, s: TrainState, saved: ResumeState) -> None:
    """Continue ``s`` from ``saved``: weights, optimiser, step, RNG, carried state, curve."""
    world, cfg = plan.world, plan.cfg
    s.model.load_state_dict(saved.model)
    s.opt.load_state_dict(saved.optimizer)
    s.step = s.resumed_from = saved.step
    if len(saved.rng_ranks) == world.size:
        rng_cpu, rng_cuda = saved.rng_ranks[world.rank]
        torch.set_rng_state(rng_cpu.cpu())
        if plan.device.type == "cuda" and rng_cuda:
            torch.cuda.set_rng_state(rng_cuda[0].cpu(), plan.device)
    else:  # saved by another number of processes: the run goes on, not bit for bit
        if world.main:
            tqdm.write(f"{plan.name}: resuming with {world.size} processes a run saved by "
                       f"{len(saved.rng_ranks)}; dropout masks differ from an uninterrupted "
                       "run")
        torch.manual_seed(derived_seed(cfg.seed, 0, s.step))
        seed_rank(plan, s.step)
    if saved.hidden is not None:
        s.hidden = restore_hidden(saved.hidden, world.rows(cfg.batch_size),
                                  next(s.model.parameters()))
    s.curve = [dict(r) for r in saved.curve]
    s.best = dataclasses.replace(saved.best, weights=to_cpu(saved.best.weights))
    s.meters = dataclasses.replace(saved.meters)
    if not world.main:  # rank 0 carries the global counts, summed again at a row
        s.meters.loss_sum, s.meters.loss_count, s.meters.chars = 0.0, 0, 0
    s.init = saved.init if saved.init is not None else s.init
    s.stopped_early = saved.stopped_early
    # A finished run continues only if asked for more steps and it did not stop early.
    s.complete = saved.complete and (s.stopped_early or s.step >= cfg.max_steps)


def load(plan: RunPlan, corpus: Corpus, config: Any) -> ResumeState | None:
    """Rank 0 reads the resume state (other nodes may not see its disk) and hands it on; a
    problem with it is raised on every rank. Its tensors stay on the CPU."""
    state: ResumeState | None = None
    problem: str | None = None
    if plan.world.main:
        try:
            state = load_resume_state(plan.paths.resume_state, plan.cfg, corpus, config)
        except CheckpointError as e:
            if not plan.world.distributed:
                raise
            problem = str(e)
    state, problem = ddp.from_main(plan.world, (state, problem), slow=True)
    if problem is not None:
        raise CheckpointError(problem)
    return state
