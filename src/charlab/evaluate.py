"""Score every model on every split: one metrics row per (model, split)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import pandas as pd
from tqdm import tqdm

from charlab.encoding import SPLITS, Corpus
from charlab.io import atomic_paths, json_text
from charlab.lm import LanguageModel, score

COLUMNS = ["model", "split", "nll", "bpc", "perplexity", "params", "chars"]


def evaluate(models: Mapping[str, LanguageModel], corpus: Corpus,
             splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """Character-weighted mean NLL (nats/char) of each model on each split.

    Every model scores the same characters: each split's ids[1:], given what precedes them
    inside the split.
    """
    rows = []
    jobs = [(name, split) for name in models for split in splits]
    for name, split in tqdm(jobs, desc="evaluate", unit="score", disable=None):
        s = score(models[name], corpus.split(split))
        rows.append({"model": name, "split": split, "nll": s.nll, "bpc": s.bpc,
                     "perplexity": s.perplexity, "params": models[name].num_params(),
                     "chars": s.count})
    return pd.DataFrame(rows, columns=COLUMNS)


def metrics_summary(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{model: {"test_nll": ..., "test_bpc": ..., "test_perplexity": ..., ..., "params": n}}."""
    out: dict[str, dict[str, float]] = {}
    for row in table.itertuples(index=False):
        m = out.setdefault(row.model, {"params": int(row.params)})
        for key in ("nll", "bpc", "perplexity"):
            m[f"{row.split}_{key}"] = round(float(getattr(row, key)), 6)
    return out


def write_metrics(table: pd.DataFrame, csv_path: str | os.PathLike,
                  json_path: str | os.PathLike, bar_path: str | os.PathLike) -> None:
    """metrics.csv (every model and split), metrics.json (DVC metrics) and, for the bar
    chart, the test split alone."""
    bad = table[~table["nll"].map(math.isfinite)]
    if len(bad):
        raise ValueError(f"non-finite nll for {', '.join(bad['model'] + '/' + bad['split'])}")
    test = table.loc[table["split"] == "test", ["model", "bpc", "nll", "perplexity"]]
    # all three or none: a failed write (disk full) leaves the previous metrics in place
    with atomic_paths(csv_path, json_path, bar_path) as (csv_tmp, json_tmp, bar_tmp):
        table.to_csv(csv_tmp, index=False, float_format="%.6f")
        json_tmp.write_text(json_text(metrics_summary(table)), encoding="utf-8")
        test.to_csv(bar_tmp, index=False, float_format="%.6f")
