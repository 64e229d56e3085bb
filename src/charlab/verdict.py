"""The verdict that opens the report: a few sentences written from the numbers.

Inputs are the tables of :mod:`charlab.compare` (per-model intervals and paired
differences on the test split) and of :mod:`charlab.budget` (val nll at an equal budget);
nothing here computes a statistic, it only words them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd


def _margin(pairs: pd.DataFrame, best: str, other: str) -> tuple[float, float, float, str]:
    """(other - best, its interval lo, hi, verdict), whichever way round the pair is stored."""
    row = pairs[((pairs["a"] == best) & (pairs["b"] == other))
                | ((pairs["a"] == other) & (pairs["b"] == best))]
    if len(row) != 1:
        raise ValueError(f"no single pair row for {best} and {other}")
    r = row.iloc[0]
    if r["a"] == best:  # stored as best - other
        return -r["diff"], -r["hi"], -r["lo"], r["verdict"]
    return r["diff"], r["lo"], r["hi"], r["verdict"]


def _interval(lo: float, hi: float, level: float) -> str:
    return f"{level:.0%} interval {lo:.4f} to {hi:.4f}"


def best_sentences(models: pd.DataFrame, pairs: pd.DataFrame, level: float = 0.95
                   ) -> list[str]:
    """The best model on the test split, its margin over the runner-up, and the models
    that cannot be told apart from it."""
    ranked = models.sort_values("nll", kind="stable").reset_index(drop=True)
    best = ranked.iloc[0]
    out = [f"**{best['model']}** has the lowest test nll: {best['nll']:.4f} nats/char "
           f"({_interval(best['lo'], best['hi'], level)})."]
    if len(ranked) < 2:
        return out
    runner = ranked.iloc[1]
    diff, lo, hi, verdict = _margin(pairs, best["model"], runner["model"])
    gap = f"{diff:.4f} nats/char ({_interval(lo, hi, level)} for the difference)"
    if verdict == "tie":
        out.append(f"It leads the runner-up, {runner['model']} ({runner['nll']:.4f}), by "
                   f"{gap}, an interval that contains 0: on this test split the two "
                   "cannot be told apart.")
    else:
        out.append(f"It beats the runner-up, {runner['model']} ({runner['nll']:.4f}), by "
                   f"{gap}.")
    ties = [m for m in ranked["model"][1:] if _margin(pairs, best["model"], m)[3] == "tie"]
    if not ties:
        out.append("Every other model is behind it: no interval of a difference from the "
                   "best contains 0.")
    elif ties != [runner["model"]]:  # a lone tied runner-up is said above
        out.append(f"Cannot be told apart from {best['model']} (the interval of the "
                   f"difference contains 0): {', '.join(ties)}.")
    return out


def _order(names: list[str]) -> str:
    return " < ".join(names)


def budget_sentence(at_budget: pd.DataFrame, what: str) -> str:
    """Whether the ranking holds at an equal budget (``what``: e.g. "2.3e+13 training
    FLOPs"). ``at_budget`` is :func:`charlab.budget.equal_budget`'s table: the val nll of
    every model at that budget and at its full budget, both on the validation split, so a
    change of order is the budget's doing."""
    reached = at_budget[at_budget["val_nll"].map(math.isfinite)]
    unreached = [m for m in at_budget["model"] if m not in set(reached["model"])]
    at_equal = list(reached.sort_values("val_nll", kind="stable")["model"])
    at_full = list(reached.sort_values("full_val_nll", kind="stable")["model"])
    values = ", ".join(f"{r.model} {r.val_nll:.4f}" for r in reached.itertuples())
    text = (f"At equal budget ({what}, the most every trained model reached) the val nll "
            f"is: {values}.")
    if len(reached) < 2:
        text += " Too few models to rank there."
    elif at_equal == at_full:
        text += (f" The ranking is the one the full runs give on the validation split "
                 f"({_order(at_full)}).")
    else:
        text += (f" The ranking changes: {_order(at_equal)} at equal budget, "
                 f"{_order(at_full)} after the full runs (validation split).")
    if unreached:
        text += f" No evaluation of {', '.join(unreached)} came that early: left out."
    return text


def budget_wording(budget: float, by: str) -> str:
    """``2.3e+13 training FLOPs`` or ``734 s of training wall time``: the key of
    :func:`verdict_markdown`'s ``equal`` for a budget of :func:`charlab.budget.equal_budget`."""
    if by == "flops":
        return f"{budget:.2g} training FLOPs"
    return f"{budget:,.0f} s of training wall time"


def verdict_markdown(models: pd.DataFrame, pairs: pd.DataFrame,
                     equal: Mapping[str, pd.DataFrame] | None = None,
                     level: float = 0.95) -> str:
    """The report's opening verdict, markdown. ``models`` and ``pairs`` are
    :func:`charlab.compare.compare`'s tables; ``equal`` maps a budget's wording (e.g.
    "2.3e+13 training FLOPs") to its :func:`charlab.budget.equal_budget` table."""
    lines = [" ".join(best_sentences(models, pairs, level))]
    for what, table in (equal or {}).items():
        lines.append(budget_sentence(table, what))
    return "## Verdict\n\n" + "\n\n".join(lines) + "\n"
