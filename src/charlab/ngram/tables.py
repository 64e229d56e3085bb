"""The stored count tables: one sorted int64 key array and one count array per level.

Level ``L`` (0..n) holds every distinct window (target char, its previous ``L`` chars) seen
in training, with its count, sorted target first, then the history newest char first (see
:mod:`charlab.ngram.counting`). The children of a level-L window in level L+1 are
contiguous; their number is the Kneser-Ney continuation count. A window is stored as one
int64 key, in one of two schemes:

* base-B digits, ``B = V + 1``: ``target * B**L + history`` with the history newest-first,
  when ``V * B**L`` fits in int64;
* otherwise (large vocab x order) as ``parent_row * B + oldest_char``, where ``parent_row``
  is the row of the same window minus its oldest char one level down ("parent form"). These
  keys never overflow and sort in the same order.

In both, ``key % B`` is a window's oldest char and ``key * B + c`` the key of the window
one char longer (``c`` older) in base-B form. :class:`Tables` is the one place that knows
which scheme a level uses: callers look windows up by (targets, history) or by rows, never
by key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from charlab.ngram.windows import bary_levels, run_lengths, run_starts


def key_bound(vocab_size: int, order: int, level: int, rows_below: int) -> int:
    """Every key of ``level`` of a table of ``order`` is below this (``rows_below``: the
    number of windows one level down, which bounds a parent-form key)."""
    base = vocab_size + 1
    if level < bary_levels(vocab_size, order):
        return vocab_size * base**level
    return rows_below * base


class Tables:
    """The windows of levels 0..order with their counts, behind one lookup interface.

    A little over 150 lines, kept whole on purpose: it is the only class that knows which
    key scheme a level uses, so every lookup that depends on it lives here.
    """

    def __init__(self, vocab_size: int, order: int, keys: Sequence[np.ndarray],
                 counts: Sequence[np.ndarray]) -> None:
        self.vocab_size, self.order = int(vocab_size), int(order)
        self._keys, self._counts = list(keys), list(counts)
        self.base = self.vocab_size + 1
        self._bary = bary_levels(self.vocab_size, self.order)  # levels in base-B form
        self._pow = [self.base**j for j in range(self.order + 1)]
        self._slots: dict[int, np.ndarray] = {}  # suffix links, built on first use

    # -- the numbers -------------------------------------------------------------------

    def keys(self, level: int) -> np.ndarray:
        """Sorted int64 keys of the windows of ``level`` (their encoding: module docstring)."""
        return self._keys[level]

    def counts(self, level: int) -> np.ndarray:
        """Count of each window of ``level``, row for row with :meth:`keys`."""
        return self._counts[level]

    def num_rows(self, level: int) -> int:
        return len(self._keys[level])

    @property
    def num_entries(self) -> int:
        """Stored windows over all levels 0..order."""
        return sum(len(k) for k in self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes of the key and count arrays."""
        return sum(k.nbytes + c.nbytes for k, c in zip(self._keys, self._counts, strict=True))

    @property
    def n_chars(self) -> int:
        """Number of characters the counts were taken from."""
        return int(self._counts[0].sum(dtype=np.int64))

    def cut(self, order: int) -> Tables:
        """Levels 0..order, sharing arrays and suffix links (level L's need only levels <= L)."""
        out = Tables(self.vocab_size, order, self._keys[:order + 1], self._counts[:order + 1])
        out._slots = self._slots
        return out

    # -- looking windows up ------------------------------------------------------------

    def _search(self, level: int, q: np.ndarray) -> np.ndarray:
        """Row of each key ``q`` in level ``level``, or -1 where absent."""
        table = self._keys[level]
        if len(table) == 0:
            return np.full(q.shape, -1, dtype=np.int64)
        if q.size > 2048:  # sorted queries walk the table in order: ~4x fewer cache misses
            perm = np.argsort(q)
            pos = np.empty_like(perm)
            pos[perm] = np.searchsorted(table, q[perm])
        else:
            pos = np.searchsorted(table, q)
        np.minimum(pos, len(table) - 1, out=pos)
        return np.where(table[pos] == q, pos, -1)

    def rows_for(self, level: int, targets: np.ndarray, hist: int) -> np.ndarray:
        """Rows of windows (each target, history ``hist`` of ``level`` chars as a base-B
        number, newest first: :meth:`States.suffix`) at ``level``; -1 if unseen."""
        if level < self._bary:
            return self._search(level, targets * self._pow[level] + hist)
        # Parent form: the same window minus its oldest char, one level down.
        parents = self.rows_for(level - 1, targets, hist // self.base)
        q = np.where(parents >= 0, parents * self.base + hist % self.base, -1)
        return self._search(level, q)

    def rows_along(self, p: np.ndarray, n: int) -> list[np.ndarray]:
        """Row of the window ending at each of the last ``n`` positions of ``p``, per level
        (-1 if unseen). ``p`` holds ``order`` chars (or pads) of history before them."""
        o, base = self.order, self.base
        target = p[o:o + n]
        rows: list[np.ndarray] = []
        hist = np.zeros(n, dtype=np.int64)
        for level in range(o + 1):
            older = p[o - level:o - level + n]  # the char `level` places back
            if level < self._bary:
                if level:
                    hist = hist * base + older
                q = target * base**level + hist
            else:
                prev = rows[-1]
                q = np.where(prev >= 0, prev * base + older, -1)
            rows.append(self._search(level, q))
        return rows

    def extend(self, level: int, rows: np.ndarray, older: int) -> tuple[np.ndarray, np.ndarray]:
        """The windows of ``level - 1`` at ``rows`` with the char ``older`` before them: which
        of them were seen (a mask over ``rows``), and their rows at ``level``."""
        table = self._keys[level]
        below = rows if level >= self._bary else self._keys[level - 1][rows]
        q = below * self.base + older
        pos = table.searchsorted(q)
        hit = table.take(pos, mode="clip") == q  # clip: q past the end is a miss
        return hit, pos[hit]

    # -- how levels link ---------------------------------------------------------------

    @property
    def history_level(self) -> int:
        """The deepest level whose keys split into (target, history): see :meth:`split`."""
        return min(self.order, self._bary - 1)

    def split(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(target, history as a base-B number) of each window of ``level`` <= history_level."""
        if level > self.history_level:
            raise ValueError(f"level {level} is stored in parent form: it has no history key")
        keys, scale = self._keys[level], self._pow[level]
        return keys // scale, keys % scale

    def oldest_chars(self, level: int) -> np.ndarray:
        """The oldest char of each window of ``level`` >= 1 (the target at level 0)."""
        return self._keys[level] % self.base

    def parents(self, level: int) -> np.ndarray:
        """Row at ``level - 1`` of each window of ``level`` >= 1 minus its oldest char."""
        keys = self._keys[level]
        if level < self._bary:  # base-B digits: drop the last one and look it up
            return np.searchsorted(self._keys[level - 1], keys // self.base)
        return keys // self.base  # parent form: that row is the key's high part

    def continuation(self, level: int) -> np.ndarray:
        """N1+(. h w): distinct chars seen before each window = its children one level up."""
        up, base = self._keys[level + 1], self.base
        if level + 1 < self._bary:
            parent = up // base
            return run_lengths(run_starts(parent[1:] != parent[:-1]), len(up))
        return np.bincount(up // base, minlength=len(self._keys[level]))

    def history_rows(self, level: int) -> np.ndarray:
        """Suffix links: for each window of ``level``, the row of its history one level down.

        A history of ``level`` chars is itself a window of ``level - 1`` (its newest char is
        the target) unless it is all pads, which gets the extra slot ``num_rows(level - 1)``.
        Level 0 has one history (the empty one), slot 0. Built on first use and cached.
        """
        if level in self._slots:
            return self._slots[level]
        keys, base = self._keys[level], self.base
        if level == 0:
            slots = np.zeros(len(keys), dtype=np.int64)
        elif level < self._bary:  # drop the target digit: the history's own key
            slots = np.searchsorted(self._keys[level - 1], keys % base**level)
        else:
            parent, oldest = keys // base, keys % base
            if level - 1 < self._bary:
                below = self._keys[level - 1][parent] % base ** (level - 1)
                newest_pad = below // base ** (level - 2) == base - 1 if level > 1 else \
                    oldest == base - 1
                q = below * base + oldest
            else:
                below = self.history_rows(level - 1)[parent]
                newest_pad = below == len(self._keys[level - 2])
                q = below * base + oldest
            slots = np.where(newest_pad, len(self._keys[level - 1]),
                             np.searchsorted(self._keys[level - 1], np.where(newest_pad, 0, q)))
        self._slots[level] = slots
        return slots
