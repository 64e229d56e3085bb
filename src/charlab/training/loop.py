"""The training loop: :func:`train` reads top to bottom, one step per turn of the loop.

A step (truncated BPTT, as in pytorch/examples' word_language_model):

    batch_size streams, each a contiguous piece of the train split (charlab.training.batches)
    stream 0: |--chunk 0--|--chunk 1--|--chunk 2--| ...
    stream 1: |--chunk 0--|--chunk 1--|--chunk 2--| ...
    step k reads chunk k of every stream: x (B, T) and y = x shifted by one character; the
    state the network carries (an RNN's hidden state) flows from chunk k to chunk k + 1,
    detached, so gradients stop at the chunk's start.

Everything decided before the run is in the plan (:mod:`charlab.training.plan`); what
changes as it goes in a plain :class:`~charlab.training.state.TrainState`. Two files per
model: the best checkpoint by validation loss (:mod:`charlab.training.records`, what the
readers load), and the resume state beside it (:mod:`charlab.training.resume`: everything
to continue bit for bit), written at every validation row or every ``checkpoint_every``
steps, on SIGINT/SIGTERM (:mod:`charlab.training.guard`) and at the end. Under DVC the
resume state must not be a plain output (DVC deletes outputs before a stage runs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from charlab import checkpoint as ckpt
from charlab.encoding import Corpus
from charlab.families import family_of
from charlab.families.base import detach_state
from charlab.params.training import TrainParams
from charlab.runtime import FP32, float32_gemms
from charlab.training import distributed as ddp
from charlab.training import finetune, records, resume
from charlab.training.batches import StreamBatches
from charlab.training.guard import Guard
from charlab.training.plan import RunPlan
from charlab.training.state import TrainState


@dataclass
class TrainResult:
    name: str
    steps: int
    best_step: int
    best_val_loss: float
    final_val_loss: float
    train_seconds: float  # optimisation only, evaluation excluded
    elapsed_seconds: float  # wall time of the run(s), evaluation included
    device: str
    precision: str
    num_params: int
    resumed_from: int | None
    stopped_early: bool
    curve: list[dict[str, float]]


def train(plan: RunPlan, corpus: Corpus) -> TrainResult:
    """Train the plan's entry on ``corpus``: write the best checkpoint, the loss curve, the
    run info and the resume state where the plan says. Raises
    :class:`~charlab.training.guard.TrainingDiverged` on NaN/inf and
    :class:`~charlab.training.guard.TrainingInterrupted` after saving on SIGINT/SIGTERM.

    With several data-parallel ranks (``plan.world``, its process group already joined)
    each trains on its block of the ``batch_size`` streams under DDP, so the global batch and
    the maths are those of one process; rank 0 evaluates and writes every file.
    """
    cfg = plan.cfg
    with _compute_in(plan), Guard(plan) as guard:
        s, data, val = _start(plan, corpus)
        with _progress_bar(plan, s) as bar:
            s.go_on()
            if not s.complete and s.step and _row_due(cfg, s.step) and (
                    not s.curve or s.curve[-1]["step"] < s.step):
                _after_step(plan, s, guard, corpus, val, bar)  # the row an interruption skipped
            while not s.complete and s.step < cfg.max_steps:
                for g in s.opt.param_groups:
                    g["lr"] = lr_at(cfg, s.step)
                x, y, new_epoch = data.batch(s.step)
                if new_epoch:
                    s.hidden = None
                logits, hidden = s.net(x, s.hidden)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                       y.reshape(-1))
                s.opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(),
                                                      cfg.grad_clip or math.inf)
                guard.record(s, loss, norm)  # off CUDA: stops before a non-finite update
                s.opt.step()
                s.hidden = detach_state(hidden)
                s.step += 1
                s.meters.chars += x.numel()
                if plan.on_step is not None:
                    plan.on_step(s.step, s.model)
                bar.update(1)
                # before the step's evaluation, which can outlast the grace period torchrun
                # gives before SIGKILL; a resumed run does the skipped row first
                if guard.stop_requested(s.step):
                    _save_state(plan, s, guard, corpus)
                    stop = guard.interrupted(s.step)
                    _say(plan, str(stop))
                    raise stop
                _after_step(plan, s, guard, corpus, val, bar)
        s.complete = True
        _save_state(plan, s, guard, corpus)
    return _result(plan, s)


def lr_at(cfg: TrainParams, step: int) -> float:
    """Learning rate for 0-based step ``step``: linear warmup, then constant or cosine."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate_loss(model: torch.nn.Module, ids: np.ndarray, device: torch.device) -> float:
    """Character-weighted mean NLL (nats) of ``ids[1:]``, scored as evaluate scores it.

    In float32 whatever the training precision, as the evaluate stage scores: the val
    loss that picks the best checkpoint is the number a reader of the metrics sees.
    """
    trained_in = model.recurrence_dtype, model.head_dtype
    model.set_precision(None, None)
    try:
        with float32_gemms(FP32):
            lm = family_of(model).language_model(model, device)
            lp = lm.log_probs(np.asarray(ids, dtype=np.int64))
    finally:
        model.set_precision(*trained_in)
    return float(-lp.mean())


# --- before the loop -------------------------------------------------------------------------

@contextlib.contextmanager
def _compute_in(plan: RunPlan) -> Iterator[None]:
    """Torch threads and GEMM precision as the plan says, for the duration."""
    before = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    # Gradients through many tanh steps reach denormal floats, which cost ~10x on x86.
    torch.set_flush_denormal(True)
    try:
        with float32_gemms(plan.precision):
            yield
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)


def _start(plan: RunPlan, corpus: Corpus
           ) -> tuple[TrainState, StreamBatches, np.ndarray | None]:
    """The network (fresh, from a fine-tune's init, or resumed), its optimiser and batches;
    and the val split rank 0 scores (8 bytes a character, not on every rank)."""
    cfg, world = plan.cfg, plan.world
    data = StreamBatches(corpus.split_file("train"), cfg.batch_size, cfg.seq_length, cfg.seed,
                         plan.device, rows=world.rows(cfg.batch_size))
    torch.manual_seed(cfg.seed)
    config = cfg.network_config(corpus.vocab.size)
    model = cfg.family.build(config)
    init = None
    if plan.paths.init is not None:
        init = finetune.init_weights(model, config, corpus.vocab, plan.paths.init,
                                     f"{plan.key}.init_from")
    model.to(plan.device)
    model.set_precision(plan.precision.recurrence, plan.precision.head)
    net = model
    if world.distributed:  # one gradient all-reduce per step, overlapped with the backward
        net = DistributedDataParallel(
            model, device_ids=[plan.device] if plan.device.type == "cuda" else None)
    resume.seed_rank(plan)
    s = TrainState(model, net, torch.optim.Adam(model.parameters(), lr=cfg.lr), init=init)
    saved = resume.load(plan, corpus, config)
    if saved is not None:
        resume.restore(plan, s, saved)
        _say(plan, f"{plan.name}: resuming from step {s.step} ({plan.paths.resume_state})")
    elif world.main:
        plan.paths.resume_state.unlink(missing_ok=True)
    # one line a log reader (dvc queue logs, CI) can check: where and how this trains
    parts = plan.precision.parts()
    procs = (f", {world.size} processes (DDP, {cfg.batch_size // world.size} streams each)"
             if world.distributed else "")
    _say(plan, f"train {plan.name}: device {plan.device} ({plan.hardware.name}), precision "
               f"{plan.precision.name} (recurrence {parts['recurrence']}, head "
               f"{parts['head']}), {torch.get_num_threads()} threads{procs}")
    if s.best.weights is not None and world.main:
        # outputs may have been deleted (DVC does before a stage runs): rewrite them
        records.save_best(plan, s, corpus.vocab)
        records.write_progress(plan, s)
    model.train()
    val = np.asarray(corpus.split("val"), dtype=np.int64) if world.main else None
    return s, data, val


def _progress_bar(plan: RunPlan, s: TrainState) -> tqdm:
    show = plan.progress if plan.world.main else False
    return tqdm(total=plan.cfg.max_steps, initial=s.step, desc=f"train {plan.name}",
                unit="step", disable=None if show is None else not show,
                dynamic_ncols=True, mininterval=1.0)


# --- after a step ----------------------------------------------------------------------------

def _row_due(cfg: TrainParams, step: int) -> bool:
    return step % cfg.eval_every == 0 or step == cfg.max_steps


def _after_step(plan: RunPlan, s: TrainState, guard: Guard, corpus: Corpus,
                val: np.ndarray | None, bar: tqdm) -> None:
    """The curve row and the resume state due at this step."""
    cfg = plan.cfg
    if _row_due(cfg, s.step):
        _row(plan, s, guard, corpus, val, bar)
        if cfg.checkpoint_every == 0:
            _save_state(plan, s, guard, corpus)
    if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
        _save_state(plan, s, guard, corpus)


def _pause(plan: RunPlan, s: TrainState, guard: Guard) -> None:
    """Stop the training clock, the losses of the last steps counted."""
    guard.drain(s)
    if plan.device.type == "cuda":
        torch.cuda.synchronize()
    s.pause()


def _row(plan: RunPlan, s: TrainState, guard: Guard, corpus: Corpus,
         val: np.ndarray | None, bar: tqdm) -> None:
    """A curve row: the val loss (rank 0 scores the whole split, the others wait for its
    number), the train loss and throughput since the last row, the best model, patience."""
    world, cfg = plan.world, plan.cfg
    _pause(plan, s, guard)
    loss = evaluate_loss(s.model, val, plan.device) if world.main else None
    loss = float(ddp.from_main(world, loss, slow=True))
    if not math.isfinite(loss):
        raise guard.diverged(s, s.step, f"validation loss {loss}")
    m = s.meters  # of the global batch: summed over ranks
    loss_sum, loss_count, chars = ddp.sum_all(world, [m.loss_sum, m.loss_count, m.chars],
                                              plan.device)
    train_loss = loss_sum / max(1, loss_count)
    cps = chars / max(m.row_sec, 1e-9)
    m.close_row()
    s.curve.append({"step": s.step, "train_loss": train_loss, "val_loss": loss,
                    "chars_per_sec": cps, "elapsed_sec": s.elapsed()})
    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{loss:.3f}", cps=f"{cps:.0f}")
    if s.best.offer(loss, s.step, s.model.state_dict()) and world.main:
        records.save_best(plan, s, corpus.vocab)
    if world.main:
        records.write_progress(plan, s)
    s.go_on()
    if cfg.patience and s.best.bad_evals >= cfg.patience:
        _say(plan, f"{plan.name}: early stop at step {s.step}: no better val loss in "
                   f"{s.best.bad_evals} evaluations (best {s.best.val:.4f} at step "
                   f"{s.best.step})")
        s.stopped_early = s.complete = True


def _save_state(plan: RunPlan, s: TrainState, guard: Guard, corpus: Corpus) -> None:
    _pause(plan, s, guard)
    state = resume.capture(plan, s, corpus)  # every rank: it gathers their parts
    if plan.world.main:
        ckpt.save(state.to_dict(), plan.paths.resume_state)
    s.go_on()


def _say(plan: RunPlan, msg: str) -> None:
    if plan.world.main:
        tqdm.write(msg)


def _result(plan: RunPlan, s: TrainState) -> TrainResult:
    last = s.curve[-1] if s.curve else None
    return TrainResult(
        name=plan.name, steps=s.step, best_step=s.best.step, best_val_loss=s.best.val,
        final_val_loss=last["val_loss"] if last else math.nan,
        train_seconds=s.meters.total_sec, elapsed_seconds=s.elapsed(),
        device=str(plan.device), precision=plan.precision.name,
        num_params=s.model.num_params(), resumed_from=s.resumed_from,
        stopped_early=s.stopped_early, curve=list(s.curve))
