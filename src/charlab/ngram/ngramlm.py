"""NGramLM: a character n-gram model of one order, as a :class:`~charlab.lm.LanguageModel`.

Order ``n`` is the history length (order 4: the next character given the previous 4). The
history before the first character is padded with a pad symbol (internal id ``V``, never
emitted), both when counting the train split and when scoring or sampling.

The class is a facade over the package's parts: counting builds the
:class:`~charlab.ngram.tables.Tables`; scoring (``log_probs``, ``probs``) asks the chosen
:mod:`~charlab.ngram.smoothing`; sampling (``start``/``step``), ``next_counts`` and
``distribution`` ask the unsmoothed :class:`~charlab.ngram.sampling.MaxLikelihood`;
``save``/``load`` are :mod:`~charlab.ngram.fileformat`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from charlab.encoding import Vocab
from charlab.ngram import fileformat
from charlab.ngram.counting import DEFAULT_CHUNK, count_windows
from charlab.ngram.sampling import MaxLikelihood
from charlab.ngram.smoothing import BackoffLevel, check_smoothing, smoother
from charlab.ngram.tables import Tables
from charlab.ngram.windows import States, check_ids, padded
from charlab.ngram_choices import MIN_ORDER, Smoothing

SCORE_BLOCK = 1 << 16  # positions per scoring block, bounds log_probs' memory


def _check_order(order: Any) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < MIN_ORDER:
        raise ValueError(f"order must be an integer >= {MIN_ORDER} (the history length), "
                         f"got {order!r}")


def _check_vocab_size(vocab_size: int) -> None:
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")


class NGramLM:
    """A character n-gram model of one order; see the module docstring."""

    def __init__(self, vocab_size: int, order: int, keys: Sequence[np.ndarray],
                 counts: Sequence[np.ndarray], *, smoothing: Smoothing = "kn",
                 add_k: float = 0.01, discount: float | Sequence[float] | None = None) -> None:
        _check_order(order)
        _check_vocab_size(vocab_size)
        if len(keys) != order + 1 or len(counts) != order + 1:
            raise ValueError(f"order {order} needs {order + 1} levels, got {len(keys)}")
        self._build(Tables(vocab_size, order, keys, counts), smoothing, add_k, discount)

    def _build(self, tables: Tables, smoothing: Smoothing, add_k: float, discount: Any
               ) -> None:
        self.vocab_size, self.order = tables.vocab_size, tables.order
        self.tables = tables  # the counts: keys(level), counts(level), num_entries
        self.smoothing: Smoothing = smoothing
        self.add_k = float(add_k)
        self.discount = check_smoothing(smoothing, add_k, discount, self.order)
        self._smoother = smoother(smoothing, tables, add_k=self.add_k, discount=self.discount)
        self._states = States(self.vocab_size, self.order)
        self._ml = MaxLikelihood(tables, self._states)

    @classmethod
    def _over(cls, tables: Tables, smoothing: Smoothing, add_k: float, discount: Any
              ) -> NGramLM:
        """A model over existing tables (shared, not copied)."""
        model = cls.__new__(cls)
        model._build(tables, smoothing, add_k, discount)
        return model

    # -- construction --------------------------------------------------------------------

    @classmethod
    def fit(cls, ids: np.ndarray, vocab_size: int, order: int, *, smoothing: Smoothing = "kn",
            add_k: float = 0.01, discount: float | Sequence[float] | None = None,
            chunk_size: int = DEFAULT_CHUNK) -> NGramLM:
        """Count every window of ``ids`` (padded at the start) for levels 0..order."""
        _check_order(order)
        _check_vocab_size(vocab_size)
        check_smoothing(smoothing, add_k, discount, order)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        source = ids  # a memory map keeps its mapping only on the original object
        ids = check_ids(ids, vocab_size, "training ids", values=False)
        if len(ids) == 0:
            raise ValueError("cannot fit an n-gram model on an empty text")
        keys, counts = count_windows(ids, vocab_size, order, chunk_size, source)
        return cls(vocab_size, order, keys, counts, smoothing=smoothing, add_k=add_k,
                   discount=discount)

    def with_order(self, order: int) -> NGramLM:
        """The same counts cut to a lower order (levels 0..order are shared, not copied)."""
        if not 0 <= order <= self.order:
            raise ValueError(f"order must be in 0..{self.order}, got {order}")
        disc = self.discount
        if disc is not None and not isinstance(disc, float):
            disc = disc[:order + 1]
        return self._over(self.tables.cut(order), self.smoothing, self.add_k, disc)

    def with_smoothing(self, smoothing: Smoothing, *, add_k: float | None = None,
                       discount: float | Sequence[float] | None = None) -> NGramLM:
        """The same counts scored with another smoothing."""
        return self._over(self.tables, smoothing, self.add_k if add_k is None else add_k,
                          discount)

    # -- the LanguageModel protocol ------------------------------------------------------

    def num_params(self) -> int:
        """Stored non-zero table entries: distinct windows over all levels 0..order."""
        return self.tables.num_entries

    @property
    def n_chars(self) -> int:
        """Number of characters the counts were taken from."""
        return self.tables.n_chars

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """Smoothed ln p(ids[t+1] | history ending at ids[t]), history padded at the start."""
        ids = check_ids(ids, self.vocab_size, "ids")
        out = np.empty(max(len(ids) - 1, 0), dtype=np.float64)
        # Blocks bound memory to O(block * order) whatever the text length.
        for a in range(1, len(ids), SCORE_BLOCK):
            b = min(a + SCORE_BLOCK, len(ids))
            p = padded(ids, a - 1, b, self.order, self.vocab_size)
            rows = self.tables.rows_along(p, b - a + 1)
            # window t's rows per level; its history's (one char earlier) one level down
            out[a - 1:b - 1] = self._smoother.log_prob([r[1:] for r in rows],
                                                       [r[:-1] for r in rows])
        return out

    def start(self, prime: np.ndarray) -> tuple[np.ndarray, int]:
        """ML log-probs after ``prime`` (read from a pad history) and the sampling state."""
        state = self._states.state(check_ids(prime, self.vocab_size, "prime"))
        return self._ml.log(state), state

    def step(self, state: int, next_id: int) -> tuple[np.ndarray, int]:
        """Feed one char: ML log-probs of the one after it (longest seen history)."""
        next_id = int(next_id)
        if not 0 <= next_id < self.vocab_size:
            raise ValueError(f"id {next_id} is outside the vocabulary 0..{self.vocab_size - 1}")
        state = self._states.push(state, next_id)
        return self._ml.log(state), state

    # -- the lecture's unsmoothed model --------------------------------------------------

    def next_counts(self, history: np.ndarray) -> tuple[np.ndarray, int]:
        """(counts of each next char, history length used) for the longest seen suffix.

        A history shorter than the order is padded, as at the start of the text.
        """
        return self._ml.counts(self._states.state(
            check_ids(history, self.vocab_size, "history")))

    def distribution(self, history: np.ndarray) -> np.ndarray:
        """Unsmoothed ML probabilities of the next char (the lecture's ``lm[history]``)."""
        counts, _ = self.next_counts(history)
        return counts / counts.sum()

    # -- smoothed -----------------------------------------------------------------------

    def probs(self, history: np.ndarray) -> np.ndarray:
        """Smoothed probabilities of each next char after ``history`` (padded at the start)."""
        history = check_ids(history, self.vocab_size, "history")
        state, t = self._states.state(history), self.tables
        everyone = np.arange(self.vocab_size, dtype=np.int64)
        windows = [t.rows_for(lv, everyone, self._states.suffix(state, lv))
                   for lv in range(self.order + 1)]
        shape = (self.vocab_size,)
        if len(history):  # the history's own window: its newest char after older ones
            p = padded(history, len(history) - 1, len(history), self.order, self.vocab_size)
            contexts = [np.full(shape, r[0]) for r in t.rows_along(p, 1)]
        else:  # all pads: the extra history slot of each level
            contexts = [np.full(shape, t.num_rows(lv)) for lv in range(self.order + 1)]
        return np.exp(self._smoother.log_prob(windows, contexts))

    def backoff_levels(self) -> list[BackoffLevel]:
        """The smoothed model as a backoff table, levels 0..order (ARPA export; see
        :meth:`charlab.ngram.smoothing.KneserNey.backoff_levels`); add-k is not one."""
        return self._smoother.backoff_levels()

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike, vocab: Vocab) -> None:
        """Write an uncompressed .npz atomically (the old file or the new one, never half),
        with ``vocab``, the characters the ids stand for."""
        fileformat.save(self, path, vocab)

    @classmethod
    def load(cls, path: str | os.PathLike, vocab: Vocab) -> NGramLM:
        """Read a file written by :meth:`save`; :class:`NGramFileError` if it is not one,
        or if it was counted on another vocabulary than ``vocab``."""
        return fileformat.load(cls, path, vocab)
