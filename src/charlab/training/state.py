"""The state of a training run: a plain object the loop reads top to bottom, and what a
resume saves and restores (:mod:`charlab.training.resume`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from charlab.checkpoint import to_cpu
from charlab.families.base import State


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
            self.weights = to_cpu(weights)  # a copy: it must not follow training
            return True
        self.bad_evals += 1
        return False


@dataclass
class TrainState:
    """Everything that changes as a run goes: the network and its optimiser, the step, the
    state carried between chunks, the curve so far, the best row, the meters."""

    model: torch.nn.Module  # the network
    net: torch.nn.Module  # what the step calls: the network, or its DDP wrapper
    opt: torch.optim.Optimizer
    init: dict[str, Any] | None = None  # the weights a fine-tune started from
    step: int = 0
    hidden: State = None
    curve: list[dict[str, float]] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    meters: Meters = field(default_factory=Meters)
    complete: bool = False
    stopped_early: bool = False
    resumed_from: int | None = None
    started: float = field(default_factory=time.perf_counter)  # this process's start
    clock: float = field(default_factory=time.perf_counter)  # training time runs since

    def elapsed(self) -> float:
        """Wall time of the run so far, earlier (interrupted) runs included."""
        return self.meters.elapsed_before + time.perf_counter() - self.started

    def pause(self) -> None:
        """Stop the training clock (evaluation and checkpoint time are not training)."""
        now = time.perf_counter()
        self.meters.row_sec += now - self.clock
        self.clock = now

    def go_on(self) -> None:
        """Start the training clock again."""
        self.clock = time.perf_counter()
