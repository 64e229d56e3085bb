"""Intervals, paired verdicts, seeds and block lengths (charlab.compare) on synthetic scores
whose truth is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from charlab.compare import (
    PAIR_COLUMNS,
    Bootstrap,
    IntervalError,
    autocorrelation,
    block_from_ratio,
    choose_block,
    compare,
    compare_configs,
    quantile_bounds,
    resample_means,
    suggest_block,
    variance_ratio,
)

# Synthetic per-character differences shaped like Tiny Shakespeare's (docs/intervals.md):
# white noise plus a weak AR(1) component of ~50-character memory (phi 0.98), weighted so
# that the variance of the mean is twice the i.i.d. one (the measured differences of the
# recurrent models against the n-grams carry 1.8 times at 300-character blocks); lag-1
# autocorrelation 0.01, inside the measured -0.01 to 0.06.
PHI, AR_WEIGHT = 0.98, 0.0102
N_CHARS, SETS = 50_000, 400


def ar_noise(rng: np.random.Generator, sets: int, n: int, phi: float = PHI,
             weight: float = AR_WEIGHT) -> np.ndarray:
    """(sets, n) unit-variance series: sqrt(1 - w) white + sqrt(w) stationary AR(1)."""
    a = np.empty((n, sets))  # time-major: each step updates one contiguous row
    a[0] = rng.normal(size=sets)
    shocks = rng.normal(size=(n, sets)) * np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        np.multiply(a[t - 1], phi, out=a[t])
        a[t] += shocks[t]
    return np.sqrt(1 - weight) * rng.normal(size=(sets, n)) + np.sqrt(weight) * a.T


def long_run_ratio(phi: float = PHI, weight: float = AR_WEIGHT) -> float:
    """Variance of the mean over the i.i.d. one, for ar_noise: 1 + 2 w phi / (1 - phi)."""
    return 1 + 2 * weight * phi / (1 - phi)


def coverage(block: int, seed: int) -> tuple[float, float]:
    """Fraction of SETS simulated test sets (true mean 0) whose interval covers 0, with
    blocks of ``block`` characters (1,000 resamples) and with single characters (i.i.d.,
    300 resamples: the costly one, and 300 already shows the gap)."""
    rng = np.random.default_rng(seed)
    hits = {block: 0, 1: 0}
    for chunk in range(4):  # 100 sets at a time: bounded memory
        x = ar_noise(rng, SETS // 4, N_CHARS)
        for b, resamples in ((block, 1000), (1, 300)):
            # a fresh bootstrap seed per chunk: the sets of a chunk share block starts
            boot = Bootstrap(block=b, resamples=resamples, seed=seed * 10 + chunk)
            lo, hi = quantile_bounds(resample_means(x, boot), boot.level)
            hits[b] += int(((lo <= 0) & (hi >= 0)).sum())
    return hits[block] / SETS, hits[1] / SETS


def test_block_bootstrap_covers_the_true_mean_where_iid_does_not():
    """400 test sets of 50,000 characters, blocks of 1,000 (the default: 50 blocks): the
    95% interval covers the true mean 92-98% of the time (~94% expected: 50 blocks
    estimate the variance with some noise); resampling single characters ignores the
    autocorrelation and covers clearly less (~83% expected: its intervals are sqrt(2)
    too narrow)."""
    assert long_run_ratio() == pytest.approx(2.0, abs=0.01)
    block_cov, iid_cov = coverage(block=1000, seed=0)
    assert 0.92 <= block_cov <= 0.98, block_cov
    assert iid_cov < 0.88, iid_cov


def test_synthetic_noise_has_the_intended_autocorrelation():
    x = ar_noise(np.random.default_rng(1), 1, 200_000)[0]
    acf = autocorrelation(x, 2000)
    assert acf[1] == pytest.approx(AR_WEIGHT * PHI, abs=0.006)
    assert variance_ratio(acf)[-1] == pytest.approx(long_run_ratio(), rel=0.15)


def test_bootstrap_variance_is_the_variance_ratio_times_iid():
    """The block bootstrap's variance of the mean is what variance_ratio says blocks of that
    length carry: the two views of the dependence agree (choose_block rests on it)."""
    x = ar_noise(np.random.default_rng(2), 1, N_CHARS)
    for block in (10, 200):
        means = resample_means(x, Bootstrap(block=block, resamples=4000, seed=3))[:, 0]
        expected = x.var() / N_CHARS * variance_ratio(autocorrelation(x[0], block))[block - 1]
        assert means.var() == pytest.approx(expected, rel=0.1), block


def _planted(diff: float, seed: int = 0, n: int = N_CHARS) -> np.ndarray:
    """Two models' log-probs: shared difficulty, own noise, b worse than a by ``diff``."""
    rng = np.random.default_rng(seed)
    hard = -np.abs(rng.normal(1.6, 1.2, size=n))  # what both find hard
    own = ar_noise(rng, 2, n) * 0.75
    return np.stack([hard + own[0], hard + own[1] - diff])


def test_identical_models_tie_with_an_interval_containing_zero():
    lp = _planted(0.0)
    models, pairs = compare(["a", "b"], np.stack([lp[0], lp[0]]))
    row = pairs.iloc[0]
    assert (row["diff"], row["lo"], row["hi"], row["verdict"]) == (0.0, 0.0, 0.0, "tie")
    # and two different models of equal quality: a tie, the interval straddles 0
    _, pairs = compare(["a", "b"], lp)
    assert pairs.iloc[0]["verdict"] == "tie"
    assert pairs.iloc[0]["lo"] < 0 < pairs.iloc[0]["hi"]


def test_a_planted_difference_of_005_nats_is_found():
    lp = _planted(0.05, seed=4)
    models, pairs = compare(["better", "worse"], lp)
    row = pairs.iloc[0]
    assert list(pairs.columns) == PAIR_COLUMNS
    assert (row["a"], row["b"], row["verdict"]) == ("better", "worse", "a")
    assert row["lo"] < row["diff"] < row["hi"] < 0
    assert row["diff"] == pytest.approx(-0.05, abs=0.015)
    # the other way round, the verdict names the better model as b
    _, swapped = compare(["worse", "better"], lp[::-1])
    assert swapped.iloc[0]["verdict"] == "b"
    assert swapped.iloc[0]["lo"] == pytest.approx(-row["hi"])
    # per-model table: the mean of -logprob, inside its interval
    assert models["nll"].tolist() == pytest.approx((-lp).mean(axis=1).tolist())
    assert ((models["lo"] < models["nll"]) & (models["nll"] < models["hi"])).all()


def test_every_pair_once_in_model_order():
    lp = _planted(0.05)
    lp3 = np.stack([lp[0], lp[1], lp[0] - 0.3])
    _, pairs = compare(["x", "y", "z"], lp3, Bootstrap(block=100, resamples=200))
    assert pairs[["a", "b"]].values.tolist() == [["x", "y"], ["x", "z"], ["y", "z"]]
    assert pairs["verdict"].tolist()[1:] == ["a", "a"]  # z is 0.3 nats/char worse


def test_same_seed_bit_identical_other_seed_not():
    lp = _planted(0.02, seed=5)
    first = compare(["a", "b"], lp, Bootstrap(seed=7))
    again = compare(["a", "b"], lp, Bootstrap(seed=7))
    other = compare(["a", "b"], lp, Bootstrap(seed=8))
    for t1, t2 in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(t1, t2, check_exact=True)
    assert first[1].iloc[0]["lo"] != other[1].iloc[0]["lo"]


@pytest.mark.parametrize("block, resamples", [(1, 300), (10, 3000)])
def test_adding_models_leaves_a_models_resamples_alone(block, resamples):
    """Block starts depend neither on how many models are resampled nor on how the
    resamples are chunked (which does depend on it); block 1 sums one model's blocks by
    gathering them and 80 models' by a matrix product: both give the same means."""
    lp = _planted(0.02, seed=6, n=5000)
    boot = Bootstrap(block=block, resamples=resamples, seed=1)
    alone = resample_means(-lp[:1], boot)[:, 0]
    together = resample_means(-np.concatenate([lp] * 40), boot)[:, 0]
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, key", [({"block": 0}, "block"), ({"resamples": 5},
                                          "resamples"), ({"level": 1.0}, "level"),
                                         ({"seed": -1}, "seed"), ({"block": True}, "block")])
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(IntervalError, match=f"^{key}: "):
        Bootstrap(**kwargs)


def test_bad_scores_are_refused_before_any_work():
    lp = _planted(0.0, n=1000)
    with pytest.raises(IntervalError, match="block: 5000 leaves fewer than 2 blocks in the 1000"):
        compare(["a", "b"], lp, Bootstrap(block=5000))
    bad = lp.copy()
    bad[1, 3] = -np.inf
    with pytest.raises(IntervalError, match="non-finite"):
        compare(["a", "b"], bad)
    with pytest.raises(IntervalError, match="3 model names"):
        compare(["a", "b", "c"], lp)


# --- seeds -----------------------------------------------------------------------------------

def _seeded_runs(seed_spread: float, seeds: int = 3) -> tuple[list[str], np.ndarray]:
    """Runs of configurations A (better by 0.02) and B, each seed shifted by its own luck."""
    rng = np.random.default_rng(9)
    base = _planted(0.02, seed=10, n=20_000)
    names, rows = [], []
    for c, config in enumerate("AB"):
        for s in range(seeds):
            names.append(f"{config}@{s}")
            rows.append(base[c] + seed_spread * rng.normal()
                        + 0.05 * rng.normal(size=base.shape[1]))
    return names, np.stack(rows)


def test_one_seed_per_configuration_is_the_plain_paired_interval():
    names, lp = _seeded_runs(0.0, seeds=1)
    boot = Bootstrap(block=200, resamples=500, seed=2)
    configs, config_pairs = compare_configs(names, lp, {"A": ["A@0"], "B": ["B@0"]}, boot)
    models, pairs = compare(names, lp, boot)
    pd.testing.assert_frame_equal(config_pairs.drop(columns=["a", "b"]),
                                  pairs.drop(columns=["a", "b"]), check_exact=True)
    assert configs["seeds"].tolist() == [1, 1]
    assert configs["sd"].isna().all()
    np.testing.assert_array_equal(configs[["mean", "lo", "hi"]].to_numpy(),
                                  models[["nll", "lo", "hi"]].to_numpy())


def test_seed_spread_widens_the_interval():
    boot = Bootstrap(block=200, resamples=500, seed=2)
    groups = {"A": [f"A@{s}" for s in range(3)], "B": [f"B@{s}" for s in range(3)]}
    widths, sds = [], []
    for spread in (0.0, 0.05):
        names, lp = _seeded_runs(spread)
        configs, pairs = compare_configs(names, lp, groups, boot)
        widths.append(pairs.iloc[0]["hi"] - pairs.iloc[0]["lo"])
        sds.append(configs["sd"].max())
        assert configs["mean"].tolist() == pytest.approx(
            [(-lp[:3]).mean(), (-lp[3:]).mean()])
    assert sds[1] > 5 * sds[0]
    assert widths[1] > 2 * widths[0]


def test_unknown_run_in_a_configuration_is_named():
    names, lp = _seeded_runs(0.0, seeds=1)
    with pytest.raises(IntervalError, match=r"^configs\.A: no scores for A@7$"):
        compare_configs(names, lp, {"A": ["A@7"], "B": ["B@0"]})


# --- block length ----------------------------------------------------------------------------

def test_variance_ratio_by_hand():
    acf = np.array([1.0, 0.5, 0.25, 0.1])
    # b=1: 1; b=2: 1 + 2(0.5 * 0.5); b=3: 1 + 2(2/3 * 0.5 + 1/3 * 0.25)
    expected = [1, 1.5, 1 + 2 * (1 / 3 + 1 / 12), 1 + 2 * (0.375 + 0.125 + 0.025)]
    np.testing.assert_allclose(variance_ratio(acf), expected)


def test_block_from_ratio_stops_where_longer_blocks_add_little():
    b = np.arange(1, 1001)
    flat_after = 3 - 2 * np.exp(-b / 20)  # dependence gone after ~100 characters
    got = block_from_ratio(flat_after, tolerance=0.1)
    # the first b whose ratio is within 10% of the most any longer block carries (the end)
    assert 1.1 * flat_after[got - 1] >= flat_after[-1] > 1.1 * flat_after[got - 2]
    assert block_from_ratio(1 + b / 100, tolerance=0.1) >= 900  # still rising: near the end
    assert block_from_ratio(np.ones(50)) == 1


def test_choose_block_short_memory_short_block_long_memory_long_block():
    rng = np.random.default_rng(11)
    short = ar_noise(rng, 1, N_CHARS, phi=0.5, weight=1.0)[0]
    b = choose_block(short)
    assert 16 <= b <= N_CHARS // 50  # carries >= 90% of its long-run variance
    # ~1000-character memory, as Tiny Shakespeare's rnn-vs-n-gram differences show
    long = ar_noise(rng, 1, N_CHARS, phi=0.999, weight=0.003)[0]
    assert choose_block(long) >= 0.6 * N_CHARS // 50
    # every pair of models: the longest block any pair needs; identical models need none
    logprobs = np.stack([np.zeros(N_CHARS), short, long, long])
    assert suggest_block(logprobs) >= choose_block(long)
    assert choose_block(long - long) == 1
