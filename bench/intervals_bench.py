"""Benchmark: what intervals, budgets and the verdict cost at the default run's size.

Run from the repository root:  .venv/bin/python bench/intervals_bench.py [--models 6]

Scores: ``--models`` synthetic models (the pipeline's 4, plus room for a GPT and a seed)
x 55,769 test characters, log-probs drawn like the real ones (a shared difficulty plus each
model's own autocorrelated noise). Everything runs in this one process, best of 3:

* the paired block bootstrap (:func:`charlab.compare.compare`, default block and
  resamples), against the same bootstrap done the direct way, gathering every character
  of every resampled block (the baseline);
* choosing the block length from the autocorrelation of every pair (``suggest_block``);
* the budget table, the equal-budget tables, the figure and the verdict on curves of the
  default run's shape.

Writes its report to the intervals section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from results import update_section  # bench/ is the script's own folder

from charlab.budget import TrainedRun, budget_table, equal_budget, plot_budget
from charlab.compare import Bootstrap, compare, resample_means, suggest_block
from charlab.verdict import budget_wording, verdict_markdown

N_CHARS = 55_769
RNN = {"vocab_size": 65, "cell": "rnn", "layers": 1, "hidden_size": 512, "dropout": 0.1,
       "embedding_size": 0}


def best_of(call: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times)


def synthetic_logprobs(models: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hard = np.abs(rng.normal(1.6, 1.2, size=N_CHARS))
    # each model's own noise: white plus a smoothed (autocorrelated) part
    own = rng.normal(size=(models, N_CHARS)) * 0.7
    kernel = np.ones(200) / np.sqrt(200)
    own += 0.1 * np.stack([np.convolve(rng.normal(size=N_CHARS), kernel, "same")
                           for _ in range(models)])
    return -(hard + own + 0.02 * np.arange(models)[:, None])


def direct_bootstrap(logprobs: np.ndarray, boot: Bootstrap) -> np.ndarray:
    """The baseline: the same circular block draws, gathering every character."""
    x = -logprobs
    n = x.shape[1]
    k = -(-n // boot.block)
    rng = boot.streams()[0]
    out = np.empty((boot.resamples, x.shape[0]))
    offsets = np.arange(boot.block)
    for r in range(boot.resamples):
        starts = rng.integers(0, n, size=k)
        idx = ((starts[:, None] + offsets[None, :]) % n).ravel()
        out[r] = x[:, idx].mean(axis=1)
    return out


def agree(logprobs: np.ndarray, boot: Bootstrap) -> bool:
    """The block-sum bootstrap, its sqrt(k / (k - 1)) widening undone, equals the direct
    one on the same draws."""
    x = -logprobs
    k = -(-x.shape[1] // boot.block)
    point = x.mean(axis=1)
    narrow = point + (resample_means(x, boot) - point) / np.sqrt(k / (k - 1))
    return bool(np.allclose(narrow, direct_bootstrap(logprobs, boot), rtol=0, atol=1e-9))


def default_curves() -> dict[str, TrainedRun]:
    def curve(steps: np.ndarray, vals: list[float], secs: float) -> pd.DataFrame:
        return pd.DataFrame({"step": steps, "train_loss": vals, "val_loss": vals,
                             "chars_per_sec": 1.0, "elapsed_sec": steps * secs})
    return {"rnn": TrainedRun(curve(np.arange(200, 1001, 200),
                                    [2.14, 1.90, 1.77, 1.70, 1.67], 0.16), RNN, 12_800),
            "rnn3": TrainedRun(curve(np.arange(200, 1201, 200),
                                     [1.91, 1.67, 1.57, 1.53, 1.51, 1.50], 0.6),
                               {**RNN, "layers": 3}, 12_800)}


def whole_addition(logprobs: np.ndarray, names: list[str], figure: Path) -> None:
    """What the evaluate/report stages will add: intervals, budgets, figure, verdict."""
    models, pairs = compare(names, logprobs)
    table = budget_table(default_curves())
    ngrams = {"ngram4": 1.52, "ngram10": 1.51}
    equal = {budget_wording(float(t["budget"].iloc[0]), by): t
             for by in ("flops", "seconds") for t in [equal_budget(table, ngrams, by)]}
    plot_budget(table, ngrams, figure)
    verdict_markdown(models, pairs, equal)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=6)
    args = ap.parse_args()
    lp = synthetic_logprobs(args.models)
    names = [f"m{i}" for i in range(args.models)]
    boot = Bootstrap()
    load = os.getloadavg()[0]
    fast = best_of(lambda: compare(names, lp, boot))
    few = Bootstrap(resamples=100)  # the baseline is slow: time 100 resamples, scale up
    direct = best_of(lambda: direct_bootstrap(lp, few), repeats=2) * boot.resamples / 100
    same = agree(lp, few)
    block = best_of(lambda: suggest_block(lp))
    with tempfile.TemporaryDirectory() as tmp:
        total = best_of(lambda: whole_addition(lp, names, Path(tmp) / "budget.png"))
    pairs = args.models * (args.models - 1) // 2
    text = f"""## Intervals, budgets and verdict (bench/intervals_bench.py)

Machine: {os.cpu_count()} CPU(s), {platform.machine()}, Python {platform.python_version()}, \
numpy {np.__version__}; load average before the run {load:.2f}. Scores: {args.models} models \
x {N_CHARS:,} test characters ({pairs} pairs), block {boot.block}, {boot.resamples:,} \
resamples. Best of 3 in one process.

| step | time | vs direct |
|---|---:|---:|
| paired block bootstrap, direct (gather every character) | {direct:.2f} s | 1x |
| `compare` (sums of block sums) | {fast * 1000:.0f} ms | **{direct / fast:.0f}x faster** |
| `suggest_block` (autocorrelation of every pair) | {block * 1000:.0f} ms | |
| all: `compare`, budget table, equal budgets, figure, verdict | {total:.2f} s | |

The direct bootstrap is timed on 100 resamples and scaled by {boot.resamples // 100}; \
"all" is warm (matplotlib already imported, as the report stage has it). The direct and \
the block-sum bootstrap give the same means on the same draws (to 1e-9,
the sqrt(k / (k - 1)) widening undone): {same}. Required: the whole addition at most 10 s
of a default `dvc repro`.
"""
    print(text)
    update_section("intervals", text)


if __name__ == "__main__":
    main()
