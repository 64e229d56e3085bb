"""The one interface every model implements, and the two loops built on it.

Scoring and sampling do not care whether a model is an n-gram table or a network:
both go through :class:`LanguageModel`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LanguageModel(Protocol):
    """A next-character model over a fixed vocabulary of ``vocab_size`` ids."""

    vocab_size: int

    def num_params(self) -> int:
        """Number of stored parameters (weights, or non-zero table entries)."""
        ...

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """Natural-log probability of each next character.

        Returns an array of length ``len(ids) - 1`` whose element ``t`` is
        ``log p(ids[t + 1] | ids[: t + 1])``. The model sees no text before ``ids[0]``
        (it starts from its empty state: pad history, zero hidden state).
        """
        ...

    def start(self, prime: np.ndarray) -> tuple[np.ndarray, Any]:
        """Read ``prime`` (possibly empty); return (log-probs of the next char, state)."""
        ...

    def step(self, state: Any, next_id: int) -> tuple[np.ndarray, Any]:
        """Feed one character; return (log-probs of the one after it, new state)."""
        ...


@dataclass(frozen=True)
class Score:
    """Summed negative log-likelihood (nats) over ``count`` predicted characters."""

    nll_sum: float
    count: int

    @property
    def nll(self) -> float:
        return self.nll_sum / self.count

    @property
    def bpc(self) -> float:
        return self.nll / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


def score(model: LanguageModel, ids: np.ndarray) -> Score:
    """Character-weighted mean NLL of ``ids[1:]`` given what precedes each character."""
    if len(ids) < 2:
        raise ValueError(f"need at least 2 characters to score, got {len(ids)}")
    lp = np.asarray(model.log_probs(ids), dtype=np.float64)
    if lp.shape != (len(ids) - 1,):
        raise AssertionError(f"log_probs returned shape {lp.shape}, expected {(len(ids) - 1,)}")
    return Score(nll_sum=float(-lp.sum()), count=len(lp))


def _draw(log_probs: np.ndarray, temperature: float, top_k: int | None,
          rng: np.random.Generator) -> int:
    logits = np.asarray(log_probs, dtype=np.float64)
    if temperature <= 0:
        return int(np.argmax(logits))
    # shift before scaling: the likeliest stays at 0 however small the temperature (dividing
    # first turned every logit into -inf below ~1e-308 and the draw into NaN)
    with np.errstate(over="ignore"):  # an overflow here is -inf: probability 0, as meant
        logits = (logits - logits.max()) / temperature
    if top_k is not None and top_k < len(logits):
        cutoff = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < cutoff, -np.inf, logits)
    cdf = np.cumsum(np.exp(logits))
    # one uniform draw against the cumulative sum: several times faster than rng.choice
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


def generate(model: LanguageModel, prime: np.ndarray, length: int, *,
             temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0) -> Iterator[int]:
    """Yield ``length`` sampled ids that continue ``prime``.

    ``temperature`` 0 means greedy; ``top_k`` keeps only the k likeliest characters.
    """
    rng = np.random.default_rng(seed)
    log_probs, state = model.start(np.asarray(prime, dtype=np.int64))
    for _ in range(length):
        nxt = _draw(log_probs, temperature, top_k, rng)
        yield nxt
        log_probs, state = model.step(state, nxt)
