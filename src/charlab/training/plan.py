"""The run plan: everything a training run needs decided before it starts, built once at the
edge (the stage, a test, a benchmark) and handed to :func:`charlab.training.loop.train`.

Every check that needs no training runs here, once, and every error names the entry's key
path (``train.rnn3.device``, ``finetune.ft.batch_size``): the device exists (one per rank),
the precision runs on it, the processes share the batch, the train split holds the batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from charlab.params.core import ParamsError
from charlab.params.training import TrainParams, init_entry
from charlab.runtime import (
    DeviceError,
    Hardware,
    Precision,
    cpu_threads,
    hardware,
    plan_precision,
    resolve_device,
)
from charlab.training import distributed
from charlab.training.distributed import SINGLE, World

OnStep = Callable[[int, torch.nn.Module], None]


@dataclass(frozen=True)
class RunPaths:
    """Where a run reads and writes (each written once, in dvc.yaml, for the stages)."""

    checkpoint: Path  # the best model by validation loss
    curve: Path  # the loss curve, a CSV
    run_info: Path | None = None  # how it trained (device, precision, times): the report's
    state: Path | None = None  # the resume state; None: <checkpoint>.state
    init: Path | None = None  # the checkpoint a fine-tune starts from

    @property
    def resume_state(self) -> Path:
        return self.state or self.checkpoint.with_name(self.checkpoint.name + ".state")


@dataclass(frozen=True)
class RunPlan:
    """One run, decided: which entry, where, in what precision, among which processes."""

    key: str  # the entry's key path, e.g. "train.rnn3": every error message starts with it
    cfg: TrainParams
    paths: RunPaths
    device: torch.device
    hardware: Hardware
    precision: Precision
    threads: int  # torch threads on a CPU
    world: World = SINGLE
    progress: bool | None = None  # the progress bar: None = on a terminal only
    on_step: OnStep | None = None  # called after each optimiser step (tests inject faults)

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


def check_train_split(cfg: TrainParams, key: str, n_train: int) -> None:
    """The train split must hold ``batch_size`` streams of ``seq_length + 1`` characters
    (the split is cut into that many contiguous streams)."""
    window = cfg.seq_length + 1
    length = cfg.family.window_key
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


def make_plan(cfg: TrainParams, key: str, paths: RunPaths, *, train_chars: int,
              world: World = SINGLE, progress: bool | None = None,
              on_step: OnStep | None = None) -> RunPlan:
    """Check everything a run can be refused for, once, and decide how it runs.

    ``train_chars``: the length of the train split. ``world``: this process's place among
    data-parallel ranks (torchrun's), whose device it picks (one GPU per local rank).
    Raises :class:`ParamsError` naming ``key`` and the key at fault.
    """
    try:
        device = resolve_device(cfg.device)
    except DeviceError as e:
        raise ParamsError(f"{key}.device: {e}") from None
    try:
        # the processes on this node: torchrun's, or the nproc it will start
        distributed.check_devices(world.local_size if world.distributed else cfg.nproc,
                                  device)
        device = distributed.device_for(world, device)
        world.rows(cfg.batch_size)
    except distributed.DistributedError as e:
        raise ParamsError(f"{key}.nproc: {e}") from None
    hw = hardware(device)
    try:
        precision = plan_precision(cfg.precision, hw)
    except DeviceError as e:
        raise ParamsError(f"{key}.precision: {e}") from None
    check_train_split(cfg, key, train_chars)
    init = paths.init
    if init is None and cfg.init_from is not None:
        entry = init_entry(cfg)  # a name means models/<name>.pt beside this checkpoint
        init = (paths.checkpoint.parent / f"{entry}.pt" if entry is not None
                else Path(cfg.init_from))
    return RunPlan(key=key, cfg=cfg, paths=dataclasses.replace(paths, init=init),
                   device=device, hardware=hw, precision=precision,
                   threads=cpu_threads(cfg.threads), world=world, progress=progress,
                   on_step=on_step)


def run_paths(checkpoint: str | os.PathLike, curve: str | os.PathLike, *,
              run_info: str | os.PathLike | None = None, state: str | os.PathLike | None = None,
              init: str | os.PathLike | None = None) -> RunPaths:
    """:class:`RunPaths` from strings or paths."""
    def p(x: str | os.PathLike | None) -> Path | None:
        return None if x is None else Path(x)

    return RunPaths(Path(checkpoint), Path(curve), p(run_info), p(state), p(init))
