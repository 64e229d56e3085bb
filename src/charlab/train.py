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
from charlab.batches import StreamBatches, TrainingError
from charlab.checkpoint import CheckpointError, default_state_path, to_cpu
from charlab.distributed import SINGLE, World
from charlab.encoding import Corpus
from charlab.io import atomic_open, write_json
from charlab.model import RNNLM, CharRNN, Hidden, ModelConfig, detach_hidden
from charlab.params import ParamsError, TrainParams, check_train_split
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

# Params that do not change what training computes: a run interrupted under other values
# of these still resumes on its own.
_RUN_ONLY_KEYS = ("device", "threads", "resume", "checkpoint_every", "nproc")
# Params that fix the network's shape: `resume: true` refuses to continue if they changed.
_MODEL_KEYS = ("cell", "layers", "hidden_size", "embedding_size")


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


def model_config(cfg: TrainParams, vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, cell=cfg.cell, layers=cfg.layers,
                       hidden_size=cfg.hidden_size, dropout=cfg.dropout,
                       embedding_size=cfg.embedding_size)


def evaluate_loss(model: CharRNN, ids: np.ndarray, device: torch.device) -> float:
    """Character-weighted mean NLL (nats) of ``ids[1:]`` with the hidden state carried.

    In float32 whatever the training precision, as the evaluate stage scores: the val
    loss that picks the best checkpoint is the number a reader of the metrics sees.
    """
    trained_in = model.recurrence_dtype, model.head_dtype
    model.set_precision(None, None)
    try:
        with float32_gemms(FP32):
            lp = RNNLM(model, device).log_probs(np.asarray(ids, dtype=np.int64))
    finally:
        model.set_precision(*trained_in)
    return float(-lp.mean())


# --- checkpoints -----------------------------------------------------------------------------


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


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in _RUN_ONLY_KEYS}


def _corpus_id(corpus: Corpus) -> dict[str, Any]:
    return {"sha256": corpus.manifest.sha256,
            "splits": {k: list(v) for k, v in corpus.manifest.splits.items()}}


def load_resume_state(path: Path, cfg: TrainParams, corpus: Corpus) -> dict | None:
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
        state = ckpt.read(path, "cpu")
        if state["format"] != ckpt.STATE_FORMAT:
            raise CheckpointError(f"{path}: a best-model checkpoint, not a resume state")
    except CheckpointError as e:
        if cfg.resume:
            raise
        tqdm.write(f"ignoring unusable resume state: {e}")
        return None
    same_data = (tuple(state["vocab"]) == corpus.vocab.chars
                 and state["corpus"] == _corpus_id(corpus))
    if cfg.resume:
        old = state["params"]
        changed = [k for k in _MODEL_KEYS if old.get(k) != getattr(cfg, k)]
        if changed:
            raise CheckpointError(
                f"{path}: resume: true, but the saved run has another network shape "
                f"({', '.join(f'{k}: {old.get(k)}' for k in changed)}); delete it or set "
                "resume: false"
            )
        if tuple(state["vocab"]) != corpus.vocab.chars:
            raise CheckpointError(f"{path}: resume: true, but the saved run used another "
                                  "vocabulary; delete it or set resume: false")
        if not same_data:
            tqdm.write("resume: the corpus changed since the saved run; continuing anyway")
        return state
    # Without `resume: true`, only an unfinished run with the very same settings continues.
    if (not state["complete"] and same_data
            and _comparable(state["params"]) == _comparable(dataclasses.asdict(cfg))):
        return state
    return None


def restore_hidden(saved: list[torch.Tensor], rows: range, like: torch.Tensor) -> Hidden:
    """This rank's rows of a saved global hidden state, ready for the next forward.

    Contiguous (cuDNN rejects a strided ``hx``; a slice of the batch dimension is one) and in
    ``like``'s dtype and device: the parameters' dtype, whatever precision saved it.
    """
    h = [t[:, rows.start:rows.stop].to(like.device, like.dtype).contiguous() for t in saved]
    return (h[0], h[1]) if len(h) == 2 else h[0]


def train(cfg: TrainParams, corpus: Corpus, *, checkpoint_path: str | os.PathLike,
          curve_path: str | os.PathLike, name: str = "model",
          state_path: str | os.PathLike | None = None, progress: bool | None = None,
          on_step: Callable[[int, CharRNN], None] | None = None,
          world: World = SINGLE, run_info_path: str | os.PathLike | None = None
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
        raise DeviceError(f"train.{name}.precision: {e}") from None
    with _threads(cfg.threads), float32_gemms(precision):
        run = _Run(cfg, corpus, device, precision, name, checkpoint_path, curve_path,
                   state_path, progress, on_step, world)
        run.run_info_path = None if run_info_path is None else Path(run_info_path)
        return run.run()


class _Run:
    """One call of :func:`train`; its fields are what the resume state saves."""

    def __init__(self, cfg: TrainParams, corpus: Corpus, device: torch.device,
                 precision: Precision, name: str,
                 checkpoint_path: Path, curve_path: Path, state_path: Path,
                 progress: bool | None, on_step: Callable[[int, CharRNN], None] | None,
                 world: World) -> None:
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
        self.model = CharRNN(self.mconfig).to(device)
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
        self.best_val = math.inf
        self.best_step = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.bad_evals = 0
        self.complete = False
        self.stopped_early = False
        # since the last curve row
        self.loss_sum = 0.0
        self.loss_count = 0
        self.chars = 0
        self.train_sec = 0.0
        self.total_train_sec = 0.0
        self.elapsed_before = 0.0  # wall time of earlier runs of this training
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
    def _state(self) -> dict[str, Any]:
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
        loss_sum, loss_count, chars = ddp.sum_all(
            self.world, [self.loss_sum, self.loss_count, self.chars], self.device)
        return {
            "format": ckpt.STATE_FORMAT, "version": ckpt.FORMAT_VERSION, "name": self.name,
            "model_config": self.mconfig.to_dict(), "vocab": list(self.vocab.chars),
            "params": dataclasses.asdict(self.cfg), "precision": self.precision,
            "corpus": _corpus_id(self.corpus),
            "step": self.step, "complete": self.complete, "stopped_early": self.stopped_early,
            "val_loss": self.curve[-1]["val_loss"] if self.curve else None,
            "model": to_cpu(self.model.state_dict()), "optimizer": to_cpu(self.opt.state_dict()),
            "rng_cpu": ranks[0][1], "rng_cuda": ranks[0][2],
            "world_size": self.world.size,
            "rng_ranks": [[r[1], r[2]] for r in ranks],
            "hidden": hidden_all,
            "curve": list(self.curve), "best_val": self.best_val, "best_step": self.best_step,
            "best_model": self.best_weights, "bad_evals": self.bad_evals,
            "acc": [loss_sum, int(loss_count), int(chars), self.train_sec,
                    self.total_train_sec, self.elapsed()],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = self.resumed_from = int(state["step"])
        rngs = state.get("rng_ranks") or [[state["rng_cpu"], state["rng_cuda"]]]
        if len(rngs) == self.world.size:
            rng_cpu, rng_cuda = rngs[self.world.rank]
            # RNG states must be CPU byte tensors, whatever map_location did to them
            torch.set_rng_state(rng_cpu.cpu())
            if self.device.type == "cuda" and rng_cuda:
                torch.cuda.set_rng_state(rng_cuda[0].cpu(), self.device)
        else:  # saved by another number of processes: the run goes on, not bit for bit
            self.say(f"{self.name}: resuming with {self.world.size} processes a run saved by "
                     f"{len(rngs)}; dropout masks differ from an uninterrupted run")
            torch.manual_seed(_derived_seed(self.cfg.seed, 0, self.step))
            self._seed_rank(self.step)
        if state["hidden"] is not None:
            self.hidden = restore_hidden(state["hidden"], self.world.rows(self.cfg.batch_size),
                                         self.model.head.weight)
        self.curve = [dict(r) for r in state["curve"]]
        self.best_val, self.best_step = float(state["best_val"]), int(state["best_step"])
        self.best_weights = to_cpu(state["best_model"])
        self.bad_evals = int(state["bad_evals"])
        self.stopped_early = bool(state["stopped_early"])
        (self.loss_sum, self.loss_count, self.chars, self.train_sec, self.total_train_sec,
         self.elapsed_before) = state["acc"]
        if not self.world.main:  # rank 0 carries the global counts, summed again at a row
            self.loss_sum, self.loss_count, self.chars = 0.0, 0, 0
        # A finished run continues only if asked for more steps and it did not stop early.
        self.complete = bool(state["complete"]) and (
            self.stopped_early or self.step >= self.cfg.max_steps)

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
                "steps": int(last.get("step", 0)), "best_step": self.best_step,
                "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                "train_seconds": self.total_train_sec,
                "elapsed_seconds": float(last.get("elapsed_sec", 0.0)),
                "params": self.model.num_params()}

    def _checkpoint(self) -> dict[str, Any]:
        return {"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.FORMAT_VERSION, "name": self.name,
                "model_config": self.mconfig.to_dict(), "vocab": list(self.vocab.chars),
                "params": dataclasses.asdict(self.cfg), "precision": self.precision,
                "precision_parts": self.plan.parts(),
                "device": self.device.type, "device_name": self.device_name,
                "step": self.best_step, "val_loss": self.best_val, "model": self.best_weights}

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

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
        if self.best_weights is not None and self.world.main:
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
                self.chars += x.numel()
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

    def _load_state(self) -> dict | None:
        """Rank 0 reads the resume state (other nodes may not see its disk) and hands it on;
        a problem with it is raised on every rank. Its tensors stay on the CPU."""
        state: dict | None = None
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
            self.loss_sum += loss
            self.loss_count += 1

    def _pause(self) -> None:
        """Stop the training clock (evaluation and checkpoint time are not training)."""
        self._drain()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.train_sec += now - self._clock
        self._clock = now

    def _row(self, bar: tqdm) -> None:
        self._pause()
        # rank 0 scores the whole val split; the others wait for its number
        val = evaluate_loss(self.model, self.val, self.device) if self.world.main else None
        val = float(ddp.from_main(self.world, val, slow=True))
        if not math.isfinite(val):
            self._diverged(self.step, f"validation loss {val}")
        # the global batch's mean loss and throughput, summed over ranks
        loss_sum, loss_count, chars = ddp.sum_all(
            self.world, [self.loss_sum, self.loss_count, self.chars], self.device)
        train_loss = loss_sum / max(1, loss_count)
        self.total_train_sec += self.train_sec
        self.curve.append({"step": self.step, "train_loss": train_loss, "val_loss": val,
                           "chars_per_sec": chars / max(self.train_sec, 1e-9),
                           "elapsed_sec": self.elapsed()})
        self.loss_sum, self.loss_count, self.chars, self.train_sec = 0.0, 0, 0, 0.0
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val:.3f}",
                        cps=f"{self.curve[-1]['chars_per_sec']:.0f}")
        if val < self.best_val:
            self.best_val, self.best_step, self.bad_evals = val, self.step, 0
            self.best_weights = to_cpu(self.model.state_dict())
            if self.world.main:
                ckpt.save(self._checkpoint(), self.checkpoint_path)
        else:
            self.bad_evals += 1
        if self.world.main:
            self._write_curve()
        self._clock = time.perf_counter()
        if self.cfg.patience and self.bad_evals >= self.cfg.patience:
            self.say(f"{self.name}: early stop at step {self.step}: no better val loss in "
                       f"{self.bad_evals} evaluations (best {self.best_val:.4f} at step "
                       f"{self.best_step})")
            self.stopped_early = self.complete = True

    def _save_state(self) -> None:
        self._pause()
        state = self._state()  # every rank: it gathers the ranks' hidden and RNG states
        if self.world.main:
            ckpt.save(state, self.state_path)
        self._clock = time.perf_counter()

    def _diverged(self, step: int, what: str) -> None:
        where = (f"the best checkpoint (step {self.best_step}) is kept in "
                 f"{self.checkpoint_path}" if self.best_weights is not None
                 else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"train.{self.name}: non-finite {what} at step {step}; {where}, and the resume "
            "state stays at the last saved step. Lower lr or grad_clip, or use precision: fp32"
        )

    def _result(self) -> TrainResult:
        last = self.curve[-1] if self.curve else None
        return TrainResult(
            name=self.name, steps=self.step, best_step=self.best_step,
            best_val_loss=self.best_val,
            final_val_loss=last["val_loss"] if last else math.nan,
            train_seconds=self.total_train_sec, elapsed_seconds=self.elapsed(),
            device=str(self.device), precision=self.precision,
            num_params=self.model.num_params(),
            resumed_from=self.resumed_from, stopped_early=self.stopped_early,
            curve=list(self.curve))
