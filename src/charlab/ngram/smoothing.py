"""The smoothings that score text: interpolated Kneser-Ney, modified KN, add-k.

Each is a :class:`Smoother` over the same :class:`~charlab.ngram.tables.Tables`: it turns
the rows of a window at every level (and the row of its history one level down) into ln p.

* ``kn``, :class:`KneserNey`: interpolated Kneser-Ney, one discount per level (the caller's,
  or Ney's D = n1 / (n1 + 2 n2) from that level's counts of counts). The top level
  discounts raw counts, the lower ones continuation counts N1+(. h w); level 0 mixes in the
  uniform distribution.
* ``mkn``, :class:`ModifiedKneserNey`: the same with three discounts per level, for counts
  1, 2 and 3+ (Chen & Goodman).
* ``addk``, :class:`AddK`: add-k on the full-order counts alone.

The per-history statistics (suffix links, denominators, counts of counts) are built on
first use and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from charlab.ngram.tables import Tables
from charlab.ngram_choices import DISCOUNT_MAX, DISCOUNT_MIN, SMOOTHINGS, discount_in_range

Discount = float | list[float] | None  # one for every level, one per level, or automatic


@dataclass(frozen=True)
class BackoffLevel:
    """One level of a Kneser-Ney model as a backoff table (:meth:`KneserNey.backoff_levels`).

    ``windows`` rows are (target, history newest char first), pads as id ``vocab_size``:
    level 0 lists every character, level L >= 1 its stored windows in table order.
    """

    windows: np.ndarray  # (rows, level + 1) int64
    log_prob: np.ndarray  # ln of each window's full interpolated probability at this level
    log_backoff: np.ndarray  # ln gamma of each window read as a history one level up
    pad_log_backoff: float  # ln gamma of the all-pad history of level + 1 chars


def check_smoothing(smoothing: str, add_k: float, discount: Any, order: int) -> Discount:
    """The discount as a smoother takes it; ValueError for a bad choice."""
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {', '.join(SMOOTHINGS)}, got {smoothing!r}")
    if not add_k > 0:
        raise ValueError(f"add_k must be > 0, got {add_k}")
    if discount is None:
        return None
    if isinstance(discount, (int, float)) and not isinstance(discount, bool):
        ds = [float(discount)]
    else:
        ds = [float(d) for d in discount]
        if len(ds) != order + 1:
            raise ValueError(f"need one discount per level 0..{order}, got {len(ds)}")
    if not all(discount_in_range(d) for d in ds):
        raise ValueError(f"discounts must be in [{DISCOUNT_MIN:g}, {DISCOUNT_MAX:g}], "
                         f"got {discount}")
    return ds[0] if isinstance(discount, (int, float)) else ds


def smoother(smoothing: str, tables: Tables, *, add_k: float, discount: Discount) -> Smoother:
    """The smoother named ``smoothing`` (one of ``SMOOTHINGS``) over ``tables``."""
    return SMOOTHERS[smoothing](tables, add_k=add_k, discount=discount)


def _context_slot(level: int, contexts: Sequence[np.ndarray]) -> np.ndarray:
    """The history slot of each window at ``level`` (level 0: the empty history, slot 0)."""
    if level == 0:
        return np.zeros(contexts[0].shape, dtype=np.int64)
    return contexts[level - 1]


class Smoother:
    """The interface: ln p of windows given their rows, and the backoff-table view.

    ``windows[lv]`` is each window's row at level lv (-1 if unseen), ``contexts[lv]`` the
    row of its history's window one level down (level lv - 1), or that level's extra
    all-pad slot, or -1 if unseen.
    """

    name: ClassVar[str]

    def __init__(self, tables: Tables, *, add_k: float, discount: Discount) -> None:
        self.tables, self.add_k, self.discount = tables, add_k, discount

    def log_prob(self, windows: Sequence[np.ndarray], contexts: Sequence[np.ndarray]
                 ) -> np.ndarray:
        raise NotImplementedError

    def backoff_levels(self) -> list[BackoffLevel]:
        """The model as a backoff table, levels 0..order, where it is one."""
        raise NotImplementedError

    def _history_totals(self, level: int, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(history slot of each window, sum of ``a`` per history slot, number of slots)."""
        slots = self.tables.history_rows(level)
        n_slots = 1 if level == 0 else self.tables.num_rows(level - 1) + 1
        return slots, np.bincount(slots, weights=a, minlength=n_slots), n_slots


class AddK(Smoother):
    """(count + k) / (history count + k V) at the full order; nothing below it."""

    name = "addk"

    def __init__(self, tables: Tables, *, add_k: float, discount: Discount) -> None:
        super().__init__(tables, add_k=add_k, discount=discount)
        self._den: np.ndarray | None = None

    def log_prob(self, windows: Sequence[np.ndarray], contexts: Sequence[np.ndarray]
                 ) -> np.ndarray:
        top, counts = self.tables.order, self.tables.counts(self.tables.order)
        if self._den is None:
            self._den = self._history_totals(top, counts.astype(np.int64))[1]
        rows, slot = windows[-1], _context_slot(top, contexts)
        den = np.where(slot >= 0, self._den[np.maximum(slot, 0)], 0.0)
        num = np.where(rows >= 0, counts[np.maximum(rows, 0)], 0)
        return np.log((num + self.add_k) / (den + self.add_k * self.tables.vocab_size))

    def backoff_levels(self) -> list[BackoffLevel]:
        raise ValueError("add-k smoothing is not a backoff model: it has no "
                         "lower-order distribution to back off to")


@dataclass
class _LevelStats:
    """Per-history statistics of one level, indexed by history slot (Tables.history_rows)."""

    a: np.ndarray  # per window: raw count (top level) or continuation count N1+(. h w)
    den: np.ndarray  # per history: sum of a
    n_by_a: tuple[np.ndarray, np.ndarray, np.ndarray]  # per history: # a==1, a==2, a>=3
    discounts: tuple[float, float, float]  # D for a == 1, 2, >= 3 (equal unless "mkn")


def kn_discount(a: np.ndarray) -> float:
    """Ney's D = n1 / (n1 + 2 n2) from counts of counts; 0.5 when there are no singletons."""
    n1, n2 = int(np.count_nonzero(a == 1)), int(np.count_nonzero(a == 2))
    return n1 / (n1 + 2 * n2) if n1 else 0.5


class KneserNey(Smoother):
    """Interpolated Kneser-Ney: each level discounts its counts and gives what it took to
    the level below, weighted by the history's number of distinct next chars."""

    name = "kn"

    def __init__(self, tables: Tables, *, add_k: float, discount: Discount) -> None:
        super().__init__(tables, add_k=add_k, discount=discount)
        self._stats: dict[int, _LevelStats] = {}

    def automatic_discounts(self, a: np.ndarray) -> tuple[float, float, float]:
        """D for counts 1, 2, 3+ of a level whose counts are ``a``, unless the caller set D."""
        d = kn_discount(a)
        return d, d, d

    def _level_stats(self, level: int) -> _LevelStats:
        if level in self._stats:
            return self._stats[level]
        t = self.tables
        a = t.counts(level) if level == t.order else t.continuation(level)
        a = a.astype(np.int64)
        slots, den, n_slots = self._history_totals(level, a)
        n_by_a = tuple(np.bincount(slots[m], minlength=n_slots)
                       for m in (a == 1, a == 2, a >= 3))
        if self.discount is None:
            ds = self.automatic_discounts(a)
        else:
            d = self.discount if isinstance(self.discount, float) else self.discount[level]
            ds = d, d, d
        stats = _LevelStats(a, den, n_by_a, ds)  # type: ignore[arg-type]
        self._stats[level] = stats
        return stats

    def interpolate(self, level: int, rows: np.ndarray, contexts: Sequence[np.ndarray],
                    lower: np.ndarray) -> np.ndarray:
        """p at ``level`` of windows at ``rows``, given ``lower``, their p one level down."""
        st = self._level_stats(level)
        slot = _context_slot(level, contexts)
        s = np.maximum(slot, 0)
        den = np.where(slot >= 0, st.den[s], 0.0)
        seen = den > 0
        a = np.where(rows >= 0, st.a[np.maximum(rows, 0)], 0)
        d1, d2, d3 = st.discounts
        d = np.select([a == 1, a == 2, a >= 3], [d1, d2, d3], 0.0)
        back = d1 * st.n_by_a[0][s] + d2 * st.n_by_a[1][s] + d3 * st.n_by_a[2][s]
        safe = np.where(seen, den, 1.0)
        p = (np.maximum(a - d, 0.0) + back * lower) / safe
        return np.where(seen, p, lower)  # unseen history: all weight to the level below

    def log_prob(self, windows: Sequence[np.ndarray], contexts: Sequence[np.ndarray]
                 ) -> np.ndarray:
        p = np.full(windows[0].shape, 1.0 / self.tables.vocab_size)
        for level in range(self.tables.order + 1):
            p = self.interpolate(level, windows[level], contexts, p)
        with np.errstate(divide="ignore"):  # only a caller's discount 0 makes p = 0
            return np.log(p)

    def backoff_levels(self) -> list[BackoffLevel]:
        """Interpolated KN is exactly a backoff model: p(w | h) is a stored window's
        ``log_prob`` (its full interpolated value at that level, computed by the same
        :meth:`interpolate` chain as :meth:`log_prob`), and for an unstored window
        gamma(h) * p(w | h minus its oldest char), gamma being the weight ``h`` gives the
        level below (1 for a history with no continuations). Level 0 lists every character,
        an unseen one with gamma(empty) / V. ``log_backoff`` is 0 at the top level.
        """
        t = self.tables
        vocab = t.vocab_size
        everyone = np.arange(vocab, dtype=np.int64)
        levels: list[BackoffLevel] = []
        windows, p = everyone[:, None], np.full(vocab, 1.0 / vocab)
        for level in range(t.order + 1):
            n_rows = t.num_rows(level)
            if level == 0:
                rows, slots = t.rows_for(0, everyone, 0), np.zeros(vocab, dtype=np.int64)
            else:
                rows, slots = np.arange(n_rows), t.history_rows(level)
                parent = t.parents(level)
                if level == 1:  # level 0 lists every char, so its rows are char ids
                    parent = t.keys(0)[parent]
                windows = np.concatenate([windows[parent], t.oldest_chars(level)[:, None]],
                                         axis=1)
                p = p[parent]
            # interpolate reads a level's history slots from contexts[level - 1]
            p = self.interpolate(level, rows, [slots] * max(level, 1), p)
            gamma, pad = np.ones(len(p)), 1.0
            if level < t.order:  # gamma(h) of each window read as a history one level up
                n_slots = n_rows + 1  # the last slot: the all-pad history
                g = self.interpolate(level + 1, np.full(n_slots, -1, dtype=np.int64),
                                     [np.arange(n_slots)] * (level + 1), np.ones(n_slots))
                if level:
                    gamma = g[:-1]
                else:
                    gamma[t.keys(0)] = g[:-1]
                pad = float(g[-1])
            with np.errstate(divide="ignore"):  # only a caller's discount 0 makes p = 0
                levels.append(BackoffLevel(windows, np.log(p), np.log(gamma),
                                           float(np.log(pad))))
        return levels


class ModifiedKneserNey(KneserNey):
    """Kneser-Ney with three automatic discounts per level, for counts 1, 2 and 3+."""

    name = "mkn"

    def automatic_discounts(self, a: np.ndarray) -> tuple[float, float, float]:
        """Chen & Goodman's D1, D2, D3+; plain KN's D when counts of counts are too sparse."""
        n = [int(np.count_nonzero(a == r)) for r in (1, 2, 3, 4)]
        if min(n) == 0:
            return super().automatic_discounts(a)
        y = n[0] / (n[0] + 2 * n[1])
        ds = (1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2])
        if not all(0 < d <= r for r, d in zip((1, 2, 3), ds, strict=True)):
            return super().automatic_discounts(a)
        return ds


SMOOTHERS: dict[str, type[Smoother]] = {
    cls.name: cls for cls in (KneserNey, ModifiedKneserNey, AddK)}
assert tuple(SMOOTHERS) == SMOOTHINGS, "ngram_choices.SMOOTHINGS lists every smoother"
