"""The intervals stage's tables: how sure each test number is, from the one scoring pass.

Every interval comes from evaluate's per-character test scores (``data/scores/
test_logprobs.npz``) by :mod:`charlab.compare`'s paired block bootstrap: each model's test
nll, each pair's difference, and each configuration's mean over its seeds (the model set
says which models are seeds of one configuration). The files are written together, and
read back by the report and by ``charlab diff``'s tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from charlab.compare import (
    CONFIG_COLUMNS,
    MODEL_COLUMNS,
    PAIR_COLUMNS,
    Bootstrap,
    IntervalError,
    compare,
    compare_configs,
)
from charlab.io import atomic_paths, json_text, read_json

if TYPE_CHECKING:  # the stage reads the scores; this module only takes them
    from charlab.evaluate import SplitScores

# names are read as text: a model called `null` or `nan` stays that name
_TEXT = {c: str for c in ("model", "a", "b", "config", "verdict")}


@dataclass(frozen=True)
class Intervals:
    """The four tables: per model ``model, nll, lo, hi``; per pair of models ``a, b, diff,
    lo, hi, verdict``; per configuration ``config, seeds, mean, sd, lo, hi``; per pair of
    configurations ``a, b, diff, lo, hi, verdict``. A model trained with one seed (and
    every n-gram) is a configuration of one run: its row equals its model row."""

    models: pd.DataFrame
    pairs: pd.DataFrame
    configs: pd.DataFrame
    config_pairs: pd.DataFrame

    @property
    def several_seeds(self) -> bool:
        return bool((self.configs["seeds"] > 1).any())


def check_block(block: int, n: int, key: str = "intervals.block") -> None:
    """A resample needs at least two blocks of the ``n`` scored characters."""
    if block >= n:
        raise IntervalError(f"{key}: {block} characters leave fewer than 2 blocks in the {n} "
                            f"scored test characters (a resample draws whole blocks); use at "
                            f"most {max(n // 2, 1)}")


def scored_rows(scores: SplitScores, names: Sequence[str]) -> np.ndarray:
    """The scores' rows of ``names``, in that order; every model must have been scored."""
    missing = [m for m in names if m not in scores.models]
    if missing:
        raise IntervalError(f"no scores for {', '.join(missing)} (the scores file has "
                            f"{', '.join(scores.models)}): rerun evaluate (`dvc repro`)")
    return np.stack([scores[m] for m in names])


def compute(scores: SplitScores, configs: Mapping[str, Sequence[str]],
            boot: Bootstrap) -> Intervals:
    """Every table from one set of scores. ``configs``: each configuration and its runs
    (:meth:`charlab.models.ModelSet.configs`), every model in exactly one."""
    names = [run for runs in configs.values() for run in runs]
    lp = scored_rows(scores, names)
    check_block(boot.block, lp.shape[1])
    models, pairs = compare(names, lp, boot)
    config_table, config_pairs = compare_configs(names, lp, configs, boot)
    return Intervals(models, pairs, config_table, config_pairs)


def metrics_json(models: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{model: {"test_nll": …, "test_nll_lo": …, "test_nll_hi": …}}``: what
    ``dvc metrics show`` lists beside metrics.json."""
    return {r.model: {"test_nll": round(float(r.nll), 6), "test_nll_lo": round(float(r.lo), 6),
                      "test_nll_hi": round(float(r.hi), 6)} for r in models.itertuples()}


def write(iv: Intervals, json_path: str | os.PathLike, pairs_csv: str | os.PathLike,
          configs_csv: str | os.PathLike, config_pairs_csv: str | os.PathLike) -> None:
    """The four files, all renamed into place together or none."""
    with atomic_paths(json_path, pairs_csv, configs_csv, config_pairs_csv) as tmps:
        tmps[0].write_text(json_text(metrics_json(iv.models)), encoding="utf-8")
        for table, tmp in ((iv.pairs, tmps[1]), (iv.configs, tmps[2]),
                           (iv.config_pairs, tmps[3])):
            table.to_csv(tmp, index=False, float_format="%.6f")


def _csv(path: str | os.PathLike, columns: list[str]) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=_TEXT, keep_default_na=False,
                        na_values={c: [""] for c in columns if c not in _TEXT})
    if list(table.columns) != columns:
        raise IntervalError(f"{path}: columns {', '.join(table.columns)}, expected "
                            f"{', '.join(columns)} (rerun the intervals stage: `dvc repro`)")
    return table


def read(json_path: str | os.PathLike, pairs_csv: str | os.PathLike,
         configs_csv: str | os.PathLike, config_pairs_csv: str | os.PathLike) -> Intervals:
    """The tables :func:`write` wrote (6 decimals)."""
    obj = read_json(json_path)
    models = pd.DataFrame([(m, v["test_nll"], v["test_nll_lo"], v["test_nll_hi"])
                           for m, v in obj.items()], columns=MODEL_COLUMNS)
    return Intervals(models, _csv(pairs_csv, PAIR_COLUMNS), _csv(configs_csv, CONFIG_COLUMNS),
                     _csv(config_pairs_csv, PAIR_COLUMNS))


def seed_note(configs: Mapping[str, Sequence[str]]) -> str:
    """Which configurations are several runs: ``rnn3 (rnn3, rnn3_s2)``; empty if none."""
    return "; ".join(f"{c} ({', '.join(runs)})" for c, runs in configs.items()
                     if len(runs) > 1)


def fmt_sd(sd: float) -> str:
    return "–" if sd is None or math.isnan(sd) else f"{sd:.4f}"
