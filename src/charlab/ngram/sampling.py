"""The lecture's unsmoothed model: maximum likelihood with backoff, for sampling and show.

The next-char counts after the longest suffix of the history that was seen in training.
Sampling (``NGramLM.start``/``step``) reads them once per character, so the lookup is a
handful of numpy calls: an index of each history's next chars at the deepest level whose
keys hold a history (:meth:`Tables.split`), built on first use, then one more search per
deeper (parent-form) level over those few followers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from charlab.ngram.tables import Tables
from charlab.ngram.windows import States, run_starts

if TYPE_CHECKING:
    from charlab.ngram.ngramlm import NGramLM


@dataclass(frozen=True)
class _Followers:
    """Histories of one level, sorted, each with its run of next chars in the arrays."""

    level: int
    histories: np.ndarray  # distinct history keys (newest char most significant)
    offsets: np.ndarray  # run of history i: offsets[i]:offsets[i + 1]
    chars: np.ndarray
    counts: np.ndarray
    rows: np.ndarray  # row of each (char, history) window in the level's table


def _followers(tables: Tables) -> _Followers:
    """Every history of ``tables.history_level`` with its next chars.

    Sorted by history, so a sampling step finds its followers with one scalar search
    instead of searching every candidate char.
    """
    level = tables.history_level
    targets, hist = tables.split(level)
    perm = np.argsort(hist, kind="stable")  # keeps next chars ascending per history
    hist = hist[perm]
    starts = run_starts(hist[1:] != hist[:-1])
    return _Followers(level, hist[starts], np.append(starts, len(hist)), targets[perm],
                      tables.counts(level)[perm], perm)


class MaxLikelihood:
    """Next-char counts after the longest seen suffix of a history state."""

    def __init__(self, tables: Tables, states: States) -> None:
        self.tables, self.states = tables, states
        self._follow: _Followers | None = None
        self._no_chars = np.full(tables.vocab_size, -np.inf)

    def sparse(self, state: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(next chars, their counts, history length used) for the longest seen suffix.

        The hot loop of sampling: a handful of numpy calls per character.
        """
        f = self._follow
        if f is None:
            f = self._follow = _followers(self.tables)
        short = self.states.suffix(state, f.level)
        i = f.histories.searchsorted(short)
        if i == len(f.histories) or f.histories.item(i) != short:
            return self._backoff(state, f.level)
        a, b = f.offsets.item(i), f.offsets.item(i + 1)
        chars, counts, used, rows = f.chars[a:b], f.counts[a:b], f.level, f.rows[a:b]
        for level in range(f.level + 1, self.tables.order + 1):  # add the older chars
            hit, rows = self.tables.extend(level, rows, self.states.older_char(state, level))
            if not len(rows):
                break
            chars, counts, used = chars[hit], self.tables.counts(level)[rows], level
        return chars, counts, used

    def _backoff(self, state: int, below: int) -> tuple[np.ndarray, np.ndarray, int]:
        everyone = np.arange(self.tables.vocab_size, dtype=np.int64)
        for lower in range(below - 1, -1, -1):
            rows = self.tables.rows_for(lower, everyone, self.states.suffix(state, lower))
            seen = rows >= 0
            if seen.any():
                return everyone[seen], self.tables.counts(lower)[rows[seen]], lower
        raise AssertionError("level 0 always has counts")  # pragma: no cover

    def counts(self, state: int) -> tuple[np.ndarray, int]:
        """(count of every next char, history length used)."""
        chars, counts, used = self.sparse(state)
        dense = np.zeros(self.tables.vocab_size, dtype=np.int64)
        dense[chars] = counts
        return dense, used

    def log(self, state: int) -> np.ndarray:
        """ln of the ML probability of every next char (-inf: never seen after it)."""
        chars, counts, _ = self.sparse(state)
        out = self._no_chars.copy()
        out[chars] = np.log(counts) - math.log(counts.sum())
        return out


def format_distribution(model: NGramLM, chars: Sequence[str], history: str,
                        top: int | None = None) -> str:
    """``ngram show``: the next-char ML distribution after ``history``, likeliest first.

    ``chars`` maps ids to characters (e.g. ``Vocab.chars``); ``history`` must use only them.
    """
    stoi = {c: i for i, c in enumerate(chars)}
    unknown = [c for c in history if c not in stoi]
    if unknown:
        raise ValueError(f"history has characters outside the vocabulary: {unknown[:5]}")
    hist_ids = np.array([stoi[c] for c in history], dtype=np.int64)
    counts, used = model.next_counts(hist_ids)
    total = int(counts.sum())
    order = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], chars[i]))
    if top is not None:
        order = order[:top]
    # The matched suffix; pads (shown ~, as in the lecture) when it reaches the text start.
    seen = ("~" * (used - len(history)) + history)[-used:] if used else ""
    lines = [f"order {model.order}, history {history!r}: matched {seen!r} ({used} chars), "
             f"{total} occurrences, {np.count_nonzero(counts)} next chars"]
    width = max((len(repr(chars[i])) for i in order), default=0)
    lines += [f"{chars[i]!r:<{width}}  {counts[i] / total:.4f}  ({int(counts[i])})"
              for i in order]
    return "\n".join(lines)
