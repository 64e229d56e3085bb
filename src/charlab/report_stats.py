"""The report's answer to "which model is best, and how sure": the verdict that opens it,
then the intervals, the seeds and the equal budgets (markdown lines, ``metrics/budget.csv``
and the budget figure).

The numbers come from the intervals stage (:mod:`charlab.intervals`) and the training
curves (:mod:`charlab.budget`); :mod:`charlab.verdict` words them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from charlab.budget import TrainedRun, budget_table, equal_budget, plot_budget
from charlab.compare import Bootstrap
from charlab.errors import CharlabError
from charlab.intervals import Intervals, fmt_sd, seed_note
from charlab.io import atomic_path
from charlab.report import TrainedInfo
from charlab.verdict import budget_wording, verdict_markdown

BUDGET_FIGURE = "budget_flops.png"
BUDGETS = (("flops", "At equal FLOPs"), ("seconds", "At equal wall time"))


@dataclass(frozen=True)
class Findings:
    """What the report shows of them: the verdict (markdown that opens the report) and the
    sections that follow the models' table."""

    verdict: str
    sections: list[str]


def budget_runs(trained: Mapping[str, TrainedInfo], runs_dir: str | os.PathLike
                ) -> dict[str, TrainedRun]:
    """What budgets need of each trained model: its curve, and its model config and
    characters per step from its run info (written by the train stage)."""
    out = {}
    for name, info in trained.items():
        config = info.run.get("model_config")
        if not isinstance(config, Mapping):
            raise CharlabError(f"{Path(runs_dir) / name}.json: no model_config (written by "
                               f"an older charlab); retrain {name} (`dvc repro`)")
        out[name] = TrainedRun(info.curve, config, info.chars_per_step)
    return out


def val_constants(metrics: pd.DataFrame, names: Sequence[str]) -> dict[str, float]:
    """The val nll of each of ``names`` (the n-grams: no curve, the same at any budget)."""
    val = metrics[metrics["split"] == "val"].set_index("model")["nll"]
    return {n: float(val[n]) for n in names if n in val.index}


def _bracket(part: pd.DataFrame, by: str, budget: float) -> str:
    """The evaluation steps a model's value at ``budget`` is read between (one step: read
    there, no interpolation)."""
    at = part[part[by] == budget]
    if len(at):
        return str(int(at["step"].iloc[0]))
    before, after = part[part[by] < budget], part[part[by] > budget]
    if not len(before) or not len(after):
        return "–"
    return f"{int(before['step'].iloc[-1])}–{int(after['step'].iloc[0])}"


def _budget_lines(table: pd.DataFrame, at: pd.DataFrame, by: str, title: str) -> list[str]:
    budget = float(at["budget"].iloc[0])
    unit = "FLOPs" if by == "flops" else "s"
    lines = ["", f"### {title}: {budget_wording(budget, by)}", "",
             f"| model | val nll at {budget:.3g} {unit} | read between steps | "
             f"full run: val nll | full run: {unit} |", "|---|---:|---|---:|---:|"]
    for r in at.itertuples():
        part = table[table["model"] == r.model].sort_values(by)
        full = f"{part[by].max():.3g}" if len(part) else "– (no training)"
        steps = _bracket(part, by, budget) if len(part) else "–"
        value = "–" if math.isnan(r.val_nll) else f"{r.val_nll:.4f}"
        lines.append(f"| {r.model} | {value} | {steps} | {r.full_val_nll:.4f} | {full} |")
    return lines


def budget_findings(table: pd.DataFrame, constants: Mapping[str, float],
                    figure: Path, figure_rel: str) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The equal-budget tables (wording -> :func:`charlab.budget.equal_budget`'s table) and
    the report's budget section; draws the figure."""
    plot_budget(table, constants, figure)
    lines = ["", "## At equal budget", "",
             "Validation nll of every trained model against its training compute, read at "
             "the largest budget every trained model reached (linear in log budget between "
             "its two evaluation points around it). Training FLOPs = characters seen × 6 × "
             "the forward multiply-adds per character of the model's matrix products (the "
             "recurrent and output matmuls; a GPT's projections, attention and head: "
             "`charlab.budget`); wall time is the training curve's elapsed seconds, "
             "evaluations included. N-grams have no training curve: their val nll is the "
             "same at every budget (dashed lines). Every point: `metrics/budget.csv`.", "",
             f"![Validation nll against training FLOPs]({figure_rel})"]
    equal = {}
    for by, title in BUDGETS:
        at = equal_budget(table, constants, by)
        if not len(table) or math.isnan(float(at["budget"].iloc[0])):
            continue
        equal[budget_wording(float(at["budget"].iloc[0]), by)] = at
        lines += _budget_lines(table, at, by, title)
    return equal, lines


def _verdict_word(r) -> str:
    return {"a": f"{r.a} better", "b": f"{r.b} better"}.get(r.verdict, "cannot tell apart")


def _pair_lines(pairs: pd.DataFrame, what: str) -> list[str]:
    lines = [f"| {what} a | {what} b | a − b (nats/char) | 95% interval | verdict |",
             "|---|---|---:|---|---|"]
    lines += [f"| {r.a} | {r.b} | {r.diff:+.4f} | {r.lo:+.4f} to {r.hi:+.4f} | "
              f"{_verdict_word(r)} |" for r in pairs.itertuples()]
    return lines


def interval_lines(iv: Intervals, boot: Bootstrap, n_chars: int) -> list[str]:
    """The report's intervals section: every model, every pair."""
    lines = ["", "## How sure: intervals on the test split", "",
             f"95% intervals from a paired block bootstrap of the {n_chars:,} test characters "
             f"({boot.resamples:,} resampled test splits of {boot.block:,}-character blocks, "
             f"seed {boot.seed}; every model resampled on the same blocks). They say how much "
             "a number would move on another stretch of text like this test split (and, for "
             "configurations of several seeds, with other seeds); not on another corpus, "
             "and not with other budgets or hyperparameters "
             "(charlab's `docs/intervals.md`). `tie`: the interval of the "
             "difference contains 0, so this test split cannot tell the two apart. "
             "`metrics/pairs.csv`, `metrics/intervals.json`.", "",
             "| model | test nll | 95% interval |", "|---|---:|---|"]
    for r in iv.models.sort_values("nll", kind="stable").itertuples():
        lines.append(f"| {r.model} | {r.nll:.4f} | {r.lo:.4f} to {r.hi:.4f} |")
    return lines + [""] + _pair_lines(iv.pairs, "model")


def seed_lines(iv: Intervals, configs: Mapping[str, Sequence[str]]) -> list[str]:
    """The seeds section: each configuration's mean ± sd over its seeds, and the pairs of
    configurations. Empty when every configuration is one run."""
    if not iv.several_seeds:
        return []
    lines = ["", "## Seeds", "",
             "Models whose params entries differ only in `seed` are runs of one "
             "configuration. Its test nll is the mean over its seeds ± their sd; the interval "
             "of a configuration, and of a difference between two, is a two-level bootstrap: "
             "each resample draws one set of test blocks shared by every run, then each "
             "configuration's seeds with replacement, so it holds both the test sample's and "
             "the seeds' spread. With 2-3 seeds the seeds' spread is understated (by "
             "(s - 1)/s in variance): a near-miss is a reason to run more seeds. "
             "`metrics/configs.csv`, `metrics/config_pairs.csv`.", "",
             "| configuration | runs | test nll: mean ± sd | 95% interval |",
             "|---|---|---:|---|"]
    for r in iv.configs.sort_values("mean", kind="stable").itertuples():
        runs = ", ".join(configs.get(r.config, (r.config,)))
        lines.append(f"| {r.config} | {runs} | {r.mean:.4f} ± {fmt_sd(r.sd)} | "
                     f"{r.lo:.4f} to {r.hi:.4f} |")
    return lines + [""] + _pair_lines(iv.config_pairs, "configuration")


def verdict_text(iv: Intervals, configs: Mapping[str, Sequence[str]],
                 equal: Mapping[str, pd.DataFrame]) -> str:
    """The verdict: over configurations (the mean over seeds) when some have several
    seeds, else over models, which is the same table."""
    if not iv.several_seeds:
        return verdict_markdown(iv.models, iv.pairs, equal)
    models = iv.configs.rename(columns={"config": "model", "mean": "nll"})
    parts = verdict_markdown(models, iv.config_pairs, equal).rstrip("\n").split("\n\n")
    # after the heading and the best model's paragraph: the budgets below are per run
    parts.insert(2, f"Configurations of several seeds count as one above, by their mean "
                    f"test nll over the seeds: {seed_note(configs)}; their intervals include "
                    "the seeds' spread (see Seeds).")
    return "\n\n".join(parts) + "\n"


def findings(iv: Intervals, configs: Mapping[str, Sequence[str]], metrics: pd.DataFrame,
             runs: Mapping[str, TrainedRun], boot: Bootstrap, budget_csv: str | os.PathLike,
             figure: Path, figure_rel: str) -> Findings:
    """Everything the report says of intervals, seeds and budgets; writes budget.csv and
    the budget figure."""
    table = budget_table(runs)
    with atomic_path(budget_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    ngrams = [m for m in dict.fromkeys(metrics["model"]) if m not in runs]
    equal, budget = budget_findings(table, val_constants(metrics, ngrams), figure, figure_rel)
    n_chars = int(metrics.loc[metrics["split"] == "test", "chars"].iloc[0])
    sections = interval_lines(iv, boot, n_chars) + seed_lines(iv, configs) + budget
    return Findings(verdict_text(iv, configs, equal), sections)
