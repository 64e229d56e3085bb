"""What a run leaves for the readers: the best model's checkpoint, the loss curve and the run
info (how it trained, for the report, which then reads no weights). Rank 0 writes them."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch

from charlab import checkpoint as ckpt
from charlab.encoding import Vocab
from charlab.io import atomic_open, write_json
from charlab.training.plan import RunPlan
from charlab.training.state import TrainState

CURVE_COLUMNS = ("step", "train_loss", "val_loss", "chars_per_sec", "elapsed_sec")


def write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_open(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_COLUMNS)
        for r in rows:
            w.writerow([int(r["step"]), f"{r['train_loss']:.6f}", f"{r['val_loss']:.6f}",
                        f"{r['chars_per_sec']:.1f}", f"{r['elapsed_sec']:.3f}"])


def run_info(plan: RunPlan, s: TrainState) -> dict[str, Any]:
    last = s.curve[-1] if s.curve else {}
    return {"name": plan.name, "device": plan.device.type, "device_name": plan.hardware.name,
            "precision": plan.precision.name, "precision_parts": plan.precision.parts(),
            "threads": torch.get_num_threads(), "processes": plan.world.size,
            "steps": int(last.get("step", 0)), "best_step": s.best.step,
            "best_val_loss": s.best.val if math.isfinite(s.best.val) else None,
            "train_seconds": s.meters.total_sec,
            "elapsed_seconds": float(last.get("elapsed_sec", 0.0)),
            "params": sum(p.numel() for p in s.model.parameters()),
            # the x axis of the report's curves, and the model a budget is counted for
            "chars_per_step": plan.cfg.batch_size * plan.cfg.seq_length,
            "model_config": s.model.config.to_dict()}


def write_progress(plan: RunPlan, s: TrainState) -> None:
    """The loss curve and, beside it, the run info (both small)."""
    write_curve(plan.paths.curve, s.curve)
    if plan.paths.run_info is not None:
        write_json(plan.paths.run_info, run_info(plan, s))


def save_best(plan: RunPlan, s: TrainState, vocab: Vocab) -> None:
    """The best model by validation loss: what evaluation and sampling read."""
    ckpt.save({"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.FORMAT_VERSION,
               "name": plan.name, "model_config": s.model.config.to_dict(),
               "vocab": list(vocab.chars), "params": plan.cfg.to_dict(),
               "precision": plan.precision.name, "precision_parts": plan.precision.parts(),
               "device": plan.device.type, "device_name": plan.hardware.name,
               "step": s.best.step, "val_loss": s.best.val, "model": s.best.weights,
               "init": s.init}, plan.paths.checkpoint)
