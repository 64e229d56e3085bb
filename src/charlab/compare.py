"""Which model is best, and how sure: intervals and verdicts from per-character scores.

Every number here comes from the one scoring pass that evaluate keeps: each model's natural-
log probability of each test character (:class:`charlab.evaluate.SplitScores`). A model's
test nll is the mean of ``-logprob`` over the split; a pair's difference is ``nll_a - nll_b``
over the same characters.

Neighbouring characters are not independent (a hard word is hard for every model, a passage
suits one model better than another), so the interval resamples **contiguous blocks** of
the split, not single characters: a circular block bootstrap (Politis & Romano 1992). One
resample draws ``ceil(n / block)`` block starts uniformly on the circle of the ``n`` scored
characters and averages the ``block`` characters after each; circular, so every character
is equally likely to be drawn and the resampled means centre on the split's own mean. Every
model is resampled on the **same** starts (a paired bootstrap, Koehn 2004), so a pair's
resampled difference is the difference of its two models' resampled means, and the models'
shared difficulty cancels. Intervals are percentile intervals of the resampled means.

The cost is a sum of block sums: each model's circular block sums come from one cumulative
sum, and a resample adds up its ``ceil(n / block)`` of them (a gather of block sums, never of
characters). With many blocks per resample and many series (short blocks, the coverage
tests' hundreds of simulated sets) the same sums are formed as counts per start times the
block sums, one matrix product.

How the default block length was chosen, and what the interval means and does not mean
(over test characters and seeds, not over corpora): docs/intervals.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from charlab.errors import CharlabError

# From the autocorrelation of the per-character differences of the default run's models on
# Tiny Shakespeare's test split: suggest_block gave 963 (docs/intervals.md).
DEFAULT_BLOCK = 1000
DEFAULT_RESAMPLES = 2000
MODEL_COLUMNS = ["model", "nll", "lo", "hi"]
PAIR_COLUMNS = ["a", "b", "diff", "lo", "hi", "verdict"]
CONFIG_COLUMNS = ["config", "seeds", "mean", "sd", "lo", "hi"]
# elements one chunk of resamples may hold (chunk x blocks x series): bounds the memory
_CHUNK_ELEMENTS = 1 << 22


class IntervalError(CharlabError, ValueError):
    """Scores or bootstrap settings that intervals cannot be computed from."""


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are resampled: ``resamples`` draws of ``block``-character blocks from
    a generator seeded with ``seed``; intervals cover ``level`` of the resampled values."""

    block: int = DEFAULT_BLOCK
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        for key, least in (("block", 1), ("resamples", 10), ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise IntervalError(f"{key}: must be an integer >= {least}, got {value!r}")
        if not 0 < self.level < 1:
            raise IntervalError(f"level: must be in (0, 1), got {self.level!r}")

    def streams(self) -> tuple[np.random.Generator, np.random.Generator]:
        """Independent generators for block starts and for seed draws: resampling seeds
        never shifts the block starts, so one seed per configuration gives exactly the
        plain paired interval."""
        blocks, seeds = np.random.SeedSequence(self.seed).spawn(2)
        return np.random.default_rng(blocks), np.random.default_rng(seeds)


def nll_rows(logprobs: np.ndarray, models: Sequence[str] | None = None) -> np.ndarray:
    """``-logprobs`` as a (series, characters) float64 array, checked (with ``models``:
    one distinct name per row)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] < 1 or lp.shape[1] < 2:
        raise IntervalError(f"scores: need a (models, characters) array with at least 2 "
                            f"characters, got shape {lp.shape}")
    if models is not None and (len(models) != len(lp) or len(set(models)) != len(models)):
        raise IntervalError(f"scores: {len(models)} model names (distinct) for "
                            f"{len(lp)} rows")
    if not np.isfinite(lp).all():
        raise IntervalError("scores: non-finite log-probabilities")
    return -lp


def block_sums(x: np.ndarray, block: int) -> np.ndarray:
    """``s[m, i] = x[m, i] + ... + x[m, i + block - 1]`` on the circle, for every start i."""
    n = x.shape[1]
    if block > n:
        raise IntervalError(f"block: {block} is longer than the {n} scored characters")
    ext = np.concatenate([x, x[:, :block]], axis=1)
    c = np.zeros((x.shape[0], n + block + 1))
    np.cumsum(ext, axis=1, out=c[:, 1:])
    return c[:, block:block + n] - c[:, :n]


def _sum_blocks(sums: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(resamples, series): each resample's total over its blocks."""
    m, n = sums.shape
    r, k = starts.shape
    if k * m <= n:  # few blocks: gather their sums
        return sums[:, starts].sum(axis=2).T
    offsets = (starts + n * np.arange(r)[:, None]).ravel()
    counts = np.bincount(offsets, minlength=r * n).reshape(r, n).astype(np.float64)
    return counts @ sums.T


def resample_means(x: np.ndarray, boot: Bootstrap,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """(resamples, series) circular-block-bootstrap means of each row of ``x``, every row
    on the same block starts. The same ``boot`` gives bit-identical draws.

    Each resample averages k = ceil(n / block) whole blocks (k * block >= n characters,
    never fewer than the split). Its spread about the split's mean is then widened by
    sqrt(k / (k - 1)): the circular block means vary about the split's own mean, which they
    make up, so like a sample variance without Bessel's correction they understate the
    variance by (k - 1) / k (2% of the variance, 1% of the width at the default's ~56
    blocks; nothing at 1-character blocks).
    """
    rng = boot.streams()[0] if rng is None else rng
    m, n = x.shape
    k = math.ceil(n / boot.block)
    if k < 2:
        raise IntervalError(f"block: {boot.block} leaves fewer than 2 blocks in the {n} "
                            "scored characters")
    sums = block_sums(x, boot.block)
    per_resample = max(k, min(k * m, n))  # the gather's (k, m) sums, or n counts per start
    chunk = max(1, _CHUNK_ELEMENTS // per_resample)
    out = np.empty((boot.resamples, m))
    for a in range(0, boot.resamples, chunk):
        r = min(chunk, boot.resamples - a)
        out[a:a + r] = _sum_blocks(sums, rng.integers(0, n, size=(r, k)))
    out /= k * boot.block
    point = x.mean(axis=1)
    return point + math.sqrt(k / (k - 1)) * (out - point)


def quantile_bounds(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the percentile interval holding ``level`` of the resampled values."""
    tail = (1 - level) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail], axis=0)
    return lo, hi


def verdict(lo: float, hi: float) -> str:
    """For an interval of ``a - b`` (nats/char): ``a`` if entirely below 0 (a has the lower
    nll), ``b`` if entirely above, ``tie`` when it contains 0."""
    if hi < 0:
        return "a"
    if lo > 0:
        return "b"
    return "tie"


def model_table(names: Sequence[str], point: np.ndarray, draws: np.ndarray,
                level: float) -> pd.DataFrame:
    """``model, nll, lo, hi``: each series' point value and its interval."""
    lo, hi = quantile_bounds(draws, level)
    return pd.DataFrame({"model": list(names), "nll": point, "lo": lo, "hi": hi},
                        columns=MODEL_COLUMNS)


def pair_table(names: Sequence[str], point: np.ndarray, draws: np.ndarray,
               level: float) -> pd.DataFrame:
    """``a, b, diff, lo, hi, verdict`` for every pair in ``names`` order (a before b)."""
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            lo, hi = quantile_bounds(draws[:, i] - draws[:, j], level)
            rows.append({"a": names[i], "b": names[j], "diff": point[i] - point[j],
                         "lo": float(lo), "hi": float(hi), "verdict": verdict(lo, hi)})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def compare(models: Sequence[str], logprobs: np.ndarray,
            boot: Bootstrap = Bootstrap()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-model table ``model, nll, lo, hi``; pair table ``a, b, diff, lo, hi, verdict``)
    from one paired block bootstrap of every model's per-character scores."""
    x = nll_rows(logprobs, models)
    draws = resample_means(x, boot)
    point = x.mean(axis=1)
    return (model_table(models, point, draws, boot.level),
            pair_table(models, point, draws, boot.level))


# --- seeds: several runs of one configuration -----------------------------------------------

def seed_groups(models: Sequence[str], configs: Mapping[str, Sequence[str]]
                ) -> list[np.ndarray]:
    """Row indices of each configuration's runs (its seeds), checked against ``models``."""
    groups = []
    for config, runs in configs.items():
        if not runs:
            raise IntervalError(f"configs.{config}: no runs")
        missing = [r for r in runs if r not in models]
        if missing:
            raise IntervalError(f"configs.{config}: no scores for {', '.join(missing)}")
        groups.append(np.array([list(models).index(r) for r in runs]))
    return groups


def seed_means(draws: np.ndarray, groups: Sequence[np.ndarray],
               rng: np.random.Generator) -> np.ndarray:
    """(resamples, configs): per resample, each configuration's mean over its seeds drawn
    with replacement (one seed: that seed's column, no draw)."""
    out = np.empty((draws.shape[0], len(groups)))
    for c, idx in enumerate(groups):
        if len(idx) == 1:
            out[:, c] = draws[:, idx[0]]
            continue
        pick = idx[rng.integers(0, len(idx), size=(draws.shape[0], len(idx)))]
        out[:, c] = np.take_along_axis(draws, pick, axis=1).mean(axis=1)
    return out


def compare_configs(models: Sequence[str], logprobs: np.ndarray,
                    configs: Mapping[str, Sequence[str]], boot: Bootstrap = Bootstrap()
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Configurations run with several seeds: (``config, seeds, mean, sd, lo, hi``; the pair
    table ``a, b, diff, lo, hi, verdict`` of configurations).

    ``configs`` maps a configuration to the names of its runs in ``models`` (one per seed).
    ``mean`` and ``sd`` are over the seeds' test nll (sd NaN for one seed); ``diff`` is the
    difference of the two configurations' means.

    The interval is a two-level bootstrap over the two sources of chance in ``diff``: which
    characters the test split holds, and which seeds were run. Each resample (1) draws one
    set of block starts, shared by every run of every configuration, as in :func:`compare`,
    so the test-sample spread enters paired; then (2) for each configuration, draws its
    seeds with replacement and averages those runs' resampled means, so the spread between
    seeds enters too. The two levels are crossed, not nested (every seed is scored on the
    same characters), so no variance is counted twice. With one seed per configuration step
    (2) is the identity and the interval is exactly :func:`compare`'s; the more the seeds
    disagree, the wider it gets. With few seeds, resampling them underestimates their
    spread by a factor (s - 1) / s in variance (2 seeds: half): read a tie as a tie, and a
    near-miss with 2-3 seeds as a reason to run more.
    """
    x = nll_rows(logprobs, models)
    groups = seed_groups(models, configs)
    block_rng, seed_rng = boot.streams()
    draws = seed_means(resample_means(x, boot, block_rng), groups, seed_rng)
    per_run = x.mean(axis=1)
    point = np.array([per_run[idx].mean() for idx in groups])
    sd = [float(per_run[idx].std(ddof=1)) if len(idx) > 1 else math.nan for idx in groups]
    names = list(configs)
    table = model_table(names, point, draws, boot.level).rename(
        columns={"model": "config", "nll": "mean"})
    table.insert(1, "seeds", [len(idx) for idx in groups])
    table.insert(3, "sd", sd)
    return table[CONFIG_COLUMNS], pair_table(names, point, draws, boot.level)


# --- choosing the block length ---------------------------------------------------------------

def autocorrelation(x: np.ndarray, lags: int) -> np.ndarray:
    """Sample autocorrelation ``acf[k]`` of a 1-D series for k = 0..lags (acf[0] = 1), the
    usual biased estimator (divided by n at every lag), by FFT."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= lags < n:
        raise IntervalError(f"lags: must be in [1, {n - 1}] for {n} characters, got {lags}")
    d = x - x.mean()
    f = np.fft.rfft(d, 2 * n)
    acov = np.fft.irfft(f * np.conj(f), 2 * n)[:lags + 1]
    if acov[0] == 0:
        raise IntervalError("scores: the series is constant, it has no autocorrelation")
    return acov / acov[0]


def variance_ratio(acf: np.ndarray) -> np.ndarray:
    """``ratio[b - 1]`` for block lengths b = 1..len(acf): ``1 + 2 sum_{k<b} (1 - k/b) acf[k]``.

    That is the variance a circular block bootstrap with blocks of b characters gives the
    mean, over the variance an i.i.d. bootstrap gives it (the Bartlett-weighted sum of the
    autocorrelations): how much of the dependence blocks of b characters carry along.
    """
    acf = np.asarray(acf, dtype=np.float64)
    b = np.arange(1, len(acf) + 1)
    k = np.arange(len(acf))
    # sum_{k<b} (1 - k/b) acf[k] from running sums of acf[k] and k * acf[k] (k >= 1)
    inner = np.concatenate([[0.0], np.cumsum(acf[1:])])
    weighted = np.concatenate([[0.0], np.cumsum(k[1:] * acf[1:])])
    return 1 + 2 * (inner - weighted / b)


def block_from_ratio(ratio: np.ndarray, tolerance: float = 0.1) -> int:
    """The shortest block b such that no longer block (up to ``len(ratio)``) carries more
    than ``1 + tolerance`` times the variance b carries; ``ratio`` is
    :func:`variance_ratio`'s curve."""
    ratio = np.asarray(ratio, dtype=np.float64)
    # the most any longer block carries, for every b (suffix maximum, shifted by one)
    longer = np.append(np.maximum.accumulate(ratio[::-1])[::-1][1:], -np.inf)
    return int(np.argmax(ratio * (1 + tolerance) >= longer)) + 1


def choose_block(diff: np.ndarray, min_blocks: int = 50, tolerance: float = 0.1) -> int:
    """The block length for one series of per-character differences (``diff[t]`` =
    model a's minus model b's ``-logprob`` of character t).

    Rule: the shortest block that carries, within ``tolerance``, as much of the dependence
    as every longer usable block (:func:`block_from_ratio` on :func:`variance_ratio` of the
    autocorrelation). The longest usable block leaves ``min_blocks`` blocks in the split
    (fewer, and the resampled quantiles rest on too few independent pieces).

    Why: a block bootstrap with blocks of b characters sees the autocorrelation up to lag b,
    Bartlett-weighted; its variance falls short of the true one by what the longer lags add.
    Where the dependence dies off the carried variance flattens, and the rule stops there;
    where it keeps rising up to the longest usable block (it does on Tiny Shakespeare,
    docs/intervals.md), the rule takes that block. Sampling noise in the long lags can only
    make the curve look like it still rises, so the rule errs towards longer blocks: wider,
    noisier intervals, not intervals that cover too little. Rules that look at single lags
    (the first lag after which |acf| stays below a noise threshold, or Politis & White's
    flat-top estimate built on that cut-off) stop where each lag is within noise; on
    character scores many small, individually insignificant correlations add up to most of
    the variance, so this rule watches their weighted sum instead.
    """
    n = len(diff)
    longest = n // min_blocks
    if longest < 1:
        raise IntervalError(f"scores: {n} characters cannot hold {min_blocks} blocks")
    if longest == 1 or np.ptp(diff) == 0:  # a constant difference has nothing to resample
        return 1
    return block_from_ratio(variance_ratio(autocorrelation(diff, longest - 1)), tolerance)


def suggest_block(logprobs: np.ndarray, min_blocks: int = 50, tolerance: float = 0.1) -> int:
    """:func:`choose_block` over every pair of models' per-character differences: the
    longest, so that no pair's dependence is cut short."""
    x = nll_rows(logprobs)
    if x.shape[0] < 2:
        raise IntervalError("scores: need at least 2 models to measure differences")
    return max(choose_block(x[i] - x[j], min_blocks, tolerance)
               for i in range(len(x)) for j in range(i + 1, len(x)))
