"""What stops a run: SIGINT/SIGTERM, agreed on by every rank, and a non-finite loss or
gradient norm. The loop asks between steps; the guard never stops a step halfway."""

from __future__ import annotations

import math
import signal
import threading
from types import TracebackType
from typing import Any

import torch

from charlab.errors import TrainingError
from charlab.training import distributed as ddp
from charlab.training.plan import RunPlan
from charlab.training.state import TrainState

# On CUDA the losses are looked at (and ranks agree on a stop) every this many steps, so a
# step never waits for the GPU; off CUDA every step, which is free and stops before a bad
# update.
CUDA_CHECK_EVERY = 32


class TrainingDiverged(TrainingError):
    """The loss or gradient became NaN/inf."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; the resume state was saved first."""

    def __init__(self, message: str, step: int, signum: int) -> None:
        super().__init__(message)
        self.step = step
        self.signum = signum


class Guard:
    """Used as a context manager around the loop: it catches SIGINT/SIGTERM into a flag (a
    second one aborts, except under torchrun, which passes a Ctrl-C on to ranks that already
    had it from the terminal) and holds the losses not yet checked."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.on_cuda = plan.device.type == "cuda"
        self.signum: int | None = None
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, [loss, grad norm])
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Guard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            if not self.plan.world.distributed:
                raise KeyboardInterrupt
            return
        self.signum = signum

    # --- the losses --------------------------------------------------------------------
    def record(self, s: TrainState, loss: torch.Tensor, norm: torch.Tensor) -> None:
        """Keep step ``s.step``'s loss and gradient norm; check them now off CUDA."""
        self.pending.append((s.step, torch.stack([loss.detach(), norm.detach()])))
        if not self.on_cuda or len(self.pending) >= CUDA_CHECK_EVERY:
            self.drain(s)

    def drain(self, s: TrainState) -> None:
        """Check and count the losses not yet looked at (one host sync)."""
        if not self.pending:
            return
        values = torch.stack([v for _, v in self.pending]).double().cpu().tolist()
        steps = [k for k, _ in self.pending]
        self.pending.clear()
        for k, (loss, norm) in zip(steps, values, strict=True):
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise self.diverged(s, k + 1, f"training loss {loss}, gradient norm {norm}")
            s.meters.loss_sum += loss
            s.meters.loss_count += 1

    def diverged(self, s: TrainState, step: int, what: str) -> TrainingDiverged:
        where = (f"the best checkpoint (step {s.best.step}) is kept in "
                 f"{self.plan.paths.checkpoint}" if s.best.weights is not None
                 else "no checkpoint was written yet")
        return TrainingDiverged(
            f"{self.plan.key}: non-finite {what} at step {step}; {where}, and the resume "
            "state stays at the last saved step. Lower lr or grad_clip, or use precision: fp32")

    # --- stopping ----------------------------------------------------------------------
    def stop_requested(self, step: int) -> bool:
        """Whether any rank got SIGINT/SIGTERM: every rank must stop at the same step. On
        CUDA ranks agree every few steps, so there is no host sync per step."""
        here = self.signum is not None
        world = self.plan.world
        if not world.distributed:
            return here
        if self.on_cuda and step % CUDA_CHECK_EVERY:
            return False
        return ddp.any_rank(world, here, self.plan.device)

    def interrupted(self, step: int) -> TrainingInterrupted:
        msg = (f"{self.plan.name}: interrupted at step {step}; state saved to "
               f"{self.plan.paths.resume_state}; run again to resume")
        return TrainingInterrupted(msg, step, int(self.signum or signal.SIGTERM))
