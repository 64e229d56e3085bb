"""Score every model on every split: one metrics row per (model, split)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from charlab.encoding import SPLITS, Corpus
from charlab.errors import CharlabError
from charlab.io import atomic_paths, json_text
from charlab.lm import LanguageModel, Score

COLUMNS = ["model", "split", "nll", "bpc", "perplexity", "params", "chars"]

# The per-character scores file (np.savez, no object arrays: np.load(allow_pickle=False)).
SCORES_FORMAT = "charlab-logprobs-1"


class ScoresError(CharlabError, ValueError):
    """A per-character scores file is missing, damaged or does not fit the corpus."""


@dataclass(frozen=True)
class SplitScores:
    """Every model's natural-log probability of each predicted character of one split.

    ``logprobs[m, t]`` is model ``models[m]``'s ``log p(ids[t + 1] | ids[: t + 1])`` for the
    split's ids, which start at ``start`` in the encoded corpus. float64: the row's sum is
    exactly minus the nll sum that metrics.csv reports (divided by the count).
    """

    split: str
    start: int
    models: tuple[str, ...]
    logprobs: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        return self.logprobs[self.models.index(name)]


def _log_probs(model: LanguageModel, ids: np.ndarray) -> np.ndarray:
    if len(ids) < 2:
        raise ValueError(f"need at least 2 characters to score, got {len(ids)}")
    lp = np.asarray(model.log_probs(ids), dtype=np.float64)
    if lp.shape != (len(ids) - 1,):
        raise AssertionError(f"log_probs returned shape {lp.shape}, expected {(len(ids) - 1,)}")
    return lp


def score_splits(models: Mapping[str, LanguageModel], corpus: Corpus,
                 splits: tuple[str, ...] = SPLITS, keep: str | None = "test"
                 ) -> tuple[pd.DataFrame, SplitScores | None]:
    """Metric rows of each model on each split, and the per-character log-probs of split
    ``keep`` (None: keep none), all from one scoring pass.

    Every model scores the same characters: each split's ids[1:], given what precedes them
    inside the split.
    """
    rows, kept = [], {}
    jobs = [(name, split) for name in models for split in splits]
    for name, split in tqdm(jobs, desc="evaluate", unit="score", disable=None):
        lp = _log_probs(models[name], corpus.split(split))
        s = Score(nll_sum=float(-lp.sum()), count=len(lp))
        if split == keep:
            kept[name] = lp
        rows.append({"model": name, "split": split, "nll": s.nll, "bpc": s.bpc,
                     "perplexity": s.perplexity, "params": models[name].num_params(),
                     "chars": s.count})
    scores = None
    if keep is not None and kept:
        scores = SplitScores(keep, corpus.manifest.splits[keep][0], tuple(kept),
                             np.stack(list(kept.values())))
    return pd.DataFrame(rows, columns=COLUMNS), scores


def evaluate(models: Mapping[str, LanguageModel], corpus: Corpus,
             splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """Character-weighted mean NLL (nats/char) of each model on each split."""
    return score_splits(models, corpus, splits, keep=None)[0]


def _write_scores_file(path: str | os.PathLike, scores: SplitScores) -> None:
    with open(path, "wb") as f:
        np.savez(f, format=np.array(SCORES_FORMAT), split=np.array(scores.split),
                 start=np.array(scores.start, dtype=np.int64),
                 models=np.array(scores.models, dtype=str),
                 logprobs=scores.logprobs.astype(np.float64))


def read_scores(path: str | os.PathLike) -> SplitScores:
    """Load a scores file written by :func:`write_metrics` (never unpickles anything)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise ScoresError(f"{path}: no scores file (run the evaluate stage: `dvc repro`)"
                          ) from None
    if magic != b"PK\x03\x04":
        # checked first: np.load would try to unpickle anything else (and advise doing so)
        raise ScoresError(f"{path}: not a charlab scores file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"])
            if fmt != SCORES_FORMAT:
                raise ScoresError(f"{path}: scores format {fmt!r}, this charlab reads "
                                  f"{SCORES_FORMAT!r}")
            models = tuple(str(m) for m in z["models"])
            lp = np.asarray(z["logprobs"], dtype=np.float64)
            split, start = str(z["split"]), int(z["start"])
    except ScoresError:
        raise
    except Exception as e:  # zip damage, a missing key, object arrays
        raise ScoresError(f"{path}: not a readable charlab scores file "
                          f"({type(e).__name__}: {e})") from None
    if lp.ndim != 2 or lp.shape[0] != len(models):
        raise ScoresError(f"{path}: logprobs has shape {lp.shape} for {len(models)} models")
    return SplitScores(split, start, models, lp)


def metrics_summary(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{model: {"test_nll": ..., "test_bpc": ..., "test_perplexity": ..., ..., "params": n}}."""
    out: dict[str, dict[str, float]] = {}
    for row in table.itertuples(index=False):
        m = out.setdefault(row.model, {"params": int(row.params)})
        for key in ("nll", "bpc", "perplexity"):
            m[f"{row.split}_{key}"] = round(float(getattr(row, key)), 6)
    return out


def write_metrics(table: pd.DataFrame, csv_path: str | os.PathLike,
                  json_path: str | os.PathLike, bar_path: str | os.PathLike,
                  scores: SplitScores | None = None,
                  scores_path: str | os.PathLike | None = None) -> None:
    """metrics.csv (every model and split), metrics.json (DVC metrics), for the bar chart
    the test split alone and, with ``scores_path``, the per-character scores."""
    bad = table[~table["nll"].map(math.isfinite)]
    if len(bad):
        raise ValueError(f"non-finite nll for {', '.join(bad['model'] + '/' + bad['split'])}")
    test = table.loc[table["split"] == "test", ["model", "bpc", "nll", "perplexity"]]
    if (scores is None) != (scores_path is None):
        raise ValueError("scores and scores_path go together")
    paths = [csv_path, json_path, bar_path] + ([scores_path] if scores_path else [])
    # all or none: a failed write (disk full) leaves the previous metrics in place
    with atomic_paths(*paths) as tmps:
        table.to_csv(tmps[0], index=False, float_format="%.6f")
        tmps[1].write_text(json_text(metrics_summary(table)), encoding="utf-8")
        test.to_csv(tmps[2], index=False, float_format="%.6f")
        if scores is not None:
            _write_scores_file(tmps[3], scores)
