"""Character n-gram models: the lecture's count table, fast, smoothed for scoring.

Order ``n`` is the history length (order 4: the next character given the previous 4). The
history before the first character is padded with a pad symbol (internal id ``V``, never
emitted), both when counting the train split and when scoring or sampling.

Tables
    Level ``L`` (0..n) holds every distinct *window* (target char, its previous ``L`` chars)
    seen in training, with its count. Windows are sorted target first, then the history from
    the newest character to the oldest ("reversed" order). That order is what makes fitting
    cheap: one sort of the top-level windows gives every lower level by integer division
    (dropping the oldest history char), with no further sort, and the children of a level-L
    window in level L+1 are contiguous (their number is the Kneser-Ney continuation count).
    A window is stored as one int64 key:

    * base-B digits, ``B = V + 1`` (pad is the largest digit): ``target * B**L + history``
      with the history newest-first, when ``V * B**L`` fits in int64;
    * otherwise (large vocab x order) as ``parent_index * B + oldest_char``, where
      ``parent_index`` is the row of the same window minus its oldest char one level down.
      These keys never overflow and sort in the same order.

Fitting counts windows in chunks (one sort per chunk, merged into the running table), so it
holds the count tables plus one chunk. When even a history of ``n`` chars overflows int64,
it falls back to building each level from the one below with ``np.unique`` re-indexing.

Unsmoothed maximum likelihood (the lecture's model) backs :meth:`NGramLM.distribution`,
:func:`format_distribution` and sampling (``start``/``step``): the next-char counts after the
longest suffix of the history that was seen in training. Sampling state is the history as
one Python int; a step is a handful of numpy calls thanks to an index of each history's
next chars at the deepest base-B level, built on first use. Scoring (``log_probs``) uses the
chosen smoothing: interpolated Kneser-Ney (``"kn"``, one discount per level), modified KN
with three discounts per level (``"mkn"``, Chen & Goodman) or add-k on the full-order counts
(``"addk"``). The statistics they need per history (suffix links into the level below) are
built on first use and cached.

File format: an uncompressed ``.npz`` (zip of ``.npy`` arrays): per level one sorted int64
key array and one count array, plus a small header and the vocabulary the ids stand for
(its characters' code points, ``vocab``), which :meth:`NGramLM.load` checks against the
corpus's: a table counted on another vocabulary of the same size is refused, not used.
Raw arrays load with a ``read`` each, no decompression and no pickle (loaded with
``allow_pickle=False``), and the sorted keys are exactly the in-memory search structure, so
a loaded model is usable at once. Derived statistics are not stored: they are cheap to
rebuild and would double the file.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from charlab.encoding import Vocab
from charlab.errors import CharlabError
from charlab.io import atomic_path, drop_mapped_pages

Smoothing = Literal["kn", "mkn", "addk"]
SMOOTHINGS: tuple[str, ...] = ("kn", "mkn", "addk")
FORMAT = "charlab-ngram"
VERSION = 2  # 2: the file holds its vocabulary (version 1 held only its size)
INT64_MAX = np.iinfo(np.int64).max
DEFAULT_CHUNK = 1 << 21  # positions per counting chunk: ~16 MiB of int64 keys
SCORE_BLOCK = 1 << 16  # positions per scoring block, bounds log_probs' memory


class NGramFileError(CharlabError, ValueError):
    """A file is not a (complete, uncorrupted) charlab n-gram model."""


# --- counting ----------------------------------------------------------------------------


def _fits(x: int) -> bool:
    return x <= INT64_MAX


def _bary_levels(vocab_size: int, order: int) -> int:
    """Number of levels (from 0) whose windows fit a base-B int64 key."""
    base = vocab_size + 1
    return sum(1 for level in range(order + 1) if _fits(vocab_size * base**level - 1))


def _padded(ids: np.ndarray, start: int, stop: int, order: int, pad: int) -> np.ndarray:
    """ids[start - order: stop] as int64, with pads standing in before the text starts."""
    lo = max(0, start - order)
    seg = np.asarray(ids[lo:stop], dtype=np.int64)
    missing = order - (start - lo)
    if missing == 0:
        return seg
    return np.concatenate([np.full(missing, pad, dtype=np.int64), seg])


def _horner(p: np.ndarray, order: int, length: int, base: int, first: int, last: int
            ) -> np.ndarray:
    """Base-B number of p[order - j + r] for j = first..last (most significant first)."""
    out = np.array(p[order - first: order - first + length])
    for j in range(first + 1, last + 1):
        out *= base  # in place: no temporaries of the chunk's size
        out += p[order - j: order - j + length]
    return out


def _run_starts(flags_new: np.ndarray) -> np.ndarray:
    """Indices where a run of equal sorted values begins, given ``a[1:] != a[:-1]``."""
    starts = np.empty(int(np.count_nonzero(flags_new)) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = np.flatnonzero(flags_new) + 1
    return starts


def _run_lengths(starts: np.ndarray, total: int) -> np.ndarray:
    return np.diff(starts, append=total)


@dataclass
class _Top:
    """Sorted distinct top-level windows with counts: ``key`` (base-B) or ``(w, hist)``."""

    key: np.ndarray | None
    w: np.ndarray | None
    hist: np.ndarray | None
    count: np.ndarray


def _count_chunk(ids: np.ndarray, start: int, stop: int, order: int, vocab_size: int,
                 count_dtype: np.dtype, split: bool) -> _Top:
    base, pad = vocab_size + 1, vocab_size
    p = _padded(ids, start, stop, order, pad)
    n = stop - start
    if not split:  # the whole window is one int64: a single sort
        key = _horner(p, order, n, base, 0, order)
        key.sort()
        starts = _run_starts(key[1:] != key[:-1])
        return _Top(key[starts], None, None, _run_lengths(starts, n).astype(count_dtype))
    # Window too wide for int64: bucket by target (a stable radix argsort on small ints),
    # then sort each bucket's history key in place.
    # numpy's stable argsort is a radix sort for 8- and 16-bit ints.
    w = p[order:order + n]
    if vocab_size <= 1 << 16:
        w = w.astype(np.uint8 if vocab_size <= 1 << 8 else np.uint16)
    hist = _horner(p, order, n, base, 1, order)
    perm = np.argsort(w, kind="stable")
    hist = hist[perm]
    del perm
    bounds = np.concatenate([[0], np.cumsum(np.bincount(w, minlength=vocab_size))])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        hist[a:b].sort()
    new = hist[1:] != hist[:-1]
    edges = bounds[1:-1]
    new[edges[(edges > 0) & (edges < n)] - 1] = True  # a new target starts a new window
    starts = _run_starts(new)
    w_sorted = np.repeat(np.arange(vocab_size, dtype=np.int64), np.diff(bounds))
    return _Top(None, w_sorted[starts], hist[starts], _run_lengths(starts, n).astype(count_dtype))


def _merge(acc: _Top, new: _Top) -> _Top:
    """Union of two sorted count tables, adding counts of shared windows."""
    if acc.key is not None:
        pos = np.searchsorted(acc.key, new.key)
        hit = pos < len(acc.key)
        hit[hit] = acc.key[pos[hit]] == new.key[hit]
        count = acc.count.copy()
        count[pos[hit]] += new.count[hit]  # keys are distinct, so positions are too
        miss = ~hit
        return _Top(np.insert(acc.key, pos[miss], new.key[miss]), None, None,
                    np.insert(count, pos[miss], new.count[miss]))
    w = np.concatenate([acc.w, new.w])
    hist = np.concatenate([acc.hist, new.hist])
    count = np.concatenate([acc.count, new.count])
    perm = np.lexsort((hist, w))
    w, hist, count = w[perm], hist[perm], count[perm]
    starts = _run_starts((w[1:] != w[:-1]) | (hist[1:] != hist[:-1]))
    return _Top(None, w[starts], hist[starts], np.add.reduceat(count, starts))


def _derive_levels(top: _Top, order: int, vocab_size: int
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every level's keys and counts from the sorted top level, by prefix grouping.

    A window of a lower level is a run of consecutive top-level windows, so its count is a
    difference of prefix sums of the top-level counts (cheaper than np.add.reduceat).
    """
    base, dtype = vocab_size + 1, top.count.dtype
    keys: list[np.ndarray] = [np.empty(0, np.int64)] * (order + 1)
    counts: list[np.ndarray] = [np.empty(0, dtype)] * (order + 1)
    total = len(top.count)
    csum = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(top.count, out=csum[1:])
    counts[order] = top.count
    level, key, first = order, top.key, None  # first: top-level row where each run begins
    if key is None:
        # Top level in parent form: group by (target, history minus oldest char) first.
        cand = top.w * base ** (order - 1) + top.hist // base
        new = cand[1:] != cand[:-1]
        parent = np.zeros(total, dtype=np.int64)
        np.cumsum(new, out=parent[1:])
        keys[order] = parent * base + top.hist % base
        first = _run_starts(new)
        level, key = order - 1, cand[first]
        counts[level] = _run_sums(csum, first).astype(dtype)
    keys[level] = key
    for lower in range(level - 1, -1, -1):
        cand = key // base  # drop the oldest history char; stays sorted
        starts = _run_starts(cand[1:] != cand[:-1])
        first = starts if first is None else first[starts]
        key = cand[starts]
        keys[lower], counts[lower] = key, _run_sums(csum, first).astype(dtype)
    return keys, counts


def _run_sums(csum: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums of the runs that begin at rows ``first``, from prefix sums ``csum``."""
    bounds = csum[np.append(first, len(csum) - 1)]
    return np.diff(bounds)


def _fit_fallback(ids: np.ndarray, order: int, vocab_size: int, count_dtype: np.dtype
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Level by level with np.unique re-indexing, for histories wider than int64."""
    base, pad, n = vocab_size + 1, vocab_size, len(ids)
    bary = _bary_levels(vocab_size, order)
    p = _padded(ids, 0, n, order, pad)
    keys, counts = [], []
    hist = np.zeros(n, dtype=np.int64)
    index = None
    for level in range(order + 1):
        if level < bary:
            if level:
                hist *= base
                hist += p[order - level: order - level + n]
            key = p[order:] * base**level + hist
        else:  # parent row of the same position, then its oldest char
            key = index * base + p[order - level: order - level + n]
        if level + 1 >= bary and level < order:
            uniq, index, cnt = np.unique(key, return_inverse=True, return_counts=True)
        else:
            uniq, cnt = np.unique(key, return_counts=True)
        keys.append(uniq)
        counts.append(cnt.astype(count_dtype))
    return keys, counts


# --- the model ---------------------------------------------------------------------------


@dataclass
class _LevelStats:
    """Per-history statistics of one level, indexed by history slot (see _history_slots)."""

    a: np.ndarray  # per window: raw count (top level) or continuation count N1+(. h w)
    den: np.ndarray  # per history: sum of a
    n_by_a: tuple[np.ndarray, np.ndarray, np.ndarray]  # per history: # a==1, a==2, a>=3
    discounts: tuple[float, float, float]  # D for a == 1, 2, >= 3 (equal unless "mkn")


@dataclass(frozen=True)
class BackoffLevel:
    """One level of a Kneser-Ney model written as a backoff table (:meth:`NGramLM.backoff_levels`).

    ``windows`` rows are (target, history newest char first), pads as id ``vocab_size``:
    level 0 lists every character, level L >= 1 its stored windows in table order.
    """

    windows: np.ndarray  # (rows, level + 1) int64
    log_prob: np.ndarray  # ln of each window's full interpolated probability at this level
    log_backoff: np.ndarray  # ln gamma of each window read as a history one level up
    pad_log_backoff: float  # ln gamma of the all-pad history of level + 1 chars


@dataclass(frozen=True)
class _Followers:
    """Histories of one level, sorted, each with its run of next chars in the arrays."""

    level: int
    histories: np.ndarray  # distinct history keys (newest char most significant)
    offsets: np.ndarray  # run of history i: offsets[i]:offsets[i + 1]
    chars: np.ndarray
    counts: np.ndarray
    rows: np.ndarray  # row of each (char, history) window in the level's table


def _check_ids(ids: np.ndarray, vocab_size: int, what: str, values: bool = True
               ) -> np.ndarray:
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


def _kn_discount(a: np.ndarray) -> float:
    """Ney's D = n1 / (n1 + 2 n2) from counts of counts; 0.5 when there are no singletons."""
    n1, n2 = int(np.count_nonzero(a == 1)), int(np.count_nonzero(a == 2))
    return n1 / (n1 + 2 * n2) if n1 else 0.5


def _mkn_discounts(a: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+; plain KN's D when counts of counts are too sparse."""
    n = [int(np.count_nonzero(a == r)) for r in (1, 2, 3, 4)]
    if min(n) == 0:
        d = _kn_discount(a)
        return d, d, d
    y = n[0] / (n[0] + 2 * n[1])
    ds = (1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2])
    if not all(0 < d <= r for r, d in zip((1, 2, 3), ds, strict=True)):
        d = _kn_discount(a)
        return d, d, d
    return ds


class NGramLM:
    """A character n-gram model of one order; see the module docstring."""

    def __init__(self, vocab_size: int, order: int, keys: Sequence[np.ndarray],
                 counts: Sequence[np.ndarray], *, smoothing: Smoothing = "kn",
                 add_k: float = 0.01, discount: float | Sequence[float] | None = None) -> None:
        _check_order(order)
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if len(keys) != order + 1 or len(counts) != order + 1:
            raise ValueError(f"order {order} needs {order + 1} levels, got {len(keys)}")
        self.vocab_size = int(vocab_size)
        self.order = int(order)
        self._keys = list(keys)
        self._counts = list(counts)
        self._base = self.vocab_size + 1
        self._bary = _bary_levels(self.vocab_size, self.order)
        self.smoothing: Smoothing = smoothing
        self.add_k = float(add_k)
        self.discount = _check_smoothing(smoothing, add_k, discount, order)
        self._stats: dict[int, _LevelStats] = {}
        self._slots: dict[int, np.ndarray] = {}
        # Sampling state uses Python ints: these make each step a few scalar ops.
        self._pow = [self._base**j for j in range(self.order + 1)]
        self._all_pad = self._pow[self.order] - 1
        self._follow: _Followers | None = None
        self._no_chars = np.full(self.vocab_size, -np.inf)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def fit(cls, ids: np.ndarray, vocab_size: int, order: int, *, smoothing: Smoothing = "kn",
            add_k: float = 0.01, discount: float | Sequence[float] | None = None,
            chunk_size: int = DEFAULT_CHUNK) -> NGramLM:
        """Count every window of ``ids`` (padded at the start) for levels 0..order."""
        _check_order(order)
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        _check_smoothing(smoothing, add_k, discount, order)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        source = ids  # a memory map keeps its mapping only on the original object
        ids = _check_ids(ids, vocab_size, "training ids", values=False)
        if len(ids) == 0:
            raise ValueError("cannot fit an n-gram model on an empty text")
        count_dtype = np.dtype(np.uint32 if len(ids) < 2**32 else np.int64)
        base = vocab_size + 1
        if not _fits(base**order - 1):
            _check_ids(ids, vocab_size, "training ids")
            keys, counts = _fit_fallback(ids, order, vocab_size, count_dtype)
        else:
            split = not _fits(vocab_size * base**order - 1)
            top = None
            for start in range(0, len(ids), chunk_size):
                stop = min(start + chunk_size, len(ids))
                _check_ids(ids[start:stop], vocab_size, "training ids")
                part = _count_chunk(ids, start, stop, order, vocab_size, count_dtype, split)
                top = part if top is None else _merge(top, part)
                # a corpus larger than memory: what this chunk read leaves the resident set
                drop_mapped_pages(source)
            keys, counts = _derive_levels(top, order, vocab_size)
        return cls(vocab_size, order, keys, counts, smoothing=smoothing, add_k=add_k,
                   discount=discount)

    def with_order(self, order: int) -> NGramLM:
        """The same counts cut to a lower order (levels 0..order are shared, not copied)."""
        if not 0 <= order <= self.order:
            raise ValueError(f"order must be in 0..{self.order}, got {order}")
        disc = self.discount
        if disc is not None and not isinstance(disc, float):
            disc = disc[:order + 1]
        return self._sharing(NGramLM(self.vocab_size, order, self._keys[:order + 1],
                                     self._counts[:order + 1], smoothing=self.smoothing,
                                     add_k=self.add_k, discount=disc))

    def with_smoothing(self, smoothing: Smoothing, *, add_k: float | None = None,
                       discount: float | Sequence[float] | None = None) -> NGramLM:
        """The same counts scored with another smoothing."""
        return self._sharing(NGramLM(self.vocab_size, self.order, self._keys, self._counts,
                                     smoothing=smoothing, discount=discount,
                                     add_k=self.add_k if add_k is None else add_k))

    def _sharing(self, other: NGramLM) -> NGramLM:
        """``other`` with this model's suffix links: they depend only on shared tables."""
        other._slots = self._slots
        return other

    # -- the LanguageModel protocol ------------------------------------------------------

    def num_params(self) -> int:
        """Stored non-zero table entries: distinct windows over all levels 0..order."""
        return sum(len(k) for k in self._keys)

    @property
    def n_chars(self) -> int:
        """Number of characters the counts were taken from."""
        return int(self._counts[0].sum(dtype=np.int64))

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """Smoothed ln p(ids[t+1] | history ending at ids[t]), history padded at the start."""
        ids = _check_ids(ids, self.vocab_size, "ids")
        out = np.empty(max(len(ids) - 1, 0), dtype=np.float64)
        # Blocks bound memory to O(block * order) whatever the text length.
        for a in range(1, len(ids), SCORE_BLOCK):
            b = min(a + SCORE_BLOCK, len(ids))
            p = _padded(ids, a - 1, b, self.order, self.vocab_size)
            windows = self._chain(p, b - a + 1)
            out[a - 1:b - 1] = self._smoothed_log(
                [w[1:] for w in windows], [w[:-1] for w in windows])
        return out

    def start(self, prime: np.ndarray) -> tuple[np.ndarray, int]:
        """ML log-probs after ``prime`` (read from a pad history) and the sampling state."""
        state = self._all_pad
        for c in _check_ids(prime, self.vocab_size, "prime").tolist():
            state = self._push(state, c)
        return self._ml_log(state), state

    def step(self, state: int, next_id: int) -> tuple[np.ndarray, int]:
        """Feed one char: ML log-probs of the one after it (longest seen history)."""
        next_id = int(next_id)
        if not 0 <= next_id < self.vocab_size:
            raise ValueError(f"id {next_id} is outside the vocabulary 0..{self.vocab_size - 1}")
        state = self._push(state, next_id)
        return self._ml_log(state), state

    # -- the lecture's unsmoothed model --------------------------------------------------

    def next_counts(self, history: np.ndarray) -> tuple[np.ndarray, int]:
        """(counts of each next char, history length used) for the longest seen suffix.

        A history shorter than the order is padded, as at the start of the text.
        """
        state = self._all_pad
        for c in _check_ids(history, self.vocab_size, "history").tolist():
            state = self._push(state, c)
        return self._ml_counts(state)

    def distribution(self, history: np.ndarray) -> np.ndarray:
        """Unsmoothed ML probabilities of the next char (the lecture's ``lm[history]``)."""
        counts, _ = self.next_counts(history)
        return counts / counts.sum()

    def probs(self, history: np.ndarray) -> np.ndarray:
        """Smoothed probabilities of each next char after ``history`` (padded at the start)."""
        history = _check_ids(history, self.vocab_size, "history")
        state = self._all_pad
        for c in history.tolist():
            state = self._push(state, c)
        everyone = np.arange(self.vocab_size, dtype=np.int64)
        windows = [self._rows_for(lv, everyone, state // self._pow[self.order - lv])
                   for lv in range(self.order + 1)]
        shape = (self.vocab_size,)
        if len(history):  # the history's own window: its newest char after older ones
            p = _padded(history, len(history) - 1, len(history), self.order, self.vocab_size)
            contexts = [np.full(shape, r[0]) for r in self._chain(p, 1)]
        else:  # all pads: the extra history slot of each level
            contexts = [np.full(shape, len(k)) for k in self._keys]
        return np.exp(self._smoothed_log(windows, contexts))

    # -- the model as a backoff table (ARPA export) --------------------------------------

    def backoff_levels(self) -> list[BackoffLevel]:
        """The smoothed model as a backoff table, levels 0..order (see :class:`BackoffLevel`).

        Interpolated KN (``kn``, ``mkn``) is exactly a backoff model: p(w | h) is a stored
        window's ``log_prob`` (its full interpolated value at that level, computed by the
        same ``_interpolate`` chain as :meth:`log_probs`), and for an unstored window
        gamma(h) * p(w | h minus its oldest char), gamma being the weight ``h`` gives the
        level below (1 for a history with no continuations). Level 0 lists every character,
        an unseen one with gamma(empty) / V. ``log_backoff`` is 0 at the top level.
        """
        if self.smoothing == "addk":
            raise ValueError("add-k smoothing is not a backoff model: it has no "
                             "lower-order distribution to back off to")
        vocab, base = self.vocab_size, self._base
        everyone = np.arange(vocab, dtype=np.int64)
        levels: list[BackoffLevel] = []
        windows, p = everyone[:, None], np.full(vocab, 1.0 / vocab)
        for level in range(self.order + 1):
            keys = self._keys[level]
            if level == 0:
                rows, slots = self._search(0, everyone), np.zeros(vocab, dtype=np.int64)
            else:
                rows, slots = np.arange(len(keys)), self._history_slots(level)
                if level < self._bary:  # base-B digits; the window minus its oldest char
                    parent = np.searchsorted(self._keys[level - 1], keys // base)
                else:  # parent form: that row is the key's high part
                    parent = keys // base
                if level == 1:  # level 0 lists every char, so its rows are char ids
                    parent = self._keys[0][parent]
                windows = np.concatenate([windows[parent], (keys % base)[:, None]], axis=1)
                p = p[parent]
            # _interpolate reads a level's history slots from contexts[level - 1]
            p = self._interpolate(level, rows, [slots] * max(level, 1), p)
            gamma, pad = np.ones(len(p)), 1.0
            if level < self.order:  # gamma(h) of each window read as a history one level up
                n_slots = len(keys) + 1  # the last slot: the all-pad history
                g = self._interpolate(level + 1, np.full(n_slots, -1, dtype=np.int64),
                                      [np.arange(n_slots)] * (level + 1), np.ones(n_slots))
                if level:
                    gamma = g[:-1]
                else:
                    gamma[keys] = g[:-1]
                pad = float(g[-1])
            with np.errstate(divide="ignore"):  # only a caller's discount 0 makes p = 0
                levels.append(BackoffLevel(windows, np.log(p), np.log(gamma),
                                           float(np.log(pad))))
        return levels

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike, vocab: Vocab) -> None:
        """Write an uncompressed .npz atomically (the old file or the new one, never half),
        with ``vocab``, the characters the ids stand for."""
        if vocab.size != self.vocab_size:
            raise ValueError(f"a vocabulary of {vocab.size} for a model of {self.vocab_size}")
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "version": np.array(VERSION, dtype=np.int64),
            "vocab": np.array([ord(c) for c in vocab.chars], dtype=np.uint32),
            "meta": np.array([self.vocab_size, self.order, self.n_chars], dtype=np.int64),
            "smoothing": np.array(self.smoothing),
            "add_k": np.array(self.add_k, dtype=np.float64),
            "discount": np.atleast_1d(np.array(
                [] if self.discount is None else self.discount, dtype=np.float64)),
        }
        for level, (k, c) in enumerate(zip(self._keys, self._counts, strict=True)):
            arrays[f"keys_{level}"] = k
            arrays[f"counts_{level}"] = c
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # a file object: savez would append .npz to a name

    @classmethod
    def load(cls, path: str | os.PathLike, vocab: Vocab) -> NGramLM:
        """Read a file written by :meth:`save`; :class:`NGramFileError` if it is not one,
        or if it was counted on another vocabulary than ``vocab``."""
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with z:
                arrays = {name: z[name] for name in z.files}
        except FileNotFoundError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise NGramFileError(f"{path}: not a readable charlab n-gram file ({e})") from None
        return cls._from_arrays(arrays, str(path), vocab)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], where: str, vocab: Vocab) -> NGramLM:
        def bad(why: str) -> NGramFileError:
            return NGramFileError(f"{where}: not a valid charlab n-gram file: {why}")

        try:
            version = int(arrays["version"]) if str(arrays["format"]) == FORMAT else None
        except (KeyError, ValueError, TypeError):
            version = None
        if version is not None and version < VERSION:
            raise NGramFileError(f"{where}: n-gram file format version {version}, which does "
                                 f"not record its vocabulary; this charlab reads version "
                                 f"{VERSION}: rerun `dvc repro` to rebuild it")
        try:
            if version != VERSION:
                raise ValueError(f"header is not {FORMAT!r} version {VERSION}")
            stored = _stored_vocab(arrays["vocab"])
            vocab_size, order, n_chars = (int(x) for x in arrays["meta"])
            keys = [arrays[f"keys_{lv}"] for lv in range(order + 1)]
            counts = [arrays[f"counts_{lv}"] for lv in range(order + 1)]
            smoothing = str(arrays["smoothing"])
            add_k = float(arrays["add_k"])
            disc_arr = arrays["discount"]
        except (KeyError, ValueError, TypeError) as e:
            raise bad(f"missing or malformed field ({e})") from None
        if len(stored) != vocab_size:
            raise bad(f"vocabulary of {len(stored)} characters for a model of {vocab_size}")
        if stored != vocab:
            raise NGramFileError(
                f"{where}: counted on a different vocabulary ({stored.size} chars) than this "
                f"corpus ({vocab.size} chars{vocab.difference(stored)}); rebuild it "
                "(`dvc repro`)")
        discount = None if disc_arr.size == 0 else (
            float(disc_arr[0]) if disc_arr.size == 1 else [float(d) for d in disc_arr])
        _validate_tables(keys, counts, vocab_size, order, n_chars, bad)
        try:
            return cls(vocab_size, order, keys, counts, smoothing=smoothing,  # type: ignore[arg-type]
                       add_k=add_k, discount=discount)
        except ValueError as e:
            raise bad(str(e)) from None

    # -- lookups -------------------------------------------------------------------------

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

    def _chain(self, p: np.ndarray, n: int) -> list[np.ndarray]:
        """Row of the window ending at each of the last ``n`` positions of ``p``, per level.

        ``p`` holds ``order`` chars (or pads) of history before those positions.
        """
        o, base = self.order, self._base
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

    # -- sampling (ML with backoff) ------------------------------------------------------

    def _push(self, state: int, c: int) -> int:
        """History key after appending char ``c``: newest char is the top digit."""
        if self.order == 0:
            return 0
        return c * self._pow[self.order - 1] + state // self._base

    def _rows_for(self, level: int, targets: np.ndarray, hist: int) -> np.ndarray:
        """Rows of windows (each target, history key ``hist``) at ``level``; -1 if unseen."""
        if level < self._bary:
            return self._search(level, targets * self._pow[level] + hist)
        # Parent form: the same window minus its oldest char, one level down.
        parents = self._rows_for(level - 1, targets, hist // self._base)
        q = np.where(parents >= 0, parents * self._base + hist % self._base, -1)
        return self._search(level, q)

    def _followers(self) -> _Followers:
        """Every history of the deepest base-B level J with its next chars (lazy, cached).

        Sorted by history, so a sampling step finds its followers with one scalar search
        instead of searching every candidate char; a parent-form top level is then one
        more search over those few followers.
        """
        if self._follow is None:
            level = min(self.order, self._bary - 1)
            keys, scale = self._keys[level], self._pow[level]
            hist = keys % scale
            perm = np.argsort(hist, kind="stable")  # keeps next chars ascending per history
            hist = hist[perm]
            starts = _run_starts(hist[1:] != hist[:-1])
            self._follow = _Followers(level, hist[starts], np.append(starts, len(hist)),
                                      keys[perm] // scale, self._counts[level][perm], perm)
        return self._follow

    def _ml_sparse(self, state: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(next chars, their counts, history length used) for the longest seen suffix.

        The hot loop of sampling: a handful of numpy calls per character.
        """
        f = self._follow or self._followers()
        n, base = self.order, self._base
        short = state // self._pow[n - f.level]
        i = f.histories.searchsorted(short)
        if i == len(f.histories) or f.histories.item(i) != short:
            return self._ml_backoff(state, f.level)
        a, b = f.offsets.item(i), f.offsets.item(i + 1)
        chars, counts, used, rows = f.chars[a:b], f.counts[a:b], f.level, f.rows[a:b]
        for level in range(f.level + 1, n + 1):  # parent-form levels: add the oldest char
            table = self._keys[level]
            q = rows * base + state // self._pow[n - level] % base
            pos = table.searchsorted(q)
            hit = table.take(pos, mode="clip") == q  # clip: q past the end is a miss
            rows = pos[hit]
            if not len(rows):
                break
            chars, counts, used = chars[hit], self._counts[level][rows], level
        return chars, counts, used

    def _ml_backoff(self, state: int, below: int) -> tuple[np.ndarray, np.ndarray, int]:
        everyone = np.arange(self.vocab_size, dtype=np.int64)
        for lower in range(below - 1, -1, -1):
            rows = self._rows_for(lower, everyone, state // self._pow[self.order - lower])
            seen = rows >= 0
            if seen.any():
                return everyone[seen], self._counts[lower][rows[seen]], lower
        raise AssertionError("level 0 always has counts")  # pragma: no cover

    def _ml_counts(self, state: int) -> tuple[np.ndarray, int]:
        chars, counts, used = self._ml_sparse(state)
        dense = np.zeros(self.vocab_size, dtype=np.int64)
        dense[chars] = counts
        return dense, used

    def _ml_log(self, state: int) -> np.ndarray:
        chars, counts, _ = self._ml_sparse(state)
        out = self._no_chars.copy()
        out[chars] = np.log(counts) - math.log(counts.sum())
        return out

    # -- smoothing -----------------------------------------------------------------------

    def _history_slots(self, level: int) -> np.ndarray:
        """Suffix links: for each window of ``level``, the row of its history one level down.

        A history of ``level`` chars is itself a window of ``level - 1`` (its newest char is
        the target) unless it is all pads, which gets the extra slot ``len(level - 1)``.
        Level 0 has one history (the empty one), slot 0.
        """
        if level in self._slots:
            return self._slots[level]
        keys, base = self._keys[level], self._base
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
                below = self._history_slots(level - 1)[parent]
                newest_pad = below == len(self._keys[level - 2])
                q = below * base + oldest
            slots = np.where(newest_pad, len(self._keys[level - 1]),
                             np.searchsorted(self._keys[level - 1], np.where(newest_pad, 0, q)))
        self._slots[level] = slots
        return slots

    def _continuation(self, level: int) -> np.ndarray:
        """N1+(. h w): distinct chars seen before each window = its children one level up."""
        up, base = self._keys[level + 1], self._base
        if level + 1 < self._bary:
            parent = up // base
            return _run_lengths(_run_starts(parent[1:] != parent[:-1]), len(up))
        return np.bincount(up // base, minlength=len(self._keys[level]))

    def _level_stats(self, level: int) -> _LevelStats:
        if level in self._stats:
            return self._stats[level]
        a = self._counts[level] if level == self.order else self._continuation(level)
        a = a.astype(np.int64)
        slots = self._history_slots(level)
        n_slots = 1 if level == 0 else len(self._keys[level - 1]) + 1
        den = np.bincount(slots, weights=a, minlength=n_slots)
        n_by_a = tuple(np.bincount(slots[m], minlength=n_slots)
                       for m in (a == 1, a == 2, a >= 3))
        stats = _LevelStats(a, den, n_by_a, self._discounts(level, a))  # type: ignore[arg-type]
        self._stats[level] = stats
        return stats

    def _discounts(self, level: int, a: np.ndarray) -> tuple[float, float, float]:
        if self.discount is not None:
            d = self.discount if isinstance(self.discount, float) else self.discount[level]
            return d, d, d
        if self.smoothing == "mkn":
            return _mkn_discounts(a)
        d = _kn_discount(a)
        return d, d, d

    def _smoothed_log(self, windows: list[np.ndarray], contexts: list[np.ndarray]
                      ) -> np.ndarray:
        """ln p for windows whose rows per level are ``windows``; ``contexts[lv]`` is the row
        of the history's window one level down (level lv-1), -1 if unseen."""
        if self.smoothing == "addk":
            return np.log(self._addk(windows[-1], contexts))
        p = np.full(windows[0].shape, 1.0 / self.vocab_size)
        for level in range(self.order + 1):
            p = self._interpolate(level, windows[level], contexts, p)
        with np.errstate(divide="ignore"):  # only a caller's discount 0 makes p = 0
            return np.log(p)

    def _context_slot(self, level: int, contexts: list[np.ndarray]) -> np.ndarray:
        if level == 0:
            return np.zeros(contexts[0].shape, dtype=np.int64)
        return contexts[level - 1]

    def _addk(self, rows: np.ndarray, contexts: list[np.ndarray]) -> np.ndarray:
        st = self._level_stats(self.order)
        slot = self._context_slot(self.order, contexts)
        den = np.where(slot >= 0, st.den[np.maximum(slot, 0)], 0.0)
        num = np.where(rows >= 0, self._counts[self.order][np.maximum(rows, 0)], 0)
        return (num + self.add_k) / (den + self.add_k * self.vocab_size)

    def _interpolate(self, level: int, rows: np.ndarray, contexts: list[np.ndarray],
                     lower: np.ndarray) -> np.ndarray:
        st = self._level_stats(level)
        slot = self._context_slot(level, contexts)
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


def _stored_vocab(codes: np.ndarray) -> Vocab:
    """The :class:`Vocab` a file's ``vocab`` array of code points stands for."""
    if codes.ndim != 1 or codes.dtype != np.uint32:
        raise ValueError(f"vocab is not a 1-d uint32 array ({codes.dtype}, {codes.shape})")
    if len(codes) and (int(codes.max()) > 0x10FFFF or np.any(np.diff(codes.astype(np.int64)) <= 0)):
        raise ValueError("vocab is not a sorted list of distinct code points")
    return Vocab(tuple(map(chr, codes.tolist())))


def _check_order(order: Any) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order must be an integer >= 0 (the history length), got {order!r}")


def _check_smoothing(smoothing: str, add_k: float, discount: Any, order: int
                     ) -> float | list[float] | None:
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
    if not all(0 <= d <= 1 for d in ds):
        raise ValueError(f"discounts must be in [0, 1], got {discount}")
    return ds[0] if isinstance(discount, (int, float)) else ds


def _validate_tables(keys: list[np.ndarray], counts: list[np.ndarray], vocab_size: int,
                     order: int, n_chars: int, bad: Any) -> None:
    if vocab_size < 1 or order < 0:
        raise bad(f"vocab_size {vocab_size}, order {order}")
    base, bary = vocab_size + 1, _bary_levels(vocab_size, order)
    for level, (k, c) in enumerate(zip(keys, counts, strict=True)):
        if k.ndim != 1 or c.shape != k.shape or k.dtype != np.int64 or \
                not np.issubdtype(c.dtype, np.integer):
            raise bad(f"level {level}: keys/counts arrays of the wrong shape or type")
        if len(k) == 0 or np.any(k[1:] <= k[:-1]) or np.any(c <= 0) or k[0] < 0:
            raise bad(f"level {level}: keys not strictly increasing or counts not positive")
        limit = vocab_size * base**level if level < bary else len(keys[level - 1]) * base
        if k[-1] >= limit:
            raise bad(f"level {level}: key out of range")
    # Every position has one window per level, so each level's counts add up to the text.
    if any(int(c.sum(dtype=np.int64)) != n_chars for c in counts):
        raise bad("counts do not add up to the recorded number of characters")


# --- the lecture's view ------------------------------------------------------------------


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
