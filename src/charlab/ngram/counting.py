"""Counting: every window of a text, for levels 0..order, as sorted keys and counts.

Windows are sorted target first, then the history from the newest character to the oldest
("reversed" order). That order is what makes fitting cheap: one sort of the top-level
windows gives every lower level by integer division (dropping the oldest history char), with
no further sort. See :mod:`charlab.ngram.tables` for the two key encodings.

Fitting counts windows in chunks (one sort per chunk, merged into the running table), so it
holds the count tables plus one chunk. When even a history of ``n`` chars overflows int64,
it falls back to building each level from the one below with ``np.unique`` re-indexing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from charlab.io import drop_mapped_pages
from charlab.ngram.windows import (
    bary_levels,
    check_ids,
    fits,
    horner,
    padded,
    run_lengths,
    run_starts,
)

DEFAULT_CHUNK = 1 << 21  # positions per counting chunk: ~16 MiB of int64 keys

Levels = tuple[list[np.ndarray], list[np.ndarray]]  # keys and counts of levels 0..order


def count_windows(ids: np.ndarray, vocab_size: int, order: int, chunk_size: int,
                  source: Any = None) -> Levels:
    """Keys and counts of every level of ``ids`` (checked for shape, not yet for values).

    ``source``: the array ``ids`` came from, when it is a memory map (only the original
    object keeps its mapping), so each chunk's pages can leave the resident set.
    """
    count_dtype = np.dtype(np.uint32 if len(ids) < 2**32 else np.int64)
    base = vocab_size + 1
    if not fits(base**order - 1):
        check_ids(ids, vocab_size, "training ids")
        return _fit_fallback(ids, order, vocab_size, count_dtype)
    split = not fits(vocab_size * base**order - 1)
    top = None
    for start in range(0, len(ids), chunk_size):
        stop = min(start + chunk_size, len(ids))
        check_ids(ids[start:stop], vocab_size, "training ids")
        part = _count_chunk(ids, start, stop, order, vocab_size, count_dtype, split)
        top = part if top is None else _merge(top, part)
        # a corpus larger than memory: what this chunk read leaves the resident set
        drop_mapped_pages(ids if source is None else source)
    return _derive_levels(top, order, vocab_size)


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
    p = padded(ids, start, stop, order, pad)
    n = stop - start
    if not split:  # the whole window is one int64: a single sort
        key = horner(p, order, n, base, 0, order)
        key.sort()
        starts = run_starts(key[1:] != key[:-1])
        return _Top(key[starts], None, None, run_lengths(starts, n).astype(count_dtype))
    # Window too wide for int64: bucket by target (a stable radix argsort on small ints),
    # then sort each bucket's history key in place.
    # numpy's stable argsort is a radix sort for 8- and 16-bit ints.
    w = p[order:order + n]
    if vocab_size <= 1 << 16:
        w = w.astype(np.uint8 if vocab_size <= 1 << 8 else np.uint16)
    hist = horner(p, order, n, base, 1, order)
    perm = np.argsort(w, kind="stable")
    hist = hist[perm]
    del perm
    bounds = np.concatenate([[0], np.cumsum(np.bincount(w, minlength=vocab_size))])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        hist[a:b].sort()
    new = hist[1:] != hist[:-1]
    edges = bounds[1:-1]
    new[edges[(edges > 0) & (edges < n)] - 1] = True  # a new target starts a new window
    starts = run_starts(new)
    w_sorted = np.repeat(np.arange(vocab_size, dtype=np.int64), np.diff(bounds))
    return _Top(None, w_sorted[starts], hist[starts], run_lengths(starts, n).astype(count_dtype))


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
    starts = run_starts((w[1:] != w[:-1]) | (hist[1:] != hist[:-1]))
    return _Top(None, w[starts], hist[starts], np.add.reduceat(count, starts))


def _derive_levels(top: _Top, order: int, vocab_size: int) -> Levels:
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
        first = run_starts(new)
        level, key = order - 1, cand[first]
        counts[level] = _run_sums(csum, first).astype(dtype)
    keys[level] = key
    for lower in range(level - 1, -1, -1):
        cand = key // base  # drop the oldest history char; stays sorted
        starts = run_starts(cand[1:] != cand[:-1])
        first = starts if first is None else first[starts]
        key = cand[starts]
        keys[lower], counts[lower] = key, _run_sums(csum, first).astype(dtype)
    return keys, counts


def _run_sums(csum: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums of the runs that begin at rows ``first``, from prefix sums ``csum``."""
    bounds = csum[np.append(first, len(csum) - 1)]
    return np.diff(bounds)


def _fit_fallback(ids: np.ndarray, order: int, vocab_size: int, count_dtype: np.dtype
                  ) -> Levels:
    """Level by level with np.unique re-indexing, for histories wider than int64."""
    base, pad, n = vocab_size + 1, vocab_size, len(ids)
    bary = bary_levels(vocab_size, order)
    p = padded(ids, 0, n, order, pad)
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
