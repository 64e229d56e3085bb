"""Windows of text as int64 numbers: padding, base-B digits, runs of a sorted array.

A *window* is a target character with the ``L`` characters before it (its history). The
history before the first character is padded with the pad symbol, id ``V`` (never emitted),
so the base is ``B = V + 1`` and pad is its largest digit. The helpers here are shared by
counting (:mod:`charlab.ngram.counting`) and the stored tables (:mod:`charlab.ngram.tables`).
"""

from __future__ import annotations

import numpy as np

INT64_MAX = np.iinfo(np.int64).max


def fits(x: int) -> bool:
    return x <= INT64_MAX


def bary_levels(vocab_size: int, order: int) -> int:
    """Number of levels (from 0) whose windows fit a base-B int64 key."""
    base = vocab_size + 1
    return sum(1 for level in range(order + 1) if fits(vocab_size * base**level - 1))


def padded(ids: np.ndarray, start: int, stop: int, order: int, pad: int) -> np.ndarray:
    """ids[start - order: stop] as int64, with pads standing in before the text starts."""
    lo = max(0, start - order)
    seg = np.asarray(ids[lo:stop], dtype=np.int64)
    missing = order - (start - lo)
    if missing == 0:
        return seg
    return np.concatenate([np.full(missing, pad, dtype=np.int64), seg])


def horner(p: np.ndarray, order: int, length: int, base: int, first: int, last: int
           ) -> np.ndarray:
    """Base-B number of p[order - j + r] for j = first..last (most significant first)."""
    out = np.array(p[order - first: order - first + length])
    for j in range(first + 1, last + 1):
        out *= base  # in place: no temporaries of the chunk's size
        out += p[order - j: order - j + length]
    return out


def run_starts(flags_new: np.ndarray) -> np.ndarray:
    """Indices where a run of equal sorted values begins, given ``a[1:] != a[:-1]``."""
    starts = np.empty(int(np.count_nonzero(flags_new)) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = np.flatnonzero(flags_new) + 1
    return starts


def run_lengths(starts: np.ndarray, total: int) -> np.ndarray:
    return np.diff(starts, append=total)


def check_ids(ids: np.ndarray, vocab_size: int, what: str, values: bool = True) -> np.ndarray:
    """``ids`` as an array, checked for shape and type and (``values``) range."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{what} must hold integer ids, got dtype {ids.dtype}")
    if ids.size and values:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{what}: id {bad} is outside the vocabulary 0..{vocab_size - 1}")
    return ids


class States:
    """History states: the last ``order`` chars (pads before the text) as one Python int in
    base B, newest char most significant. :meth:`state` reads a history into one and
    :meth:`push` appends a char: a few scalar operations per sampled character."""

    def __init__(self, vocab_size: int, order: int) -> None:
        self.order, self.base = order, vocab_size + 1
        self._pow = [self.base**j for j in range(order + 1)]
        self.all_pad = self._pow[order] - 1  # the state before the text

    def push(self, state: int, c: int) -> int:
        """The state after appending char ``c``: it becomes the top digit."""
        if self.order == 0:
            return 0
        return c * self._pow[self.order - 1] + state // self.base

    def state(self, history: np.ndarray) -> int:
        """The state after reading ``history`` (checked ids) from the start of a text."""
        state = self.all_pad
        for c in history.tolist():
            state = self.push(state, c)
        return state

    def suffix(self, state: int, level: int) -> int:
        """The newest ``level`` chars of ``state``: a history for :meth:`Tables.rows_for`."""
        return state // self._pow[self.order - level]

    def older_char(self, state: int, level: int) -> int:
        """The char ``level`` places back in ``state`` (1: the newest)."""
        return state // self._pow[self.order - level] % self.base
