"""The training loop: steps, meters, validation rows, the best model, resume, DDP calls.

Batches come from :mod:`charlab.batches`, devices and precision from :mod:`charlab.runtime`,
the file formats from :mod:`charlab.checkpoint`. Two files per model:
- ``checkpoint_path``: the best model by validation loss (weights, model config, vocab),
  rewritten atomically whenever a validation row improves on the best so far. Evaluation
  and sampling read this.
- the resume state (default: ``<checkpoint>.state`` beside it): everything needed to
  continue bit for bit — model, optimizer, step, RNG states, the carried hidden state, the
  loss curve so far and the best weights. Written every ``checkpoint_every`` steps (default:
  at every validation row), on SIGINT/SIGTERM and at the end. Under DVC it must not be a
  plain output (DVC deletes outputs before a stage runs).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from charlab import checkpoint as ckpt
from charlab import distributed as ddp
from charlab import finetune, networks
from charlab.batches import StreamBatches, TrainingError
from charlab.checkpoint import CheckpointError, default_state_path, to_cpu
from charlab.distributed import SINGLE, World
from charlab.encoding import Corpus
from charlab.io import atomic_open, write_json
from charlab.model import Hidden, detach_hidden
from charlab.params import ParamsError, TrainParams, check_train_split
from charlab.resume import (
    Best,
    Meters,
    ResumeState,
    corpus_id,
    load_resume_state,
    restore_hidden,
)
from charlab.runtime import (
    FP32,
    DeviceError,
    Precision,
    cpu_threads,
    float32_gemms,
    hardware,
    plan_precision,
    resolve_device,
)

CURVE_COLUMNS = ("step", "train_loss", "val_loss", "chars_per_sec", "elapsed_sec")

class TrainingDiverged(TrainingError):
    """The loss or gradient became NaN/inf."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; the resume state was saved first."""

    def __init__(self, message: str, step: int, signum: int) -> None:
        super().__init__(message)
        self.step = step
        self.signum = signum


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


def model_config(cfg: TrainParams, vocab_size: int) -> networks.Config:
    return networks.config_for(cfg, vocab_size)


def evaluate_loss(model: networks.Network, ids: np.ndarray, device: torch.device) -> float:
    """Character-weighted mean NLL (nats) of ``ids[1:]``, scored as evaluate scores it.

    In float32 whatever the training precision, as the evaluate stage scores: the val
    loss that picks the best checkpoint is the number a reader of the metrics sees.
    """
    trained_in = model.recurrence_dtype, model.head_dtype
    model.set_precision(None, None)
    try:
        with float32_gemms(FP32):
            lp = networks.language_model(model, device).log_probs(
                np.asarray(ids, dtype=np.int64))
    finally:
        model.set_precision(*trained_in)
    return float(-lp.mean())


def _derived_seed(*ints: int) -> int:
    return int(np.random.default_rng(list(ints)).integers(2**62))


# --- the loop --------------------------------------------------------------------------------

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


@contextlib.contextmanager
def _catch_signals(second_aborts: bool = True) -> Iterator[dict[str, int | None]]:
    """SIGINT/SIGTERM set a flag the loop checks between steps; a second one aborts, except
    under torchrun, which passes a Ctrl-C on to ranks that already had it from the terminal
    (torchrun itself kills ranks that do not stop in time)."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["signum"] is not None:
            if second_aborts:
                raise KeyboardInterrupt
            return
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(n))
    # Gradients through many tanh steps reach denormal floats, which cost ~10x on x86.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)


def _write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_open(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_COLUMNS)
        for r in rows:
            w.writerow([int(r["step"]), f"{r['train_loss']:.6f}", f"{r['val_loss']:.6f}",
                        f"{r['chars_per_sec']:.1f}", f"{r['elapsed_sec']:.3f}"])


def train(cfg: TrainParams, corpus: Corpus, *, checkpoint_path: str | os.PathLike,
          curve_path: str | os.PathLike, name: str = "model",
          state_path: str | os.PathLike | None = None, progress: bool | None = None,
          on_step: Callable[[int, torch.nn.Module], None] | None = None,
          world: World = SINGLE, run_info_path: str | os.PathLike | None = None,
          init_path: str | os.PathLike | None = None, section: str = "train"
          ) -> TrainResult:
    """Train one ``train:`` entry on ``corpus``; write the best checkpoint and loss curve.

    ``run_info_path``: where to write, beside the curve, how the run trained (device and
    its name, precision of each part, threads, processes, times) for the report, which then
    reads no weights.

    ``state_path`` defaults to :func:`default_state_path`. ``progress`` None shows the tqdm
    bar only on a terminal. ``on_step(step, model)`` runs after each optimiser step (tests
    use it to inject faults). Raises :class:`TrainingDiverged` on NaN/inf and
    :class:`TrainingInterrupted` after saving on SIGINT/SIGTERM.

    ``world``: this process's place among data-parallel ranks (its process group already
    initialised, see :mod:`charlab.distributed`). Each rank trains on its block of the
    ``batch_size`` streams under DDP, so the global batch and the maths are those of one
    process; rank 0 evaluates and writes every file.

    ``init_path``: the checkpoint ``cfg.init_from`` names (default: that path, or the
    entry's checkpoint beside ``checkpoint_path``); training starts from its weights
    (:mod:`charlab.finetune`) unless a resume state continues the run. ``section``: the
    params section of the entry, for the key path of its errors.
    """
    checkpoint_path = Path(checkpoint_path)
    curve_path = Path(curve_path)
    state_path = Path(state_path) if state_path else default_state_path(checkpoint_path)
    try:
        device = ddp.device_for(world, resolve_device(cfg.device))
    except ddp.DistributedError as e:
        raise DeviceError(f"train.{name}.nproc: {e}") from None
    hw = hardware(device)
    try:
        precision = plan_precision(cfg.precision, hw)
    except DeviceError as e:
        raise DeviceError(f"{section}.{name}.precision: {e}") from None
    if init_path is None:
        init_path = finetune.init_path(cfg, checkpoint_path.parent)
    with _threads(cfg.threads), float32_gemms(precision):
        run = _Run(cfg, corpus, device, precision, name, checkpoint_path, curve_path,
                   state_path, progress, on_step, world, init_path, section)
        run.run_info_path = None if run_info_path is None else Path(run_info_path)
        return run.run()


class _Run:
    """One call of :func:`train`: the loop, and the state it saves (:mod:`charlab.resume`)."""

    def __init__(self, cfg: TrainParams, corpus: Corpus, device: torch.device,
                 precision: Precision, name: str,
                 checkpoint_path: Path, curve_path: Path, state_path: Path,
                 progress: bool | None,
                 on_step: Callable[[int, torch.nn.Module], None] | None,
                 world: World, init_path: str | os.PathLike | None = None,
                 section: str = "train") -> None:
        self.cfg, self.corpus, self.device, self.name = cfg, corpus, device, name
        self.world = world
        self.plan = precision  # "auto" resolved: the dtype of each part
        self.precision = precision.name
        self.device_name = hardware(device).name
        self.checkpoint_path, self.curve_path, self.state_path = (
            checkpoint_path, curve_path, state_path)
        self.progress, self.on_step = progress, on_step
        self.run_info_path: Path | None = None
        self.vocab = corpus.vocab
        # rank 0 alone scores the val split; 8 bytes a character, not on every rank
        self.val = np.asarray(corpus.split("val"), dtype=np.int64) if world.main else None
        try:  # the key path in the message, as the train stage reports it
            check_train_split(cfg, name, len(corpus.split("train")))
        except ParamsError as e:
            raise TrainingError(str(e)) from None
        try:
            rows = world.rows(cfg.batch_size)
        except ddp.DistributedError as e:
            raise TrainingError(f"train.{name}: {e}") from None
        self.data = StreamBatches(corpus.split_file("train"), cfg.batch_size, cfg.seq_length,
                                  cfg.seed, device, rows=rows)
        torch.manual_seed(cfg.seed)
        self.mconfig = model_config(cfg, corpus.vocab.size)
        self.model = networks.build(self.mconfig)
        # what the checkpoint records of the weights training started from
        self.init: dict[str, Any] | None = None
        if init_path is not None:
            self.init = finetune.init_weights(self.model, self.mconfig, self.vocab, init_path,
                                              f"{section}.{name}.init_from")
        self.model.to(device)
        self.model.set_precision(precision.recurrence, precision.head)
        self.net: torch.nn.Module = self.model
        if world.distributed:
            # one gradient all-reduce per step, overlapped with the backward pass
            self.net = DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None)
        self._seed_rank()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.hidden: Hidden | None = None
        self.step = 0
        self.curve: list[dict[str, float]] = []
        self.best = Best()
        self.meters = Meters()
        self.complete = False
        self.stopped_early = False
        self.resumed_from: int | None = None
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, [loss, grad norm])
        self._clock = 0.0

    def _seed_rank(self, step: int = 0) -> None:
        """Rank r > 0 draws its own dropout masks (rank 0 keeps the one-process stream)."""
        if self.world.rank:
            torch.manual_seed(_derived_seed(self.cfg.seed, self.world.rank, step))

    def say(self, msg: str) -> None:
        if self.world.main:
            tqdm.write(msg)

    # --- state ---------------------------------------------------------------------------
    def _state(self) -> ResumeState:
        """The resume state; a collective: every rank calls it, rank 0 gets the whole."""
        hidden = self.hidden
        mine = None if hidden is None else to_cpu(list(hidden) if isinstance(hidden, tuple)
                                                else [hidden])
        # this rank's GPU only: a resume may see another number of GPUs per node
        rng_cuda = [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else []
        ranks = ddp.gather(self.world, (mine, torch.get_rng_state(), rng_cuda))
        if ranks[0][0] is None:
            hidden_all = None
        else:  # the global batch's hidden state: rank shares joined along the batch
            hidden_all = [torch.cat([r[0][i] for r in ranks], dim=1) for i in range(len(mine))]
        # the loss and character counts since the last curve row, of the global batch
        m = self.meters
        loss_sum, loss_count, chars = ddp.sum_all(
            self.world, [m.loss_sum, m.loss_count, m.chars], self.device)
        meters = dataclasses.replace(m, loss_sum=loss_sum, loss_count=int(loss_count),
                                     chars=int(chars), elapsed_before=self.elapsed())
        return ResumeState(
            name=self.name, model_config=self.mconfig.to_dict(), vocab=list(self.vocab.chars),
            params=dataclasses.asdict(self.cfg), precision=self.precision,
            corpus=corpus_id(self.corpus), step=self.step, complete=self.complete,
            stopped_early=self.stopped_early, model=to_cpu(self.model.state_dict()),
            optimizer=to_cpu(self.opt.state_dict()), world_size=self.world.size,
            rng_ranks=[[r[1], r[2]] for r in ranks], hidden=hidden_all,
            curve=list(self.curve), best=self.best, meters=meters, init=self.init)

    def _restore(self, state: ResumeState) -> None:
        self.model.load_state_dict(state.model)
        self.opt.load_state_dict(state.optimizer)
        self.step = self.resumed_from = state.step
        if len(state.rng_ranks) == self.world.size:
            rng_cpu, rng_cuda = state.rng_ranks[self.world.rank]
            torch.set_rng_state(rng_cpu.cpu())
            if self.device.type == "cuda" and rng_cuda:
                torch.cuda.set_rng_state(rng_cuda[0].cpu(), self.device)
        else:  # saved by another number of processes: the run goes on, not bit for bit
            self.say(f"{self.name}: resuming with {self.world.size} processes a run saved by "
                     f"{len(state.rng_ranks)}; dropout masks differ from an uninterrupted run")
            torch.manual_seed(_derived_seed(self.cfg.seed, 0, self.step))
            self._seed_rank(self.step)
        if state.hidden is not None:
            self.hidden = restore_hidden(state.hidden, self.world.rows(self.cfg.batch_size),
                                         next(self.model.parameters()))
        self.curve = [dict(r) for r in state.curve]
        self.best = dataclasses.replace(state.best, weights=to_cpu(state.best.weights))
        self.meters = dataclasses.replace(state.meters)
        if not self.world.main:  # rank 0 carries the global counts, summed again at a row
            self.meters.loss_sum, self.meters.loss_count, self.meters.chars = 0.0, 0, 0
        self.init = state.init if state.init is not None else self.init
        self.stopped_early = state.stopped_early
        # A finished run continues only if asked for more steps and it did not stop early.
        self.complete = state.complete and (self.stopped_early
                                            or self.step >= self.cfg.max_steps)

    def _write_curve(self) -> None:
        """The loss curve and, beside it, how the run trains (both small, rank 0 only)."""
        _write_curve(self.curve_path, self.curve)
        if self.run_info_path is not None:
            write_json(self.run_info_path, self.run_info())

    def run_info(self) -> dict[str, Any]:
        last = self.curve[-1] if self.curve else {}
        return {"name": self.name, "device": self.device.type, "device_name": self.device_name,
                "precision": self.precision, "precision_parts": self.plan.parts(),
                "threads": torch.get_num_threads(), "processes": self.world.size,
                "steps": int(last.get("step", 0)), "best_step": self.best.step,
                "best_val_loss": self.best.val if math.isfinite(self.best.val) else None,
                "train_seconds": self.meters.total_sec,
                "elapsed_seconds": float(last.get("elapsed_sec", 0.0)),
                "params": self.model.num_params()}

    def _checkpoint(self) -> dict[str, Any]:
        return {"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.FORMAT_VERSION, "name": self.name,
                "model_config": self.mconfig.to_dict(), "vocab": list(self.vocab.chars),
                "params": dataclasses.asdict(self.cfg), "precision": self.precision,
                "precision_parts": self.plan.parts(),
                "device": self.device.type, "device_name": self.device_name,
                "step": self.best.step, "val_loss": self.best.val, "model": self.best.weights,
                "init": self.init}

    def elapsed(self) -> float:
        return self.meters.elapsed_before + time.perf_counter() - self.t0

    # --- loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.t0 = time.perf_counter()
        state = self._load_state()
        if state is not None:
            self._restore(state)
            self.say(f"{self.name}: resuming from step {self.step} ({self.state_path})")
        elif self.world.main:
            self.state_path.unlink(missing_ok=True)
        # one line a log reader (dvc queue logs, CI) can check: where and how this trains
        parts = self.plan.parts()
        procs = (f", {self.world.size} processes (DDP, {self.cfg.batch_size // self.world.size}"
                 " streams each)" if self.world.distributed else "")
        self.say(f"train {self.name}: device {self.device} ({self.device_name}), precision "
                 f"{self.precision} (recurrence {parts['recurrence']}, head {parts['head']}), "
                 f"{torch.get_num_threads()} threads{procs}")
        if self.best.weights is not None and self.world.main:
            # Outputs may have been deleted (DVC does before a stage runs): rewrite them.
            ckpt.save(self._checkpoint(), self.checkpoint_path)
            self._write_curve()
        show = None if self.progress is None else self.progress
        if not self.world.main:
            show = False
        bar = tqdm(total=self.cfg.max_steps, initial=self.step, desc=f"train {self.name}",
                   unit="step", disable=None if show is None else not show,
                   dynamic_ncols=True, mininterval=1.0)
        vocab_size = self.vocab.size
        self.model.train()
        self._clock = time.perf_counter()
        with bar, _catch_signals(second_aborts=not self.world.distributed) as sig:
            if (not self.complete and self.step and self._row_due()
                    and (not self.curve or self.curve[-1]["step"] < self.step)):
                self._after_step(bar)  # the row an interruption skipped
            while not self.complete and self.step < self.cfg.max_steps:
                lr = lr_at(self.cfg, self.step)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                x, y, new_epoch = self.data.batch(self.step)
                if new_epoch:
                    self.hidden = None
                logits, hidden = self.net(x, self.hidden)
                loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1))
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                self.pending.append((self.step, torch.stack([loss.detach(), norm.detach()])))
                if self.device.type != "cuda" or len(self.pending) >= 32:
                    # Off CUDA a per-step check is free and stops before a bad update; on
                    # CUDA checking every 32 steps avoids a host sync per step.
                    self._drain()
                self.opt.step()
                self.hidden = detach_hidden(hidden)
                self.step += 1
                self.meters.chars += x.numel()
                if self.on_step is not None:
                    self.on_step(self.step, self.model)
                bar.update(1)
                # Before the step's evaluation, which can outlast the grace period torchrun
                # gives before SIGKILL; a resumed run does the skipped row first.
                if self._stop_requested(sig["signum"] is not None):
                    self._save_state()
                    msg = (f"{self.name}: interrupted at step {self.step}; state saved to "
                           f"{self.state_path}; run again to resume")
                    self.say(msg)
                    raise TrainingInterrupted(msg, self.step, int(sig["signum"] or signal.SIGTERM))
                self._after_step(bar)
        self.complete = True
        self._save_state()
        return self._result()

    def _row_due(self) -> bool:
        return self.step % self.cfg.eval_every == 0 or self.step == self.cfg.max_steps

    def _after_step(self, bar: tqdm) -> None:
        """The curve row and the resume state due at this step."""
        if self._row_due():
            self._row(bar)
            if self.cfg.checkpoint_every == 0:
                self._save_state()
        if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
            self._save_state()

    def _stop_requested(self, here: bool) -> bool:
        """Whether any rank got SIGINT/SIGTERM: every rank must stop at the same step. On
        CUDA ranks agree every 32 steps, so there is no host sync per step."""
        if not self.world.distributed:
            return here
        if self.device.type == "cuda" and self.step % 32:
            return False
        return ddp.any_rank(self.world, here, self.device)

    def _load_state(self) -> ResumeState | None:
        """Rank 0 reads the resume state (other nodes may not see its disk) and hands it on;
        a problem with it is raised on every rank. Its tensors stay on the CPU."""
        state: ResumeState | None = None
        problem: str | None = None
        if self.world.main:
            try:
                state = load_resume_state(self.state_path, self.cfg, self.corpus)
            except CheckpointError as e:
                if not self.world.distributed:
                    raise
                problem = str(e)
        state, problem = ddp.from_main(self.world, (state, problem), slow=True)
        if problem is not None:
            raise CheckpointError(problem)
        return state

    def _drain(self) -> None:
        """Check and count the losses of the steps not yet looked at (one host sync)."""
        if not self.pending:
            return
        values = torch.stack([v for _, v in self.pending]).double().cpu().tolist()
        steps = [k for k, _ in self.pending]
        self.pending.clear()
        for k, (loss, norm) in zip(steps, values, strict=True):
            if not (math.isfinite(loss) and math.isfinite(norm)):
                self._diverged(k + 1, f"training loss {loss}, gradient norm {norm}")
            self.meters.loss_sum += loss
            self.meters.loss_count += 1

    def _pause(self) -> None:
        """Stop the training clock (evaluation and checkpoint time are not training)."""
        self._drain()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.meters.row_sec += now - self._clock
        self._clock = now

    def _row(self, bar: tqdm) -> None:
        self._pause()
        # rank 0 scores the whole val split; the others wait for its number
        val = evaluate_loss(self.model, self.val, self.device) if self.world.main else None
        val = float(ddp.from_main(self.world, val, slow=True))
        if not math.isfinite(val):
            self._diverged(self.step, f"validation loss {val}")
        # the global batch's mean loss and throughput, summed over ranks
        m = self.meters
        loss_sum, loss_count, chars = ddp.sum_all(
            self.world, [m.loss_sum, m.loss_count, m.chars], self.device)
        train_loss = loss_sum / max(1, loss_count)
        cps = chars / max(m.row_sec, 1e-9)
        m.close_row()
        self.curve.append({"step": self.step, "train_loss": train_loss, "val_loss": val,
                           "chars_per_sec": cps, "elapsed_sec": self.elapsed()})
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val:.3f}", cps=f"{cps:.0f}")
        if self.best.offer(val, self.step, self.model.state_dict()) and self.world.main:
            ckpt.save(self._checkpoint(), self.checkpoint_path)
        if self.world.main:
            self._write_curve()
        self._clock = time.perf_counter()
        if self.cfg.patience and self.best.bad_evals >= self.cfg.patience:
            self.say(f"{self.name}: early stop at step {self.step}: no better val loss in "
                     f"{self.best.bad_evals} evaluations (best {self.best.val:.4f} at step "
                     f"{self.best.step})")
            self.stopped_early = self.complete = True

    def _save_state(self) -> None:
        self._pause()
        state = self._state()  # every rank: it gathers the ranks' hidden and RNG states
        if self.world.main:
            ckpt.save(state.to_dict(), self.state_path)
        self._clock = time.perf_counter()

    def _diverged(self, step: int, what: str) -> None:
        where = (f"the best checkpoint (step {self.best.step}) is kept in "
                 f"{self.checkpoint_path}" if self.best.weights is not None
                 else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"train.{self.name}: non-finite {what} at step {step}; {where}, and the resume "
            "state stays at the last saved step. Lower lr or grad_clip, or use precision: fp32"
        )

    def _result(self) -> TrainResult:
        last = self.curve[-1] if self.curve else None
        return TrainResult(
            name=self.name, steps=self.step, best_step=self.best.step,
            best_val_loss=self.best.val,
            final_val_loss=last["val_loss"] if last else math.nan,
            train_seconds=self.meters.total_sec, elapsed_seconds=self.elapsed(),
            device=str(self.device), precision=self.precision,
            num_params=self.model.num_params(),
            resumed_from=self.resumed_from, stopped_early=self.stopped_early,
            curve=list(self.curve))
