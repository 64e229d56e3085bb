"""The readers' sections of params.yaml: ``sample``, ``evaluate``, ``analyze`` and
``intervals``.

Only the reader stages import this module, so editing a default here reruns none of the
data or training stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from charlab.params.core import (
    MAX_THREADS,
    ParamsError,
    at_most,
    both,
    check,
    non_negative,
    positive,
)


@dataclass(frozen=True)
class SampleParams:
    length: int = field(default=1000, metadata=check(positive))
    prime: str = ""
    temperature: float = field(default=0.8, metadata=check(non_negative))
    top_k: int | None = None
    seed: int = field(default=1337, metadata=check(non_negative))

    def validate(self, path: str) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ParamsError(f"{path}.top_k: must be >= 1 or null, got {self.top_k}")


@dataclass(frozen=True)
class EvaluateParams:
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # 0: OMP_NUM_THREADS if set, else every core
    threads: int = field(default=0, metadata=check(both(
        non_negative, at_most(MAX_THREADS, "torch threads per process"))))


@dataclass(frozen=True)
class AnalyzeParams:
    # test characters shown in the PNG excerpts (the HTML pages hold the whole text)
    excerpt_chars: int = field(default=1200, metadata=check(positive))
    # test characters the recurrent units are read on (from the start of the split)
    cells_chars: int = field(default=10000, metadata=check(positive))
    # contexts listed where each model of a pair wins most, and characters shown before each
    top_contexts: int = field(default=20, metadata=check(positive))
    context_chars: int = field(default=40, metadata=check(positive))
    # more [model_a, model_b] pairs to compare; the best trained model against the best
    # n-gram is always compared
    pairs: list[list[str]] = field(default_factory=list)
    # 0: OMP_NUM_THREADS if set, else every core
    threads: int = field(default=0, metadata=check(non_negative))

    def validate(self, path: str) -> None:
        for i, pair in enumerate(self.pairs):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ParamsError(f"{path}.pairs[{i}]: must name two different models, "
                                  f"got {pair!r}")

    def check_models(self, path: str, names: list[str]) -> None:
        """Every model a pair names must be one of the pipeline's ``names``."""
        for i, pair in enumerate(self.pairs):
            for j, name in enumerate(pair):
                if name not in names:
                    raise ParamsError(f"{path}.pairs[{i}][{j}]: unknown model {name!r}; "
                                      f"the models are {', '.join(names)}")


@dataclass(frozen=True)
class IntervalsParams:
    """How the intervals stage resamples the test split (:class:`charlab.compare.Bootstrap`,
    whose defaults these are: docs/intervals.md says how the block length was chosen)."""

    # characters per resampled block: from the autocorrelation of the per-character
    # differences on Tiny Shakespeare (suggest_block gave 963)
    block: int = field(default=1000, metadata=check(positive))
    # resampled test splits per interval (2000 take ~20 ms; a million, ~10 s)
    resamples: int = field(default=2000, metadata=check(both(
        lambda v: None if v >= 10 else "must be at least 10 (a percentile of fewer is noise)",
        at_most(1_000_000, "the stage would run for minutes"))))
    # seeds the resampling: the same seed gives the same intervals to the last bit
    seed: int = field(default=0, metadata=check(non_negative))
