"""Quality against budget: training FLOPs per character, budget tables, equal budgets.

Models trained for different numbers of steps, or with different costs per step, are not
compared fairly by their final numbers alone (Dodge et al. 2019): this module puts every
trained model's validation curve on a common axis, training compute (FLOPs) or wall
seconds, and reads each model's val nll at the largest budget that all of them reached.

FLOPs are counted from the model config as stored in checkpoints (``model_config``), by the
usual convention: only matrix products count, one multiply-add is 2 FLOPs, and a training
step (forward + backward) costs 3 forward passes (the backward pass needs the gradients of
both operands of every product). Biases, nonlinearities, normalisation, softmax, dropout
and the optimiser are left out (each is O(width) per character against the products'
O(width^2)). See :func:`forward_macs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from charlab.errors import CharlabError
from charlab.families import from_config_dict
from charlab.io import atomic_path

BUDGET_COLUMNS = ["model", "step", "chars", "flops", "seconds", "val_nll"]
CURVE_COLUMNS = ("step", "val_loss", "elapsed_sec")
AT_BUDGET_COLUMNS = ["model", "budget", "val_nll", "full_val_nll"]
FLOPS_PER_MAC = 2
TRAIN_PASSES = 3  # forward + backward (two products per forward product)


class BudgetError(CharlabError, ValueError):
    """A model config or training curve that budgets cannot be computed from."""


def forward_macs(config: Mapping[str, Any], where: str = "model_config") -> int:
    """Forward multiply-adds per character of a checkpoint's ``model_config``, as its
    family counts them (:meth:`charlab.families.base.Family.forward_macs`: the formula of
    each family is in its docstring)."""
    try:
        family, parsed = from_config_dict(config)
    except (TypeError, ValueError) as e:
        raise BudgetError(f"{where}: not a model config: {e}") from None
    return family.forward_macs(parsed)


def train_flops_per_char(config: Mapping[str, Any], where: str = "model_config") -> int:
    """Training FLOPs per character seen: 3 passes x 2 FLOPs x forward multiply-adds."""
    return TRAIN_PASSES * FLOPS_PER_MAC * forward_macs(config, where)


@dataclass(frozen=True)
class TrainedRun:
    """What budgets need of one trained model: its curve (the train stage's CSV, columns
    ``step, train_loss, val_loss, chars_per_sec, elapsed_sec``), its ``model_config`` and
    the characters one step reads (both from its run info)."""

    curve: pd.DataFrame
    model_config: Mapping[str, Any]
    chars_per_step: int


def run_budget(name: str, run: TrainedRun) -> pd.DataFrame:
    """One model's rows of the budget table: per evaluation row, characters seen,
    training FLOPs, wall seconds and val nll."""
    missing = [c for c in CURVE_COLUMNS if c not in run.curve.columns]
    if missing:
        raise BudgetError(f"{name}: training curve lacks column(s) {', '.join(missing)}")
    if not len(run.curve):
        raise BudgetError(f"{name}: training curve has no evaluation rows")
    steps = run.curve["step"].astype(np.int64)
    if (steps <= 0).any() or not steps.is_monotonic_increasing:
        raise BudgetError(f"{name}: training curve steps must be positive and increasing")
    chars = steps * int(run.chars_per_step)
    flops = chars.astype(np.float64) * train_flops_per_char(run.model_config, name)
    return pd.DataFrame({"model": name, "step": steps, "chars": chars, "flops": flops,
                         "seconds": run.curve["elapsed_sec"].astype(np.float64),
                         "val_nll": run.curve["val_loss"].astype(np.float64)},
                        columns=BUDGET_COLUMNS)


def budget_table(runs: Mapping[str, TrainedRun]) -> pd.DataFrame:
    """``model, step, chars, flops, seconds, val_nll`` for every trained model (this is
    ``metrics/budget.csv``); n-grams have no curve and no rows."""
    frames = [run_budget(name, run) for name, run in runs.items()]
    if not frames:
        return pd.DataFrame(columns=BUDGET_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def interpolate_log(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """y at ``at``, linear in log(x) between the two evaluation points around it; NaN
    before the first point (no evaluation that early) or after the last."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not (at > 0 and x[0] <= at <= x[-1]):
        return math.nan
    return float(np.interp(math.log(at), np.log(x), y))


def common_budget(table: pd.DataFrame, by: str = "flops") -> float:
    """The largest budget (``flops`` or ``seconds``) that every trained model reached: the
    smallest of their final values. NaN with no trained model."""
    if not len(table):
        return math.nan
    return float(table.groupby("model", sort=False)[by].max().min())


def equal_budget(table: pd.DataFrame, constants: Mapping[str, float] | None = None,
                 by: str = "flops") -> pd.DataFrame:
    """``model, budget, val_nll, full_val_nll``: every trained model's val nll at the
    largest budget all of them reached (``by`` = flops or seconds), interpolated on
    log(budget) between its evaluation points (NaN for a model whose first evaluation came
    after it), and its best val nll over the whole run (the checkpoint training keeps);
    then each model of ``constants`` (n-grams: a val nll no budget changes, both columns).
    Best at the budget first.

    The two val columns rank the models at equal and at full budget on the same split, so
    a change of order is the budget's doing, not the test split's.
    """
    if by not in ("flops", "seconds"):
        raise BudgetError(f"by: must be flops or seconds, got {by!r}")
    budget = common_budget(table, by)
    rows = []
    for name, part in table.groupby("model", sort=False):
        part = part.sort_values(by)
        rows.append({"model": name, "budget": budget,
                     "val_nll": interpolate_log(part[by].to_numpy(),
                                                part["val_nll"].to_numpy(), budget),
                     "full_val_nll": float(part["val_nll"].min())})
    rows += [{"model": name, "budget": budget, "val_nll": float(v), "full_val_nll": float(v)}
             for name, v in (constants or {}).items()]
    out = pd.DataFrame(rows, columns=AT_BUDGET_COLUMNS)
    return out.sort_values("val_nll", kind="stable", na_position="last").reset_index(drop=True)


def pareto_frontier(table: pd.DataFrame, constants: Mapping[str, float] | None = None,
                    by: str = "flops") -> pd.DataFrame:
    """The evaluation points no other point beats: none reached a lower val nll at the
    same or a smaller budget, n-grams (free, at every budget) included. Sorted by budget;
    each point is the best val nll any model reached by then."""
    floor = min((constants or {}).values(), default=math.inf)
    points = table.sort_values([by, "val_nll"], kind="stable")
    best = points["val_nll"].cummin().shift(fill_value=math.inf)
    keep = (points["val_nll"] < best) & (points["val_nll"] < floor)
    return points.loc[keep, ["model", "step", by, "val_nll"]].reset_index(drop=True)


def plot_budget(table: pd.DataFrame, constants: Mapping[str, float] | None, path: Any,
                by: str = "flops") -> None:
    """One PNG: val nll against training FLOPs (or seconds) on a log axis; every trained
    model a line through its evaluation points, every constant (n-gram) a dashed
    horizontal line, the Pareto frontier (best val nll reached by each budget, over all
    models) a thick grey staircase through its circled points, and the largest budget all
    trained models reached a dotted vertical line."""
    # imported here: the tables above are read by code that never draws
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    constants = dict(constants or {})
    fig, ax = plt.subplots(figsize=(8, 4.8))
    names = list(dict.fromkeys(table["model"]))
    # the default cycle repeats after 10 colours: past that, 20 distinct ones (tab20)
    many = len(names) + len(constants) > 10
    color = (lambda i: plt.get_cmap("tab20")(i % 20)) if many else (lambda i: f"C{i}")
    for i, name in enumerate(names):
        part = table[table["model"] == name].sort_values(by)
        ax.plot(part[by], part["val_nll"], "-o", ms=3.5, lw=1.6, color=color(i), label=name)
    for j, (name, value) in enumerate(constants.items()):
        ax.axhline(value, ls="--", lw=1.2, color=color(len(names) + j),
                   label=f"{name} (no training curve)")
    ax.set_xscale("log")
    if by == "seconds":  # a narrow range: plain 1-2-5 labels, not 3x10^1 4x10^1 ...
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    _draw_frontier(ax, table, constants, by)
    budget = common_budget(table, by)
    if math.isfinite(budget):
        ax.axvline(budget, ls=":", lw=1.2, color="0.4", label="largest budget all reached")
    unit = "training FLOPs" if by == "flops" else "training wall seconds"
    ax.set_xlabel(f"{unit} (log scale)")
    ax.set_ylabel("validation nll (nats per character)")
    ax.set_title(f"Validation nll against {unit}")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        # beside the axes when there are many lines, so that none hides a curve
        ax.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1)}
                                 if many else {}))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _draw_frontier(ax: Any, table: pd.DataFrame, constants: Mapping[str, float],
                   by: str) -> None:
    front = pareto_frontier(table, constants, by)
    floor = min(constants.values(), default=math.inf)
    left, right = ax.get_xlim()
    xs, ys = list(front[by]), list(front["val_nll"])
    if math.isfinite(floor):
        xs, ys = [left] + xs, [floor] + ys
    if not xs:
        return
    xs, ys = xs + [right], ys + [ys[-1]]
    ax.plot(xs, ys, drawstyle="steps-post", color="0.2", alpha=0.3, lw=5, zorder=0,
            label="frontier (best by each budget)")
    ax.plot(front[by], front["val_nll"], "o", ms=9, mfc="none", mec="0.2", zorder=3)
    ax.set_xlim(left, right)
